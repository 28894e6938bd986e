"""Stop signals, for real (no TensorFlow): once a process says it is stopping, a further
SIGTERM -- Slurm's requeue sends one to every process of the job, the ``scontrol
requeue`` that asked for it included -- neither kills it nor the processes it starts."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    from keepbest.signals import StopSignals, ignore_from_now_on

    with StopSignals(["SIGTERM", "SIGINT"]) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.received == ["SIGTERM"], stop.received
        ignore_from_now_on(["SIGTERM", "SIGINT"])
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(1)"],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout.readline() == "up\\n"
        child.send_signal(signal.SIGTERM)
        print("child", child.wait(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # after the with block too
    time.sleep(0.05)
    print("SIGINT", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """
)


def test_a_stopping_process_and_its_children_outlive_a_further_sigterm():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # the child exited by itself (0), not by SIGTERM (-15); SIGINT was not ignored
    assert done.stdout.split("\n")[:2] == ["child 0", "SIGINT True"], done.stdout


def test_without_it_the_child_dies_of_the_sigterm():
    """The control: the same child, not told to ignore, is killed (so the test above can
    fail)."""
    script = SCRIPT.replace('ignore_from_now_on(["SIGTERM", "SIGINT"])', "pass")
    script = script.split("os.kill(os.getpid(), signal.SIGTERM)  # after")[0]
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "child -15", (done.stdout, done.stderr)


def test_requeue_names_an_array_task_as_array_underscore_task():
    """A bare SLURM_JOB_ID that is also the array's id would requeue every task of it."""
    from keepbest.cluster.slurm import job_id

    task = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "1"}
    assert job_id(task) == "12_1"
    assert job_id({"SLURM_JOB_ID": "40"}) == "40"
    assert job_id({}) is None
