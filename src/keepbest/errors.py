"""keepbest's errors: each one is a single line that names the problem and the fix.

The CLI prints ``error: <message>`` and exits with the error's ``exit_code``; Python
callers catch ``KeepbestError`` (or a subclass) and read the same message. One class per
exit code, and a few subclasses that say which input was bad:

- ``InputError`` (2): bad input of any kind, found before any work is done; its
  subclasses ``ConfigError`` (the config file or ``--set``), ``DataError`` (data files and
  factories) and ``MonitorError`` (a monitor the run does not log).
- ``WriteError`` (6): the operating system refused a write (no space, read-only, file too
  large, ...); its subclass ``CheckpointWriteError`` is a failed best or resume save.

Example:

    >>> from keepbest.errors import ConfigError, InputError
    >>> error = ConfigError(["exp.yaml: train.epochs: ...", "exp.yaml: seed: ..."])
    >>> isinstance(error, InputError), error.exit_code, len(error.problems)
    (True, 2, 2)
"""

from __future__ import annotations

import re

# Exit codes of `train` and `keepbest ...`, documented in docs/exit-codes.md.
EXIT_OK = 0
EXIT_UNEXPECTED = 1  # anything keepbest has no name for (a bug, or a fault in user code)
EXIT_BAD_INPUT = 2  # config, CLI arguments, data files: nothing was done
EXIT_VERIFICATION_FAILED = 3  # the reloaded best did not reproduce its recorded value
EXIT_NO_BEST = 4  # training ended without any evaluation qualifying as best
EXIT_RUN_BUSY = 5  # another process holds the run directory
EXIT_WRITE_FAILED = 6  # a save failed; everything saved before it is intact
EXIT_CORRUPT = 7  # a file on disk does not match its recorded checksum
EXIT_WORKER_LOST = 8  # a worker of a multi-worker run stopped answering; the others stopped
EXIT_STOPPED = 75  # stopped by a signal after saving a resume state (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped at once


class KeepbestError(Exception):
    """Base class: a one-line, user-facing message plus the process exit code.

    Raised as such (exit 1) for problems that have no better class: a model that cannot
    be deserialized, a custom layer whose module is not imported."""

    exit_code = EXIT_UNEXPECTED


class InputError(KeepbestError):
    """Bad input (CLI arguments, config, data); raised before any work is done.

    Holds one line per problem, so that every problem is reported at once."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ConfigError(InputError):
    """A problem in the config (its file, or a ``--set`` override)."""


class DataError(InputError):
    """Data that cannot be used as configured (unreadable file, wrong column, ...)."""


class MonitorError(ConfigError):
    """The monitored metric is not produced by this run."""


class VerificationError(KeepbestError):
    """The best checkpoint, reloaded from disk, did not reproduce its recorded value."""

    exit_code = EXIT_VERIFICATION_FAILED


class NoBestError(KeepbestError):
    """No evaluation qualified as best (all non-finite, or none beat the baseline), or a
    run directory holds no best checkpoint (yet)."""

    exit_code = EXIT_NO_BEST


class RunBusyError(KeepbestError):
    """Another live process is training in the same run directory."""

    exit_code = EXIT_RUN_BUSY


class WriteError(KeepbestError):
    """A write failed (the message names the path and the cause); what was saved before
    it is intact and no temporary file is left behind."""

    exit_code = EXIT_WRITE_FAILED


class CheckpointWriteError(WriteError):
    """Saving the best checkpoint or a resume state failed; the previous best and resume
    state were left untouched."""


class CorruptFileError(KeepbestError):
    """A checkpoint or state file does not match the checksum recorded for it."""

    exit_code = EXIT_CORRUPT


class WorkerLostError(KeepbestError):
    """A worker of a multi-worker run died or stopped answering; the others stopped too.
    Requeue (or rerun) the job: every worker resumes from the last resume state."""

    exit_code = EXIT_WORKER_LOST


class NoBestCheckpointError(NoBestError):
    """A run directory holds no best checkpoint (yet)."""


class StoppedForResume(KeepbestError):
    """Training stopped on request after saving a resume state; run again to continue."""

    exit_code = EXIT_STOPPED


_TF_NOISE = re.compile(
    r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[^\]]*\]|\[\[\{\{node [^}]*\}\}\]\]"
)
_NOT_THE_PROBLEM = (
    "Graph execution error",
    "Detected at node",
    "File ",
    "Traceback",
    "Exception encountered",
)


def one_line(exc: BaseException) -> str:
    r"""The line of an error's message that says what is wrong: for TensorFlow and Keras
    errors, without the graph annotations (``{{function_node ...}}``, ``[Op:...]``), the
    stack they quote and Keras' list of the call's arguments.

    >>> one_line(ValueError("Exception encountered when calling Dense.call().\n\n"
    ...                     "Input has the wrong shape\n\nArguments received by Dense.call():"))
    'Input has the wrong shape'
    """
    message = getattr(exc, "message", None)
    message = message if isinstance(message, str) else str(exc)
    message = message.split("Arguments received by", 1)[0]
    lines = [_TF_NOISE.sub("", line).strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not line.startswith(_NOT_THE_PROBLEM)]
    text = useful[0] if useful else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
