"""The examples in keepbest's docstrings run (those that need a trained run or a model
say ``# doctest: +SKIP`` and are not run). Run from the repository root, so that
``configs/quickstart.yaml`` resolves as it does for a reader of the README."""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
from pathlib import Path

import pytest

import keepbest

REPO = Path(__file__).resolve().parents[2]
SUBMODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keepbest.__path__, prefix="keepbest.")
    if info.name != "keepbest.__main__"
)
MODULES = ["keepbest", *SUBMODULES]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(REPO)
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0


def test_every_module_is_covered():
    files = {
        ".".join(p.relative_to(REPO / "src").with_suffix("").parts).removesuffix(".__init__")
        for p in (REPO / "src" / "keepbest").rglob("*.py")
    }
    assert files - {"keepbest.__main__"} == set(MODULES), os.linesep.join(sorted(files))
