"""Exemplar retrieval (data/exemplars.py): label-histogram IoU against values worked out by hand,
rankings that never return the query itself, VGG retrieval finding an image's twin, the cache,
and the items an exemplar family trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from data import exemplars as ex
from gantune.errors import GantuneError


class Toy(Dataset):
    """Item i: label map of class `classes[i]` on the left `fill[i]` of the columns, class 0
    elsewhere; its image a flat colour per item (or given)."""

    def __init__(self, classes: list[int], fill: list[float], images: torch.Tensor | None = None) -> None:
        self.classes, self.fill = classes, fill
        self.images = images if images is not None else torch.linspace(-1, 1, len(classes)).view(-1, 1, 1, 1).expand(-1, 3, 8, 8)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids = torch.zeros(8, 8, dtype=torch.long)
        ids[:, : round(8 * self.fill[i])] = self.classes[i]
        one_hot = torch.nn.functional.one_hot(ids, 4).permute(2, 0, 1).float()
        return {"image": self.images[i].clone(), "label": one_hot, "label_ids": ids, "path": f"toy:{i}"}


def test_histogram_iou_by_hand() -> None:
    q = np.array([[0.5, 0.5, 0.0]])
    pool = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.0, 0.0, 1.0]])
    # min sums 1, 0.5, 0; max sums 1, 1.5, 2.
    np.testing.assert_allclose(ex.histogram_iou(q, pool), [[1.0, 0.5 / 1.5, 0.0]])


def test_label_histograms_are_class_fractions_and_leave_torch_rng_alone() -> None:
    torch.manual_seed(3)
    expected_next = torch.rand(())
    torch.manual_seed(3)
    h = ex.label_histograms(Toy([1, 2], [0.25, 0.5]), 4)
    np.testing.assert_allclose(h, [[0.75, 0.25, 0, 0], [0.5, 0, 0.5, 0]])
    assert torch.rand(()) == expected_next


def test_iou_ranking_pairs_similar_layouts_and_never_the_query() -> None:
    data = Toy([1, 1, 2, 2, 3], [0.5, 0.625, 0.5, 0.25, 1.0])
    h = ex.label_histograms(data, 4)
    ranking = ex.rank(ex.histogram_iou(h, h), top_k=2, exclude_self=True)
    assert ranking.shape == (5, 2)
    assert list(ranking[:, 0]) == [1, 0, 3, 2, 0]  # item 4 (all class 3) ties at 0 with all: lowest index
    assert all(i not in row for i, row in enumerate(ranking))
    # Without exclusion (evaluation queries against the training pool) the twin itself wins.
    assert list(ex.rank(ex.histogram_iou(h, h), 1, exclude_self=False)[:, 0]) == [0, 1, 2, 3, 4]


def test_vgg_ranking_finds_each_images_twin() -> None:
    from backbones.vgg import VGGFeatures

    g = torch.Generator().manual_seed(0)
    base = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    images = torch.cat([base, base + 0.01 * torch.randn(3, 3, 32, 32, generator=g)])  # i and i + 3 are twins
    data = Toy([1] * 6, [0.5] * 6, images)
    vgg = VGGFeatures("vgg19", [ex.VGG_LAYER], random_weights=True)
    d = ex.vgg_descriptors(data, vgg, batch_size=4)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-6)
    assert list(ex.rank(d @ d.T, 1, exclude_self=True)[:, 0]) == [3, 4, 5, 0, 1, 2]


def test_random_ranking_is_seeded_and_spread_over_the_pool() -> None:
    r = ex.random_ranking(200, 5, seed=1)
    assert r.shape == (200, 1) and set(r[:, 0]) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(r, ex.random_ranking(200, 5, seed=1))
    assert not np.array_equal(r, ex.random_ranking(200, 5, seed=2))


def test_cached_ranking_is_computed_once_and_a_damaged_file_recomputed(tmp_path: Path) -> None:
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.array([[1], [0]])

    settings = {"mode": "iou", "n": 2}
    first = ex.cached(settings, tmp_path, compute)
    again = ex.cached(settings, tmp_path, compute)
    np.testing.assert_array_equal(first, again)
    assert len(calls) == 1
    (path,) = tmp_path.glob("exemplars-iou-*.npy")
    path.write_bytes(b"not numpy")
    np.testing.assert_array_equal(ex.cached(settings, tmp_path, compute), first)
    assert len(calls) == 2
    ex.cached({"mode": "iou", "n": 3}, tmp_path, compute)  # other settings: another file
    assert len(calls) == 3


def test_items_carry_the_exemplar_and_self_references() -> None:
    data = Toy([1, 2, 3], [0.5, 0.5, 0.5])
    ranking = np.array([[1, 2], [2, 0], [0, 1]])
    evals = ex.ExemplarDataset(data, data, ranking, draw=False)
    item = evals[0]
    assert torch.equal(item["exemplar"], data[1]["image"]) and torch.equal(item["exemplar_label"], data[1]["label"])
    assert item["self_ref"] == 0.0 and torch.equal(item["label"], data[0]["label"])
    # Training: one of the top k each time; with self_ref_prob 1, always its own photo.
    torch.manual_seed(0)
    train = ex.ExemplarDataset(data, data, ranking, draw=True, self_ref_prob=0.0)
    seen = {int(train[0]["exemplar"][0, 0, 0] == data[2]["image"][0, 0, 0]) for _ in range(20)}
    assert seen == {0, 1}
    own = ex.ExemplarDataset(data, data, ranking, draw=True, self_ref_prob=1.0)[2]
    assert own["self_ref"] == 1.0 and torch.equal(own["exemplar"], data[2]["image"])
    # A random draw at each access: never the item itself, and only for the training set.
    anyone = ex.ExemplarDataset(data, data, None, draw=True)
    assert all(not torch.equal(anyone[1]["exemplar"], data[1]["image"]) for _ in range(20))
    with pytest.raises(GantuneError, match="training set only"):
        ex.ExemplarDataset(Toy([1], [0.5]), data, None, draw=False)
