"""`gantune slurm`: a whole search as one submitit job on N SLURM nodes, requeued on preemption.

Layout, next to the experiment folder `<storage_path>/<name>` that Tune owns:

    <storage_path>/<name>.slurm/   job.json (job id, nodes, command line, experiment dir),
                                   logs/ (submitit: <jobid>_<task>_log.out/.err, sbatch script),
                                   ray_auth_token (mode 600), rendezvous-/stop- files of each run

The submitted callable, `SearchJob`, runs on every node. It brings up a Ray cluster over the
job's nodes (slurm/ray_cluster.py), and node 0 runs the Tune driver. `__call__` is idempotent:
a requeued job finds the search in the experiment folder and resumes it; a finished one returns
its summary. SLURM sends USR2 90 s before the time limit (and preemption may too): node 0 asks
Tune to stop gracefully, then requeues the job itself. Nothing reported is lost, since every
report carries its checkpoint and Tune saves its state on a graceful stop.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from slurm import ray_cluster

log = logging.getLogger(__name__)

SIGNAL_DELAY_S = 90  # USR2 this long before the time limit: time for Tune's graceful stop


@dataclass(frozen=True)
class SlurmRequest:
    """What `gantune slurm SPACE.yaml ...` asks SLURM for, checked once."""

    space: Path
    nodes: int
    gpus_per_node: int
    cpus_per_node: int
    partition: str
    time_min: int
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    mem: str | None = None
    workers_per_trial: int | None = None
    cpus_per_worker: int | None = None  # default: C // G with GPUs, the whole node without
    smoke: bool = False
    name: str | None = None

    def check(self) -> None:
        if self.nodes < 1 or self.cpus_per_node < 1 or self.gpus_per_node < 0:
            raise GantuneError("--nodes and --cpus-per-node must be >= 1, --gpus-per-node >= 0")
        if self.gpus_per_node and self.cpus_per_node < self.gpus_per_node:
            raise GantuneError(f"--cpus-per-node {self.cpus_per_node} is fewer than --gpus-per-node "
                               f"{self.gpus_per_node}: a worker is one GPU with C // G CPUs")
        if self.time_min * 60 <= 2 * SIGNAL_DELAY_S:
            raise GantuneError(f"--time {self.time_min}: too short; the job is warned {SIGNAL_DELAY_S} s "
                               "before its limit and needs time to run before that")
        cpus = self.worker_cpus()
        if cpus * max(self.gpus_per_node, 1) > self.cpus_per_node:
            raise GantuneError(f"--cpus-per-worker {cpus}: {max(self.gpus_per_node, 1)} worker(s) per node "
                               f"need more than --cpus-per-node {self.cpus_per_node}")
        per_node = self.gpus_per_node or self.cpus_per_node // cpus
        workers = self.nodes * per_node
        if self.workers_per_trial is not None and not 1 <= self.workers_per_trial <= workers:
            raise GantuneError(f"--workers-per-trial {self.workers_per_trial}: the job has {workers} "
                               f"worker slot(s) ({self.nodes} node(s) x {per_node})")
        if self.name is not None and (not self.name or "/" in self.name or self.name.startswith(".")):
            raise GantuneError(f"--name {self.name!r}: expected a plain folder name")

    def worker_cpus(self) -> int:
        """A worker is one GPU with its share of the node's CPUs, or a whole node without GPUs,
        unless --cpus-per-worker says otherwise."""
        if self.cpus_per_worker is not None:
            return self.cpus_per_worker
        return self.cpus_per_node // self.gpus_per_node if self.gpus_per_node else self.cpus_per_node

    def resources(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpus_per_worker": self.worker_cpus(), "gpus_per_worker": 1 if self.gpus_per_node else 0}
        if self.workers_per_trial is not None:
            out["workers_per_trial"] = self.workers_per_trial
        return out


class SearchJob:
    """The submitit callable: a Ray cluster over the job's nodes, the Tune driver on node 0."""

    def __init__(self, space: str, name: str, job_dir: str, exp_dir: str, nodes: int,
                 cpus_per_node: int, gpus_per_node: int, resources: dict[str, Any], smoke: bool) -> None:
        self.space, self.name, self.job_dir, self.exp_dir = space, name, job_dir, exp_dir
        self.nodes, self.cpus_per_node, self.gpus_per_node = nodes, cpus_per_node, gpus_per_node
        self.resources, self.smoke = resources, smoke
        self._stop_reason: str | None = None  # set from a signal handler on node 0

    def __call__(self) -> dict[str, Any] | None:
        summary_path = Path(self.exp_dir) / "summary.json"
        if summary_path.exists() and json.loads(summary_path.read_text()).get("complete"):
            log.info("%s: the search already finished", summary_path)  # a requeue after the end
            return json.loads(summary_path.read_text()) if os.environ.get("SLURM_NODEID", "0") == "0" else None
        self._stop_reason = None
        if os.environ.get("SLURM_NODEID", "0") == "0":
            # After submitit's own handlers: ours wait for Tune to stop before requeueing.
            signal.signal(signal.SIGUSR2, self._on_usr2)
        try:
            result = ray_cluster.ray_cluster(Path(self.job_dir), self.nodes, self.cpus_per_node,
                                             self.gpus_per_node, self._drive)
        except GantuneError:
            if self._stop_reason is None:
                raise
            result = None  # "search interrupted": we asked for it
        if self._stop_reason is not None:
            self._requeue_and_wait()
        return result

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called from a signal handler on node 0: only ask Tune to stop, resume from its saves."""
        import submitit

        self._stop_reason = self._stop_reason or "checkpoint"
        _ask_tune_to_stop()
        return submitit.helpers.DelayedSubmission(self)

    def _on_usr2(self, signum: int, frame: Any) -> None:
        log.warning("USR2 (time limit in %d s, or preemption): stopping the search to requeue", SIGNAL_DELAY_S)
        self.checkpoint()

    def _requeue_and_wait(self) -> None:
        job_id = os.environ["SLURM_JOB_ID"]
        log.warning("requeueing job %s; it resumes %s", job_id, self.exp_dir)
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
        # SLURM ends this task now. Returning would write a result for a job that is not done,
        # and raising would mark it failed; so wait, and leave without a result if still here.
        time.sleep(300)
        raise SystemExit(1)

    def _drive(self, address: str) -> dict[str, Any] | None:
        """Node 0, with the Ray cluster up: wait for every node, then the search."""
        import ray
        from ray import tune

        from ray_jobs.tune_driver import run_search

        ray.init(address=address, configure_logging=False)
        try:
            ray_cluster.wait_for_nodes(self.nodes, timeout_s=300)
        finally:
            ray.shutdown()
        if self._stop_reason is not None:
            return None  # signalled before the search started: requeue at once
        resume = tune.Tuner.can_restore(self.exp_dir)
        log.info("%s the search in %s", "resuming" if resume else "starting", self.exp_dir)
        try:
            summary: dict[str, Any] = run_search(self.space, resume=resume, name=self.name, smoke=self.smoke,
                                                 ray_address=address, resources=self.resources)
        except GantuneError:
            if self._stop_reason is None:
                raise
            log.warning("the search stopped as asked (%s); its state is saved", self._stop_reason)
            return None
        finally:
            ray.shutdown()  # before the head goes: a driver whose node vanishes exits at once
        return summary


def _ask_tune_to_stop() -> None:
    # Tune installs its graceful-stop handler on SIGINT while fit() runs; call it directly.
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, None)


# --- submit side ------------------------------------------------------------------------------

def partition_cpus(partition: str) -> int:
    """CPUs per node of the partition's smallest node (the default for --cpus-per-node)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%c"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
    except FileNotFoundError:
        raise GantuneError("sinfo not found: run gantune slurm on a SLURM login node") from None
    except subprocess.SubprocessError as e:
        raise GantuneError(f"sinfo -p {partition} failed: {_first_line(e)}") from None
    cpus = [int(c.rstrip("+")) for c in out if c.rstrip("+").isdigit()]
    if not cpus:
        raise GantuneError(f"--partition {partition}: no such partition (sinfo lists no nodes)")
    return min(cpus)


