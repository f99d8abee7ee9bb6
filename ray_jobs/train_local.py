"""`gantune train CONFIG.yaml`: one training run without Ray, with a progress line.

Evaluates and checkpoints every `eval.every` steps into RUN_DIR/checkpoints/latest; `--resume`
continues from there. The same Trainer runs inside every Tune trial.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from gantune.errors import GantuneError
from ray_jobs.config import Config
from ray_jobs.trainer import Trainer


def train_local(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, float]:
    ckpt = run_dir / "checkpoints" / "latest"
    if not resume and ckpt.exists():
        raise GantuneError(f"{run_dir}: holds a run already; pass --resume to continue it or choose another --run-dir")
    trainer = Trainer(cfg, run_dir)
    if resume:
        if not ckpt.exists():
            raise GantuneError(f"{ckpt}: no checkpoint to resume from")
        trainer.load(ckpt)
    start, t0 = trainer.step, time.time()

    def progress(step: int, logs: dict[str, float]) -> None:
        rate = (step - start) * cfg.optim.batch_size / max(time.time() - t0, 1e-9)
        sys.stderr.write(
            f"\rstep {step}/{cfg.train.steps}  G {logs['loss/G/total']:.3f}  D {logs['loss/D/total']:.3f}"
            f"  {rate:.1f} img/s   "
        )
        sys.stderr.flush()

    metrics: dict[str, float] = {}
    while trainer.step < cfg.train.steps:
        logs = trainer.train(min(cfg.eval.every, cfg.train.steps - trainer.step), progress=progress)
        if logs.get("diverged"):
            metrics = {trainer.objective_name: trainer.diverged_score}
            sys.stderr.write(f"\nstep {trainer.step}: loss is not finite; stopping (last checkpoint kept)\n")
            break
        metrics = trainer.evaluate()
        trainer.save(ckpt)
        sys.stderr.write(f"\nstep {trainer.step}: {trainer.objective_name.removeprefix('metric/')} "
                         f"{metrics[trainer.objective_name]:.4f}  checkpoint {ckpt}\n")
    if trainer.logger is not None and metrics:
        trainer.logger.hparams(trainer.hparams(), {trainer.objective_name: metrics[trainer.objective_name]})
    trainer.close()
    return metrics
