"""Helpers shared by the exemplar families' tests (test_cocosnet, test_cocosnet2, test_unite)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from net_helpers import assert_reference_count, n_params, one_thread  # noqa: F401  (re-exported)


def one_hot(classes: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, W) class indices to a (B, n, H, W) float one-hot map."""
    return F.one_hot(classes, n).permute(0, 3, 1, 2).float()


def blocky_label(batch: int, h: int, w: int, n: int, block: int = 8) -> torch.Tensor:
    """One-hot label maps of random classes on block x block squares, so that regions survive
    the correspondence nets' downsampling."""
    classes = torch.randint(0, n, (batch, h // block, w // block))
    return one_hot(classes.repeat_interleave(block, 1).repeat_interleave(block, 2), n)
