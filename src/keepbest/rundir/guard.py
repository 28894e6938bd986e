"""Where a command may write: the overwrite rule, decided here and only here.

Every command that writes a path the user names asks this module before any work is
done: ``export --out``, ``predict --output`` and ``plot --out`` (``check_output``),
``train``'s run dir and a sweep's runs (``check_run_dir``), ``tune``'s study folder
(``check_study_dir``). The rule:

- a run dir, any path inside one, and a folder that holds one are never written over,
  not even with ``--overwrite`` (a command's own file in a run dir excepted: ``plot``'s
  ``curves.png``); a new run or study may live inside a run dir (a sweep's runs do), but
  never under a name the run dir uses (``resume``, ``history.csv``, ...);
- nor is an input of the command (``predict --input``, the run's training files);
- nor is a folder where a file goes, nor a folder that is not the command's own kind of
  output (``export --format savedmodel`` replaces only a SavedModel);
- anything else that exists is replaced only with ``--overwrite``;
- the folder the output goes into must exist and take writes.

Every path a command is given, to read or to write, is first checked to be usable at
all (``check_path``): its name is text (UTF-8), no part of it is longer than the file
system's ``NAME_MAX`` and the whole is shorter than its ``PATH_MAX``, each refusal naming
the option or config key. An input (``check_input``) must also be a regular file or a
folder, as the command expects, before it is opened: a named pipe, a socket or a device
would block or never end. A folder a command makes and then cannot use is removed again
(``made_folder``): a refused command leaves nothing behind.

``train --restart --overwrite`` deletes the old run only if its folder holds nothing but
that run's own files. A refusal is an ``InputError`` (exit 2) naming the path and the way
out; a folder the operating system will not let us write to (read-only, no permission) is
a ``WriteError`` (exit 6), also before any work is done. Imports no TensorFlow.

Example:

    >>> import pathlib, tempfile
    >>> from keepbest.errors import InputError
    >>> from keepbest.rundir.guard import check_output
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "run").mkdir()
    >>> _ = (folder / "run" / "data_spec.json").write_text("{}")
    >>> check_output(folder / "p.csv", "--output").name
    'p.csv'
    >>> try:
    ...     check_output(folder / "run" / "history.csv", "--output", overwrite=True)
    ... except InputError as exc:
    ...     print(str(exc).split(";")[0].replace(str(folder), "FOLDER"))
    --output: FOLDER/run/history.csv is inside the run dir FOLDER/run
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from keepbest.atomic import TEMP_PREFIX
from keepbest.errors import CorruptFileError, InputError, WriteError
from keepbest.rundir.layout import RunDir

_NEVER = "keepbest never replaces a run dir or a file inside one, not even with --overwrite"
_SHOWN = 5  # names listed in a message


def _absolute(path: str | Path) -> Path:
    return Path(os.path.abspath(path))


# The limits when the file system does not say (Linux's).
_NAME_MAX, _PATH_MAX = 255, 4096
_CLIPPED = 60  # characters of an overlong name shown in a message


def _clip(text: str) -> str:
    return text if len(text) <= _CLIPPED else f"{text[: _CLIPPED - 3]}..."


def _limit(path: Path, name: str, default: int) -> int:
    """The file system's ``pathconf`` limit where ``path`` would be."""
    for candidate in (path, *path.parents):
        try:
            return os.pathconf(candidate, name)
        except (OSError, ValueError):
            continue
    return default


