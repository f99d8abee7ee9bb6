"""Multi-worker trials: each PBT interval is one Ray Train `TorchTrainer` segment.

Ray Train V2 has no `Tuner(trainer)`; the documented pattern runs a TorchTrainer inside a Tune
function trainable. The trial function (trial.py) calls `run_segment` once per report: W workers
join one process group, each builds the Trainer, loads the checkpoint the trial holds (its own
last one, or the one PBT cloned in), trains `eval.every` steps, rank 0 evaluates, all ranks save
into one folder, and rank 0 reports the metrics with that checkpoint. The trial function then
reports both to Tune, so PBT sees a Tune checkpoint and can copy it into other trials.

Every segment has its own Train run name: a name reused per trial makes Train auto-restore the
trial's own stale checkpoint instead of the one PBT cloned in.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PLACEMENTS = {"pack": "PACK", "spread": "SPREAD"}  # Ray's placement strategies for the workers
# In the trial's folder: the placement group of the segment running now (written by rank 0).
PLACEMENT_RECORD = ".segment_placement_group"


@dataclass(frozen=True)
class TrialResources:
    """What one trial asks of the cluster (the space file's `resources`)."""

    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    placement: str = "pack"  # pack: few nodes (fast links); spread: one worker per node where it can

    def tune_request(self) -> dict[str, float]:
        """The Tune trial's own reservation. A multi-worker trial's function only waits on its
        TorchTrainer, whose workers Train places in a placement group of their own; Tune refuses
        an all-zero request, and any CPU fraction would cost the workers a whole slot, so it
        reserves one byte of memory."""
        if self.workers_per_trial == 1:
            return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker}
        return {"cpu": 0, "memory": 1}


def interval_report(trainer: Any, steps: int) -> dict[str, Any]:
    """Train `steps`, score G_ema, and the metrics a report carries (without the checkpoint).

    Never NaN nor inf (PBT's quantiles would sort NaN as good): a trial that gave up (trainer.py's
    non-finite steps) reports `trainer.diverged_score` with `diverged_reason`, and so does a
    non-finite score. Every report carries the exploit and divergence keys: Tune's progress.csv
    keeps the first report's columns.
    """
    t0 = time.perf_counter()
    logs = trainer.train(steps)
    t1 = time.perf_counter()
    diverged = bool(logs.get("diverged"))
    reason = trainer.gave_up or ""
    metrics = {trainer.objective_name: trainer.diverged_score} if diverged else trainer.evaluate()
    if not all(math.isfinite(v) for v in metrics.values()):
        reason = f"non-finite {', '.join(k for k, v in metrics.items() if not math.isfinite(v))} at step {trainer.step}"
        metrics = {k: (v if math.isfinite(v) else trainer.diverged_score) for k, v in metrics.items()}
        metrics[trainer.objective_name] = trainer.diverged_score
    t2 = time.perf_counter()
    restored = trainer.restored_from or {"from_trial": "", "step": -1}
    trainer.restored_from = None  # said once, in the first report after the exploit
    return {
        **metrics,
        "step": trainer.step,
        "lineage_depth": len(trainer.lineage),  # donors the weights came through
        "diverged": int(diverged),  # for good: it trains no more
        "diverged_reason": reason,
        "train/skipped_steps": trainer.skipped_steps,
        "train/rollbacks": trainer.rollbacks,
        "hosts": ",".join(trainer.hosts),
        **{k: v for k, v in logs.items() if k.startswith("loss/")},
        "exploit/from_trial": restored["from_trial"],
        "exploit/from_step": restored["step"],
        "time/train_s": t1 - t0,
        "time/eval_s": t2 - t1,
    }


