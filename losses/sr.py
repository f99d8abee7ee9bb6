"""The losses of the super-resolution families, as XPixelGroup/BasicSR computes them
(basicsr/losses/{basic_loss,gan_loss}.py, basicsr/models/esrgan_model.py), and the SR log's edge
loss. Images are in [0, 1], BasicSR's range.

- `relativistic_g_loss` / `relativistic_d_losses`: ESRGAN's relativistic average GAN with the
  vanilla (BCE) criterion: each side's logits are judged relative to the other side's mean.
- `ESRGANPerceptualLoss`: VGG19 conv5_4 *before* its ReLU, ImageNet-normalised inputs, L1 to
  the detached target features (BasicSR's PerceptualLoss with layer_weights {conv5_4: 1}).
- `edge_loss`: L1 between the Sobel gradient magnitudes (kornia) of output and target.
"""

from __future__ import annotations

import os

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from backbones.vgg import VGGFeatures, check_image_pair

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def relativistic_g_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's side (unweighted): the real judged below the average fake, the fake above the average
    real. `real_logits` are detached by the caller's no-grad D pass; the gradient flows through
    both terms' fake logits, their mean included, as in BasicSR."""
    return (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0)) / 2


def relativistic_d_losses(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's real and fake terms, each weighted 0.5 as BasicSR, against the other side's detached
    mean: (0.5 BCE(real - mean(fake), 1), 0.5 BCE(fake - mean(real), 0))."""
    real = 0.5 * _bce(real_logits - fake_logits.detach().mean(), 1.0)
    fake = 0.5 * _bce(fake_logits - real_logits.detach().mean(), 0.0)
    return real, fake


class ESRGANPerceptualLoss(nn.Module):
    """mean|VGG19_conv5_4(norm(x)) - VGG19_conv5_4(norm(y))|, the target's features detached."""

    def __init__(self, *, random_weights: bool = False, weights_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        # VGGFeatures' ReLUs are not in place, so conv5_4's output is read before its ReLU.
        self.vgg = VGGFeatures("vgg19", ["conv5_4"], random_weights=random_weights, weights_dir=weights_dir)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: outputs, y: targets; (N, 3, H, W) in [0, 1]."""
        check_image_pair(x, y)
        fx = self.vgg((x - self.mean) / self.std)["conv5_4"]
        with torch.no_grad():
            fy = self.vgg((y - self.mean) / self.std)["conv5_4"]
        return F.l1_loss(fx, fy)


def edge_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean|sobel(x) - sobel(y)|, per channel gradient magnitudes."""
    return F.l1_loss(kornia.filters.sobel(x), kornia.filters.sobel(y))
