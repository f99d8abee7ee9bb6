"""The VGG perceptual loss of SPADE (Park et al. 2019), `lambda_vgg` in configs.

As NVlabs/SPADE's `VGGLoss` (models/networks/loss.py, VGG19 in architecture.py): VGG19
activations at relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1, an L1 distance per layer against
the detached target features, weighted 1/32, 1/16, 1/8, 1/4 and 1.

Input range: images in [-1, 1], the generator's tanh range, fed to VGG19 *as they are*. SPADE
does so: it applies no ImageNet normalisation although torchvision's VGG19 was trained on
normalised [0, 1] images. We keep that, so loss magnitudes and tuned `lambda_vgg` values carry
over from SPADE.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backbones.vgg import VGGFeatures, check_image_pair, layer_weights_for

SPADE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
SPADE_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class VGGLoss(nn.Module):
    """sum_l w_l * mean|VGG19_l(x) - VGG19_l(y)|, the target's features detached (unweighted)."""

    def __init__(
        self,
        layers: Sequence[str] = SPADE_LAYERS,
        layer_weights: Sequence[float] = SPADE_LAYER_WEIGHTS,
        *,
        random_weights: bool = False,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.layer_weights = layer_weights_for(layers, layer_weights)
        self.layers = list(layers)
        self.vgg = VGGFeatures(
            "vgg19", self.layers, random_weights=random_weights, seed=seed, weights_dir=weights_dir
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: generated images, y: targets; both (N, 3, H, W) in [-1, 1]."""
        check_image_pair(x, y)
        fx = self.vgg(x)
        with torch.no_grad():  # SPADE detaches the target features; no graph needed for them
            fy = self.vgg(y)
        loss = x.new_zeros(())
        for layer, w in zip(self.layers, self.layer_weights):
            loss = loss + w * F.l1_loss(fx[layer], fy[layer])
        return loss

