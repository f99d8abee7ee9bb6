"""MS-SSIM (Wang, Simoncelli, Bovik 2003) and the MS-SSIM + L1 "Mix" loss of Zhao, Gallo, Frosio,
Kautz ("Loss Functions for Image Restoration with Neural Networks", IEEE TCI 2017).

`ms_ssim` computes what pytorch_msssim 1.0.0's `ms_ssim` computes (VainF/pytorch-msssim,
`pytorch_msssim/ssim.py`): at each of the M = len(weights) scales, SSIM's statistics under a
separable Gaussian window (win_size taps, win_sigma) over the valid part of the image only (no
padding); the contrast-structure term cs averaged over the map at scales 1..M-1 and the full SSIM
at scale M; each clamped at 0 (relu) and raised to its weight; the product, per image and channel,
then averaged over channels. Between scales both images are 2x2 average-pooled; an odd side is
zero-padded by one on both ends first and the zeros count in the mean (`count_include_pad`), so
the first row or column of the coarser image is half-dark, exactly as pytorch_msssim does it.

The coarsest scale's window must fit: the shorter side must exceed (win_size - 1) * 2^(M-1), 160
px for the standard 5 scales. pytorch_msssim asserts that bound for 5 scales whatever M is; here
it follows M, and `max_scales` / `truncated_weights` give fewer scales for smaller images. Those
truncated weights (the standard ones cut to k scales and renormalised to sum to 1) are our own
deviation, not Wang et al.'s: they have calibrated weights for 5 scales only.

`MSSSIML1Loss` is Zhao et al.'s Mix loss, alpha * (1 - MS-SSIM) + (1 - alpha) * L1_G, alpha 0.84
(the paper; NVlabs/PL4NN `src/loss.py` MSSSIML1 defaults to 0.025). PL4NN evaluates it on odd
patches at the patch centre only: its MS-SSIM uses five Gaussians (sigma 0.5..8) on the full-size
patch with no downsampling and no exponents (kornia's MS_SSIMLoss follows that variant), and L1_G
is |x - y| weighted by the patch-wide Gaussian of the largest sigma. Evaluated at every position of
a whole image instead, a normalised Gaussian weighting averages out to plain L1 in the interior; it
only tapers the border. So L1_G here is the mean over the valid positions of
gaussian_filter(|x - y|) with the same window MS-SSIM uses at every scale, the last one included,
at full resolution: the interior counts as plain L1 and the (win_size - 1) / 2 px border tapers as
it does in SSIM's own map. See `gaussian_l1`.

Both terms see the images mapped from `value_range` to [0, 1] (data range 1, as in the paper).
SSIM's luminance term is not shift-invariant: on [-1, 1] images it goes negative where the two
local means differ in sign, and the relu then zeroes the whole product and its gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError

# Wang et al. 2003, Table 1: the scales' weights, finest first.
STANDARD_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Reduction = Literal["mean", "none"]


def min_size_px(n_scales: int, win_size: int = 11) -> int:
    """The shortest side MS-SSIM with `n_scales` scales accepts: the window still fits after
    n_scales - 1 halvings (an odd side rounds up)."""
    return (win_size - 1) * 2 ** (n_scales - 1) + 1


def max_scales(height_px: int, width_px: int, win_size: int = 11) -> int:
    """The largest number of scales an image of this size allows (0 when not even one fits)."""
    _check_window(win_size, 1.0)
    if win_size == 1:
        raise GantuneError("win_size=1: a 1-tap window fits any number of scales")
    side, n_scales = min(height_px, width_px), 0
    while side >= min_size_px(n_scales + 1, win_size):
        n_scales += 1
    return n_scales


def truncated_weights(n_scales: int) -> tuple[float, ...]:
    """The first `n_scales` standard weights, renormalised to sum to 1: our choice for images too
    small for 5 scales (a deviation from Wang et al., who calibrated 5)."""
    if isinstance(n_scales, bool) or not isinstance(n_scales, int) or not 1 <= n_scales <= len(STANDARD_WEIGHTS):
        raise GantuneError(f"n_scales={n_scales!r}: expected an integer in 1..{len(STANDARD_WEIGHTS)}")
    head = STANDARD_WEIGHTS[:n_scales]
    return tuple(w / sum(head) for w in head)


def _check_window(win_size: int, win_sigma: float) -> None:
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise GantuneError(f"win_size={win_size!r}: expected an odd integer >= 1")
    if not win_sigma > 0:
        raise GantuneError(f"win_sigma={win_sigma!r}: expected a Gaussian sigma > 0")


def _check_weights(weights: Sequence[float]) -> None:
    if len(weights) == 0 or not all(w > 0 and math.isfinite(w) for w in weights):
        raise GantuneError(f"weights={tuple(weights)!r}: expected one finite weight > 0 per scale")


def _check_k(K: Sequence[float]) -> None:
    if len(K) != 2 or not all(k > 0 for k in K):
        raise GantuneError(f"K={tuple(K)!r}: expected two constants (K1, K2) > 0")


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 4:
        raise GantuneError(f"x: expected (N, C, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise GantuneError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")


def _gaussian_window(win_size: int, win_sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Normalised 1D Gaussian (win_size,), centred on the middle tap, in `like`'s dtype and device."""
    offsets = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    g = torch.exp(-(offsets**2) / (2 * win_sigma**2))
    return (g / g.sum()).to(dtype=like.dtype, device=like.device)


