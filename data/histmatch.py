"""Histogram matching between the two domains of an unpaired batch: the U-GAT-IT log's colour trick.

- `match_histograms`: every source image's channels take the distribution of the reference batch's
  pixels, per channel, by exact quantile (CDF) matching as skimage.exposure.match_histograms does it
  (np.interp from each distinct source value's quantile to the reference's quantiles and values), in
  RGB or, through kornia.color, in HSV or HLS.
- `match_domains`: the training-step augmentation around it: with probability `prob`, each domain's
  photos are matched to the other domain's batch and blended with the originals by `ratio`.

Pure torch on batches in [-1, 1], without gradients; nothing here follows official code.
"""

from __future__ import annotations

import torch
from kornia.color import hls_to_rgb, hsv_to_rgb, rgb_to_hls, rgb_to_hsv

from gantune.errors import GantuneError

SPACES = ("rgb", "hsv", "hsl")
# The channels matched in each space. Hue is an angle: its CDF depends on where the circle is cut
# (kornia cuts at red, 0 = 2 pi), so quantile matching would tear reds apart and send hues across the
# wheel; on the near-grey pixels every photo has, hue is noise. hsv and hsl therefore match
# saturation and value (lightness) and keep each pixel's hue; rgb matches all three channels.
_MATCHED = {"rgb": (0, 1, 2), "hsv": (1, 2), "hsl": (1, 2)}  # kornia's orders: H, S, V and H, L, S
_SATURATION = {"hsv": 1, "hsl": 2}


def _quantile_map(source: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(N, P) source rows mapped onto the distribution of the (M,) reference values.

    As skimage: a source value's quantile is the fraction of its row at or below it (ties share the
    top of their run); the reference's distinct values sit at their own such quantiles, and each
    source quantile is interpolated linearly between them, clamped to the reference's ends.
    """
    src_sorted = source.sort(-1).values
    q_src = torch.searchsorted(src_sorted, source, right=True).double() / source.shape[-1]
    ref = reference.sort().values
    q_ref = torch.searchsorted(ref, ref, right=True).double() / ref.numel()  # repeated values repeat their point
    # The segment [q_ref[j], q_ref[j + 1]) holding each source quantile; below the first point, j = -1.
    j = torch.searchsorted(q_ref, q_src.reshape(-1), right=True).reshape(q_src.shape) - 1
    lo, hi = j.clamp(0, ref.numel() - 1), (j + 1).clamp(0, ref.numel() - 1)
    x0, x1 = q_ref[lo], q_ref[hi]
    width = x1 - x0
    t = torch.where((j >= 0) & (width > 0), (q_src - x0) / width.clamp_min(1e-300), torch.zeros_like(q_src))
    ref64 = ref.double()
    return torch.lerp(ref64[lo], ref64[hi], t).to(source.dtype)


@torch.no_grad()
def match_histograms(source: torch.Tensor, reference: torch.Tensor, space: str = "rgb") -> torch.Tensor:
    """Each (3, H, W) image of `source` (N, 3, H, W) matched, channel by channel in `space`, to the
    pooled pixels of the whole `reference` batch (M, 3, H', W'); both in [-1, 1]. Returns (N, 3, H, W)
    in [-1, 1], of source's dtype.

    space: rgb (all three channels) | hsv (S and V) | hsl (L and S); hue is kept (see _MATCHED).
    Achromatic source pixels (saturation 0, where kornia sets hue 0, red) stay achromatic in hsv and
    hsl: giving them the reference's saturation would paint greys and snow red.
    """
    if space not in SPACES:
        raise GantuneError(f"match_histograms: space must be one of {list(SPACES)}, got {space!r}")
    if source.dim() != 4 or reference.dim() != 4 or source.shape[1] != 3 or reference.shape[1] != 3:
        raise GantuneError(f"match_histograms: expected (N, 3, H, W) batches, got {tuple(source.shape)} "
                           f"and {tuple(reference.shape)}")
    dtype = source.dtype
    # kornia's conversions take [0, 1]; work in float32 at least (bf16 batches under bf16 training).
    src = ((source.float() + 1) / 2).clamp(0, 1)
    ref = ((reference.float() + 1) / 2).clamp(0, 1)
    to_space, from_space = {"rgb": (None, None), "hsv": (rgb_to_hsv, hsv_to_rgb),
                            "hsl": (rgb_to_hls, hls_to_rgb)}[space]
    if to_space is not None:
        src, ref = to_space(src), to_space(ref)
    n = src.shape[0]
    out = src.clone()
    for c in _MATCHED[space]:
        out[:, c] = _quantile_map(src[:, c].reshape(n, -1).contiguous(), ref[:, c].reshape(-1)).reshape(src[:, c].shape)
    if from_space is not None:
        s = _SATURATION[space]
        out[:, s] = torch.where(src[:, s] == 0, torch.zeros_like(out[:, s]), out[:, s])
        out = from_space(out)
    return (out.clamp(0, 1) * 2 - 1).to(dtype)


@torch.no_grad()
def match_domains(a: torch.Tensor, b: torch.Tensor, space: str, prob: float, ratio: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A's photos matched to B's batch, B's matched to A's), each blended with the original:
    (1 - ratio) * x + ratio * matched; with probability 1 - prob (one draw for both), (a, b) as they
    came. space "none" returns them untouched without drawing, so the random stream is unchanged.
    """
    if space == "none":
        return a, b
    if not 0 <= prob <= 1 or not 0 <= ratio <= 1:
        raise GantuneError(f"match_domains: prob and ratio must be in [0, 1], got prob={prob}, ratio={ratio}")
    if not bool(torch.rand((), generator=generator) < prob):
        return a, b
    return (torch.lerp(a, match_histograms(a, b, space), ratio),
            torch.lerp(b, match_histograms(b, a, space), ratio))
