"""Stop requests: a signal only sets a flag; training stops at the next safe point.

SIGTERM (Slurm's time limit, ``scontrol requeue``), SIGUSR1 (``#SBATCH --signal``) and
SIGINT (Ctrl-C) by default. The training loop finishes the current batch, writes a
resume state and exits with ``EXIT_STOPPED``. A second SIGINT is the escape hatch: it
raises ``KeyboardInterrupt`` at once (the resume state of the last epoch end stays valid).

Example:

    >>> from keepbest.signals import StopSignals
    >>> with StopSignals(["SIGTERM", "SIGUSR1"]) as stop:   # doctest: +SKIP
    ...     while not stop.requested:
    ...         step()
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from typing import Literal

StopSignalName = Literal["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2", "SIGHUP"]
DEFAULT_SIGNALS: tuple[StopSignalName, ...] = ("SIGTERM", "SIGINT", "SIGUSR1")


class StopRequested(Exception):
    """Raised inside the training loop once its state is saved, to leave ``fit``."""


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
