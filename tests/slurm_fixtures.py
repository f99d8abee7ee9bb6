"""The 2-host SLURM cluster the `slurm`-marked tests run on, started once per test session.

slurm/local_cluster.sh makes the hosts (network namespaces node1, node2 with their own IPs) with
a state folder, name prefix, subnet and slurmctld port of the tests' own, so a cluster someone
started by hand keeps running beside it. A lock file serialises test sessions that run at once
(two people's `make test`): the second waits for the first to finish with the cluster.
The tests skip, with the reason, only where namespaces cannot be made (not root, no
CAP_SYS_ADMIN) or where SLURM is missing and apt-get cannot install it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "slurm" / "local_cluster.sh"
STATE = Path("/run/gantune-test-cluster")
LOCK = Path("/run/gantune-test-cluster.lock")
SUBNET = "10.201.0"
ENV = {"GANTUNE_CLUSTER_DIR": str(STATE), "GANTUNE_CLUSTER_PREFIX": "gtt",
       "GANTUNE_CLUSTER_SUBNET": SUBNET, "GANTUNE_SLURMCTLD_PORT": "6917"}
LOCK_WAIT_S = 1800


@dataclass(frozen=True)
class LocalCluster:
    slurm_conf: Path
    nodes: int
    subnet: str

    def address(self, node: int) -> str:
        return f"{self.subnet}.{node}"


def hosts_why_not() -> str | None:
    """Why this machine cannot make the local cluster's hosts (network namespaces), or None."""
    if os.geteuid() != 0:
        return "the local cluster's hosts need root (network namespaces)"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"the local cluster's hosts need {tool} (iproute2, util-linux)"
    probe = f"gtt-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make network namespaces here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _why_not() -> str | None:
    """Why this machine cannot run the local SLURM cluster, or None if it can."""
    reason = hosts_why_not()
    if reason:
        return reason
    missing = [t for t in ("slurmctld", "slurmd", "srun", "munged") if shutil.which(t) is None]
    if missing and shutil.which("apt-get") is None:
        return f"SLURM missing ({', '.join(missing)}) and no apt-get to install it"
    return None


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env={**os.environ, **ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


class _Session:
    """The one cluster of this test session. Test modules import the fixture, so pytest makes one
    session fixture per module; they share this, and the last to finish stops the cluster."""

    cluster: LocalCluster | None = None
    users = 0
    lock: IO[str] | None = None


def _start() -> LocalCluster:
    lock = open(LOCK, "w")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                pytest.skip(f"another test session held {LOCK} for {LOCK_WAIT_S} s")
            time.sleep(2)
    _Session.lock = lock
    run_script("stop")  # what a killed earlier session left behind (our folder only)
    started = run_script("start", "--nodes", "2", "--cpus", "2")
    if started.returncode != 0:
        _stop()
        tail = (started.stderr.strip().splitlines() or ["no output"])[-1]
        if "apt-get" in started.stderr and "missing" in started.stderr:
            pytest.skip(f"could not install SLURM: {tail}")
        pytest.fail(f"local_cluster.sh start failed: {started.stderr.strip()}")
    return LocalCluster(STATE / "slurm.conf", 2, SUBNET)


def _stop() -> None:
    run_script("stop")
    if _Session.lock is not None:
        _Session.lock.close()  # releases the flock
        _Session.lock = None
    _Session.cluster = None


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    if _Session.cluster is None:
        _Session.cluster = _start()
    _Session.users += 1
    try:
        yield _Session.cluster
    finally:
        _Session.users -= 1
        if _Session.users == 0:
            _stop()


@pytest.fixture
def slurm_env(local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:
    """The cluster, with SLURM_CONF set for the test's srun/sbatch/scontrol (and submitit's)."""
    monkeypatch.setenv("SLURM_CONF", str(local_cluster.slurm_conf))
    return local_cluster
