"""The Tune trial: one function, one report per evaluation, each with its checkpoint.

Ray Tune's PBT exploits only trials that reported a Tune checkpoint, and `perturbation_interval`
counts reports, so every report carries the objective and a checkpoint together. After an
exploit Tune restarts this function with the donor's checkpoint and the mutated config; the
trainer loads the donor's state and then re-applies this trial's own values (Ray #36660).

One worker (the default): the trainer runs here, in the trial's own process. Several workers:
each interval is one Ray Train segment (segment.py), and this function only hands the
checkpoint from one segment to the next and to Tune.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from ray_jobs import config as config_lib
from ray_jobs.config import Config
from ray_jobs.segment import TrialResources, drop_segment, interval_report, release_placement_group, run_segment
from ray_jobs.checkpoint import read_meta, usable
from ray_jobs.trainer import Trainer


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's sampled values: Tune's config holds only the dotted search keys."""
    return {k: v for k, v in config.items() if "." in k}


def trial_dir() -> Path:
    """The trial's folder on the storage path, which every node sees (TensorBoard, the rollback
    point, multi-worker segments). Not `get_trial_dir()`: that is a working folder under the
    node's own /tmp/ray, copied to the storage path only now and then, and not seen by the
    workers of a segment on other nodes."""
    from ray.train._internal.session import get_session

    return Path(get_session().storage.trial_fs_path)


def trial_fn(config: dict[str, Any], base_config: dict[str, Any], resources: dict[str, Any]) -> None:
    cfg = config_lib.with_values(config_lib.from_dict(base_config, "base config"), searched_values(config))
    res = TrialResources(**resources)
    hp = {f"hp/{k}": v for k, v in searched_values(config).items()}
    if res.workers_per_trial > 1:
        _segments(cfg, res, hp)
    else:
        _in_process(cfg, hp)


def _in_process(cfg: Config, hp: dict[str, Any]) -> None:
    ctx = tune.get_context()
    trainer = Trainer(cfg, trial_dir(), trial_id=ctx.get_trial_id())
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # Tune's copy on the storage path; an earlier one if it is torn
        path = usable(Path(checkpoint.path))
        trainer.load(path)  # re-applies cfg's lr_G, lr_D and loss weights
        trainer.rollback_to = path
    # Non-finite steps roll back to the last reported checkpoint, or to the start (kept until
    # the first report).
    start = trial_dir() / ".rollback_start"
    trainer.keep_rollback_point(start)
    # A clone of a donor's final checkpoint still reports once, so the trial's result is its
    # own score on the weights it now holds.
    must_report = trainer.restored_from is not None
    while trainer.step < cfg.train.steps or must_report:
        must_report = False
        report = interval_report(trainer, min(cfg.eval.every, cfg.train.steps - trainer.step))
        if report["diverged"]:
            # Gave up: it reports the worst score at each interval without a checkpoint, until
            # PBT clones a better trial into it or its steps run out.
            tune.report({**report, **hp})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = trainer.save(Path(tmp) / "ckpt")
            tune.report({**report, **hp}, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
        trainer.rollback_to = Path(tune.get_checkpoint().path)  # Tune's copy of it
        shutil.rmtree(start, ignore_errors=True)
        if trainer.logger is not None:
            trainer.logger.hparams(trainer.hparams(), {trainer.objective_name: report[trainer.objective_name]})
    trainer.close()


def _segments(cfg: Config, res: TrialResources, hp: dict[str, Any]) -> None:
    ctx = tune.get_context()
    trial_path, trial_id = trial_dir(), ctx.get_trial_id()
    # Train's copies of earlier segments: a trial PBT exploits is stopped inside tune.report,
    # before it could drop them. None of its segments runs now, so the workers' placement group
    # of a run that died goes too.
    shutil.rmtree(trial_path / "segments", ignore_errors=True)
    release_placement_group(trial_path)
    checkpoint = tune.get_checkpoint()  # Tune's copy on the storage path, which every node sees
    resume_from = str(usable(Path(checkpoint.path))) if checkpoint is not None else None  # torn: an earlier one
    meta = read_meta(Path(resume_from)) if resume_from is not None else {"step": 0, "trial_id": trial_id}
    # As in-process: a clone of a donor's final checkpoint still reports once.
    step, must_report = int(meta["step"]), meta["trial_id"] != trial_id
    gave_up: dict[str, Any] | None = None
    while step < cfg.train.steps or must_report:
        must_report = False
        if gave_up is not None:  # as in-process: the worst score at each interval, no segment
            step = min(step + cfg.eval.every, cfg.train.steps)
            tune.report({**gave_up, "step": step, "exploit/from_trial": "", "exploit/from_step": -1, **hp})
            continue
        report, segment_ckpt = run_segment(config_lib.to_dict(cfg), res, trial_path, trial_id, resume_from)
        tune.report({**report, **hp}, checkpoint=segment_ckpt)
        drop_segment(segment_ckpt)
        if report["diverged"]:
            gave_up = report
        else:
            resume_from = tune.get_checkpoint().path  # Tune's copy of it
        step = int(report["step"])
