"""PSNR and SSIM of generated images against their paired real images, as BasicSR computes them
(basicsr/metrics/psnr_ssim.py, the figures super-resolution papers report):

- both images are 8-bit (BasicSR scores the saved uint8 images: [0, 1] values are rounded to
  multiples of 1/255), then `crop_border` pixels are cut from every edge;
- on RGB, or on the Y channel of ITU-R BT.601 in studio range (Y = 16 + 65.481 R + 128.553 G +
  24.966 B for R, G, B in [0, 1], BasicSR's `rgb2ycbcr(y_only=True)`);
- PSNR is 10 log10(1 / MSE) per image; SSIM is Wang et al.'s, an 11-tap Gaussian window of
  sigma 1.5, C1 = (0.01 L)^2, C2 = (0.03 L)^2, the valid part of the map, averaged over it and the
  channels. Both are then averaged over the images. The arithmetic is kornia's, in float64.

The inpainting log's columns too: L1, the mean absolute error in [0, 1] (Liu et al. 2018's l1
error, on the same 8-bit images), and TV, the output's mean absolute difference between
neighbouring pixels (kornia's total variation over the pixel pairs), reported with the real
images' TV (`tv_real`) to read it against: a blurry fill scores below it.
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


def l1(fake01: Tensor, real01: Tensor, *, crop_border: int = 0, y_only: bool = False) -> Tensor:
    """Per-image mean absolute error in [0, 1], (N,)."""
    a, b = _pair(fake01, real01, crop_border, y_only)
    return (a - b).abs().mean((1, 2, 3))


def tv(images01: Tensor, *, crop_border: int = 0, y_only: bool = False) -> Tensor:
    """Per-image total variation, (N,): twice the mean |difference| over all horizontal and
    vertical neighbour pairs (on a square image, the horizontal mean plus the vertical one),
    averaged over channels."""
    x = prepare(images01, crop_border=crop_border, y_only=y_only)
    h, w = x.shape[-2:]
    pairs = (h - 1) * w + h * (w - 1)
    # kornia sums |differences| over both directions, per channel.
    return kornia.losses.total_variation(x, reduction="sum").mean(1) / pairs * 2


PAIRED_METRICS = {"psnr": psnr, "ssim": ssim, "l1": l1}


def _pair(fake01: Tensor, real01: Tensor, crop_border: int, y_only: bool) -> tuple[Tensor, Tensor]:
    if fake01.shape != real01.shape:
        raise GantuneError(f"paired metrics: fake {tuple(fake01.shape)} and real {tuple(real01.shape)} differ in shape")
    return (prepare(fake01, crop_border=crop_border, y_only=y_only),
            prepare(real01, crop_border=crop_border, y_only=y_only))


class PairedEvaluator:
    """Built once with the real evaluation images; `evaluator(fakes)` scores G_ema's outputs for
    the same inputs, in the same order: {"metric/<name>[_y]": mean over the images} for each of
    `metrics` (psnr, ssim, l1 against the real; tv of the output alone, with tv_real)."""

    def __init__(self, real01: Tensor, metrics: tuple[str, ...], *, crop_border: int = 0, y_only: bool = False) -> None:
        unknown = [m for m in metrics if m not in (*PAIRED_METRICS, "tv")]
        if unknown or not metrics:
            raise GantuneError(f"PairedEvaluator: expected metrics from psnr, ssim, l1, tv, got {list(metrics)}")
        self.real01, self.metrics = real01.cpu(), tuple(dict.fromkeys(metrics))
        self.crop_border, self.y_only = crop_border, y_only

    def __call__(self, fake01: Tensor) -> dict[str, float]:
        fake01, options = fake01.cpu(), {"crop_border": self.crop_border, "y_only": self.y_only}
        scores = {}
        for name in self.metrics:
            values = tv(fake01, **options) if name == "tv" else PAIRED_METRICS[name](fake01, self.real01, **options)
            scores["metric/" + metric_name(name, y_channel=self.y_only)] = float(values.mean())
        if "tv" in self.metrics:
            scores["metric/" + metric_name("tv_real", y_channel=self.y_only)] = float(tv(self.real01, **options).mean())
        return scores
