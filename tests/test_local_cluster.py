"""slurm/local_cluster.sh: N real hosts (network namespaces) running SLURM on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from slurm_fixtures import SCRIPT, LocalCluster, _why_not, run_script
from slurm_fixtures import local_cluster, slurm_env  # noqa: F401  (fixtures)


def test_a_bad_option_fails_in_one_line() -> None:
    res = subprocess.run([str(SCRIPT), "start", "--nodes", "x"], capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines() == ["local_cluster: error: --nodes must be 1..99, got x"]


@pytest.mark.slurm
def test_srun_runs_on_each_host_with_its_own_name_and_address(slurm_env: LocalCluster) -> None:
    res = subprocess.run(["srun", "-N2", "sh", "-c", "echo $(hostname) $(hostname -I)"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(line.strip() for line in res.stdout.splitlines()) == [
        f"node1 {slurm_env.address(1)}", f"node2 {slurm_env.address(2)}"]


@pytest.mark.slurm
def test_start_again_says_so_and_status_lists_the_daemons(slurm_env: LocalCluster) -> None:
    again = run_script("start")
    assert again.returncode == 0
    assert "already started" in again.stderr
    status = run_script("status")
    for daemon in ("munged", "slurmctld", "slurmd-node1", "slurmd-node2"):
        assert f"{daemon}: running (pid " in status.stdout
    assert f"export SLURM_CONF={slurm_env.slurm_conf}" in status.stdout


@pytest.mark.slurm
def test_stop_undoes_namespaces_links_and_daemons(tmp_path: Path) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    # A second, one-host cluster beside the session's: its own folder, names, subnet and port.
    env = {"GANTUNE_CLUSTER_DIR": str(tmp_path / "cluster"), "GANTUNE_CLUSTER_PREFIX": "gtu",
           "GANTUNE_CLUSTER_SUBNET": "10.202.0", "GANTUNE_SLURMCTLD_PORT": "6927"}
    started = run_script("start", "--nodes", "1", env=env)
    try:
        assert started.returncode == 0, started.stderr
        pids = [int(p.read_text()) for p in (tmp_path / "cluster").glob("*.pid")]
        assert len(pids) == 3  # munged, slurmctld, one slurmd
        assert "gtu-node1" in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        stopped = run_script("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "cluster").exists()
    assert "gtu-node1" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "gtubr0" not in links and "gtuv1" not in links
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert run_script("stop", env=env).returncode == 0  # nothing to stop: still fine
