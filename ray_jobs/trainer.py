"""The training loop: one DeepSpeed engine per network of the family, EMA copies, evaluation,
checkpoints.

Reads top to bottom: distributed set-up, data, networks and engines, then `train(k)` runs k
steps of the family's phases (for SPADE: D, then G against a frozen D), `evaluate()` scores the
EMA generator on the fixed evaluation set, and `save()` / `load()` move the whole state through a
checkpoint folder (checkpoint.py). The trial function (trial.py), a multi-worker segment
(segment.py) and `gantune train` (cli.py) all drive this one class.

At N ranks it is the same program: `optim.batch_size` is the global batch, split evenly, and the
global batches do not depend on N; batch norms are synchronised; every rank starts from rank 0's
weights and buffers; a non-finite loss or gradient on any rank skips the step on every rank
(and enough of them roll back, then give up); all ranks save into one checkpoint folder.
Evaluation (evaluation.py) runs on rank 0 while the others wait for its result: the evaluation
set is small next to training, the objective is then bit-identical at every world size, and
only one rank holds the Inception network and the real statistics.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from gantune.errors import GantuneError
from metrics import objectives
from models.sync_batchnorm import convert_sync_batchnorm
from ray_jobs import checkpoint
from ray_jobs import config as config_lib
from ray_jobs import distributed as ddp
from ray_jobs.config import Config
from ray_jobs.engines import deepspeed_config, ema_beta, step_if_finite
from ray_jobs.evaluation import Evaluation, check_eval_set
from ray_jobs.families import FAMILIES
from ray_jobs.families.base import learning_rate
from ray_jobs.logging_tb import TrialLogger

log = logging.getLogger(__name__)

def _infinite(loader_factory: Any, epoch0: int, start: int) -> Iterator[dict[str, torch.Tensor]]:
    epoch = epoch0
    while True:
        yield from loader_factory(epoch, start)
        epoch, start = epoch + 1, 0


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, trial_id: str = "local") -> None:
        import deepspeed

        self.cfg, self.run_dir, self.trial_id = cfg, Path(run_dir), trial_id

        # Distributed set-up.
        ddp.init_distributed()
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        ddp.per_worker_batch(cfg.optim.batch_size, self.world)  # a batch that does not divide fails here
        self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.hosts = sorted(set(ddp.all_gather_object(socket.gethostname())))

        self.step = 0
        self.nimg = 0
        self.lineage: list[dict[str, Any]] = []  # every donor the weights came through
        self.restored_from: dict[str, Any] | None = None  # set by load() after an exploit

        # Construct networks and engines. One seed on every rank, then rank 0's parameters
        # (the engines broadcast them) and buffers (broadcast here) everywhere; the EMA copies
        # (G_ema) are loaded from those.
        self._seed_everything(cfg.train.seed)
        self.family = FAMILIES[cfg.model.family](cfg).to(self.device)

        # Load training set.
        self.train_set, self.eval_set = self.family.datasets()
        check_eval_set(cfg, self.eval_set)  # too few evaluation images: refused before the first step
        self._batches = self._batch_iterator()
        self.engines: dict[str, Any] = {}  # net name -> DeepSpeed engine, in the family's order
        self.ema: dict[str, torch.nn.Module] = {}  # net name -> its EMA copy (float32, eval mode)
        for net in self.family.nets:
            module = self.family.build(net.name)
            if self.world > 1:
                module = convert_sync_batchnorm(module)
            ema = copy.deepcopy(module) if net.ema else None  # a plain copy, before DeepSpeed wraps it
            lr = learning_rate(cfg, net)
            self.engines[net.name], _, _, _ = deepspeed.initialize(
                model=module, model_parameters=module.parameters(), config=deepspeed_config(cfg, lr, self.world)
            )
            ddp.broadcast_buffers(module)
            if ema is not None:
                ema.load_state_dict({k: v.float() for k, v in module.state_dict().items()})
                self.ema[net.name] = ema.eval().requires_grad_(False).to(self.device)
        for engine in self.engines.values():
            if hasattr(engine.optimizer, "check_grad_overflow"):
                # ZeRO's optimizer skips a step on a non-finite gradient only where asked (fp16,
                # bf16); asked here for every precision, train() counts its skips.
                engine.optimizer.check_grad_overflow = True
        # Non-finite steps (train.skip_limit, train.rollback_limit): skipped, then rolled back.
        self.skipped_steps = 0  # steps skipped in all, for a non-finite loss or gradient
        self._skip_run = 0  # consecutive ones
        self.rollbacks = 0
        self.lr_scale = 1.0  # halved by each rollback
        self.rollback_to: Path | None = None  # the last good checkpoint; the caller keeps it current
        self.gave_up: str | None = None  # why training stopped for good (rollback_limit reached)
        # What each net trains: a phase freezes the other nets, never a part a family froze.
        self._trainable = {name: [p for p in engine.module.parameters() if p.requires_grad]
                           for name, engine in self.engines.items()}
        self._seed_everything(cfg.train.seed + self.rank)  # per-rank noise and augmentation

        # Evaluation: fixed labels, fixed noise, cached real statistics.
        self._evaluation: Evaluation | None = None  # built at the first evaluation, on rank 0
        # The run folder once every check passed (data, weights, engines): a refused run leaves none.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_lib.write(cfg, self.run_dir / "config.yaml")
        self.logger = TrialLogger(self.run_dir / "tb") if self.rank == 0 else None

    # ----------------------------------------------------------------------------------------
    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _batch_iterator(self) -> Iterator[dict[str, torch.Tensor]]:
        """This rank's share of the global batches, from the current step on."""
        n, global_batch = len(self.train_set), self.cfg.optim.batch_size  # type: ignore[arg-type]
        if n < global_batch:
            where = f"{self.cfg.data.root}: " if self.cfg.data.source == "folder" else ""
            raise GantuneError(f"{where}the training set has {n} images, fewer than optim.batch_size={global_batch}")

        def loader(epoch: int, start: int) -> DataLoader:
            # Each rollback draws another order, so the steps it replays see other batches.
            sampler = ddp.ShardedBatchSampler(n, global_batch, self.rank, self.world,
                                              seed=self.cfg.train.seed + 1_000_003 * self.rollbacks, epoch=epoch,
                                              start=start)
            return DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.cfg.data.num_workers)

        per_epoch = n // global_batch
        return _infinite(loader, epoch0=self.step // per_epoch, start=self.step % per_epoch)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        dtype = torch.bfloat16 if self.cfg.optim.precision == "bf16" else torch.float32
        return {
            k: v.to(self.device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in batch.items()
            if isinstance(v, torch.Tensor)
        }

    def apply_hparams(self, cfg: Config) -> None:
        """Set this trial's searched values: after a PBT exploit the donor's checkpoint brings
        the donor's learning rates, so the trial's own mutated values are re-applied."""
        if cfg != self.cfg:  # new loss weights: rebuild the loss modules (VGG16/VGG19) once
            self.family = FAMILIES[cfg.model.family](cfg).to(self.device)
        self.cfg = cfg
        for net in self.family.nets:
            for group in self.engines[net.name].optimizer.param_groups:
                group["lr"] = learning_rate(cfg, net) * self.lr_scale
        config_lib.write(cfg, self.run_dir / "config.yaml")

    def hparams(self) -> dict[str, Any]:
        """What TensorBoard's hparams view shows for this run."""
        return self.family.hparams() | {net.lr_key: learning_rate(self.cfg, net) for net in self.family.nets}

    def learning_rates(self) -> dict[str, float]:
        """The optimizers' current learning rates, by net name."""
        return {name: engine.optimizer.param_groups[0]["lr"] for name, engine in self.engines.items()}

    # ----------------------------------------------------------------------------------------
    def train(self, n_steps: int, progress: Any = None) -> dict[str, float]:
        """Train until step + n_steps. Returns the last step's logged losses.

        A step whose loss or gradient is not finite (on any rank) is skipped: that phase's
        update, the phases after it and the EMA update do not run, and the buffers its forwards
        moved are put back, so that net's weights and optimizer state, every buffer and G_ema
        stay as they were, bit for bit (a first phase's skip leaves the whole step undone). It
        counts in `train/skipped_steps`. After `train.skip_limit` skips in a row
        the trainer rolls back to `rollback_to` with halved learning rates and trains on from
        there to the same step. Past `train.rollback_limit` rollbacks it gives up: `gave_up`
        says why, the remaining steps are not trained, and the logs carry `diverged`.
        """
        target = self.step + n_steps
        logs: dict[str, float] = {}
        while self.step < target and self.gave_up is None:
            logs = self._train_step()
            if logs.get("skipped"):
                if self._skip_run >= self.cfg.train.skip_limit:
                    self._roll_back()
            elif progress is not None:
                progress(self.step, logs)
        if self.gave_up is not None:
            # A trial that gave up still reports at each interval (PBT replaces it from a
            # better one); its steps run out without training.
            self.step = max(self.step, target)
            return {"diverged": 1.0, "train/skipped_steps": float(self.skipped_steps)}
        return logs

    def _train_step(self) -> dict[str, float]:
        batch_size = self.cfg.optim.batch_size  # global
        modules = {name: engine.module for name, engine in self.engines.items()}
        batch = self._to_device(next(self._batches))

        # The phases: one net's engine steps on the phase's loss; the others take part through
        # their raw modules, frozen (ZeRO-0 refuses a backward that crosses two engines).
        logs: dict[str, float] = {}
        skipped = False
        # Forwards move buffers (batch-norm statistics, spectral-norm vectors): a skipped step
        # puts them back, so it leaves no trace. They are small.
        buffers = [(b, b.clone()) for module in modules.values() for b in module.buffers()]
        d_every, d_repeats = self.cfg.train.d_schedule  # train.d_ratio: D's phases only
        for phase in self.family.phases:
            is_d = phase.net == "D"
            if skipped or not phase.active(self.step) or (is_d and self.step % d_every):
                continue
            engine = self.engines[phase.net]
            nets = {**modules, phase.net: engine}
            for name, params in self._trainable.items():
                for p in params:
                    p.requires_grad_(name == phase.net)
            for _ in range(d_repeats if is_d else 1):
                loss, phase_logs = self.family.loss(phase.name, nets, batch)
                if loss is None:  # the family skips this update (on every rank alike)
                    logs |= phase_logs
                    continue
                if not step_if_finite(engine, loss):
                    skipped = True
                    break
                logs |= phase_logs
                self.family.after_step(phase.name, nets)
                logs[f"loss/{phase.name}/total"] = loss.item()
        for params in self._trainable.values():
            for p in params:
                p.requires_grad_(True)
        self.step += 1
        self.nimg += batch_size
        if skipped:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            self.skipped_steps += 1
            self._skip_run += 1
            if self.logger is not None:
                log.warning("step %d skipped: non-finite loss or gradient (%d in a row, %d in all)",
                            self.step, self._skip_run, self.skipped_steps)
                self.logger.scalars({"train/skipped_steps": self.skipped_steps}, self.step)
            return {"skipped": 1.0, "train/skipped_steps": float(self.skipped_steps)}
        self._skip_run = 0

        # Update the EMA copies.
        beta = ema_beta(self.cfg, batch_size, self.nimg - batch_size)
        with torch.no_grad():
            for name, ema in self.ema.items():
                for p_ema, p in zip(ema.parameters(), modules[name].parameters()):
                    p_ema.copy_(p.detach().float().lerp(p_ema, beta))
                for b_ema, b in zip(ema.buffers(), modules[name].buffers()):
                    b_ema.copy_(b)
        if self.logger is not None:
            if self.step % self.cfg.train.log_every == 0:
                lrs = {f"lr/{name}": lr for name, lr in self.learning_rates().items()}
                self.logger.scalars({**logs, **lrs, "ema/beta": beta}, self.step)
            if self.step % self.cfg.train.image_every == 0:
                floats = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}  # bf16
                with torch.no_grad():
                    self.logger.image(*self.family.image_grid(self._eval_nets(), floats), self.step)
        return logs

    def _roll_back(self) -> None:
        """Back to `rollback_to` with the learning rates halved; or give up past the limit."""
        t = self.cfg.train
        if self.rollbacks >= t.rollback_limit or self.rollback_to is None:
            self.gave_up = (f"{self._skip_run} non-finite steps in a row at step {self.step}, after "
                            f"{self.rollbacks} rollback(s) (train.rollback_limit={t.rollback_limit})")
            log.warning("giving up: %s", self.gave_up)
            return
        # The counters, the lineage and an exploit not reported yet are this run's, not the checkpoint's.
        kept = (self.skipped_steps, self.rollbacks + 1, self.lr_scale / 2, self.lineage, self.restored_from)
        log.warning("rolling back from step %d to %s: %d non-finite steps in a row; learning rates halved",
                    self.step, self.rollback_to, self._skip_run)
        self.load(self.rollback_to)
        self.skipped_steps, self.rollbacks, self.lr_scale, self.lineage, self.restored_from = kept
        self._skip_run = 0
        # Other batches and other noise for the replayed steps: the same ones may fail the same way.
        self._seed_everything(self.cfg.train.seed + self.rank + 7919 * self.step + 104_729 * self.rollbacks)
        self._batches = self._batch_iterator()
        self.apply_hparams(self.cfg)

    def _eval_nets(self) -> dict[str, torch.nn.Module]:
        """The nets generation uses: the EMA copy where a net keeps one."""
        return {name: self.ema.get(name, engine.module) for name, engine in self.engines.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The objective on the EMA nets (G_ema), and the family's paired columns: fixed inputs,
        fixed noise, cached real statistics (evaluation.py). Rank 0 scores; every rank returns
        its result."""
        if self.rank != 0:
            return ddp.broadcast_object(None)
        if self._evaluation is None:
            self._evaluation = Evaluation(self.cfg, self.family, self.eval_set, self.device)
        metrics = self._evaluation(self.family, self._eval_nets())
        if self.logger is not None:
            self.logger.scalars(metrics, self.step)
        return ddp.broadcast_object(metrics)

    @property
    def objective_name(self) -> str:
        return self.cfg.eval.objective_key

    @property
    def diverged_score(self) -> float:
        """Reported instead of NaN by a diverged trial (PBT sorts NaN wrongly): the worst value
        in the objective's direction."""
        return objectives.DIVERGED_SCORES[self.cfg.eval.objective_mode]

    # ----------------------------------------------------------------------------------------
    def save(self, ckpt_dir: Path) -> Path:
        """Write every net (engines with optimizer state), the EMA copies, step, RNG and config into
        ckpt_dir, atomically (checkpoint.py). Collective: every rank calls it with the same
        ckpt_dir, on a filesystem all ranks see."""
        tensors = [t for engine in self.engines.values() for t in engine.module.state_dict().values()]
        tensors += [t for ema in self.ema.values() for t in ema.state_dict().values()]
        floats = [t.float() for t in tensors if t.is_floating_point()]
        if ddp.any_rank(bool(floats) and not bool(torch.isfinite(torch.stack(torch._foreach_norm(floats))).all())):
            # Never a non-finite checkpoint: the trial fails here, and restarts from its last good one.
            raise GantuneError(f"{ckpt_dir}: not saved: the weights at step {self.step} are not finite")
        rngs = ddp.all_gather_object(checkpoint.rng_state())  # each rank's own stream
        state = {
            "ema": {name: ema.state_dict() for name, ema in self.ema.items()},
            "step": self.step,
            "nimg": self.nimg,
            "config": config_lib.to_dict(self.cfg),
            "trial_id": self.trial_id,
            "lineage": self.lineage,
            "rng": rngs,  # one per rank
            "nonfinite": {"skipped_steps": self.skipped_steps, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale},
        }
        meta = {"step": self.step, "trial_id": self.trial_id, "lineage": self.lineage, "world": self.world}
        return checkpoint.save(ckpt_dir, self.engines, state, meta)

    def load(self, ckpt_dir: Path) -> None:
        """Restore everything save() wrote; a torn or incomplete folder is refused."""
        ckpt_dir = Path(ckpt_dir)
        state = checkpoint.read_state(ckpt_dir, list(self.engines))
        # The networks' shapes come from these keys; a mismatch is a config error, not a crash.
        saved = state["config"]
        mine = config_lib.to_flat(self.cfg)
        theirs = {f"{sec}.{k}": v for sec, values in saved.items() for k, v in values.items()}
        differ = [k for k in config_lib.shape_keys(theirs) if theirs.get(k) != mine.get(k)]
        if differ:
            raise GantuneError(
                f"{ckpt_dir}: checkpoint was trained with "
                + ", ".join(f"{k}={theirs.get(k)!r}" for k in differ)
                + " but this config has " + ", ".join(f"{k}={mine.get(k)!r}" for k in differ)
            )
        saved_world = int(checkpoint.read_meta(ckpt_dir).get("world", 1))
        for tag, engine in self.engines.items():
            checkpoint.load_engine(engine, ckpt_dir, tag, saved_world, scratch=self.run_dir)
        for name, ema in self.ema.items():
            try:
                ema.load_state_dict(state["ema"][name])
            except (RuntimeError, KeyError) as e:
                raise GantuneError(f"{ckpt_dir}: the EMA copy of {name} does not match this config's model "
                                   f"({str(e).splitlines()[0]})") from None
        self.step, self.nimg = int(state["step"]), int(state["nimg"])
        self.lineage = list(state["lineage"])
        nonfinite = state.get("nonfinite", {})
        self.skipped_steps = int(nonfinite.get("skipped_steps", 0))
        self.rollbacks = int(nonfinite.get("rollbacks", 0))
        self.lr_scale = float(nonfinite.get("lr_scale", 1.0))  # the rate these weights were stable at
        self._skip_run = 0
        self.restored_from = None
        if state["trial_id"] != self.trial_id:
            # A PBT exploit: this trial continues from another trial's weights.
            self.restored_from = {"step": self.step, "from_trial": state["trial_id"], "time": time.time()}
            self.lineage.append(self.restored_from)
        if len(state["rng"]) == self.world:  # the same ranks: each continues its own stream
            checkpoint.set_rng_state(state["rng"][self.rank])
        else:  # another world size: fresh per-rank streams, still a function of seed and step
            self._seed_everything(self.cfg.train.seed + self.rank + 7919 * self.step)
        self._batches = self._batch_iterator()
        self.apply_hparams(self.cfg)

    def keep_rollback_point(self, ckpt_dir: Path) -> None:
        """Save the state as it is now into ckpt_dir, where a rollback finds it, unless a
        checkpoint is already there to roll back to (a trial's start without one)."""
        if self.rollback_to is None:
            self.rollback_to = self.save(ckpt_dir)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

