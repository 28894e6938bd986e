"""Where a run's code came from: the config's folder and its ``module:function`` modules.

A config's ``data.factory`` and ``model.builder`` are imported from the config's folder
(or from the installed packages), and a factory or builder may ask for ``config_dir``, the
folder its relative paths start from. A run dir records both in ``code.json``: the config's
folder and the folder each referenced module was imported from, relative to the run dir
when they share a folder below the root (the first place looked, so a project moved as a
whole still works) and absolute (the second). ``RunDir.read_config`` applies the record
to the config it returns, so that ``keepbest evaluate``, ``predict`` and ``load_best``
find the factory and the builder where training found them, from any working directory.
When a module is not there any more, ``resolve_code`` says which module, where it looked,
and the fix. A module that came from the installed packages is recorded as such and
imported as usual. Imports no TensorFlow.

Example:

    >>> import json, tempfile, pathlib
    >>> from keepbest.config.code import code_json, CodeOrigin
    >>> from keepbest.config import load_config
    >>> cfg = load_config("configs/quickstart.yaml")
    >>> record = json.loads(code_json(cfg, cfg.run_dir()))
    >>> record["config_dir"]["relative"], record["modules"]
    ('../../configs', {})
    >>> origin = CodeOrigin.from_json(json.dumps(record), cfg.run_dir())
    >>> origin.config_dir == cfg.base_dir
    True
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keepbest.config import ExperimentConfig
from keepbest.config.references import resolve_reference
from keepbest.errors import ConfigError


def references(cfg: ExperimentConfig) -> dict[str, str]:
    """Every ``module:name`` the config names, by config key: ``data.factory``,
    ``model.builder``, ``loss``, ``metrics[i]``, ``optimizer.learning_rate``,
    ``train.callbacks[i]`` (a Keras object's ``class_name`` included)."""
    from keepbest.config.schema import is_reference, spec_name

    found = {"data.factory": getattr(cfg.data, "factory", None), "model.builder": None}
    if ":" in cfg.model.builder:
        found["model.builder"] = cfg.model.builder
    specs = {"loss": cfg.loss, "optimizer.learning_rate": cfg.optimizer.schedule()}
    specs.update({f"metrics[{i}]": spec for i, spec in enumerate(cfg.metrics)})
    specs.update({f"train.callbacks[{i}]": spec for i, spec in enumerate(cfg.train.callbacks)})
    for key, spec in specs.items():
        if spec is not None and is_reference(spec):
            found[key] = spec_name(spec)
    return {key: reference for key, reference in found.items() if reference}


def _place(folder: Path, run_dir: Path) -> dict[str, str]:
    """A folder as the record holds it: relative to the run dir, and absolute."""
    folder, run_dir = folder.resolve(), Path(run_dir).resolve()
    relative = None
    try:
        if Path(os.path.commonpath([folder, run_dir])) != Path(folder.anchor):
            relative = Path(os.path.relpath(folder, run_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        pass
    return {"relative": relative, "absolute": str(folder)}


def _import_root(module: str) -> Path | None:
    """The folder ``module``'s top-level package was imported from (the sys.path entry),
    or None if it is installed (site-packages, the standard library) or not imported."""
    top = sys.modules.get(module.partition(".")[0])
    if top is None:
        return None
    file = getattr(top, "__file__", None)
    if file:
        path = Path(file).resolve()
        root = path.parent.parent if path.stem == "__init__" else path.parent
    else:  # a namespace package
        folders = list(getattr(top, "__path__", []))
        if not folders:
            return None
        root = Path(folders[0]).resolve().parent
    installed = {"site-packages", "dist-packages"} & set(root.parts)
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    if installed or root == stdlib or stdlib in root.parents:
        return None
    return root


def code_json(cfg: ExperimentConfig, run_dir: Path) -> str:
    """``code.json`` for a run of ``cfg`` in ``run_dir``: the config's folder and the
    folder of each referenced module (``null``: installed), after training imported them."""
    modules = {}
    for key, reference in references(cfg).items():
        module = reference.partition(":")[0]
        root = _import_root(module)
        modules[key] = {"module": module, "folder": _place(root, run_dir) if root else None}
    record = {"config_dir": _place(cfg.base_dir, run_dir), "modules": modules}
    return json.dumps(record, indent=2) + "\n"


def _candidates(place: dict[str, Any] | None, run_dir: Path) -> list[Path]:
    if not place:
        return []
    found = []
    if place.get("relative"):
        found.append((Path(run_dir) / place["relative"]).resolve())
    if place.get("absolute"):
        found.append(Path(place["absolute"]))
    return list(dict.fromkeys(found))


def _holds(folder: Path, module: str) -> bool:
    top = module.partition(".")[0]
    return (folder / f"{top}.py").is_file() or (folder / top).is_dir()


@dataclasses.dataclass(frozen=True)
class CodeOrigin:
    """A run's ``code.json``, resolved against where the run dir is now."""

    config_dir: Path  # where the config's folder is now (or was, if it is gone)
    modules: dict[str, str]  # config key -> module name
    folders: dict[str, Path | None]  # config key -> the recorded folder that holds it now
    looked: dict[str, list[Path]]  # config key -> the recorded folders, in search order
    run_dir: Path

    @classmethod
    def from_json(cls, text: str, run_dir: Path) -> CodeOrigin:
        raw = json.loads(text)
        config_dirs = _candidates(raw.get("config_dir"), run_dir)
        existing = [folder for folder in config_dirs if folder.is_dir()]
        config_dir = (existing or config_dirs or [Path(run_dir)])[0]
        modules, folders, looked = {}, {}, {}
        for key, entry in (raw.get("modules") or {}).items():
            module = entry["module"]
            places = _candidates(entry.get("folder"), run_dir)
            modules[key], looked[key] = module, places
            folders[key] = next((p for p in places if _holds(p, module)), None)
        return cls(config_dir, modules, folders, looked, Path(run_dir))

    def missing(self, key: str) -> str:
        """The one line saying that ``key``'s module is not where training found it."""
        top = self.modules[key].partition(".")[0]
        where = ", ".join(str(p) for p in self.looked[key])
        return (
            f"{key}: no module named {top!r} where training imported it from (looked in "
            f"{where} and in the installed packages); put {top}.py back there, install it, "
            "or add its folder to PYTHONPATH"
        )


def apply_code_record(cfg: ExperimentConfig, run_dir: Path, text: str) -> None:
    """Make ``cfg`` (read from a run dir) look for its code where training found it."""
    try:
        origin = CodeOrigin.from_json(text, run_dir)
    except (ValueError, KeyError, TypeError, AttributeError):
        return  # a damaged record: the config's own rules (its folder) apply
    cfg._base_dir = origin.config_dir
    cfg._code_origin = origin


def resolve_code(cfg: ExperimentConfig, key: str, reference: str) -> Callable:
    """Import ``reference`` (the value of config key ``key``): from the config's folder,
    or, for a config read from a run dir, from where training found it."""
    origin: CodeOrigin | None = cfg._code_origin
    if origin is None or not origin.looked.get(key):  # a config file, or an installed module
        return resolve_reference(reference, key, cfg.base_dir)
    folder = origin.folders[key]
    if folder is None:  # not where training found it: PYTHONPATH or an install may have it
        try:
            importable = importlib.util.find_spec(origin.modules[key].partition(".")[0])
        except (ImportError, ValueError):
            importable = None
        if importable is None:
            raise ConfigError(origin.missing(key))
    return resolve_reference(reference, key, folder)
