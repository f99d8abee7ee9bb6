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
from ray_jobs.segment import TrialResources, drop_segment, interval_report, run_segment
from ray_jobs.checkpoint import read_meta
from ray_jobs.trainer import Trainer


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's sampled values: Tune's config holds only the dotted search keys."""
    return {k: v for k, v in config.items() if "." in k}


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
    trainer = Trainer(cfg, Path(ctx.get_trial_dir()), trial_id=ctx.get_trial_id())
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            trainer.load(Path(ckpt_dir))  # re-applies cfg's lr_G, lr_D and loss weights
    # A clone of a donor's final checkpoint still reports once, so the trial's result is its
    # own score on the weights it now holds.
    must_report = trainer.restored_from is not None
    while trainer.step < cfg.train.steps or must_report:
        must_report = False
        report = interval_report(trainer, min(cfg.eval.every, cfg.train.steps - trainer.step))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = trainer.save(Path(tmp) / "ckpt")
            tune.report({**report, **hp}, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
        if trainer.logger is not None:
            trainer.logger.hparams(trainer.hparams(), {trainer.objective_name: report[trainer.objective_name]})
        if report["diverged"]:
            break
    trainer.close()


def _segments(cfg: Config, res: TrialResources, hp: dict[str, Any]) -> None:
    ctx = tune.get_context()
    trial_dir, trial_id = Path(ctx.get_trial_dir()), ctx.get_trial_id()
    # Train's copies of earlier segments: a trial PBT exploits is stopped inside tune.report,
    # before it could drop them. None of its segments runs now.
    shutil.rmtree(trial_dir / "segments", ignore_errors=True)
    checkpoint = tune.get_checkpoint()  # Tune's copy on the storage path, which every node sees
    meta = read_meta(Path(checkpoint.path)) if checkpoint is not None else {"step": 0, "trial_id": trial_id}
    # As in-process: a clone of a donor's final checkpoint still reports once.
    step, must_report = int(meta["step"]), meta["trial_id"] != trial_id
    while step < cfg.train.steps or must_report:
        must_report = False
        report, segment_ckpt = run_segment(config_lib.to_dict(cfg), res, trial_dir, trial_id,
                                           checkpoint.path if checkpoint is not None else None)
        tune.report({**report, **hp}, checkpoint=segment_ckpt)
        drop_segment(segment_ckpt)
        checkpoint, step = tune.get_checkpoint(), int(report["step"])  # Tune's copy of it
        if report["diverged"]:
            break
