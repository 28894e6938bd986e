"""Stop requests: a signal only sets a flag; training stops at the next safe point.

SIGTERM (Slurm's time limit, ``scontrol requeue``), SIGUSR1 (``#SBATCH --signal``) and
SIGINT (Ctrl-C) by default. The training loop finishes the current batch, writes a
resume state and exits with ``EXIT_STOPPED``. A second SIGINT is the escape hatch: it
raises ``KeyboardInterrupt`` at once (the resume state of the last epoch end stays valid).

Before training starts (imports, checks, loading TensorFlow: the first seconds of every
command) there is nothing to save: ``watch_start_up`` is installed first thing, by
``keepbest/__init__.py`` itself when the process is the command (``started_as_the_command``),
before any other keepbest module is imported, and a stop signal then ends the command with
one line and ``EXIT_STOPPED`` (``StartUpStop``), instead of the default death (exit 143)
or a traceback from inside an import. ``StopSignals`` ends that watch when training begins.
What remains unwatched is the interpreter's own start-up (about 20 ms: ``site`` and the
first lines of ``keepbest/__init__.py``), which no Python code can cover.

Example:

    >>> from keepbest.signals import StopSignals
    >>> with StopSignals(["SIGTERM", "SIGUSR1"]) as stop:   # doctest: +SKIP
    ...     while not stop.requested:
    ...         step()
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Literal

StopSignalName = Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP"]
DEFAULT_SIGNALS: tuple[StopSignalName, ...] = ("SIGTERM", "SIGINT", "SIGUSR1")


class StopRequested(Exception):
    """Raised inside the training loop once its state is saved, to leave ``fit``."""


class StartUpStop(BaseException):
    """A stop signal arrived while no training was under way (nothing to save). A
    ``BaseException``, as ``KeyboardInterrupt``: no ``except Exception`` swallows it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def started_as_the_command() -> bool:
    """Whether this process is ``keepbest`` or ``train`` (the console scripts, or
    ``python -m keepbest``), not a program that imports keepbest: only the command changes
    how the process takes signals, and from its first line. While ``python -m keepbest``
    imports the package, ``sys.argv[0]`` is ``-m`` and ``__main__`` is not yet keepbest's.

    >>> started_as_the_command()   # a doctest run is a program that imports keepbest
    False
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "keepbest.__main__":
        return True
    if sys.argv and sys.argv[0] == "-m":  # python -m <module>, still being located
        options = [*getattr(sys, "orig_argv", []), ""]
        for at, option in enumerate(options):
            if option.startswith("-m"):  # "-m keepbest" or "-mkeepbest"
                return (option[2:] or options[at + 1]) == "keepbest"
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("keepbest", "train")


_start_up: dict[signal.Signals, object] = {}  # signal -> the handler before the watch
_pending: list[str] = []
_raising = False


def _on_start_up(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _raising:
        raise StartUpStop(name)
    _pending.append(name)  # inside an import: raised once the command starts (arm)


def watch_start_up(names: Sequence[str] = DEFAULT_SIGNALS) -> None:
    """Stop signals end the process cleanly from now until training begins: first noted
    (while modules import), then, once ``arm`` is called, raised as ``StartUpStop``."""
    for name in names:
        sig = signal.Signals[name]
        try:
            previous = signal.signal(sig, _on_start_up)
        except ValueError:  # not the main thread
            return
        _start_up.setdefault(sig, previous)


def arm() -> None:
    """From now on a stop signal raises ``StartUpStop`` at once; one that came while
    modules were importing is raised now."""
    global _raising
    _raising = True
    if _pending:
        raise StartUpStop(_pending[0])


def end_start_up() -> None:
    """Training begins: the signals the watch caught get their former handlers back
    (``StopSignals`` installs its own on top)."""
    global _raising
    _raising = False
    for sig, previous in _start_up.items():
        try:
            if signal.getsignal(sig) is _on_start_up:
                signal.signal(sig, previous)
        except ValueError:  # not the main thread: the main thread's handlers stay
            return
    _start_up.clear()


class StopSignals:
    """Install flag-setting handlers for the named signals; restore the old ones on exit."""

    def __init__(self, names: Sequence[str] = DEFAULT_SIGNALS):
        self.signals = [signal.Signals[name] for name in names]
        self.received: list[str] = []
        self._previous: dict[signal.Signals, object] = {}

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and "SIGINT" in self.received:
            raise KeyboardInterrupt
        self.received.append(name)

    def __enter__(self) -> StopSignals:
        end_start_up()
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) is not signal.SIG_IGN:  # see ignore_from_now_on
                signal.signal(sig, handler)


def ignore_from_now_on(names: Sequence[str]) -> None:
    """This process is stopping, its state saved: ignore the named signals from now on,
    here and in the processes it starts (they inherit an ignored signal), so that a
    further one cannot cut the exit short. Slurm's requeue sends SIGTERM to every
    process of the job, the ``scontrol requeue`` that asked for it included, before that
    one has returned. ``StopSignals`` leaves an ignored signal ignored when it exits.
    SIGINT is never ignored: a second Ctrl-C still stops at once."""
    for name in names:
        if name != "SIGINT":
            try:
                signal.signal(signal.Signals[name], signal.SIG_IGN)
            except ValueError:  # not the main thread: nothing to install from here
                return