def _first_line(e: subprocess.SubprocessError) -> str:
    stderr = getattr(e, "stderr", None) or str(e)
    return str(stderr).strip().splitlines()[0] if str(stderr).strip() else str(e)


def _executor(req: SlurmRequest, job_name: str, logs: Path) -> Any:
    import submitit

    executor = submitit.SlurmExecutor(folder=logs, max_num_timeout=100)
    params: dict[str, Any] = dict(
        job_name=job_name, nodes=req.nodes, ntasks_per_node=1, cpus_per_task=req.cpus_per_node,
        partition=req.partition, time=req.time_min, signal_delay_s=SIGNAL_DELAY_S,
        account=req.account, qos=req.qos, constraint=req.constraint, mem=req.mem,
        additional_parameters={"requeue": True},
    )
    if req.gpus_per_node:
        params["gpus_per_node"] = req.gpus_per_node
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def _job_paths(req: SlurmRequest) -> tuple[Any, str, Path, Path]:
    from ray_jobs.space import load_spec

    spec = load_spec(req.space)
    name = req.name or f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"  # never collide
    exp_dir = spec.storage_path / name
    return spec, name, exp_dir, spec.storage_path / f"{name}.slurm"


def dry_run(req: SlurmRequest) -> str:
    """The sbatch script and the Ray commands, without submitting or writing anything."""
    req.check()
    _, name, exp_dir, job_dir = _job_paths(req)
    executor = _executor(req, name, job_dir / "logs")
    script = executor._make_submission_file_text(executor._submitit_command_str, "dry-run")
    env = " ".join(f"{k}={v}" for k, v in ray_cluster.auth_env(job_dir).items())
    free = {p: "FREE" for p in ray_cluster.PORT_NAMES}
    head = ray_cluster.ray_start_command("NODEADDR_0", Path("/tmp/gtray-JOBID-0"), req.cpus_per_node,
                                         req.gpus_per_node, None, free)
    worker = ray_cluster.ray_start_command("NODEADDR_i", Path("/tmp/gtray-JOBID-i"), req.cpus_per_node,
                                           req.gpus_per_node, "NODEADDR_0:PORT",
                                           {p: "FREE" for p in ray_cluster.PORT_NAMES[2:]})
    return "\n".join([
        f"# job folder {job_dir}", f"# experiment  {exp_dir}", "", script.rstrip(), "",
        "# Ray, inside each task (NODEADDR from scontrol show node; FREE: a free port picked there)",
        f"# node 0:  {env} {shlex.join(head)}",
        f"# node i:  {env} {shlex.join(worker)}",
        f"# node 0 then runs the Tune driver: run_search({str(req.space)!r}, name={name!r}, "
        f"ray_address='NODEADDR_0:PORT', resources={req.resources()}, smoke={req.smoke})",
    ])


