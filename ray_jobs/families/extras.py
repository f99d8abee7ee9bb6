"""The image-space terms any family can add to its generator loss: contextual loss (CX), DISTS
and focal frequency loss (FFL), the `loss` section's searched weights. Each is built only when
its weight is above zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ray_jobs.config import Config


@dataclass
class ExtraLosses:
    cx: nn.Module | None
    dists: nn.Module | None
    ffl: nn.Module | None

    def to(self, device: torch.device) -> "ExtraLosses":
        for loss in (self.cx, self.dists, self.ffl):
            if loss is not None:
                loss.to(device)
        return self


def build_extras(cfg: Config) -> ExtraLosses:
    from losses.contextual import ContextualLoss
    from losses.dists import DISTS
    from losses.ffl import FocalFrequencyLoss

    lo = cfg.loss
    rw, wd = lo.random_backbones, lo.weights_dir or None
    return ExtraLosses(
        cx=ContextualLoss(h=lo.cx_h, random_weights=rw, weights_dir=wd) if lo.lambda_cx > 0 else None,
        dists=DISTS(random_weights=rw, weights_dir=wd) if lo.lambda_dists > 0 else None,
        ffl=FocalFrequencyLoss(alpha=lo.ffl_alpha) if lo.lambda_ffl > 0 else None,
    )


def build_vgg(cfg: Config, weight: float) -> nn.Module | None:
    """The VGG19 perceptual loss of a family that has one (its own weight key), when weighted."""
    from losses.perceptual import VGGLoss

    lo = cfg.loss
    return VGGLoss(random_weights=lo.random_backbones, weights_dir=lo.weights_dir or None) if weight > 0 else None


def extra_terms(extras: ExtraLosses, cfg: Config, fake: torch.Tensor, real: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
    """{name: (weight, unweighted term)} of the weighted extras, in float32 whatever G's
    precision (bf16 engines)."""
    lo = cfg.loss
    fake32, real32 = fake.float(), real.float()
    terms = {}
    if extras.cx is not None:
        terms["cx"] = (lo.lambda_cx, extras.cx(fake32, real32))
    if extras.dists is not None:
        terms["dists"] = (lo.lambda_dists, extras.dists(fake32, real32))
    if extras.ffl is not None:
        terms["ffl"] = (lo.lambda_ffl, extras.ffl(fake32, real32))
    return terms


def weighted_sum(terms: dict[str, tuple[float, torch.Tensor]], phase: str) -> tuple[torch.Tensor, dict[str, float]]:
    """A phase's total and its logged unweighted terms (`loss/<phase>/<term>`)."""
    total = sum(w * t for w, t in terms.values())
    assert isinstance(total, torch.Tensor)
    return total, {f"loss/{phase}/{k}": t.item() for k, (_, t) in terms.items()}
