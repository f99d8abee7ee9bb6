"""Helpers shared by the network tests: parameter counts against the references, one thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_reference_count(m: torch.nn.Module, target: float, exact: int) -> None:
    """Within 1% of the figure the reference prints, and exactly what we counted from its code."""
    n = n_params(m)
    assert abs(n - target) / target < 0.01, (n, target)
    assert n == exact, (n, exact)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only add overhead, many times the run time on a busy CPU.
    Autouse in each module that imports it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
