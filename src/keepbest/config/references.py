"""``module:function`` references in configs, resolved with messages that say what to fix.

The config file's own folder is importable, so ``builder: "models:build"`` finds
``models.py`` next to ``exp.yaml`` without installing anything. Such a module is the one
in *that* folder even if a module of the same name was imported from another folder
before (two experiments in one process must not share a ``models.py`` by accident).

Example:

    >>> from keepbest.config.references import resolve_reference
    >>> resolve_reference("json:dumps", "model.builder")   # doctest: +ELLIPSIS
    <function dumps at ...>
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
import sysconfig
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from keepbest.errors import ConfigError


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _local_module_file(search_dir: Path, top: str) -> Path | None:
    for candidate in (search_dir / f"{top}.py", search_dir / top / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _forget_foreign_module(top: str, local: Path) -> None:
    """Drop a cached ``top`` (and its submodules) that was imported from another file."""
    cached_file = getattr(sys.modules.get(top), "__file__", None)
    if not cached_file or Path(cached_file).resolve() == local:
        return
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]


def _import(module_name: str, where: str, search_dir: Path | None) -> Any:
    top = module_name.partition(".")[0]
    if search_dir is not None:
        folder = str(search_dir)
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
        local = _local_module_file(search_dir, top)
        if local is not None and top not in sys.stdlib_module_names:
            _forget_foreign_module(top, local)
    importlib.invalidate_caches()  # files written since the interpreter started
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            nearby = [p.stem for p in search_dir.glob("*.py")] if search_dir else []
            hint = did_you_mean(missing, nearby) if "." not in missing else ""
            looked = f"in {search_dir} " if search_dir else ""
            raise ConfigError(
                f"{where}: no module named {missing!r} (looked {looked}and in the installed "
                f"packages){hint}"
            ) from None
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {describe_exception(exc)}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"{where}: importing {module_name!r} failed: {describe_exception(exc)}"
        ) from None


def resolve_reference(reference: str, where: str, search_dir: Path | None = None) -> Callable:
    """Import ``module:attr`` and return the callable; ``ConfigError`` if that fails."""
    module_name, _, attr = reference.partition(":")
    module = _import(module_name, where, search_dir)
    target = getattr(module, attr, None)
    if not callable(target):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ConfigError(
            f"{where}: module {module_name!r} has no function {attr!r}{did_you_mean(attr, names)}"
        )
    return target


def describe_exception(exc: BaseException) -> str:
    """``TypeError: message (at file.py:12)``, at the innermost frame of the user's own
    code: a builder that misuses Keras is to be fixed where it calls Keras, not inside.
    A ``SystemExit`` (``sys.exit`` in a builder or a factory) is said as such."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not _is_library(f.filename)] or frames
    where = f" (at {Path(own[-1].filename).name}:{own[-1].lineno})" if own else ""
    if isinstance(exc, SystemExit):  # user code must not end the process it runs in
        return f"it called sys.exit({exc.code!r}){where}; return a value or raise, not exit"
    return f"{type(exc).__name__}: {exc}{where}"


def _is_library(filename: str) -> bool:
    """Installed packages and the standard library (not the code a config points at)."""
    parts = Path(filename).parts
    return (
        "site-packages" in parts
        or "dist-packages" in parts
        or filename.startswith(sysconfig.get_paths()["stdlib"])
        or filename.startswith("<frozen ")
    )


def call_with_supported_kwargs(
    function: Callable, kwargs: Mapping[str, Any], offered: Mapping[str, Any], where: str
) -> Any:
    """Call ``function(**kwargs, **offered)``, passing only the ``offered`` names it accepts.

    ``kwargs`` come from the user and must all be accepted; ``offered`` are facts keepbest
    knows (``input_shape``, ``num_classes``...) that a function may ask for by name.
    """
    check_kwargs(function, kwargs, where, offered=offered)
    parameters = _parameters(function)
    extra = {k: v for k, v in offered.items() if k in parameters and k not in kwargs}
    return function(**kwargs, **extra)


def _parameters(function: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins and C functions have no signature
        return {}


def check_kwargs(
    function: Callable,
    kwargs: Mapping[str, Any],
    where: str,
    offered: Collection[str] = (),
    name: str | None = None,
    open_ended: bool = True,
) -> None:
    """Every key of ``kwargs`` must be an argument of ``function``, and every required
    argument must be given (in ``kwargs`` or by name in ``offered``).

    ``open_ended=False`` checks keys even against a ``**kwargs`` signature (Keras
    optimizers take ``**kwargs`` but reject unknown names).
    """
    parameters = _parameters(function)
    if not parameters:
        return
    name = name or f"{getattr(function, '__name__', 'the function')}()"
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [n for n, p in parameters.items() if p.kind in named and n != "self"]
    problems = []
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not (var_keyword and open_ended):
        for key in kwargs:
            if key not in accepted:
                hint = did_you_mean(key, accepted) or f"; it takes {', '.join(accepted)}"
                problems.append(f"{where}.{key}: {name} has no argument {key!r}{hint}")
    for key in accepted:
        parameter = parameters[key]
        if (
            parameter.default is inspect.Parameter.empty
            and key not in kwargs
            and key not in offered
        ):
            problems.append(f"{where}: {name} needs argument {key!r}; set {where}.{key}")
    if problems:
        raise ConfigError(problems)
