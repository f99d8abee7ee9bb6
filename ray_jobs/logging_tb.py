"""TensorBoard for one trial: scalars, image grids (label | real | fake) and hparams.

Rank 0 writes; only summary metrics go to Tune. Keys follow `loss/G/cx`, `metric/fid`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from data.classes import colorize


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def image_grid(label_ids: torch.Tensor, *images: torch.Tensor, max_rows: int = 4) -> np.ndarray:
    """HWC uint8 grid: one row per sample, columns the colourised label, then each image (for
    SPADE: real, fake; for an exemplar family: exemplar, warped exemplar, fake)."""
    n = min(max_rows, label_ids.shape[0])
    rows = []
    for i in range(n):
        label_rgb = colorize(label_ids[i].cpu().numpy().astype(np.uint8))
        rows.append(np.concatenate([label_rgb, *(_to_uint8(im[i]) for im in images)], axis=1))
    return np.concatenate(rows, axis=0)


def image_rows(*images: torch.Tensor, max_rows: int = 4) -> np.ndarray:
    """HWC uint8 grid of images in [-1, 1] of one size: one row per sample, one column per
    image (for super-resolution: the input blown up, the output, the target)."""
    n = min(max_rows, images[0].shape[0])
    return np.concatenate([np.concatenate([_to_uint8(im[i]) for im in images], axis=1) for i in range(n)], axis=0)


class TrialLogger:
    def __init__(self, log_dir: Path) -> None:
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def image(self, tag: str, grid: np.ndarray, step: int) -> None:
        """An HWC uint8 image grid (a family's `image_grid`)."""
        self.writer.add_image(tag, grid, step, dataformats="HWC")
        self.writer.flush()

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        # run_name="." keeps the hparams in this trial's own event files.
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
