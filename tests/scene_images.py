"""Built-in scenes as test images: tensors in [0, 1], PNG folders, and a box blur."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from data.scenes import render_scene


def scenes(start: int, n: int, size_px: int) -> torch.Tensor:
    """Built-in scenes start..start+n-1 as (n, 3, H, W) floats in [0, 1]."""
    imgs = [torch.from_numpy(render_scene(i, size_px, 0)[0]) for i in range(start, start + n)]
    return torch.stack(imgs).permute(0, 3, 1, 2).float() / 255


def write_scenes(folder: Path, start: int, n: int, size_px: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(render_scene(i, size_px, 0)[0]).save(folder / f"{i:04d}.png")
    return folder


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, stride=1)
