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
- `PConvLoss`: the coarse net's own training (the reference's `models/PConv.py`, Liu et al.
  2018's weights): L1 in the hole x6 and outside x1, VGG16 perceptual (relu1_1..relu5_1) of the
  output and of the composite x0.05, Gram-matrix style (relu2_2, relu3_3, relu4_3) of the output
  x120, and hole TV of the composite x0.1. The reference's L1s are means over every pixel, hole
  or not, times the mask.
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


PCONV_PERCEPTUAL = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
PCONV_STYLE = ("relu2_2", "relu3_3", "relu4_3")
# The reference's weights of the coarse net's terms (Liu et al. 2018).
PCONV_WEIGHTS = {"hole": 6.0, "valid": 1.0, "perc": 0.05, "style": 120.0, "tv": 0.1}


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, C) Gram matrices, normalised by C * H * W as the reference's."""
    n, c, h, w = features.shape
    f = features.reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


class PConvLoss(nn.Module):
    """The coarse net's unweighted terms {hole, valid, perc, style, tv}; `PCONV_WEIGHTS` weighs them."""

    def __init__(self, *, random_weights: bool = False, weights_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        self.vgg = VGGFeatures("vgg16", [*PCONV_PERCEPTUAL, *PCONV_STYLE], random_weights=random_weights,
                               weights_dir=weights_dir)

    def forward(self, out: torch.Tensor, real: torch.Tensor, hole: torch.Tensor) -> dict[str, torch.Tensor]:
        """out: the coarse net's whole image; real: the ground truth; hole (N, 1, H, W), 1 = hole."""
        check_image_pair(out, real)
        known = 1 - hole
        composite = out * hole + real * known
        f_out, f_comp = self.vgg(out), self.vgg(composite)
        with torch.no_grad():
            f_real = self.vgg(real)
        perc = sum((F.l1_loss(f[layer], f_real[layer]) for f in (f_out, f_comp) for layer in PCONV_PERCEPTUAL),
                   out.new_zeros(()))
        style = sum((F.l1_loss(gram(f_out[layer]), gram(f_real[layer])) for layer in PCONV_STYLE), out.new_zeros(()))
        return {
            "hole": F.l1_loss(out * hole, real * hole),
            "valid": F.l1_loss(out * known, real * known),
            "perc": perc,
            "style": style,
            "tv": hole_tv_loss(composite, hole),
        }