def _gaussian_filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable per-channel Gaussian blur, valid part only: (N, C, H, W) -> (N, C, H-k+1, W-k+1)."""
    c, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def _ssim_and_cs(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, data_range: float, K: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM and its contrast-structure term, each averaged over the valid map: (N, C) each."""
    c1, c2 = (K[0] * data_range) ** 2, (K[1] * data_range) ** 2
    mu_x, mu_y = _gaussian_filter(x, window), _gaussian_filter(y, window)
    # Biased local (co)variances, E[ab] - E[a]E[b], as Wang et al. and pytorch_msssim.
    var_x = _gaussian_filter(x * x, window) - mu_x**2
    var_y = _gaussian_filter(y * y, window) - mu_y**2
    cov_xy = _gaussian_filter(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs_map).mean((2, 3)), cs_map.mean((2, 3))


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float,
    weights: Sequence[float] = STANDARD_WEIGHTS,
    win_size: int = 11,
    win_sigma: float = 1.5,
    K: Sequence[float] = (0.01, 0.03),
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """MS-SSIM of x against y, both (N, C, H, W) with values spanning `data_range` (1 for [0, 1]),
    in [0, 1] (1 for identical images). One scale per weight, finest first. Returns a scalar
    (reduction "mean", over images) or (N,) (reduction "none"); channels are always averaged.
    Differentiable in both images. Raises GantuneError when the shorter side is below
    `min_size_px(len(weights), win_size)`."""
    _check_pair(x, y)
    _check_window(win_size, win_sigma)
    _check_weights(weights)
    _check_k(K)
    if not data_range > 0:
        raise GantuneError(f"data_range={data_range!r}: expected the images' value range > 0")
    if reduction not in ("mean", "none"):
        raise GantuneError(f"reduction={reduction!r}: expected 'mean' or 'none'")
    n_scales, (h, w) = len(weights), x.shape[-2:]
    if min(h, w) < min_size_px(n_scales, win_size):
        raise GantuneError(
            f"image {h}x{w}: MS-SSIM with {n_scales} scales and win_size {win_size} needs both sides "
            f">= {min_size_px(n_scales, win_size)} px; use fewer scales (max_scales, truncated_weights)"
        )

    window = _gaussian_window(win_size, win_sigma, x)
    terms = []
    for scale in range(n_scales):
        ssim, cs = _ssim_and_cs(x, y, window, data_range, K)
        if scale == n_scales - 1:
            terms.append(torch.relu(ssim))
            break
        terms.append(torch.relu(cs))
        # Odd sides: one zero on each end, counted in the mean (pytorch_msssim's rule).
        padding = (x.shape[-2] % 2, x.shape[-1] % 2)
        x = F.avg_pool2d(x, kernel_size=2, padding=padding)
        y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    exponents = x.new_tensor(list(weights)).view(-1, 1, 1)
    per_image = torch.prod(torch.stack(terms) ** exponents, dim=0).mean(1)
    return per_image.mean() if reduction == "mean" else per_image


def gaussian_l1(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 11,
    win_sigma: float = 1.5,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Zhao et al.'s Gaussian-weighted L1 on whole images: |x - y| / data_range, Gaussian-filtered
    (valid part only), averaged over positions and channels. Interior pixels thus count as in plain
    L1; pixels within (win_size - 1) / 2 of the border count less, as in SSIM's map. Returns a
    scalar ("mean") or (N,) ("none")."""
    _check_pair(x, y)
    _check_window(win_size, win_sigma)
    if not data_range > 0:
        raise GantuneError(f"data_range={data_range!r}: expected the images' value range > 0")
    if reduction not in ("mean", "none"):
        raise GantuneError(f"reduction={reduction!r}: expected 'mean' or 'none'")
    h, w = x.shape[-2:]
    if min(h, w) < win_size:
        raise GantuneError(f"image {h}x{w}: the Gaussian-weighted L1 needs both sides >= win_size {win_size} px")
    window = _gaussian_window(win_size, win_sigma, x)
    per_image = _gaussian_filter((x - y).abs() / data_range, window).mean((1, 2, 3))
    return per_image.mean() if reduction == "mean" else per_image


class MSSSIML1Loss(nn.Module):
    """alpha * (1 - MS-SSIM) + (1 - alpha) * gaussian_l1, both on images mapped from
    `value_range` to [0, 1]. forward(x, y): (N, C, H, W) each -> scalar, 0 for identical images.
    Unweighted: the trainer applies its lambda."""

    def __init__(
        self,
        alpha: float = 0.84,
        value_range: tuple[float, float] = (-1.0, 1.0),
        weights: Sequence[float] = STANDARD_WEIGHTS,
        win_size: int = 11,
        win_sigma: float = 1.5,
        K: Sequence[float] = (0.01, 0.03),
    ) -> None:
        super().__init__()
        if not 0 <= alpha <= 1:
            raise GantuneError(f"alpha={alpha!r}: expected the MS-SSIM share in [0, 1]")
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise GantuneError(f"value_range={value_range!r}: expected (low, high) with low < high")
        _check_weights(weights)
        _check_window(win_size, win_sigma)
        _check_k(K)
        self.alpha = alpha
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.weights = tuple(float(w) for w in weights)
        self.win_size = win_size
        self.win_sigma = win_sigma
        self.K = (float(K[0]), float(K[1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        x01, y01 = (x - low) / (high - low), (y - low) / (high - low)
        window = {"win_size": self.win_size, "win_sigma": self.win_sigma}
        similarity = ms_ssim(x01, y01, data_range=1.0, weights=self.weights, K=self.K, **window)
        return self.alpha * (1 - similarity) + (1 - self.alpha) * gaussian_l1(x01, y01, data_range=1.0, **window)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, value_range={self.value_range}, scales={len(self.weights)}"
