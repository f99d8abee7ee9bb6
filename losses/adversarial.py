"""Adversarial losses of NVlabs/SPADE's `GANLoss`: hinge, least squares and the original
(non-saturating, BCE with logits) GAN loss, for the discriminator and the generator.

`pred` is a discriminator output: a tensor of logits, or a multiscale discriminator's list (one
entry per scale) of tensors or of feature lists, where only each scale's last element, the
prediction, counts and the per-scale losses are averaged.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from gantune.errors import GantuneError

GAN_MODES = ("hinge", "ls", "original")

Prediction = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]


def _single_scale(
    pred: torch.Tensor, target_is_real: bool, for_discriminator: bool, mode: str
) -> torch.Tensor:
    if mode == "original":
        # With target real, the generator's loss is -log sigmoid(D(G(z))): the non-saturating form.
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(pred, target)
    if mode == "ls":
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        return F.mse_loss(pred, target)
    # hinge
    if for_discriminator:
        margin = pred if target_is_real else -pred
        return F.relu(1 - margin).mean()  # = -mean(min(margin - 1, 0))
    if not target_is_real:
        raise ValueError("the generator's hinge loss aims for real: use target_is_real=True")
    return -pred.mean()


def gan_loss(
    pred: Prediction,
    target_is_real: bool,
    for_discriminator: bool,
    mode: str = "hinge",
) -> torch.Tensor:
    """Scalar adversarial loss of `pred` against the real (True) or fake (False) target.

    mode: "hinge" (SPADE's default; the generator's loss is -mean(pred)), "ls" (LSGAN, MSE to
    1 or 0) or "original" (BCE with logits to 1 or 0).
    """
    if mode not in GAN_MODES:
        raise GantuneError(f"mode: expected one of {', '.join(GAN_MODES)}, got {mode!r}")
    if isinstance(pred, torch.Tensor):
        return _single_scale(pred, target_is_real, for_discriminator, mode)
    if len(pred) == 0:
        raise ValueError("gan_loss: empty list of discriminator outputs")
    losses = []
    for scale in pred:
        last = scale if isinstance(scale, torch.Tensor) else scale[-1]
        losses.append(_single_scale(last, target_is_real, for_discriminator, mode))
    return torch.stack(losses).mean()