def segment_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a segment (every rank runs this)."""
    import ray.train

    from ray_jobs import config as config_lib
    from ray_jobs.trainer import Trainer

    t0 = time.perf_counter()
    if ray.train.get_context().get_world_rank() == 0:
        _record_placement_group(Path(loop_config["trial_dir"]))
    cfg = config_lib.from_dict(loop_config["config"], "trial config")
    trainer = Trainer(cfg, Path(loop_config["trial_dir"]), trial_id=loop_config["trial_id"])
    t1 = time.perf_counter()
    if loop_config["resume_from"]:
        trainer.load(Path(loop_config["resume_from"]))
        trainer.rollback_to = Path(loop_config["resume_from"])
    trainer.keep_rollback_point(Path(loop_config["staging_dir"]) / "start")  # the first segment's
    t2 = time.perf_counter()
    report = interval_report(trainer, min(cfg.eval.every, cfg.train.steps - trainer.step))
    t3 = time.perf_counter()
    # A trial that gave up saves nothing: its last good checkpoint stays the one to clone.
    ckpt = None if report["diverged"] else trainer.save(Path(loop_config["staging_dir"]) / "ckpt")
    # Where a segment's time goes besides training (benchmarks/segment_overhead.py).
    report |= {"time/init_s": t1 - t0, "time/load_s": t2 - t1, "time/save_s": time.perf_counter() - t3}
    if trainer.logger is not None:
        trainer.logger.hparams(trainer.hparams(), {trainer.objective_name: report[trainer.objective_name]})
    trainer.close()
    checkpoint = ray.train.Checkpoint.from_directory(str(ckpt)) if trainer.rank == 0 and ckpt is not None else None
    ray.train.report(report, checkpoint=checkpoint)


def run_segment(config: dict[str, Any], resources: TrialResources, trial_dir: Path, trial_id: str,
                resume_from: str | None) -> tuple[dict[str, Any], Any]:
    """One TorchTrainer run of `eval.every` steps: (rank 0's report, its checkpoint)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run_name = f"segment-{uuid.uuid4().hex[:12]}"
    segments = trial_dir / "segments"
    segments.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=segments, prefix=f".{run_name}-"))  # seen by every rank
    t0 = time.perf_counter()
    try:
        result = TorchTrainer(
            segment_worker,
            train_loop_config={"config": config, "trial_dir": str(trial_dir), "trial_id": trial_id,
                               "resume_from": resume_from, "staging_dir": str(staging)},
            scaling_config=ScalingConfig(
                num_workers=resources.workers_per_trial,
                use_gpu=resources.gpus_per_worker > 0,
                resources_per_worker={"CPU": resources.cpus_per_worker, "GPU": resources.gpus_per_worker},
                placement_strategy=PLACEMENTS[resources.placement],
            ),
            run_config=RunConfig(name=run_name, storage_path=str(segments)),
        ).fit()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result.metrics | {"time/segment_s": time.perf_counter() - t0}, result.checkpoint


def _record_placement_group(trial_dir: Path) -> None:
    """Rank 0: which placement group holds this segment's workers, for `release_placement_group`."""
    import ray

    pg = ray.util.get_current_placement_group()
    if pg is None:
        return
    tmp = trial_dir / f"{PLACEMENT_RECORD}.{os.getpid()}"
    tmp.write_text(pg.id.hex())
    os.replace(tmp, trial_dir / PLACEMENT_RECORD)


def release_placement_group(trial_dir: Path) -> None:
    """Before a trial's first segment: remove the placement group its last run left behind.

    Train's controller removes a segment's placement group when the segment ends, even when a
    worker or its node died. But when the trial's own process dies (killed, out of memory, its
    node lost), the controller it owns dies with it, and the group lives on until the search's
    driver exits: Train's PlacementGroupCleaner would remove it but needs Ray's state API, which
    this Ray (no dashboard) lacks. Measured: the CPUs stay held, so a restarted trial that needs
    them waits for ever. None of this trial's segments runs now, so its group is an orphan.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    record = trial_dir / PLACEMENT_RECORD
    try:
        pg_id = record.read_text().strip()
    except FileNotFoundError:
        return
    pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id)))
    state = placement_group_table(pg).get("state")
    if state not in (None, "REMOVED"):
        log.warning("%s: removing placement group %s (%s) left by the trial's previous run", trial_dir.name, pg_id, state)
        remove_placement_group(pg)
    record.unlink(missing_ok=True)


def drop_segment(checkpoint: Any) -> None:
    """Once Tune holds its copy, the segment's own run folder (Train's copy) goes."""
    if checkpoint is None:
        return
    run_dir = Path(checkpoint.path).parent
    if run_dir.parent.name == "segments":
        shutil.rmtree(run_dir, ignore_errors=True)
