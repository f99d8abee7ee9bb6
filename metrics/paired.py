"""PSNR and SSIM of generated images against their paired real images, as BasicSR computes them
(basicsr/metrics/psnr_ssim.py, the figures super-resolution papers report):

- both images are 8-bit (BasicSR scores the saved uint8 images: [0, 1] values are rounded to
  multiples of 1/255), then `crop_border` pixels are cut from every edge;
- on RGB, or on the Y channel of ITU-R BT.601 in studio range (Y = 16 + 65.481 R + 128.553 G +
  24.966 B for R, G, B in [0, 1], BasicSR's `rgb2ycbcr(y_only=True)`);
- PSNR is 10 log10(1 / MSE) per image; SSIM is Wang et al.'s, an 11-tap Gaussian window of
  sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2, the valid part of the map, averaged over it and the
  channels. Both are then averaged over the images. The arithmetic is kornia's, in float64.
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

from gantune.errors import GantuneError
from metrics.objectives import metric_name

_BT601_Y = (65.481, 128.553, 24.966)  # studio-range luma of R, G, B in [0, 1], on a 0..255 scale


def y_channel(images01: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) BT.601 studio-range Y, in [16/255, 235/255]."""
    weights = torch.tensor(_BT601_Y, dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
    return ((images01 * weights).sum(1, keepdim=True) + 16.0) / 255.0


def prepare(images01: Tensor, *, crop_border: int = 0, y_only: bool = False) -> Tensor:
    """8-bit rounding, border crop and colour space: what both images go through first."""
    if images01.ndim != 4 or images01.shape[1] != 3:
        raise GantuneError(f"paired metrics: expected RGB images (N, 3, H, W), got {tuple(images01.shape)}")
    x = (images01.double().clamp(0, 1) * 255).round() / 255
    if crop_border:
        x = x[..., crop_border:-crop_border, crop_border:-crop_border]
    return y_channel(x) if y_only else x


def psnr(fake01: Tensor, real01: Tensor, *, crop_border: int = 0, y_only: bool = False) -> Tensor:
    """Per-image PSNR in dB, (N,); an identical pair scores inf, as in BasicSR."""
    a, b = _pair(fake01, real01, crop_border, y_only)
    return torch.stack([kornia.metrics.psnr(x, y, max_val=1.0) for x, y in zip(a, b)])


def ssim(fake01: Tensor, real01: Tensor, *, crop_border: int = 0, y_only: bool = False) -> Tensor:
    """Per-image SSIM, (N,)."""
    a, b = _pair(fake01, real01, crop_border, y_only)
    if min(a.shape[-2:]) < 11:
        raise GantuneError(f"ssim: needs images of at least 11x11 after crop_border, got {tuple(a.shape[-2:])}")
    return kornia.metrics.ssim(a, b, window_size=11, max_val=1.0, eps=0.0, padding="valid").mean((1, 2, 3))


def _pair(fake01: Tensor, real01: Tensor, crop_border: int, y_only: bool) -> tuple[Tensor, Tensor]:
    if fake01.shape != real01.shape:
        raise GantuneError(f"paired metrics: fake {tuple(fake01.shape)} and real {tuple(real01.shape)} differ in shape")
    return (prepare(fake01, crop_border=crop_border, y_only=y_only),
            prepare(real01, crop_border=crop_border, y_only=y_only))


class PairedEvaluator:
    """Built once with the real evaluation images; `evaluator(fakes)` scores G_ema's outputs for
    the same inputs, in the same order: {"metric/<psnr|ssim>[_y]": mean over the images}."""

    def __init__(self, real01: Tensor, objective: str, *, crop_border: int = 0, y_only: bool = False) -> None:
        if objective not in ("psnr", "ssim"):
            raise GantuneError(f"PairedEvaluator: expected objective 'psnr' or 'ssim', got {objective!r}")
        self.real01, self.objective = real01.cpu(), objective
        self.crop_border, self.y_only = crop_border, y_only
        self.metric_key = "metric/" + metric_name(objective, y_channel=y_only)

    def __call__(self, fake01: Tensor) -> dict[str, float]:
        score = psnr if self.objective == "psnr" else ssim
        values = score(fake01.cpu(), self.real01, crop_border=self.crop_border, y_only=self.y_only)
        return {self.metric_key: float(values.mean())}
