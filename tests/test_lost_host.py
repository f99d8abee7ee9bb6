"""A host lost under a running multi-worker trial (issue 10, item 2).

Two real hosts (network namespaces with their own addresses and hostnames: slurm/local_cluster.sh
--no-slurm) run a Ray cluster started by hand, as on a cluster without SLURM: the head on node1,
a worker node on node2. `gantune tune SPACE --address` runs on node1, one trial of two workers
spread one per host. Once the trial has reported a checkpoint and trains the next segment,
node2 fails as a machine that loses power (`local_cluster.sh stop-host`: its link cut, then every
process on it killed). Ray marks the node dead, the segment's worker group fails, and Tune
restarts the trial (max_failures) from its last reported checkpoint on what is left: both
workers on node1.

The figures, read back from what the search wrote: Tune's failure count, the steps the lost
segment had trained past the checkpoint (rank 0's TensorBoard), the reports (each step once, the
last one the target), and the hosts each report's workers ran on.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ray_jobs.segment import PLACEMENT_RECORD
from slurm import ray_cluster
from slurm_fixtures import SCRIPT, hosts_why_not
from test_process_faults import _checkpoint_steps, _failures, _rows, _tb_steps
from test_tune import make_space

# Hosts of this test's own (not the SLURM tests'): its folder, names and subnet.
ENV = {"GANTUNE_CLUSTER_DIR": "/run/gantune-test-hosts", "GANTUNE_CLUSTER_PREFIX": "gth",
       "GANTUNE_CLUSTER_SUBNET": "10.203.0"}
HEAD = "10.203.0.1"
PORT = 6379  # each host has a network stack of its own: Ray's default port is free there
# Ray's GCS marks a host dead after 5 missed health checks. With its defaults (a 10 s timeout
# every 3 s) that took 65 s for a host that went silent (measured here); the test asks sooner.
HEALTH_CHECK = {"RAY_health_check_timeout_ms": "2000", "RAY_health_check_period_ms": "1000"}
STEPS, EVERY = 4, 2
DEADLINE_S = 600


def _script(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(SCRIPT), *args], env={**os.environ, **ENV}, capture_output=True, text=True,
                          timeout=300)
    assert not check or done.returncode == 0, done.stderr
    return done


@pytest.fixture
def hosts() -> Iterator[None]:
    reason = hosts_why_not()
    if reason:
        pytest.skip(reason)
    with open(f"{ENV['GANTUNE_CLUSTER_DIR']}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session on this machine waits its turn
        _script("stop")  # what a killed earlier run left behind (this folder only)
        _script("start", "--nodes", "2", "--no-slurm")
        try:
            yield
        finally:
            _script("stop")  # kills whatever still runs on the hosts


def _on_host(node: str, cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[str]:
    out = open(log, "w")  # noqa: SIM115  (the child holds it)
    return subprocess.Popen([str(SCRIPT), "exec", node, *cmd], env={**env, **ENV}, cwd=cwd, text=True,
                            stdout=out, stderr=subprocess.STDOUT)


def _host_processes(node: str) -> list[str]:
    """Command lines of the processes running on host `node`."""
    pids = subprocess.run(["ip", "netns", "pids", f"{ENV['GANTUNE_CLUSTER_PREFIX']}-{node}"],
                          capture_output=True, text=True).stdout.split()
    found = []
    for pid in pids:
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def _wait(what: str, ready, deadline: float, *alive: subprocess.Popen[str]) -> None:
    while not ready():
        for proc in alive:
            assert proc.poll() is None, f"{what}: {proc.args[3:6]} exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.2)


def _listens(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((ip, port)) == 0


@pytest.mark.slow
def test_a_lost_host_restarts_the_trial_from_its_last_checkpoint_on_the_hosts_left(hosts: None, tmp_path: Path) -> None:
    space = make_space(tmp_path, "h", base_edits={"steps: 6": f"steps: {STEPS}", "batch_size: 2}": "batch_size: 4}"},
                       **{"num_samples: 2": "num_samples: 1\nmax_failures: 1",
                          "{cpus_per_worker: 1}": "{workers_per_trial: 2, cpus_per_worker: 1, placement: spread}",
                          "scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, "
                          "resample_probability: 0.5}": "scheduler: none"})
    exp = tmp_path / "runs" / "h"
    ray_cluster.write_token(tmp_path)
    env = {**os.environ, **ray_cluster.auth_env(tmp_path), **HEALTH_CHECK}
    address = f"{HEAD}:{PORT}"
    deadline = time.monotonic() + DEADLINE_S
    procs = [_on_host("node1", ray_cluster.ray_start_command(HEAD, Path("/tmp/gth-node1"), 2, 0, None, {"port": PORT}),
                      env, tmp_path / "head.log")]
    try:
        _wait("the Ray head listens", lambda: _listens(HEAD, PORT), deadline, *procs)
        procs.append(_on_host("node2", ray_cluster.ray_start_command("10.203.0.2", Path("/tmp/gth-node2"), 2, 0, address),
                              env, tmp_path / "worker.log"))
        joined = _on_host("node1", [sys.executable, "-c", "import ray; from slurm.ray_cluster import wait_for_nodes; "
                                    f"ray.init(address={address!r}); wait_for_nodes(2, 120)"],
                          env, tmp_path / "joined.log", cwd=Path(__file__).resolve().parent.parent)
        assert joined.wait(timeout=180) == 0, (tmp_path / "joined.log").read_text()[-2000:]

        driver = _on_host("node1", [sys.executable, "-m", "ray_jobs.cli", "tune", str(space), "--address", address],
                          env, tmp_path / "driver.log", cwd=tmp_path)
        procs.append(driver)
        # The moment: a checkpoint reported, a worker of the trial on node2, and rank 0 training
        # the next segment past that checkpoint.
        state: dict[str, int] = {}

        def training_past_a_checkpoint() -> bool:
            trials = list(exp.glob("trial_*"))
            if not trials:
                return False
            reported = max(_checkpoint_steps(trials[0]).values(), default=0)
            if not 0 < reported <= STEPS - EVERY:
                return False
            trained = max((s for steps in _tb_steps(trials[0]).values() for s in steps), default=0)
            on_node2 = any("RayTrainWorker" in c for c in _host_processes("node2"))
            state.update(reported=reported, trained=trained)
            return trained > reported and on_node2

        _wait("a trial training past its checkpoint with a worker on node2", training_past_a_checkpoint, deadline, *procs)
        _script("stop-host", "node2")
        stopped_at = time.monotonic()
        trial_dir = next(exp.glob("trial_*"))
        trained = max(s for steps in _tb_steps(trial_dir).values() for s in steps)
        out = driver.wait(timeout=max(deadline - time.monotonic(), 1))
        ended_s = time.monotonic() - stopped_at
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # the hosts' own processes go with the fixture's stop
        for node in ("node1", "node2"):
            shutil.rmtree(f"/tmp/gth-{node}", ignore_errors=True)  # Ray's session folders
    log = (tmp_path / "driver.log").read_text()
    assert out == 0, log[-3000:]

    summary = json.loads((exp / "summary.json").read_text())
    assert summary["complete"] is True
    (t,) = summary["trials"]
    assert t["error"] is None and t["steps"] == STEPS
    # Every report once, in order, up to the target: no restart from step 0.
    steps = [h["step"] for h in t["history"]]
    assert steps == list(range(EVERY, STEPS + 1, EVERY)), t["history"]
    # One failure, Tune's; it restarted from the checkpoint of the last report before the stop.
    assert _failures(exp)[t["trial_id"]] == 1
    assert (trial_dir / "error.txt").read_text().count("Failure #") == 1
    last_before = state["reported"]
    assert last_before in steps
    steps_lost = trained - last_before
    assert 1 <= steps_lost <= EVERY, (trained, last_before)
    # Before the stop its workers ran on both hosts, after it on node1 only (Tune's record of
    # each report).
    rows = _rows(trial_dir)
    assert [int(r["step"]) for r in rows] == steps
    hosts = [r["hosts"] for r in rows]
    assert hosts[: steps.index(last_before) + 1] == ["node1,node2"] * (steps.index(last_before) + 1), hosts
    assert set(hosts[steps.index(last_before) + 1:]) == {"node1"}, hosts
    assert (trial_dir / PLACEMENT_RECORD).exists()  # rank 0 records its segment's placement group
    print(f"\nstopped node2 at step {trained}, last checkpoint at step {last_before}: {steps_lost} step(s) lost;"
          f" reports {list(zip(steps, hosts))}; the search ended {ended_s:.0f} s after the stop")
