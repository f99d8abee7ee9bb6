"""DISTS (Ding et al. 2020), deep image structure and texture similarity, `lambda_dists` in configs.

As the dists-pytorch package (DISTS_pytorch/DISTS_pt.py): VGG16 with every max pooling replaced
by L2 pooling (Hanning window), ImageNet normalisation, features at the input and after the five
stages (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3). Per channel k of each, with global means
mu, variances sigma^2 and covariance sigma_xy, and c1 = c2 = 1e-6:
  structure l = (2 mu_x mu_y + c1) / (mu_x^2 + mu_y^2 + c1)
  texture   s = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2)
  DISTS = 1 - sum_k (alpha_k l_k + beta_k s_k), with alpha and beta divided by their joint sum.
The loss is the batch mean (the package's `require_grad=True, batch_average=True`).

alpha and beta are the trained weights the dists-pytorch package ships (DISTS_pytorch/weights.pt).
They are read from the installed package's folder without importing it (it imports torchvision).

Input range: images in [-1, 1]; mapped to [0, 1], the range dists-pytorch expects.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from backbones.vgg import VGGFeatures, check_image_pair
from gantune.errors import GantuneError

DISTS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (3, 64, 128, 256, 512, 512)  # the input image, then the five stages
_C1 = _C2 = 1e-6
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def alpha_beta_path() -> Path:
    """DISTS_pytorch/weights.pt of the installed dists-pytorch package."""
    spec = importlib.util.find_spec("DISTS_pytorch")  # a top-level name: nothing is imported
    if spec is None or not spec.submodule_search_locations:
        raise GantuneError(
            "DISTS needs the alpha/beta weights shipped by the dists-pytorch package: "
            "`pip install dists-pytorch`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "weights.pt"
    if not path.is_file():
        raise GantuneError(
            f"{path} is missing: reinstall with `pip install --force-reinstall dists-pytorch`"
        )
    return path


def load_alpha_beta(
    path: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official alpha and beta, each (1, 1475, 1, 1)."""
    path = Path(path) if path is not None else alpha_beta_path()
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
        alpha, beta = weights["alpha"], weights["beta"]
    except Exception as e:
        raise GantuneError(f"{path}: not a DISTS alpha/beta file ({e})") from None
    shape = (1, sum(CHANNELS), 1, 1)
    if tuple(alpha.shape) != shape or tuple(beta.shape) != shape:
        raise GantuneError(
            f"{path}: alpha and beta must have shape {shape}, "
            f"got {tuple(alpha.shape)} and {tuple(beta.shape)}"
        )
    return alpha.detach().float(), beta.detach().float()


class DISTS(nn.Module):
    """DISTS as a loss: forward() is the batch mean (unweighted), distance() is per image."""

    def __init__(
        self,
        *,
        random_weights: bool = False,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
        alpha_beta_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        alpha, beta = load_alpha_beta(alpha_beta_file)
        self.vgg = VGGFeatures(
            "vgg16",
            DISTS_LAYERS,
            pooling="l2",
            random_weights=random_weights,
            seed=seed,
            weights_dir=weights_dir,
        )
        # Buffers, not parameters: DISTS is a fixed metric here, never trained.
        self.register_buffer("alpha", alpha, persistent=False)
        self.register_buffer("beta", beta, persistent=False)
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def _features(self, images01: torch.Tensor) -> list[torch.Tensor]:
        feats = self.vgg((images01 - self.mean) / self.std)
        return [images01] + [feats[layer] for layer in DISTS_LAYERS]

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """DISTS(x, y) per image, shape (N,), 0 for identical images; x, y in [-1, 1]."""
        check_image_pair(x, y)
        fx = self._features((x + 1) / 2)
        fy = self._features((y + 1) / 2)
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, CHANNELS, dim=1)
        betas = torch.split(self.beta / w_sum, CHANNELS, dim=1)
        structure = texture = x.new_zeros(x.shape[0], 1, 1, 1)
        for a, b, f0, f1 in zip(alphas, betas, fx, fy):
            mu0 = f0.mean([2, 3], keepdim=True)
            mu1 = f1.mean([2, 3], keepdim=True)
            s1 = (2 * mu0 * mu1 + _C1) / (mu0**2 + mu1**2 + _C1)
            structure = structure + (a * s1).sum(1, keepdim=True)
            var0 = ((f0 - mu0) ** 2).mean([2, 3], keepdim=True)
            var1 = ((f1 - mu1) ** 2).mean([2, 3], keepdim=True)
            cov = (f0 * f1).mean([2, 3], keepdim=True) - mu0 * mu1
            s2 = (2 * cov + _C2) / (var0 + var1 + _C2)
            texture = texture + (b * s2).sum(1, keepdim=True)
        return 1 - (structure + texture).flatten()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: generated images, y: targets; both (N, 3, H, W) in [-1, 1]. A scalar."""
        return self.distance(x, y).mean()
