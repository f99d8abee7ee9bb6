"""`gantune train CONFIG.yaml`: one training run without Ray, with a progress line.

Evaluates and checkpoints every `eval.every` steps into RUN_DIR/checkpoints/latest; `--resume`
continues from there. The same Trainer runs inside every Tune trial.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from gantune.errors import GantuneError
from ray_jobs import checkpoint
from ray_jobs.config import Config
from ray_jobs.trainer import Trainer


def train_local(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, float]:
    ckpt = run_dir / "checkpoints" / "latest"
    if not resume and ckpt.exists():
        raise GantuneError(f"{run_dir}: holds a run already; pass --resume to continue it or choose another --run-dir")
    trainer = Trainer(cfg, run_dir)
    if resume:
        found = checkpoint.usable(ckpt)  # a save cut short: the copy it set aside
        trainer.load(found)
        trainer.rollback_to = found
    # Non-finite steps roll back to the latest checkpoint, or to the start.
    start_point = run_dir / "checkpoints" / "start"
    trainer.keep_rollback_point(start_point)
    start, t0 = trainer.step, time.time()

    def progress(step: int, logs: dict[str, float]) -> None:
        rate = (step - start) * cfg.optim.batch_size / max(time.time() - t0, 1e-9)
        totals = "  ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in logs.items() if k.endswith("/total"))
        sys.stderr.write(f"\rstep {step}/{cfg.train.steps}  {totals}  {rate:.1f} img/s   ")
        sys.stderr.flush()

    metrics: dict[str, float] = {}
    try:
        while trainer.step < cfg.train.steps:
            logs = trainer.train(min(cfg.eval.every, cfg.train.steps - trainer.step), progress=progress)
            if logs.get("diverged"):
                metrics = {trainer.objective_name: trainer.diverged_score}
                sys.stderr.write(f"\ngave up: {trainer.gave_up}; stopping (last checkpoint kept: {trainer.rollback_to})\n")
                break
            metrics = trainer.evaluate()
            trainer.rollback_to = trainer.save(ckpt)
            shutil.rmtree(start_point, ignore_errors=True)  # `latest` is the rollback point now
            sys.stderr.write(f"\nstep {trainer.step}: {trainer.objective_name.removeprefix('metric/')} "
                             f"{metrics[trainer.objective_name]:.4f}  checkpoint {ckpt}\n")
    except (GantuneError, OSError, KeyboardInterrupt):
        sys.stderr.write("\n")  # the error on a line of its own, not after the progress line
        raise
    if trainer.logger is not None and metrics:
        trainer.logger.hparams(trainer.hparams(), {trainer.objective_name: metrics[trainer.objective_name]})
    trainer.close()
    return metrics
