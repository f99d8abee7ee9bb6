"""`gantune tune SPACE.yaml`: a search space file -> ray.tune.Tuner -> summary.json.

The space file names a base config, overrides, the search space over dotted keys, the
scheduler (pbt, asha, or none for random/grid search), num_samples, the evaluation interval
(`eval_every`, steps between reports), resources per trial (`workers_per_trial`,
`cpus_per_worker`, `gpus_per_worker`, `placement`) and the storage path. PBT minimises the
objective and perturbs the searched keys. `--smoke` shrinks any search to a first try.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch

from gantune.errors import GantuneError
from metrics.objectives import INCEPTION_OBJECTIVES
from ray_jobs import config as config_lib
from ray_jobs.space import SearchSpec, load_spec, parse_resources

log = logging.getLogger(__name__)


def _check_tune_state(exp_dir: Path) -> None:
    """Refuse to resume from Tune state files cut short: Tune copies them to the storage path file
    by file, overwriting in place, so a driver killed mid-copy can leave one empty; Tune would then
    log a warning and start the search over in the same folder (measured)."""
    import ray.cloudpickle as cloudpickle

    for pattern in ("experiment_state-*.json", "basic-variant-state-*.json", "searcher-state-*.pkl",
                    "callback-states-*.pkl"):
        newest = max(exp_dir.glob(pattern), default=None)  # Tune reads the newest by name
        if newest is None:
            continue
        try:
            data = newest.read_bytes()
            # basic-variant-state-*.json is a pickle, whatever its name says
            json.loads(data) if newest.name.startswith("experiment_state-") else cloudpickle.loads(data)
        except Exception:  # whatever a cut-short file raises (EOFError, UnpicklingError, ValueError)
            raise GantuneError(f"{newest}: Tune's search state is cut short (the driver was killed while Tune "
                               f"copied it?); this search cannot be resumed") from None


def _check_listens(address: str, timeout_s: float = 10.0) -> None:
    """A Ray head's HOST:PORT must accept a connection ("auto" and ray:// addresses are Ray's to
    find and check)."""
    host, sep, port = address.rpartition(":")
    if address == "auto" or "://" in address:
        return
    if not sep or not host or not port.isdigit():
        raise GantuneError(f"Ray cluster address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise GantuneError(f"Ray cluster at {address}: cannot connect ({e.strerror or e}); "
                           f"is `ray start --head` running there?") from None


def _check_batch(spec: SearchSpec) -> None:
    from ray_jobs.distributed import per_worker_batch

    try:
        per_worker_batch(spec.base.optim.batch_size, spec.resources.workers_per_trial)
    except GantuneError as e:
        raise GantuneError(f"{spec.path}: {e}") from None


def _smoke(spec: SearchSpec) -> SearchSpec:
    """`--smoke`: any search as 2 trials of 2 evaluations of a few steps, at the family's
    smallest width and a small image, for a first try and for CI. It checks the plumbing, not
    the metric: backbones are random and Inception features 192-d (a Frechet objective is named
    fd_random_inception_dims192: the eigendecomposition of a 2048-d covariance of 8 images takes
    seconds and says nothing more), and on a machine without CUDA a GPU space runs its workers on
    one CPU each."""
    from ray import tune

    from ray_jobs.families import FAMILIES

    every = 2
    base = config_lib.with_values(spec.base, {
        "data.size_px": 32, "data.n_train": 16, "data.n_eval": 8,
        "optim.batch_size": 2 * spec.resources.workers_per_trial,
        "train.steps": 2 * every, "train.log_every": 1, "train.image_every": every,
        "eval.every": every, "eval.batch_size": 8,
        "loss.random_backbones": True,
        **({"eval.random_weights": True, "eval.dims": 192}
           if spec.base.eval.objective in INCEPTION_OBJECTIVES else {}),
        **FAMILIES[spec.base.model.family].smoke_overrides,  # a family that needs 64 px says so
    }, f"{spec.path} --smoke")
    # A grid multiplies the samples (2 x each grid's size): in a smoke run its values are drawn.
    space = {k: tune.choice(v["grid_search"]) if isinstance(v, dict) and "grid_search" in v else v
             for k, v in spec.space.items()}
    resources = spec.resources
    if resources.gpus_per_worker and not torch.cuda.is_available():
        resources = dataclasses.replace(resources, gpus_per_worker=0.0, cpus_per_worker=min(resources.cpus_per_worker, 1.0))
    return dataclasses.replace(spec, base=base, space=space, num_samples=2, resources=resources)


def _scheduler(spec: SearchSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.sample import Categorical

    from ray_jobs.pbt import ResumablePBT

    if spec.scheduler == "pbt":
        return ResumablePBT(
            time_attr="training_iteration",
            perturbation_interval=spec.perturbation_interval,
            # A choice is perturbed as Tune's lists are (a neighbouring value, or resampled):
            # Tune multiplies any other domain's value by 0.8 or 1.2, a crash on a string.
            hyperparam_mutations={k: list(v.categories) if isinstance(v, Categorical) else v
                                  for k, v in spec.space.items()},
            quantile_fraction=spec.quantile_fraction,
            resample_probability=spec.resample_probability,
            synch=spec.synch,
        )
    if spec.scheduler == "asha":
        n_evals = max(spec.base.train.steps // spec.base.eval.every, 1)
        return ASHAScheduler(time_attr="training_iteration", max_t=n_evals, grace_period=1)
    return None


def _max_concurrent(spec: SearchSpec) -> int | None:
    """Multi-worker trials reserve nothing in Tune (Train places their workers), so Tune is told
    how many fit: as many trials as the cluster holds workers for. Refused when not one fits."""
    import ray

    res = spec.resources
    have = ray.cluster_resources()
    fits = []
    for key, per_worker in (("CPU", res.cpus_per_worker), ("GPU", res.gpus_per_worker)):
        if per_worker > 0:
            fits.append(int(have.get(key, 0) // (per_worker * res.workers_per_trial)))
    if fits and min(fits) < 1:  # Tune would leave every trial PENDING for ever
        raise GantuneError(
            f"{spec.path}: a trial needs {res.workers_per_trial} workers x {res.cpus_per_worker:g} CPU"
            f" + {res.gpus_per_worker:g} GPU, but the Ray cluster has {have.get('CPU', 0):g} CPU and"
            f" {have.get('GPU', 0):g} GPU"
        )
    if res.workers_per_trial == 1:
        return spec.max_concurrent or None
    return min([*fits, spec.max_concurrent or min(fits)])


def run_search(space_path: str | os.PathLike[str], resume: bool = False, name: str | None = None, *,
               smoke: bool = False, ray_address: str | None = None,
               resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or with resume, continue) the search a space file describes; returns the summary.

    smoke: see `smoke()`. ray_address: join that Ray cluster (a SLURM job's, or one started with
    `ray start`) instead of starting a local one. resources: overrides of the space file's
    resources (`gantune slurm` derives them from the nodes it was given)."""
    import ray
    from ray import tune

    from ray_jobs.retention import CheckpointRetention
    from ray_jobs.summary import print_summary, write_summary
    from ray_jobs.trial import trial_fn

    spec = load_spec(space_path)
    if name is not None:
        spec = dataclasses.replace(spec, name=name)
    if smoke:
        spec = _smoke(spec)
    if resources:
        spec = dataclasses.replace(spec, resources=parse_resources("resource overrides", resources, spec.resources))
    _check_batch(spec)
    exp_dir = spec.experiment_dir
    try:  # before any trial starts, not at its first checkpoint
        spec.storage_path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=spec.storage_path).close()
    except OSError as e:
        raise GantuneError(f"{spec.path}: storage_path {spec.storage_path} is not writable ({e.strerror or e})") from None
    if resume and not tune.Tuner.can_restore(str(exp_dir)):
        raise GantuneError(f"{exp_dir}: no search to resume there (run without --resume to start one)")
    if resume:
        _check_tune_state(exp_dir)
    if not resume and exp_dir.exists() and any(exp_dir.iterdir()):
        raise GantuneError(f"{exp_dir}: a search already exists; pass --resume to continue it, or change name")

    own_cluster = ray_address is None and not ray.is_initialized()
    if ray_address is not None:
        _check_listens(ray_address)  # ray.init retries an address nobody answers for minutes
        try:
            ray.init(address=ray_address, log_to_driver=True, configure_logging=False)
        except Exception as e:  # ConnectionError, an auth token refused, a bad address: one line
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise GantuneError(f"Ray cluster at {ray_address}: {reason}") from None
    elif own_cluster:
        # A one-machine search: a local Ray cluster bound to loopback, nothing exposed.
        ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), include_dashboard=False,
                 log_to_driver=True, configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        max_concurrent = _max_concurrent(spec)
        if spec.synch and max_concurrent is not None and max_concurrent < spec.num_samples:
            # Trials past the limit start only when others finish: synchronous PBT then compares
            # the trials that run together.
            log.warning("%s: scheduler.synch with %d of %d trials at once: PBT compares those that run together",
                        spec.path, max_concurrent, spec.num_samples)
        trainable = tune.with_resources(
            tune.with_parameters(trial_fn, base_config=config_lib.to_dict(spec.base),
                                 resources=dataclasses.asdict(spec.resources)),
            spec.resources.tune_request(),
        )
        if resume:  # with the scheduler and retention it started with (both in the tuner state)
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
        else:
            scheduler = _scheduler(spec)
            retention = ([] if spec.keep_last is None else
                         [CheckpointRetention(spec.keep_last, spec.keep_best, spec.objective, spec.mode, scheduler)])
            tuner = tune.Tuner(
                trainable,
                param_space=dict(spec.space),
                tune_config=tune.TuneConfig(
                    metric=spec.objective,
                    mode=spec.mode,
                    scheduler=scheduler,
                    num_samples=spec.num_samples,
                    max_concurrent_trials=max_concurrent,
                    trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
                ),
                run_config=tune.RunConfig(
                    name=spec.name,
                    storage_path=str(spec.storage_path),
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    callbacks=retention,
                    verbose=1,
                ),
            )
        results = tuner.fit()
        # Train's copies of multi-worker segments: Tune holds its own copy of every reported one, and
        # a segment still running when PBT stopped its trial may have finished after the trial's
        # own clean-up. Nothing runs now.
        for segments in exp_dir.glob("trial_*/segments"):
            shutil.rmtree(segments, ignore_errors=True)
    finally:
        if own_cluster:
            # Stop this search's own cluster (before the summary: its idle trial actors are
            # terminated here, not at interpreter exit, where their SIGTERM handlers print after it).
            ray.shutdown()
    # Ctrl-C (or SIGUSR1) stops Tune gracefully: fit() returns, and the stopped trials look
    # TERMINATED. Only a trial function that returned marks its last result done. ASHA stops
    # trials on purpose, so there a TERMINATED trial counts as finished.
    complete = all(
        r.error is not None or (r.metrics or {}).get("done") or spec.scheduler == "asha"
        for r in results
    )
    summary = write_summary(results, exp_dir, spec.objective, spec.mode, list(spec.space), complete)
    print_summary(summary, exp_dir)
    if not complete:
        raise GantuneError(
            f"search interrupted with trials unfinished; continue it with: gantune tune {spec.path} --resume"
            + (" --smoke" if smoke else "")
        )
    return summary

