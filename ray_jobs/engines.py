"""What the trainer's DeepSpeed engines and EMA copies run with: the engine config of a net, the
step that refuses a non-finite loss or gradient, and the EMA decay of a step."""

from __future__ import annotations

from typing import Any

import torch

from ray_jobs import distributed as ddp
from ray_jobs.config import Config


def deepspeed_config(cfg: Config, lr: float, world: int) -> dict[str, Any]:
    o = cfg.optim
    return {
        "train_micro_batch_size_per_gpu": ddp.per_worker_batch(o.batch_size, world),
        "gradient_accumulation_steps": 1,
        "optimizer": {
            "type": "Adam",
            # On CPU, DeepSpeed's FusedAdam JIT-loads its C++ op in every new process (compiler
            # probes through subprocesses: ~6 s of a segment's ~9 s engine set-up, measured);
            # torch's Adam is the same update. On CUDA the fused kernel is the fast one.
            # adam_w_mode off: weight decay is Adam's L2 term, as torch.optim.Adam (U-GAT-IT's).
            "params": {"lr": lr, "betas": [o.beta1, o.beta2], "eps": o.adam_eps, "weight_decay": o.weight_decay,
                       "adam_w_mode": False, "torch_adam": not torch.cuda.is_available()},
        },
        "zero_optimization": {"stage": o.zero_stage},
        "bf16": {"enabled": o.precision == "bf16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def step_if_finite(engine: Any, loss: torch.Tensor) -> bool:
    """Backward and step, unless the loss or the gradient is not finite on some rank; then
    nothing changes and the gradient is dropped. Collective."""
    if ddp.any_rank(not bool(torch.isfinite(loss.detach()).all())):
        return False
    engine.backward(loss)
    if hasattr(engine.optimizer, "overflow"):  # ZeRO: DeepSpeed checks the (reduced) gradient
        engine.step()
        return bool(engine.was_step_applied())
    grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
    finite = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
    if ddp.any_rank(not finite):
        engine.zero_grad()
        return False
    engine.step()
    return True


def ema_beta(cfg: Config, batch_size: int, cur_nimg: int) -> float:
    """StyleGAN2-ADA: half-life ema_kimg, ramped up as ema_rampup * images seen so far."""
    ema_nimg = cfg.train.ema_kimg * 1000
    if cfg.train.ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * cfg.train.ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))
