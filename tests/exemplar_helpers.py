"""Helpers shared by the exemplar families' tests (test_cocosnet, test_cocosnet2, test_unite)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_reference_count(m: torch.nn.Module, target: float, exact: int) -> None:
    """Within 1% of the figure the reference prints, and exactly what we counted from its code."""
    n = n_params(m)
    assert abs(n - target) / target < 0.01, (n, target)
    assert n == exact, (n, exact)


def one_hot(classes: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, W) class indices to a (B, n, H, W) float one-hot map."""
    return F.one_hot(classes, n).permute(0, 3, 1, 2).float()


def blocky_label(batch: int, h: int, w: int, n: int, block: int = 8) -> torch.Tensor:
    """One-hot label maps of random classes on block x block squares, so that regions survive
    the correspondence nets' downsampling."""
    classes = torch.randint(0, n, (batch, h // block, w // block))
    return one_hot(classes.repeat_interleave(block, 1).repeat_interleave(block, 2), n)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead, many times the run time on a busy CPU.
    Autouse in each module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