def printable(path: str | Path) -> str:
    """``path`` as text that can be printed: bytes that are not UTF-8 as ``\\xff``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def check_path(path: str | Path, where: str) -> Path:
    """``InputError`` naming ``where`` (an option or a config key) unless ``path`` can be
    named at all: its name is UTF-8, no part is longer than ``NAME_MAX`` bytes, the whole
    shorter than ``PATH_MAX``. Returns ``path`` as a ``Path``. Reads nothing but limits."""
    given = Path(path)
    raw = os.fsencode(str(given))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"{where}: the name '{printable(given)}' is not UTF-8 text; keepbest names its "
            "files and messages in UTF-8: rename it"
        ) from None
    absolute = _absolute(given)
    name_max = _limit(absolute.parent, "PC_NAME_MAX", _NAME_MAX)
    for part in given.parts:
        size = len(os.fsencode(part))
        if size > name_max:
            raise InputError(
                f"{where}: the name {_clip(part)!r} is {size} bytes long, but the file system "
                f"takes at most {name_max} (NAME_MAX): choose a shorter one"
            )
    size = len(os.fsencode(str(absolute)))
    path_max = _limit(absolute.parent, "PC_PATH_MAX", _PATH_MAX)
    if size >= path_max:
        raise InputError(
            f"{where}: the path {_clip(str(given))!r} is {size} bytes long (as an absolute "
            f"path), but the file system takes fewer than {path_max} (PATH_MAX): choose a "
            "shorter one"
        )
    return given


_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def check_input(path: str | Path, where: str, *, file: bool = True, folder: bool = False) -> Path:
    """``InputError`` naming ``where`` unless ``path`` can be named (``check_path``) and is
    a regular file (``file``) or a folder (``folder``), links followed; checked before it
    is opened, so that a named pipe or a device never blocks a command. Returns it."""
    given = check_path(path, where)
    try:
        mode = os.stat(given).st_mode
    except FileNotFoundError:
        raise InputError(f"{where}: {shown(given)} does not exist") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read {shown(given)} ({exc.strerror})") from None
    wanted = " or ".join(
        what for what, ok in (("a regular file", file), ("a folder", folder)) if ok
    )
    if (stat.S_ISREG(mode) and file) or (stat.S_ISDIR(mode) and folder):
        return given
    special = _KINDS.get(stat.S_IFMT(mode))
    kind = special or ("a folder" if stat.S_ISDIR(mode) else "a file")
    why = " (keepbest opens no pipe, socket or device: reading one could block)" if special else ""
    raise InputError(f"{where}: {shown(given)} is {kind}, not {wanted}; give {wanted}{why}")


@contextlib.contextmanager
def made_folder(folder: str | Path) -> Iterator[Path]:
    """Make ``folder`` (and its missing parents) for what the block writes there; if the
    block fails, remove again the folders it made that are still empty."""
    folder = _absolute(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for made in missing:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
        raise


def enclosing_run(path: str | Path) -> Path | None:
    """The run dir that is ``path`` or holds it (at any depth), or None."""
    path = _absolute(path)
    for candidate in (path, *path.parents):
        if RunDir(candidate).looks_like_run():
            return candidate
    return None


def run_below(folder: Path) -> Path | None:
    """A run dir at any depth below ``folder`` (or ``folder`` itself), or None."""
    for root, dirs, _ in os.walk(folder):
        if RunDir(root).looks_like_run():
            return Path(root)
        dirs.sort()
    return None


def shown(path: Path) -> str:
    """``path`` as the user would write it: relative to the working directory when it is
    below it."""
    try:
        return printable(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return printable(path)


def _names(paths: Iterable[Path]) -> str:
    names = sorted(path.name for path in paths)
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_writable(folder: Path, target: Path) -> None:
    """``WriteError`` unless files can be created in ``folder`` (an existing folder)."""
    if os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    cause = os.strerror(errno.EROFS if read_only else errno.EACCES)
    raise WriteError(
        f"cannot write {shown(target)}: {cause} ({shown(folder)}); nothing was written"
    )


def check_output(
    path: str | Path,
    where: str,
    *,
    overwrite: bool = False,
    folder: bool = False,
    own: str | Path | None = None,
    inputs: Sequence[str | Path] = (),
    replaceable: tuple[str, Callable[[Path], bool]] | None = None,
) -> Path:
    """Whether a command may write its output (a file, or a ``folder``) at ``path``;
    returns ``path`` or raises (see the module docstring).

    ``where`` is the option that named it (``--out``); ``own`` a path in a run dir that is
    the command's own output (``plot``'s default); ``inputs`` paths it must never replace;
    ``replaceable`` = (what, test): an existing folder is replaced (with ``overwrite``) only
    if ``test(folder)`` says it is ``what`` (e.g. "a SavedModel").
    """
    target = check_path(path, where)
    absolute, resolved = _absolute(target), target.resolve()
    is_own = own is not None and {absolute, resolved} & {_absolute(own), Path(own).resolve()}
    for given in inputs:
        if _same(target, Path(given)):
            raise InputError(
                f"{where}: {target} is the input {given}; write the output to another file"
            )
    if not is_own:
        for candidate in dict.fromkeys((absolute, resolved)):
            run = enclosing_run(candidate)
            if run == candidate:
                raise InputError(f"{where}: {target} is a run dir; {_NEVER}: choose another path")
            if run is not None:
                raise InputError(
                    f"{where}: {target} is inside the run dir {shown(run)}; {_NEVER}: "
                    "choose a path outside it"
                )
    if target.is_dir():
        if not folder:
            raise InputError(f"{where}: {target} is a folder; give a file name")
        held = run_below(target)
        if held is not None:
            raise InputError(
                f"{where}: {target} holds the run dir {held}; {_NEVER}: choose another path"
            )
        if not overwrite:
            raise InputError(f"{where}: {target} exists; choose another path, or pass --overwrite")
        if replaceable is not None and not replaceable[1](target):
            raise InputError(
                f"{where}: {target} is a folder but not {replaceable[0]}; keepbest replaces only "
                "its own kind of output: choose another path, or remove it yourself"
            )
    elif (target.exists() or target.is_symlink()) and not is_own and not overwrite:
        raise InputError(f"{where}: {target} exists; choose another path, or pass --overwrite")
    parent = absolute.parent
    if not parent.is_dir():
        if parent.exists():
            raise InputError(f"{where}: {target.parent} is a file, not a folder")
        raise InputError(f"{where}: the folder {target.parent} does not exist")
    check_writable(parent, target)
    return target


def _check_placement(path: Path, what: str) -> None:
    """A new run or study folder at ``path``: no file where a folder of its path goes, and
    inside a run dir not under a name that run uses."""
    absolute = _absolute(path)
    for ancestor in reversed(absolute.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise InputError(
                f"{shown(ancestor)} is a file, not a folder, so the {what} {shown(path)} cannot "
                "be made there: choose another output_dir"
            )
    holder = enclosing_run(absolute.parent)
    if holder is not None:
        part = absolute.relative_to(holder).parts[0]
        if RunDir.owns(part):
            raise InputError(
                f"the {what} {shown(path)} would be {shown(holder / part)}, which belongs to "
                f"the run dir {shown(holder)}; {_NEVER}: choose another name or output_dir"
            )


def _nearest_existing(path: Path) -> Path:
    absolute = _absolute(path)
    for candidate in (absolute, *absolute.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_run_path(path: str | Path) -> Path:
    """A run dir's path can be named (``check_path``): its own name (the config's
    ``name``), then the whole (``output_dir``). Returns it as a ``Path``."""
    run = Path(path)
    check_path(run.name, "name")
    check_path(run, "output_dir")
    return run


def check_run_dir(
    path: str | Path, restart: bool = False, overwrite: bool = False, writes: bool = True
) -> None:
    """Whether ``train`` (or a sweep's run) may train in ``path``: a new folder, an empty
    one, its own run dir (to resume), or a folder holding only runs (a sweep's); with
    ``restart`` and ``overwrite`` only a folder holding nothing but the old run."""
    run = check_run_path(path)
    _check_placement(run, "run dir")
    if run.exists() and not run.is_dir():
        raise InputError(
            f"{shown(run)} is a file, not a run dir: choose another name or output_dir, or move "
            "the file away"
        )
    if run.is_dir():
        layout = RunDir(run)
        entries = [entry for entry in run.iterdir() if not entry.name.startswith(TEMP_PREFIX)]
        if layout.looks_like_run():
            foreign = [entry for entry in entries if not RunDir.owns(entry.name)]
            damaged = layout.resume_dir.exists() and not layout.resume_dir.is_dir()
            if damaged and not restart:
                raise CorruptFileError(
                    f"{shown(layout.resume_dir)} is not a folder, so the run's resume states are "
                    "gone; restore the run dir from a backup, or start over with --restart"
                )
        else:
            foreign = entries
            others = [
                entry
                for entry in entries
                if not (RunDir(entry).looks_like_run() or RunDir.is_set_aside(entry))
            ]
            if others and not restart:
                raise InputError(
                    f"{shown(run)} exists and is not a keepbest run dir (it holds "
                    f"{_names(others)}); choose another name or output_dir, or move it away"
                )
        if restart and overwrite and foreign:
            raise InputError(
                f"{shown(run)} also holds {_names(foreign)}, which --overwrite would delete with "
                "the run: move them away first, or --restart without --overwrite (which "
                "renames the old run aside)"
            )
    if not writes:  # a worker that only reads the chief's files
        return
    existing = _nearest_existing(run)
    check_writable(existing, run)
    if restart and run.exists():
        check_writable(_absolute(run).parent, run)


def check_study_dir(path: str | Path, markers: Sequence[str], writes: bool = True) -> None:
    """Whether ``tune`` may keep a study in ``path``: a new or empty folder, a study's
    folder (holding one of ``markers``), or one holding only runs; never a run dir.
    ``writes=False``: only to read it (``--best``), so it need not take writes."""
    study = Path(path)
    check_path(study.name, "--study")
    check_path(study, "output_dir")
    _check_placement(study, "study folder")
    if RunDir(study).looks_like_run():
        raise InputError(
            f"--study: {shown(study)} is the run dir of a single run; give the study another name "
            "with --study"
        )
    if study.exists() and not study.is_dir():
        raise InputError(f"--study: {shown(study)} is a file, not a folder")
    if study.is_dir() and not any((study / marker).exists() for marker in markers):
        others = [
            entry
            for entry in study.iterdir()
            if not (entry.name.startswith(TEMP_PREFIX) or RunDir(entry).looks_like_run())
        ]
        if others:
            raise InputError(
                f"--study: {shown(study)} exists and is not a study's folder (it holds "
                f"{_names(others)}); give another --study, or move it away"
            )
    if writes:
        check_writable(_nearest_existing(study), study)