def command_line(req: SlurmRequest, name: str) -> list[str]:
    """The `gantune slurm` line that (re)submits this search; with its name, it resumes it."""
    argv = ["gantune", "slurm", str(req.space), "--nodes", str(req.nodes), "--gpus-per-node",
            str(req.gpus_per_node), "--cpus-per-node", str(req.cpus_per_node), "--partition",
            req.partition, "--time", str(req.time_min)]
    for flag, value in (("--account", req.account), ("--qos", req.qos), ("--constraint", req.constraint),
                        ("--mem", req.mem), ("--workers-per-trial", req.workers_per_trial),
                        ("--cpus-per-worker", req.cpus_per_worker)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + (["--smoke"] if req.smoke else []) + ["--name", name]


def submit(req: SlurmRequest) -> dict[str, Any]:
    """Submits the search; returns job.json's content. A `--name` of an existing search resumes it."""
    req.check()
    spec, name, exp_dir, job_dir = _job_paths(req)
    (job_dir / "logs").mkdir(parents=True, exist_ok=True)
    if not (job_dir / ray_cluster.TOKEN_FILE).exists():
        ray_cluster.write_token(job_dir)
    executor = _executor(req, name, job_dir / "logs")
    job_fn = SearchJob(str(Path(req.space).resolve()), name, str(job_dir), str(exp_dir), req.nodes,
                       req.cpus_per_node, req.gpus_per_node, req.resources(), req.smoke)
    try:
        job = executor.submit(job_fn)
    except Exception as e:  # submitit wraps sbatch's refusal in several types
        raise GantuneError(f"sbatch refused the job: {str(e).strip().splitlines()[-1]}") from None
    info = {"job_id": job.job_id, "nodes": req.nodes, "cpus_per_node": req.cpus_per_node,
            "gpus_per_node": req.gpus_per_node, "partition": req.partition, "time_min": req.time_min,
            "command": command_line(req, name), "space": str(spec.path), "name": name,
            "experiment_dir": str(exp_dir), "job_dir": str(job_dir),
            "log": str(job.paths.stdout).replace("%t", "0"), "submitted": time.time()}
    tmp = job_dir / "job.json.tmp"
    tmp.write_text(json.dumps(info, indent=1))
    os.replace(tmp, job_dir / "job.json")
    return info


def job_dir_of(run: Path) -> Path:
    """RUN is the job folder (`<name>.slurm`) or the experiment folder next to it."""
    run = Path(run).resolve()
    for candidate in (run, run.with_name(run.name + ".slurm")):
        if (candidate / "job.json").exists():
            return candidate
    raise GantuneError(f"{run}: no job.json here or in {run.name}.slurm; pass the folder gantune slurm printed")


def read_job(run: Path) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((job_dir_of(run) / "job.json").read_text())
    return info


def job_state(job_id: str) -> str:
    """The job's state from squeue, then sacct, then scontrol (no accounting database: sacct fails)."""
    queries = [["squeue", "-h", "-j", job_id, "-o", "%T %M/%l %D node(s) %R"],
               ["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Elapsed,ExitCode"],
               ["scontrol", "show", "job", "-o", job_id]]
    for cmd in queries:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        out = res.stdout.strip()
        if res.returncode != 0 or not out:
            continue
        if cmd[0] == "scontrol":
            fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
            return f"{fields.get('JobState', '?')} {fields.get('RunTime', '')} exit {fields.get('ExitCode', '?')}"
        return out.splitlines()[0].replace("|", " ")
    return "not known to SLURM any more (finished; no accounting database to ask)"


def status(run: Path) -> str:
    info = read_job(run)
    exp = Path(info["experiment_dir"])
    summary = exp / "summary.json"
    trials = sorted(exp.glob("trial_*")) if exp.is_dir() else []
    lines = [f"job {info['job_id']}: {job_state(str(info['job_id']))}",
             f"experiment: {exp} ({len(trials)} trial folder(s))",
             f"log: {info['log']}"]
    if summary.exists():
        done = json.loads(summary.read_text()).get("complete")
        lines.append(f"summary: {summary} ({'complete' if done else 'interrupted'})")
    lines.append(f"tensorboard --logdir {exp}")
    return "\n".join(lines)


def cancel(run: Path) -> str:
    info = read_job(run)
    try:
        subprocess.run(["scancel", str(info["job_id"])], capture_output=True, text=True, timeout=60, check=True)
    except FileNotFoundError:
        raise GantuneError("scancel not found: run this on a SLURM login node") from None
    except subprocess.CalledProcessError as e:
        raise GantuneError(f"scancel {info['job_id']} failed: {_first_line(e)}") from None
    return f"cancelled job {info['job_id']}; to continue the search later: {shlex.join(info['command'])}"


def describe(info: dict[str, Any]) -> str:
    return "\n".join([
        f"submitted job {info['job_id']} on {info['nodes']} node(s) ({info['partition']})",
        f"job folder: {info['job_dir']}",
        f"logs: {info['log']} (node 0; the others in the same folder)",
        f"experiment: {info['experiment_dir']}",
        f"follow: gantune slurm status {info['job_dir']}",
        f"tensorboard --logdir {info['experiment_dir']}",
    ])

