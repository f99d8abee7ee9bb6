"""What a search can optimise: the objectives `eval.objective` names, their metric names and
their directions. Torch-free, so configs and search specs are checked without importing torch.

- `fid`, `kid`: Frechet and kernel distances between Inception features of G_ema's outputs and
  of the real evaluation set (metrics/fid.py, metrics/kid.py). Minimised.
- `psnr`, `ssim`: G_ema's output against the real photo of the same input (metrics/paired.py),
  as BasicSR computes them. Maximised.
- `l1`: the mean absolute error against the same real photo, in [0, 1] (inpainting). Minimised.
"""

from __future__ import annotations

MODES = {"fid": "min", "kid": "min", "psnr": "max", "ssim": "max", "l1": "min"}
INCEPTION_OBJECTIVES = ("fid", "kid")
PAIRED_OBJECTIVES = ("psnr", "ssim", "l1")
POOL3_DIMS = 2048  # backbones.inception.FEATURE_DIM: the layer FID and KID are defined on

# A diverged trial reports this instead of NaN (PBT would sort NaN as a good score): the worst
# value in the objective's direction.
DIVERGED_SCORES = {"min": 1e6, "max": -1e6}


def inception_metric_name(objective: str, random_weights: bool, dims: int = POOL3_DIMS) -> str:
    """`fid` / `kid` on the official Inception's pool3; `fd_random_inception` /
    `kd_random_inception` on the random stand-in; `_dims<N>` appended for another feature layer
    (not comparable to pool3 values)."""
    name = {"fid": "fd", "kid": "kd"}[objective] + "_random_inception" if random_weights else objective
    return name if dims == POOL3_DIMS else f"{name}_dims{dims}"


def metric_name(objective: str, *, random_weights: bool = False, dims: int = POOL3_DIMS,
                y_channel: bool = False) -> str:
    """The name an objective is logged and reported under (without the `metric/` prefix)."""
    if objective in INCEPTION_OBJECTIVES:
        return inception_metric_name(objective, random_weights, dims)
    return f"{objective}_y" if y_channel else objective


def check(objective: str, mode: str, crop_border: int, size_px: int) -> str | None:
    """What is wrong with the eval section's objective keys, in one line, or None."""
    own = MODES[objective]
    if mode and mode != own:
        return (f"eval.mode={mode!r} contradicts eval.objective={objective!r}, which is better "
                f"{'lower' if own == 'min' else 'higher'}; leave eval.mode out or set {own!r}")
    if not 0 <= 2 * crop_border < size_px:
        return f"eval.crop_border must be >= 0 and leave pixels of data.size_px={size_px}, got {crop_border}"
    return None


def no_effect(objective: str, key: str) -> str | None:
    """Why an eval key does nothing for this objective, or None."""
    if key in ("y_channel", "crop_border") and objective not in PAIRED_OBJECTIVES:
        return f"eval.objective is {objective!r} (they shape psnr, ssim and l1)"
    if key in ("random_weights", "dims", "weights_dir", "cache_dir") and objective not in INCEPTION_OBJECTIVES:
        return f"eval.objective is {objective!r} (no Inception network)"
    return None
