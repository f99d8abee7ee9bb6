"""PD-GAN's losses besides the GAN and feature-matching ones (KumapowerLIU/PD-GAN
`models/PDGAN.py`, `models/loss.py`). Masks are hole masks, 1 = hole; images in [-1, 1].

- `PDGANPerceptualLoss`: VGG16 relu1_1, relu2_1, relu3_1, relu4_1, each weighted 1, mean L1 to
  the detached target features, on the images as they are (no ImageNet normalisation), and the
  perceptual diversity term on relu4_1 from the same network.
- `diversity_loss`: 1 / (mean |VGG16_relu4_1(a * M) - VGG16_relu4_1(b * M)| + 1e-5) for two
  outputs of two noises: small when the holes of the two outputs differ.
- `hole_tv_loss`: total variation of the composite over pixel pairs that both lie in the hole
  dilated by one pixel. The reference's row term subtracts the last row from the first instead of
  neighbouring rows; here both directions take neighbours.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from backbones.vgg import VGGFeatures, check_image_pair

PERCEPTUAL_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
DIVERSITY_EPS = 1e-5


class PDGANPerceptualLoss(nn.Module):
    def __init__(self, *, random_weights: bool = False, weights_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.vgg = VGGFeatures("vgg16", list(PERCEPTUAL_LAYERS), random_weights=random_weights, weights_dir=weights_dir)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sum over the four layers of mean |VGG16_l(x) - VGG16_l(y)|, y's features detached."""
        check_image_pair(x, y)
        fx = self.vgg(x)
        with torch.no_grad():
            fy = self.vgg(y)
        return sum((F.l1_loss(fx[layer], fy[layer]) for layer in PERCEPTUAL_LAYERS), x.new_zeros(()))

    def diversity(self, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """diversity_loss on this network's relu4_1."""
        fa, fb = self.vgg(a * mask)["relu4_1"], self.vgg(b * mask)["relu4_1"]
        return diversity_loss(fa, fb)


def diversity_loss(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    return 1 / (F.l1_loss(features_a, features_b) + DIVERSITY_EPS)


def hole_tv_loss(composite: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """mean over all neighbour pairs of |difference| * [both pixels in the dilated hole], columns
    plus rows. composite (N, C, H, W); hole (N, 1, H, W)."""
    dilated = F.max_pool2d(hole, kernel_size=3, stride=1, padding=1)
    cols = dilated[..., :, :-1] * dilated[..., :, 1:]
    rows = dilated[..., :-1, :] * dilated[..., 1:, :]
    tv_cols = ((composite[..., :, :-1] - composite[..., :, 1:]).abs() * cols).mean()
    tv_rows = ((composite[..., :-1, :] - composite[..., 1:, :]).abs() * rows).mean()
    return tv_cols + tv_rows
