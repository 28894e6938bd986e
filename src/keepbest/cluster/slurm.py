"""What keepbest does differently inside a Slurm job: requeue itself after a stop.

Slurm sends SIGUSR1 (``#SBATCH --signal=B:USR1@120``) or SIGTERM (time limit, ``scontrol
requeue``) before it kills a job. keepbest saves its resume state, then asks Slurm to put
the job back in the queue; the requeued job runs the same command, which resumes.

Example:

    >>> from keepbest.cluster.slurm import job_id, requeue_self
    >>> if job_id():                      # doctest: +SKIP
    ...     print(requeue_self())
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from keepbest.signals import ignore_from_now_on


def job_id(environ: Mapping[str, str] = os.environ) -> str | None:
    """This job as ``scontrol requeue`` names exactly it, or None outside Slurm: an array
    task as ``ARRAYJOB_TASK``. (Its bare ``SLURM_JOB_ID`` is, for one task of each array,
    the array's own id, and requeueing that requeues every task of the array.)"""
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return environ.get("SLURM_JOB_ID")


def should_requeue(setting: bool | str) -> bool:
    return job_id() is not None if setting == "auto" else bool(setting)


def requeue_self() -> str:
    """Ask Slurm to requeue this job; returns a sentence saying what happened.

    Called once the resume state is saved: the requeue SIGTERMs every process of the job,
    so this one and its ``scontrol`` ignore SIGTERM from here on (else scontrol dies before
    it can say that the requeue worked, and keepbest before it has said what it did)."""
    job = job_id()
    if job is None:
        return "not requeued: SLURM_JOB_ID is not set"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return f"not requeued: scontrol is not on PATH (job {job})"
    ignore_from_now_on(["SIGTERM"])
    done = subprocess.run(
        [scontrol, "requeue", job], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        return f"requeue of job {job} failed: {done.stderr.strip() or done.returncode}"
    return f"requeued Slurm job {job}; it will resume when it runs again"
