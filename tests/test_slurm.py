"""`gantune slurm`: the sbatch script, bad input, status/cancel of a real job, and the Ray cluster
a 2-node job brings up on the local SLURM cluster (slurm_fixtures)."""

from __future__ import annotations

import csv
import functools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ray_jobs.cli import main
from slurm import ray_cluster
from slurm_fixtures import REPO, LocalCluster
from slurm_fixtures import local_cluster, slurm_env  # noqa: F401  (fixtures)

DEMO = REPO / "tune_spaces" / "demo.yaml"


def _gantune(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_dry_run_prints_the_sbatch_script_and_the_ray_commands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # the demo's storage_path is relative: runs/
    rc, out, err = _gantune(capsys, "slurm", str(DEMO), "--nodes", "2", "--cpus-per-node", "8",
                            "--gpus-per-node", "4", "--partition", "gpu", "--time", "120",
                            "--account", "proj", "--workers-per-trial", "2", "--name", "exp1", "--dry-run")
    assert rc == 0, err
    for line in ("#SBATCH --signal=USR2@90", "#SBATCH --nodes=2", "#SBATCH --partition=gpu",
                 "#SBATCH --time=120", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --account=proj", "#SBATCH --requeue",
                 "#SBATCH --job-name=exp1"):
        assert line in out.splitlines(), line
    assert "srun --unbuffered" in out and "submitit.core._submit" in out
    head = next(line for line in out.splitlines() if line.startswith("# node 0:"))
    assert "ray start --block --node-ip-address NODEADDR_0 --num-cpus 8 --num-gpus 4" in head
    assert "--head" in head and "--port FREE" in head and "RAY_AUTH_MODE=token" in head
    worker = next(line for line in out.splitlines() if line.startswith("# node i:"))
    assert "--address NODEADDR_0:PORT" in worker and "RAY_AUTH_TOKEN_PATH=" in worker
    # One GPU per worker, with the node's CPUs shared among its GPUs.
    assert "'cpus_per_worker': 2, 'gpus_per_worker': 1, 'workers_per_trial': 2" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


@pytest.mark.parametrize("argv, message", [
    (["--time", "20"], "--partition is required"),
    (["--partition", "debug"], "--time is required"),
    (["--partition", "debug", "--time", "2"], "--time 2: too short"),
    (["--partition", "debug", "--time", "20", "--nodes", "2", "--workers-per-trial", "3"],
     "--workers-per-trial 3: the job has 2 worker slot(s)"),
    (["--partition", "debug", "--time", "20", "--cpus-per-node", "2", "--gpus-per-node", "4"],
     "--cpus-per-node 2 is fewer than --gpus-per-node 4"),
    (["--partition", "debug", "--time", "20", "--cpus-per-worker", "3"],
     "--cpus-per-worker 3: 1 worker(s) per node need more than --cpus-per-node 2"),
    (["--partition", "debug", "--time", "20", "--nodes", "2", "--cpus-per-worker", "1", "--workers-per-trial", "5"],
     "--workers-per-trial 5: the job has 4 worker slot(s) (2 node(s) x 2)"),
    (["--partition", "debug", "--time", "20", "--nodes", "0"], "--nodes: expected a positive integer"),
    (["--partition", "debug", "--time", "20", "--name", "a/b"], "--name 'a/b': expected a plain folder name"),
])
def test_bad_arguments_fail_in_one_line(argv: list[str], message: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        rc, out, err = _gantune(capsys, "slurm", str(DEMO), "--cpus-per-node", "2", *argv, "--dry-run")
    except SystemExit as e:  # argparse's own type errors
        rc, (out, err) = int(e.code or 0), capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_status_needs_a_job_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _gantune(capsys, "slurm", "status", str(tmp_path))
    assert rc == 2 and "no job.json" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _gantune(capsys, "slurm", "nosuch.yaml", "--partition", "debug", "--time", "20")
    assert rc == 2 and "no such space file" in err


@pytest.mark.slurm
def test_status_and_cancel_a_submitted_job(slurm_env: LocalCluster, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    # --cpus-per-node left out: the partition's (sinfo) is used.
    rc, out, err = _gantune(capsys, "slurm", str(DEMO), "--nodes", "2", "--partition", "debug",
                            "--time", "10", "--smoke", "--name", "s1")
    assert rc == 0, err
    job_dir, exp_dir = tmp_path / "runs" / "s1.slurm", tmp_path / "runs" / "s1"
    info = json.loads((job_dir / "job.json").read_text())
    assert f"submitted job {info['job_id']} on 2 node(s) (debug)" in out
    assert f"tensorboard --logdir {exp_dir}" in out and f"logs: {job_dir}/logs/" in out
    assert info["cpus_per_node"] == 2 and info["experiment_dir"] == str(exp_dir)
    assert oct((job_dir / ray_cluster.TOKEN_FILE).stat().st_mode & 0o777) == "0o600"

    rc, out, err = _gantune(capsys, "slurm", "status", str(exp_dir))  # the experiment folder works too
    assert rc == 0, err
    assert out.startswith(f"job {info['job_id']}: ") and ("RUNNING" in out or "PENDING" in out), out
    rc, out, err = _gantune(capsys, "slurm", "cancel", str(job_dir))
    assert rc == 0, err
    assert f"cancelled job {info['job_id']}" in out and "--name s1" in out
    for _ in range(60):
        rc, out, _ = _gantune(capsys, "slurm", "status", str(job_dir))
        if "CANCELLED" in out:
            break
        time.sleep(1)
    assert "CANCELLED" in out, out
    _no_ray_left(str(info["job_id"]))


def _no_ray_left(job_id: str) -> None:
    """Every Ray process of the job is gone (they run with --temp-dir /tmp/gtray-JOBID-RANK)."""
    for _ in range(60):
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        left = [line for line in ps.splitlines() if f"gtray-{job_id}-" in line]
        if not left:
            return
        time.sleep(1)
    raise AssertionError(f"Ray processes of job {job_id} still run: {left}")


@pytest.mark.slurm
def test_a_two_node_job_brings_up_a_ray_cluster_on_both_hosts(slurm_env: LocalCluster, tmp_path: Path) -> None:
    import submitit

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    ray_cluster.write_token(job_dir)
    executor = submitit.SlurmExecutor(folder=job_dir / "logs")
    executor.update_parameters(nodes=2, ntasks_per_node=1, cpus_per_task=2, partition="debug", time=10)
    driver = functools.partial(ray_cluster.node_hostnames, nodes=2)
    job = executor.submit(functools.partial(ray_cluster.ray_cluster, job_dir, 2, 2, 0, driver))
    results = job.results()  # one per node; node 0 has the driver's
    assert results[1] is None
    assert results[0] == [{"hostname": "node1", "ip": slurm_env.address(1)},
                          {"hostname": "node2", "ip": slurm_env.address(2)}]
    rendezvous = json.loads((job_dir / f"rendezvous-{job.job_id}-0.json").read_text())
    assert rendezvous["address"].startswith(slurm_env.address(1) + ":")
    assert rendezvous["address"] != f"{slurm_env.address(1)}:6379"
    _no_ray_left(job.job_id)
    assert not list(Path("/tmp").glob(f"gtray-{job.job_id}-*"))  # Ray's session folders removed


# --- whole searches on the 2 hosts (a few minutes each) -----------------------------------------

def _job_state(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _wait_for_end(job_id: str, timeout_s: float) -> dict[str, str]:
    """Until the job leaves the queue; a requeued job starts at once (not SLURM's 2 min later)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _job_state(job_id)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True).stdout.split()
        # Once the hosts are clean (none COMPLETING the last run), as SLURM's own delay ensures.
        if state.get("JobState") == "PENDING" and state.get("Reason") == "BeginTime" and set(nodes) == {"idle"}:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True)
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            return state
        time.sleep(2)
    subprocess.run(["scancel", job_id])
    raise AssertionError(f"job {job_id} did not end in {timeout_s:.0f} s: {_job_state(job_id)}")


def _diagnosis(job_id: str, state: dict[str, str], log: Path) -> str:
    """What SLURM and the job said, for an assertion message (the cluster's logs go at teardown)."""
    ctld = Path(os.environ["SLURM_CONF"]).parent / "log" / "slurmctld.log"
    said = [line for line in ctld.read_text().splitlines() if f"JobId={job_id} " in line + " "]
    return "\n".join([f"state: {state}", "slurmctld:", *said[-20:], "node 0's log:", log.read_text()[-3000:]])


def _submit(capsys: pytest.CaptureFixture[str], name: str, *extra: str, space: Path = DEMO) -> tuple[str, Path]:
    rc, out, err = _gantune(capsys, "slurm", str(space), "--nodes", "2", "--partition", "debug",
                            "--time", "20", "--smoke", "--name", name, *extra)
    assert rc == 0, err
    info = json.loads((Path("runs") / f"{name}.slurm" / "job.json").read_text())
    return str(info["job_id"]), Path(info["experiment_dir"])


def _reports(exp_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Per trial, (step, the trial it had just copied or "") of every report in Tune's own record
    (progress.csv, flushed per row; result.json can lose its last lines in a requeued job)."""
    out = {}
    for path in exp_dir.glob("trial_*/progress.csv"):
        with open(path, newline="") as f:
            out[path.parent.name] = [(int(r["step"]), r.get("exploit/from_trial") or "") for r in csv.DictReader(f)]
    return out


def _interrupt_after_first_report(job_id: str, exp_dir: Path, command: list[str]) -> dict[str, list[tuple[int, str]]]:
    """Waits until some trial has reported (with its checkpoint), runs command; the reports so far."""
    deadline = time.monotonic() + 600
    while not any(_reports(exp_dir).values()):
        assert time.monotonic() < deadline, "no trial reported in 600 s"
        assert _job_state(job_id).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _job_state(job_id)
        time.sleep(1)
    before = _reports(exp_dir)
    subprocess.run(command, check=True)
    return before


def _assert_resumed(job_id: str, exp_dir: Path, before: dict[str, list[tuple[int, str]]], log: Path) -> dict:
    """The job was requeued, finished, lost no report and repeated none (no restart from 0). Only
    a trial that has just copied another may report a step again: it rescores the copy."""
    state = _wait_for_end(job_id, timeout_s=900)
    assert state["JobState"] == "COMPLETED", _diagnosis(job_id, state, log)
    assert int(state["Restarts"]) >= 1, state
    after = _reports(exp_dir)
    for trial, reports in after.items():
        own = [step for step, donor in reports if not donor]
        assert own == sorted(set(own)), f"{trial} reported a step twice (restarted): {reports}"
        assert [step for step, _ in reports] == sorted(step for step, _ in reports), reports
        assert reports[-1][0] == 4
    for trial, reports in before.items():
        assert set(reports) <= set(after[trial]), f"{trial} lost reports: {reports} -> {after[trial]}"
    summary: dict = json.loads((exp_dir / "summary.json").read_text())
    assert summary["complete"]
    assert {t["trial_id"]: [h["step"] for h in t["history"]] for t in summary["trials"]} == {
        trial.removeprefix("trial_"): [step for step, _ in reports] for trial, reports in after.items()}
    _no_ray_left(job_id)
    return summary


@pytest.mark.slurm
@pytest.mark.slow
def test_a_search_requeued_by_slurm_resumes_without_losing_or_repeating_reports(
        slurm_env: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    job_id, exp_dir = _submit(capsys, "requeue")  # one worker per trial: a trial per host
    # As on preemption or by an admin: SLURM ends the job's processes without warning.
    before = _interrupt_after_first_report(job_id, exp_dir, ["scontrol", "requeue", job_id])
    _assert_resumed(job_id, exp_dir, before, tmp_path / "runs" / "requeue.slurm" / "logs" / f"{job_id}_0_log.err")


@pytest.mark.slurm
@pytest.mark.slow
def test_synch_pbt_of_two_worker_trials_on_two_hosts_exploits_and_survives_usr2(
        slurm_env: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Two trials of two 1-CPU workers, one worker per host, both trials at once on the 2 hosts.
    Synchronous PBT decides once both reached the interval, so the worse trial always copies the
    better one's segment checkpoint (asynchronous PBT exploits only where reports happen to
    interleave badly for a trial), and its next segment continues from it on both hosts. Midway,
    SLURM's warning signal stops the search; the requeued job resumes it."""
    import yaml

    monkeypatch.chdir(tmp_path)
    spec = yaml.safe_load(DEMO.read_text())
    spec["base"] = str(DEMO.parent / spec["base"])
    spec["scheduler"]["synch"] = True
    spec["resources"] = {"workers_per_trial": 2, "placement": "spread"}
    space = tmp_path / "synch.yaml"
    space.write_text(yaml.safe_dump(spec))
    job_id, exp_dir = _submit(capsys, "exploit", "--cpus-per-worker", "1", space=space)
    # What --signal=USR2@90 sends before the time limit: node 0 stops Tune gracefully, requeues.
    before = _interrupt_after_first_report(job_id, exp_dir, ["scancel", "--signal=USR2", job_id])
    summary = _assert_resumed(job_id, exp_dir, before, tmp_path / "runs" / "exploit.slurm" / "logs" /
                              f"{job_id}_0_log.err")
    trials = summary["trials"]
    assert len(trials) == 2
    for t in trials:
        assert t["error"] is None
        assert all(isinstance(h["value"], float) for h in t["history"])
        assert t["hosts"] == ["node1", "node2"]  # its 2 workers, one per host
        assert not (Path(t["path"]) / "segments").exists()  # Train's copies go once Tune has its own
    exploited = [t for t in trials if t["exploits"]]
    assert exploited, "synchronous PBT did not exploit"
    for t in exploited:
        first_after = next(h for h in t["history"] if "restored_from" in h)
        assert first_after["restored_from"] != t["trial_id"]
        # The next segment continued from the donor's step (or rescored its final checkpoint).
        assert first_after["step"] == min(first_after["restored_step"] + 2, 4)
        assert t["lineage"][-1]["from_trial"] in {d["trial_id"] for d in trials} - {t["trial_id"]}
