"""Super-resolution pairs: a high-resolution image and the low-resolution input made from it.

The high-resolution images are the built-in scenes or a folder of images (random crops of
`size_px` for training, centre crops for evaluation). The low-resolution input is made on the fly:

- `bicubic`: a bicubic downscale by `scale` with antialiasing, the classic SR benchmark input
  (BasicSR's datasets are made with MATLAB's imresize, which antialiases the same way).
- `realistic`: RealSR / Real-ESRGAN's first-order degradation: a random Gaussian blur kernel
  (isotropic or anisotropic, axis-aligned), a downscale by a random resize mode, noise (Gaussian,
  or a patch of real sensor noise from `noise_root`, as RealSR injects it), then JPEG at a random
  quality (kornia's differentiable codec).

Training draws each degradation from torch's RNG; the evaluation set draws from a generator
seeded by the item, so its inputs are the same at every evaluation. A folder's images (and the
noise patches) are checked when the set is built: each readable and whole, and each at least
the crop, so a bad file fails before the first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from data.folder import check_images, read_image
from data.scenes import render_scene
from gantune.errors import GantuneError
from metrics.image_folder import list_images

DEGRADATIONS = ("bicubic", "realistic")
_RESIZE_MODES = ("bicubic", "bilinear", "area")


@dataclass(frozen=True)
class Degradation:
    """How a low-resolution input is made from a high-resolution image in [0, 1]."""

    scale: int = 4
    kind: str = "bicubic"  # bicubic | realistic
    blur_sigma_max: float = 3.0  # realistic: kernel sigmas in [0.2, max], per axis
    noise_sigma_max: float = 30.0  # realistic: Gaussian noise sigma in [1, max] 8-bit levels
    jpeg_quality_min: float = 30.0  # realistic: JPEG quality in [min, 95]
    noise_patches: tuple[Path, ...] = ()  # realistic: real noise patches, used in half the draws

    def __post_init__(self) -> None:
        if self.kind not in DEGRADATIONS:
            raise GantuneError(f"degradation must be one of {', '.join(DEGRADATIONS)}, got {self.kind!r}")
        if self.scale not in (2, 4):
            raise GantuneError(f"scale must be 2 or 4, got {self.scale}")


def _uniform(lo: float, hi: float, gen: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def degrade(hr01: Tensor, d: Degradation, gen: torch.Generator | None = None) -> Tensor:
    """(3, H, W) in [0, 1] -> (3, H / scale, W / scale) in [0, 1]."""
    x = hr01[None]
    size = (hr01.shape[-2] // d.scale, hr01.shape[-1] // d.scale)
    if d.kind == "bicubic":
        return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)
    # Blur: an isotropic kernel in half the draws, else two sigmas.
    sy = _uniform(0.2, d.blur_sigma_max, gen)
    sx = sy if float(torch.rand((), generator=gen)) < 0.5 else _uniform(0.2, d.blur_sigma_max, gen)
    ksize = 2 * math.ceil(3 * max(sx, sy)) + 1
    x = kornia.filters.gaussian_blur2d(x, (ksize, ksize), torch.tensor([[sy, sx]]), border_type="reflect")
    mode = _RESIZE_MODES[int(torch.randint(len(_RESIZE_MODES), (), generator=gen))]
    x = F.interpolate(x, size=size, mode=mode, **({"antialias": True, "align_corners": False} if mode != "area" else {}))
    if d.noise_patches and float(torch.rand((), generator=gen)) < 0.5:
        x = x + _noise_patch(d.noise_patches, size, gen)
    else:
        sigma = _uniform(1.0, d.noise_sigma_max, gen) / 255
        x = x + sigma * torch.randn(x.shape, generator=gen)
    quality = torch.tensor([_uniform(d.jpeg_quality_min, 95.0, gen)])
    x = kornia.enhance.jpeg_codec_differentiable(x.clamp(0, 1), quality)
    return x[0].clamp(0, 1)


def _noise_patch(patches: tuple[Path, ...], size: tuple[int, int], gen: torch.Generator | None) -> Tensor:
    """A random crop of a real noise patch, its mean removed (RealSR's noise injection); a patch
    smaller than the input is tiled."""
    path = patches[int(torch.randint(len(patches), (), generator=gen))]
    patch = torch.from_numpy(np.asarray(read_image(path), dtype=np.float32) / 255).permute(2, 0, 1)
    reps = (math.ceil(size[0] / patch.shape[1]), math.ceil(size[1] / patch.shape[2]))
    patch = patch.repeat(1, *reps)
    top = int(torch.randint(patch.shape[1] - size[0] + 1, (), generator=gen))
    left = int(torch.randint(patch.shape[2] - size[1] + 1, (), generator=gen))
    patch = patch[:, top : top + size[0], left : left + size[1]]
    return (patch - patch.mean((1, 2), keepdim=True))[None]


def noise_patches(root: Path) -> tuple[Path, ...]:
    """The noise patches of a folder (any images, any size: a small one is tiled), checked to
    exist and to be readable."""
    files = list_images(root, min_count=1)
    check_images(files, f"checking {root}", what="noise patch")
    return tuple(files)


class SRDataset(Dataset):
    """Items {"image": HR (3, size, size) in [-1, 1], "lr": (3, size/scale, size/scale) in
    [-1, 1], "path"}; "image" is what the metrics compare the output with.

    source: "scenes" (scenes 0..n-1 of the set `seed`, rendered at size_px) or a folder of
    images (`root`; crops of size_px, random and flipped for training, centred for evaluation).
    """

    def __init__(self, degradation: Degradation, size_px: int, *, n: int = 0, seed: int = 0,
                 root: Path | None = None, train: bool = True, flip: bool = False) -> None:
        if size_px % degradation.scale:
            raise GantuneError(f"data.size_px={size_px} must be a multiple of the SR scale {degradation.scale}")
        self.d, self.size_px, self.seed, self.train, self.flip = degradation, size_px, seed, train, flip
        self.files = list_images(root, min_count=1) if root is not None else []
        # Every image must hold the high-resolution crop; its low-resolution input is made from it.
        check_images(self.files, f"checking {root}", min_side_px=size_px)
        self.n = len(self.files) if root is not None else n
        if self.n < 1:
            raise GantuneError("SRDataset: needs n >= 1 scenes or a folder of images")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"SR item {index} out of range 0..{self.n - 1}")
        if self.files:
            hr, path = self._crop(np.asarray(read_image(self.files[index])), self.files[index]), str(self.files[index])
        else:
            hr = render_scene(index, self.size_px, self.seed)[0]
            path = f"scene:seed={self.seed}:index={index}"
        hr01 = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).float() / 255
        if self.train and self.flip and bool(torch.rand(()) < 0.5):
            hr01 = hr01.flip(-1)
        gen = None if self.train else torch.Generator().manual_seed(1_000_003 * self.seed + index)
        lr01 = degrade(hr01, self.d, gen)
        return {"image": hr01 * 2 - 1, "lr": lr01 * 2 - 1, "path": path}

    def _crop(self, image: np.ndarray, path: Path) -> np.ndarray:
        h, w = image.shape[:2]
        s = self.size_px
        if h < s or w < s:
            raise GantuneError(f"{path}: {w}x{h} is smaller than data.size_px={s}")
        if self.train:
            top, left = int(torch.randint(h - s + 1, ())), int(torch.randint(w - s + 1, ()))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        return image[top : top + s, left : left + s]
