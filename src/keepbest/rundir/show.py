"""``keepbest show``: one run dir at a glance, from its small files, without TensorFlow.

What was trained (the config's highlights), what the model takes and answers (the raw
inputs, their preprocessing and the classes, from ``data_spec.json``), how it stands
(``keepbest.rundir.status``), the best epoch with its recorded and verified values, how
many attempts trained it and how many of them died without progress (when it took more
than one: ``rundir.resume_store.AttemptLog``), and every file with its size.

Example:

    >>> from keepbest.rundir.show import describe_run
    >>> print(describe_run("runs/digits-mlp").text())     # doctest: +SKIP
    run       runs/digits-mlp
    status    done: stopped early after epoch 27 of 30 (patience)
    ...
    >>> attempts_text(7, 5)
    '7; 5 died without progress (no newer resume state)'
    >>> attempts_text(1, 0) is None
    True
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from keepbest.config import ExperimentConfig
from keepbest.config.schema import SCRIPT, BundledData, PythonData, names_text, spec_text
from keepbest.data.spec import DataSpec, shape_text
from keepbest.errors import KeepbestError
from keepbest.rundir.layout import KEPT_DIR, RunDir
from keepbest.rundir.record import average_text
from keepbest.rundir.resume_store import StateManifest, read_attempts
from keepbest.rundir.status import RunStatus, run_status


@dataclasses.dataclass(frozen=True)
class RunOverview:
    path: Path
    status: RunStatus
    highlights: dict[str, str]  # "data", "model", ... -> one line each
    files: dict[str, int]  # name (folders end in "/") -> bytes, a folder's files summed
    by_steps: bool = False  # evaluated every N steps (checkpoint.every_steps)
    now: datetime | None = None  # when the overview was made (states' ages count from it)
    # (attempts that trained the run, how many died without progress); None: no record
    attempts: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        record = self.status.record
        return {
            "run_dir": str(self.path),
            "status": self.status.state,
            "detail": self.status.detail,
            "epochs_done": self.status.epochs_done,
            "epochs_planned": self.status.epochs_planned,
            "best": record.model_dump() if record else None,
            "resume_state": (
                {
                    "step": self.status.newest_state.global_step,
                    "progress": self.status.newest_state.progress.model_dump(),
                    "saved_at": self.status.newest_state.saved_at,
                }
                if self.status.newest_state is not None
                else None
            ),
            "attempts": (
                {"count": self.attempts[0], "died_without_progress": self.attempts[1]}
                if self.attempts is not None
                else None
            ),
            "config": self.highlights,
            "files": self.files,
        }

    def text(self) -> str:
        status, record = self.status, self.status.record
        lines = [("run", str(self.path)), ("status", f"{status.state}: {status.detail}")]
        if record is not None:
            where = f"epoch {record.epoch}"
            if self.by_steps and record.step is not None:
                where = f"step {record.step} (epoch {record.epoch})"
            best = f"{record.monitor} = {record.value:.8g} at {where}"
            lines.append(("best", f"{best} ({record.mode}), saved {record.saved_at}"))
            verified = (
                "not yet (verified when training ends)"
                if status.state == "running"
                else "not yet (train again to verify)"
            )
            if record.verified_value is not None:
                diff = record.verified_value - record.value
                how = "exact" if diff == 0 else f"diff {diff:+.3g}"
                verified = f"{record.verified_value:.8g} after reload ({how}), {record.verified_at}"
            lines.append(("verified", verified))
            if record.top:
                ranked = ", ".join(f"{k.value:.6g} @ step {k.step}" for k in record.top)
                lines.append(("kept", f"top {len(record.top)}: {ranked} ({KEPT_DIR}/)"))
            if record.average is not None:
                lines.append(("average", average_text(record)))
        if status.newest_state is not None:
            lines.append(("resume", state_line(status.newest_state, self.now)))
        attempts = attempts_text(*self.attempts) if self.attempts else None
        if attempts is not None:
            lines.append(("attempts", attempts))
        lines += [(key, value) for key, value in self.highlights.items()]
        name_width = max((len(name) for name in self.files), default=0)
        lines += [
            ("files" if i == 0 else "", f"{name.ljust(name_width)}  {_size(size).rjust(9)}")
            for i, (name, size) in enumerate(self.files.items())
        ]
        width = max(len(key) for key, _ in lines)
        return "\n".join(f"{key.ljust(width)}  {value}" for key, value in lines)


def state_line(state: StateManifest, now: datetime | None = None) -> str:
    """Where the newest resume state is and how old it is: what a kill would cost now."""
    progress = state.progress
    where = (
        f"epoch {progress.epoch + 1}, batch {progress.batch}"
        if progress.batch
        else (f"after epoch {progress.epoch}")
    )
    line = f"newest state at step {state.global_step} ({where})"
    if state.saved_at:
        line += f", written {state.saved_at}"
        now = now or datetime.now(timezone.utc)
        with contextlib.suppress(ValueError):
            age = (now - datetime.fromisoformat(state.saved_at)).total_seconds()
            line += f" ({_age(age)} ago)"
    return line


def attempts_text(count: int, without_progress: int) -> str | None:
    """The attempts line, or None when there is nothing to say (one attempt)."""
    if count <= 1 and not without_progress:
        return None
    if not without_progress:
        return str(count)
    return f"{count}; {without_progress} died without progress (no newer resume state)"


def replay_text(step: int) -> str:
    """What resuming a run whose data is a factory's tf.data.Dataset costs.

    >>> replay_text(500)[:59]
    "a resume reads 500 batches of the factory's tf.data.Dataset"
    """
    return (
        f"a resume reads {step} batches of the factory's tf.data.Dataset again to reach step "
        f"{step} (a random-access source, e.g. a Grain MapDataset, resumes by index)"
    )


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def describe_run(run_dir: str | Path) -> RunOverview:
    run = RunDir(run_dir)
    status = run_status(run.path)
    by_steps = False
    try:
        cfg = run.read_config() if run.has_run() else None
        highlights = config_highlights(cfg) if cfg else {}
        by_steps = cfg is not None and cfg.checkpoint.every_steps is not None
    except KeepbestError:
        highlights = {}  # the status already names the problem
    if run.has_run():
        try:
            spec = run.read_spec()
            highlights.update(spec_highlights(spec))
            if spec.replays_on_resume and status.newest_state is not None:
                highlights["replay"] = replay_text(status.newest_state.global_step)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            highlights["inputs"] = f"{run.spec_file.name} cannot be read"
    now = datetime.now(timezone.utc)
    files = _files(run.path)
    return RunOverview(run.path, status, highlights, files, by_steps, now, _attempts(run, status))


def _attempts(run: RunDir, status: RunStatus) -> tuple[int, int] | None:
    """(attempts, died without progress) from the run's record of attempts, if any."""
    if not run.attempts_file.is_file():
        return None
    newest = status.newest_state.global_step if status.newest_state is not None else 0
    return read_attempts(run.path).counts(newest, running=status.state == "running")


