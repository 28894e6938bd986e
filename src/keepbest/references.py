"""``module:function`` references in configs, resolved with messages that say what to fix.

The config file's own folder is importable, so ``builder: "models:build"`` finds
``models.py`` next to ``exp.yaml`` without installing anything.

Example:

    >>> from keepbest.references import resolve_reference
    >>> resolve_reference("json:dumps", "model.builder")   # doctest: +ELLIPSIS
    <function dumps at ...>
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from keepbest.errors import ConfigError


def resolve_reference(reference: str, where: str, search_dir: Path | None = None) -> Callable:
    """Import ``module:attr`` and return the callable; ``ConfigError`` if that fails."""
    module_name, _, attr = reference.partition(":")
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{where}: no module named {exc.name!r} (looked in the config's folder "
                f"and the installed packages)"
            ) from None
        raise ConfigError(f"{where}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    target = getattr(module, attr, None)
    if not callable(target):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: module {module_name!r} has no function {attr!r}{hint}")
    return target


def call_with_supported_kwargs(
    function: Callable, kwargs: Mapping[str, Any], offered: Mapping[str, Any], where: str
) -> Any:
    """Call ``function(**kwargs, **offered)``, passing only the ``offered`` names it accepts.

    ``kwargs`` come from the user and must all be accepted; ``offered`` are facts keepbest
    knows (``input_shape``, ``num_classes``...) that a function may ask for by name.
    """
    check_kwargs(function, kwargs, where)
    parameters = inspect.signature(function).parameters
    extra = {k: v for k, v in offered.items() if k in parameters and k not in kwargs}
    return function(**kwargs, **extra)


def check_kwargs(function: Callable, kwargs: Mapping[str, Any], where: str) -> None:
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [
        n
        for n, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    problems = []
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; it takes {', '.join(accepted)}"
            name = getattr(function, "__name__", "the function")
            problems.append(f"{where}.{key}: {name}() has no argument {key!r}{hint}")
    if problems:
        raise ConfigError(problems)
