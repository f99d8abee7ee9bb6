"""The Tune trial: one function, one trainer, one report per evaluation.

Ray Tune's PBT exploits only trials that reported a Tune checkpoint, and `perturbation_interval`
counts reports, so every report carries the objective and a checkpoint together. After an
exploit Tune restarts this function with the donor's checkpoint and the mutated config; the
trainer loads the donor's state and then re-applies this trial's own values (Ray #36660).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from ray_jobs import config as config_lib
from ray_jobs.trainer import DIVERGED_SCORE, Trainer


def searched_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's sampled values: Tune's config holds only the dotted search keys."""
    return {k: v for k, v in config.items() if "." in k}


def trial_fn(config: dict[str, Any], base_config: dict[str, Any]) -> None:
    cfg = config_lib.with_values(config_lib.from_dict(base_config, "base config"), searched_values(config))
    ctx = tune.get_context()
    trainer = Trainer(cfg, Path(ctx.get_trial_dir()), trial_id=ctx.get_trial_id())
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            trainer.load(Path(ckpt_dir))  # re-applies cfg's lr_G, lr_D and loss weights
    objective = trainer.objective_name
    # The first report after an exploit says whose checkpoint, at which step, came in. Every
    # report carries the keys: Tune's progress.csv keeps only the first report's columns.
    no_exploit = {"exploit/from_trial": "", "exploit/from_step": -1}
    restored = (
        {"exploit/from_trial": trainer.restored_from["from_trial"], "exploit/from_step": trainer.restored_from["step"]}
        if trainer.restored_from
        else no_exploit
    )
    hp = {f"hp/{k}": v for k, v in searched_values(config).items()}

    # A clone of a donor's final checkpoint still reports once, so the trial's result is its
    # own score on the weights it now holds.
    must_report = trainer.restored_from is not None
    while trainer.step < cfg.train.steps or must_report:
        must_report = False
        logs = trainer.train(min(cfg.eval.every, cfg.train.steps - trainer.step))
        diverged = bool(logs.get("diverged"))
        # Never report NaN: PBT's quantiles would sort it as a good score.
        metrics = {objective: DIVERGED_SCORE} if diverged else trainer.evaluate()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = trainer.save(Path(tmp) / "ckpt")
            report = {
                **metrics,
                **hp,
                "step": trainer.step,
                "lineage_depth": len(trainer.lineage),  # donors the weights came through
                "diverged": int(diverged),
                **{k: v for k, v in logs.items() if k.startswith("loss/")},
                **restored,
            }
            restored = no_exploit
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(str(ckpt)))
        if trainer.logger is not None:
            trainer.logger.hparams(trainer.family.hparams() | {"lr_G": cfg.optim.lr_G, "lr_D": cfg.optim.lr_D},
                                   {objective: metrics[objective]})
        if diverged:
            break
    trainer.close()
