"""Real Slurm clusters on this machine, each shared by a whole test session.

Mocked Slurm cannot show what matters for requeue-and-resume (signal delivery, requeue timing,
SLURM_RESTART_COUNT), so tests that need Slurm get a real one from
``scripts/slurm/local_cluster.sh``: ``slurm_cluster`` (one node, ``localhost``) and
``slurm_multinode`` (two nodes ``n1`` and ``n2``, each a slurmd in its own network namespace,
so tf.distribute workers on both can use the same port; clients run through the wrappers in
``DIR/bin``, which the fixture puts first on ``PATH``). Use them from a test module with::

    pytest_plugins = ["slurm_fixture"]

(``tests/`` is no package and the repository root is not on ``sys.path`` under a plain
``pytest``, so ``from tests.slurm_fixture import ...`` would only work with ``python -m pytest``.)

Without Slurm (not installable, no root, not Linux, no network namespaces) the fixtures skip,
unless ``CI`` is set (``true``, ``1``, ...): CI must never pass by silently skipping the Slurm
tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm" / "local_cluster.sh"

# Outer-job and sbatch input variables would change what our sbatch does (e.g. inside a real job).
_FOREIGN_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_")
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w:/.-]*)=")


def parse_scontrol(line: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line as a dict; values may contain spaces (Command=...)."""
    matches = list(_FIELD.finditer(line.strip()))
    fields: dict[str, str] = {}
    for match, after in zip(matches, [*matches[1:], None], strict=True):
        end = after.start() if after else len(line.strip())
        fields[match.group(1)] = line.strip()[match.end() : end]
    return fields


@dataclass
class SlurmCluster:
    """A running cluster: its directory, the client environment, and job helpers."""

    dir: Path
    env: dict[str, str]
    nodes: int = 1

    @property
    def slurm_conf(self) -> str:
        return self.env["SLURM_CONF"]

    def run(
        self, *args: str, timeout: float = 30, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """Run a Slurm client command (sinfo, scontrol, scancel...) against this cluster."""
        done = subprocess.run(
            list(args),
            env=self.env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done

    def sbatch(self, *args: str, cwd: Path | None = None) -> str:
        """Submit with ``sbatch --parsable ARGS`` from CWD (the job's default workdir); job id."""
        done = self.run("sbatch", "--parsable", *args, timeout=60, cwd=cwd)
        return done.stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """Every record of ``scontrol show job -o JOB`` (an array job has one per task)."""
        done = self.run("scontrol", "show", "job", "-o", job_id)
        return [parse_scontrol(line) for line in done.stdout.splitlines() if line.strip()]

    def job(self, job_id: str) -> dict[str, str]:
        """The record of a plain (non-array) job."""
        return self.jobs(job_id)[0]

    def wait_job(
        self,
        job_id: str,
        states: str | Iterable[str],
        timeout: float = 30,
        count: int = 1,
        **fields: str,
    ) -> list[dict[str, str]]:
        """Poll until COUNT records of JOB are in one of STATES and match FIELDS; return them.

        Raises TimeoutError with the last records, so a failing test says where the job got stuck.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        records: list[dict[str, str]] = []
        while True:
            records = self.jobs(job_id)
            if len(records) == count and all(
                rec.get("JobState") in wanted
                and all(rec.get(key) == value for key, value in fields.items())
                for rec in records
            ):
                return records
            if time.monotonic() > deadline:
                seen = [
                    {k: r.get(k) for k in ("JobId", "JobState", "Reason", "Restarts", *fields)}
                    for r in records
                ]
                raise TimeoutError(
                    f"job {job_id} not {sorted(wanted)} {fields} after {timeout}s: {seen}"
                )
            time.sleep(0.1)


def running_in_ci() -> bool:
    """Whether ``CI`` is set to anything truthy (``true``, ``1``, ``yes``: CI systems differ)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def _unavailable(reason: str) -> NoReturn:
    """Skip on developer machines; fail on CI, where a skipped Slurm suite would hide bugs."""
    if running_in_ci():
        pytest.fail(f"local Slurm cluster required (CI=true) but unavailable: {reason}")
    pytest.skip(f"local Slurm cluster unavailable: {reason}")


def _script(action: str, directory: Path, timeout: float, *options: str):
    return subprocess.run(
        ["bash", str(SCRIPT), action, *options, str(directory)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cluster_processes(directory: Path) -> list[str]:
    """Live processes of the cluster under DIRECTORY: daemons, slurmstepd, job processes.

    Daemons name the directory on their command line; slurmstepd and jobs carry its SLURM_CONF.
    Zombies do not count (where PID 1 is no init, dead daemons are never reaped).
    """
    marker = str(directory).encode()
    conf = f"SLURM_CONF={directory}/etc/slurm.conf".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if marker in cmdline or conf in environ.split(b"\0"):
            command = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name} {command}")
    return found


def cluster_mounts(directory: Path) -> list[str]:
    """Mount points under DIRECTORY (the network namespaces of a multi-node cluster)."""
    prefix = f"{directory}/"
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in mounts if line.split()[4].startswith(prefix)]


def _cluster(directory: Path, nodes: int) -> Iterator[SlurmCluster]:
    """Bring a cluster of NODES nodes up under DIRECTORY, yield it, tear it down and check that
    nothing of it is left (processes, namespace mounts)."""
    if not sys.platform.startswith("linux"):
        _unavailable(f"needs Linux, this is {sys.platform}")
    options = ("--nodes", str(nodes)) if nodes > 1 else ()
    try:
        up = _script("up", directory, 900, *options)
    except subprocess.TimeoutExpired:
        _script("down", directory, timeout=120)
        _unavailable("local_cluster.sh up did not finish in 900 s")
    if up.returncode != 0:
        _script("down", directory, timeout=120)
        _unavailable(f"local_cluster.sh up failed ({up.returncode}): {up.stderr.strip()[-2000:]}")
    expected = r"export SLURM_CONF=(\S+)"
    if nodes > 1:
        expected += rf"\nexport PATH={re.escape(str(directory))}/bin:\$PATH"
    match = re.fullmatch(expected, up.stdout.strip())
    if match is None:
        _script("down", directory, timeout=120)
        _unavailable(f"unexpected output from local_cluster.sh up: {up.stdout!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
    env["SLURM_CONF"] = match.group(1)
    if nodes > 1:
        env["PATH"] = f"{directory}/bin{os.pathsep}{env.get('PATH', os.defpath)}"
    try:
        yield SlurmCluster(dir=directory, env=env, nodes=nodes)
    finally:
        down = _script("down", directory, timeout=300)
        assert down.returncode == 0, f"local_cluster.sh down failed: {down.stderr}"
        left = cluster_processes(directory)
        assert not left, f"processes left after local_cluster.sh down: {left}"
        mounts = cluster_mounts(directory)
        assert not mounts, f"mounts left after local_cluster.sh down: {mounts}"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """One node, ``localhost``: bring it up once per session (installing Slurm if needed)."""
    yield from _cluster(tmp_path_factory.mktemp("slurm"), nodes=1)


@pytest.fixture(scope="session")
def slurm_multinode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Two nodes, ``n1`` and ``n2`` (addresses 10.199.0.11 and .12 inside the cluster's own
    network namespaces; each node resolves both names): once per session."""
    yield from _cluster(tmp_path_factory.mktemp("slurmmn"), nodes=2)
