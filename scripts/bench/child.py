"""A measuring subprocess: ``child.py module:function '{"kwarg": ...}' RESULT.json``.

The function runs in this fresh interpreter and its (JSON) return value goes to the
result file; stdout stays free for whatever keepbest prints.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def main() -> None:
    task, kwargs, result_path = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    module_name, _, function = task.partition(":")
    result = getattr(importlib.import_module(module_name), function)(**kwargs)
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
