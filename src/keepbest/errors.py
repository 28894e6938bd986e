"""keepbest's errors: each one is a single line that names the problem and the fix.

The CLI prints ``error: <message>`` and exits with the error's ``exit_code``; Python
callers catch ``KeepbestError`` (or a subclass) and read the same message.
"""

from __future__ import annotations

# Exit codes of `train` and `keepbest ...`, documented in the README.
EXIT_OK = 0
EXIT_BAD_INPUT = 2  # config, CLI arguments, data files: nothing was done
EXIT_VERIFICATION_FAILED = 3  # the reloaded best did not reproduce its recorded value
EXIT_NO_BEST = 4  # training ended without any epoch qualifying as best
EXIT_RUN_BUSY = 5  # another process holds the run directory
EXIT_WRITE_FAILED = 6  # a save failed; everything saved before it is intact
EXIT_CORRUPT = 7  # a file on disk does not match its recorded checksum
EXIT_STOPPED = 75  # stopped by a signal after saving a resume state (EX_TEMPFAIL)


class KeepbestError(Exception):
    """Base class: a one-line, user-facing message plus the process exit code."""

    exit_code = 1


class ConfigError(KeepbestError):
    """Bad configuration or arguments; raised before any work is done."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(ConfigError):
    """Data that cannot be used as configured (unreadable file, wrong column, ...)."""


class MonitorError(ConfigError):
    """The monitored metric is not produced by this run."""


class VerificationError(KeepbestError):
    """The best checkpoint, reloaded from disk, did not reproduce its recorded value."""

    exit_code = EXIT_VERIFICATION_FAILED


class NoBestError(KeepbestError):
    """No epoch qualified as best (all non-finite, or none beat the baseline)."""

    exit_code = EXIT_NO_BEST


class RunBusyError(KeepbestError):
    """Another live process is training in the same run directory."""

    exit_code = EXIT_RUN_BUSY


class CheckpointWriteError(KeepbestError):
    """A write failed; the previous best and resume state were left untouched."""

    exit_code = EXIT_WRITE_FAILED


class CorruptFileError(KeepbestError):
    """A checkpoint or state file does not match the checksum recorded for it."""

    exit_code = EXIT_CORRUPT


class NoBestCheckpointError(KeepbestError):
    """A run directory holds no best checkpoint (yet)."""

    exit_code = EXIT_NO_BEST


class StoppedForResume(KeepbestError):
    """Training stopped on request after saving a resume state; run again to continue."""

    exit_code = EXIT_STOPPED
