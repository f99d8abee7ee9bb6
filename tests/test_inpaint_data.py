"""Inpainting items (data/inpaint.py): free-form holes, mask files, fixed evaluation holes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.inpaint import InpaintDataset, freeform_mask
from gantune.errors import GantuneError


def test_freeform_masks_are_strokes_and_boxes_of_plausible_area() -> None:
    areas = [freeform_mask(64, np.random.default_rng(s)).mean() for s in range(40)]
    assert 0.02 < float(np.median(areas)) < 0.6 and max(areas) < 0.95
    mask = freeform_mask(64, np.random.default_rng(0))
    assert set(np.unique(mask)) <= {0.0, 1.0} and mask.dtype == np.float32
    assert not np.array_equal(mask, freeform_mask(64, np.random.default_rng(1)))


def test_evaluation_holes_are_fixed_and_training_holes_are_drawn() -> None:
    evals = InpaintDataset(32, n=3, seed=1, train=False)
    item = evals[2]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert torch.equal(evals[2]["mask"], item["mask"]) and item["mask"].sum() > 0
    train = InpaintDataset(32, n=3, seed=1)
    assert any(not torch.equal(train[0]["mask"], train[0]["mask"]) for _ in range(3))
    assert torch.equal(train[0]["image"], InpaintDataset(32, n=3, seed=1, train=False)[0]["image"])


def test_mask_files_mark_holes_where_pixels_are_above_zero(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    hole = np.zeros((16, 16), np.uint8)
    hole[4:8, 2:10] = 255
    Image.fromarray(hole).save(masks / "m.png")
    item = InpaintDataset(32, n=2, masks="files", mask_root=masks, train=False)[1]
    expected = torch.zeros(1, 32, 32)
    expected[:, 8:16, 4:20] = 1  # nearest-neighbour x2
    assert torch.equal(item["mask"], expected)
    with pytest.raises(GantuneError, match="masks 'files' needs a mask folder"):
        InpaintDataset(32, n=2, masks="files")
    with pytest.raises(GantuneError, match="masks must be one of freeform, files"):
        InpaintDataset(32, n=2, masks="boxes")