def spec_highlights(spec: DataSpec) -> dict[str, str]:
    """The model's raw inputs (shape, dtype, range, preprocessing) and its classes."""
    inputs = shape_text(spec.raw_shape)
    if spec.raw_dtype:
        inputs += f" {spec.raw_dtype}"
    if spec.raw_range:
        inputs += f", {spec.raw_range[0]:g}..{spec.raw_range[1]:g}"
    if spec.preprocessing is not None and not spec.preprocessing.is_identity:
        inputs += f"; preprocessing: {spec.preprocessing.describe()}"
    lines = {"inputs": inputs}
    if spec.class_names:
        names = ", ".join(spec.class_names)
        lines["classes"] = names if len(names) <= 70 else names[:69] + "…"
        lines["classes"] += f" ({len(spec.class_names)})"
    elif spec.num_classes:
        lines["classes"] = f"{spec.num_classes}, by id (0 to {spec.num_classes - 1})"
    return lines


def config_highlights(cfg: ExperimentConfig) -> dict[str, str]:
    """What distinguishes one run from another, one short line per section."""
    data = cfg.data
    script = data.source == SCRIPT
    if isinstance(data, PythonData):
        data_line = f"python {data.factory}"
    elif isinstance(data, BundledData):
        data_line = data.source
    elif script:
        data_line = "objects given in Python (a script's fit, or train(data=...))"
    else:
        data_line = f"{data.source} {data.files_text()}"
    validation = data.validation
    if validation is not None:
        split = f"split {validation.split}" if validation.split else names_text(validation.path)
        data_line += f", validation {split}"
    if not script:
        data_line += f", batch {data.batch_size}, seed {cfg.seed}"
    kwargs = ", ".join(f"{key}={value}" for key, value in cfg.model.kwargs.items())
    settings = cfg.optimizer.kwargs()
    if cfg.optimizer.name == SCRIPT:  # a script's optimizer: its class and Keras config
        settings = {k: v for k, v in settings.get("config", {}).items() if v is not None}
        settings = {"class": cfg.optimizer.model_extra.get("class"), **settings}
    optimizer = ", ".join(f"{key}={spec_text(value)}" for key, value in settings.items())
    ck = cfg.checkpoint
    patience = f", patience {ck.patience}" if ck.patience else ""
    if ck.every_steps is not None:
        patience = f", evaluated every {ck.every_steps} steps" + patience
    steps = f" x {cfg.train.steps_per_epoch} steps" if cfg.train.steps_per_epoch else ""
    return {
        "data": data_line,
        "model": f"{cfg.model.builder}({kwargs})"
        if cfg.model.builder != SCRIPT
        else "given in Python (model.json)",
        "optimizer": f"{cfg.optimizer.name}({optimizer})",
        "loss": spec_text(cfg.loss)
        + (f"; metrics {', '.join(map(spec_text, cfg.metrics))}" if cfg.metrics else ""),
        "training": f"{cfg.train.epochs} epochs{steps}; monitor {ck.monitor} ({ck.mode}){patience}"
        + _training_extras(cfg),
    }


def _files(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    files = {}
    for item in sorted(folder.iterdir()):
        if item.name.startswith("."):
            continue  # the lock file, and temporaries of an interrupted write
        if item.is_dir():
            files[f"{item.name}/"] = sum(p.stat().st_size for p in item.rglob("*") if p.is_file())
        else:
            files[item.name] = item.stat().st_size
    return files


def _size(size: float) -> str:
    if size < 1024:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _training_extras(cfg: ExperimentConfig) -> str:
    """What else shapes the training: class weights, precision, the user's callbacks."""
    extras = []
    if cfg.train.class_weight is not None:
        weights = cfg.train.class_weight
        shown = (
            weights
            if isinstance(weights, str)
            else ", ".join(f"{k}: {v:g}" for k, v in weights.items())
        )
        extras.append(f"class weights {shown}")
    if cfg.train.mixed_precision:
        extras.append(cfg.train.mixed_precision)
    if cfg.train.callbacks:
        extras.append("callbacks " + ", ".join(map(spec_text, cfg.train.callbacks)))
    return "".join(f"; {extra}" for extra in extras)
