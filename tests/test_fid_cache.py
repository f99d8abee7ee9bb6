"""The real-statistics cache: a second evaluator reads it instead of running the network, and
a changed real file invalidates it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backbones.inception import FIDInception
from data.scenes import render_scene
from metrics.fid import FidEvaluator, fid_between_folders
from scene_images import scenes, write_scenes


@pytest.fixture
def forward_count(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Images through FIDInception.forward, counted."""
    seen = [0]
    original = FIDInception.forward

    def counting(self: FIDInception, x: torch.Tensor) -> torch.Tensor:
        seen[0] += x.shape[0]
        return original(self, x)

    monkeypatch.setattr(FIDInception, "forward", counting)
    return seen


def test_cached_real_statistics_skip_the_network(tmp_path: Path, forward_count: list[int]) -> None:
    real, fake = scenes(0, 6, 48), scenes(20, 5, 48)
    kw = dict(
        dataset_key="scenes-0-6-48px",
        random_weights=True,
        batch_size=3,
        device="cpu",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    first = FidEvaluator(real, **kw)
    assert forward_count[0] == 12  # recalibration pass + feature pass
    result = first(fake)
    assert set(result) == {"metric/fd_random_inception", "metric/official_inception"}
    assert result["metric/official_inception"] is False

    before = forward_count[0]
    second = FidEvaluator(real, **kw)
    assert forward_count[0] == before  # neither recalibration nor features ran on the real set
    assert np.array_equal(second.mu_real.numpy(), first.mu_real.numpy())
    assert second(fake) == result
    files = os.listdir(tmp_path / "cache")
    assert (
        len(files) == 1
        and files[0].startswith("fd_random_inception-")
        and files[0].endswith(".npz")
    )


def test_cache_is_invalidated_when_a_real_file_changes(
    tmp_path: Path, forward_count: list[int]
) -> None:
    a, b = write_scenes(tmp_path / "a", 0, 4, 40), write_scenes(tmp_path / "b", 30, 4, 40)
    kw = dict(
        batch_size=4,
        device="cpu",
        random_weights=True,
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    first = fid_between_folders(a, b, **kw)
    assert forward_count[0] == 4 + 4 + 4
    assert fid_between_folders(a, b, **kw) == first
    assert forward_count[0] == 12 + 4  # only the fakes
    Image.fromarray(render_scene(99, 40, 0)[0]).save(a / "0000.png")
    changed = fid_between_folders(a, b, **kw)
    assert forward_count[0] == 16 + 12
    assert changed.value != first.value
    assert len(list((tmp_path / "cache").iterdir())) == 2  # no temp files left behind
