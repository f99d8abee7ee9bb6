"""Tests for data/: the classes and the procedural scenes (the folder dataset, the preview and the
`gantune data` commands are in test_data_folder.py). Tiny images (32-64 px), so the file runs in seconds."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.classes import CLASS_NAMES, NUM_CLASSES, PALETTE, Landscape, colorize
from data.scenes import SceneDataset, Style, draw_style, render_scene, write_scene_folder
from gantune.errors import GantuneError

# --- classes -------------------------------------------------------------------------------


def test_class_names_are_the_competitions() -> None:
    assert NUM_CLASSES == 29 and len(CLASS_NAMES) == 29
    assert CLASS_NAMES[:5] == ("mountain", "sky", "water", "sea", "rock")
    assert CLASS_NAMES[14] == "person" and CLASS_NAMES[20] == "lake"
    assert CLASS_NAMES[27:] == ("house", "other")
    assert [c.name.lower() for c in Landscape] == list(CLASS_NAMES)
    assert [int(c) for c in Landscape] == list(range(29))


def test_palette_colours_are_distinct() -> None:
    assert PALETTE.shape == (29, 3) and PALETTE.dtype == np.uint8
    gaps = [np.linalg.norm(PALETTE[i].astype(float) - PALETTE[j])
            for i, j in itertools.combinations(range(29), 2)]
    assert min(gaps) >= 50
    assert (colorize(np.array([[1, 28]])) == PALETTE[[[1, 28]]]).all()
    with pytest.raises(GantuneError):
        colorize(np.array([[29]]))


# --- scenes --------------------------------------------------------------------------------


def test_render_is_deterministic_and_seeded() -> None:
    image, labels = render_scene(3, 48, seed=7)
    image2, labels2 = render_scene(3, 48, seed=7)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    assert labels.shape == (48, 48) and labels.dtype == np.uint8
    assert np.array_equal(image, image2) and np.array_equal(labels, labels2)
    other_image, other_labels = render_scene(3, 48, seed=8)
    assert not np.array_equal(labels, other_labels)
    assert np.abs(image.astype(int) - other_image).mean() > 5
    assert not np.array_equal(labels, render_scene(4, 48, seed=7)[1])


@pytest.mark.parametrize("size_px", [32, 512])
def test_extreme_sizes_render(size_px: int) -> None:
    image, labels = render_scene(0, size_px)
    assert image.shape == (size_px, size_px, 3) and labels.shape == (size_px, size_px)
    assert labels.max() < NUM_CLASSES
    assert image.std() > 10  # a picture, not a flat fill


@pytest.mark.parametrize("size_px", [31, 513, 0])
def test_sizes_outside_the_range_raise(size_px: int) -> None:
    with pytest.raises(GantuneError, match=rf"{size_px}px.*32\.\.512"):
        render_scene(0, size_px)


def test_negative_seed_raises() -> None:
    with pytest.raises(GantuneError, match="seed"):
        render_scene(0, 32, seed=-1)


def test_many_classes_appear_over_50_scenes() -> None:
    seen: set[int] = set()
    for index in range(50):
        seen |= set(np.unique(render_scene(index, 48)[1]).tolist())
    assert len(seen) >= 15, sorted(CLASS_NAMES[c] for c in seen)
    assert {Landscape.SKY, Landscape.MOUNTAIN, Landscape.TREE} <= seen


def test_same_scene_at_every_resolution() -> None:
    for index in range(6):
        small = render_scene(index, 64)[1]
        large = render_scene(index, 256)[1]
        downsampled = np.asarray(Image.fromarray(large).resize((64, 64), Image.NEAREST))
        agreement = (downsampled == small).mean()
        assert agreement > 0.9, (index, agreement)


def test_style_changes_the_image_not_the_labels() -> None:
    day = render_scene(5, 64, style=Style("day", "summer"))
    night = render_scene(5, 64, style=Style("night", "winter"))
    winter = render_scene(5, 64, style=Style("day", "winter"))
    sunset = render_scene(5, 64, style=Style("sunset", "summer"))
    for other in (night, winter, sunset):
        assert np.array_equal(day[1], other[1])
        assert np.abs(day[0].astype(int) - other[0]).mean() > 15
    # Night is darker than day; winter is snow on the ground.
    assert night[0].mean() < day[0].mean() - 40
    ground = np.isin(day[1], [Landscape.GRASS, Landscape.FIELD, Landscape.LAND,
                              Landscape.EARTH, Landscape.SAND, Landscape.HILL])
    assert ground.mean() > 0.1
    assert winter[0][ground].mean() > day[0][ground].mean() + 30


def test_default_style_comes_from_seed_and_index() -> None:
    image, _ = render_scene(2, 32, seed=1)
    assert np.array_equal(image, render_scene(2, 32, seed=1, style=draw_style(2, seed=1))[0])
    styles = {draw_style(i) for i in range(40)}
    assert len(styles) >= 4  # the random style really varies
    with pytest.raises(GantuneError, match="noon"):
        Style("noon", "summer")


def test_64px_scenes_render_fast() -> None:
    render_scene(0, 64)
    start = time.perf_counter()
    for index in range(20):
        render_scene(index, 64)
    # The target is 50/s; 10/s leaves room for a machine shared with other jobs.
    assert 20 / (time.perf_counter() - start) > 10


def test_write_scene_folder_layout(tmp_path: Path) -> None:
    write_scene_folder(tmp_path, n=3, size_px=32, seed=2)
    names = [f"{i:05d}" for i in range(3)]
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == [f"{n}.jpg" for n in names]
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [f"{n}.png" for n in names]
    for i, name in enumerate(names):
        image, labels = render_scene(i, 32, seed=2)
        with Image.open(tmp_path / "labels" / f"{name}.png") as label_png:
            assert label_png.mode == "L"
            ids = np.asarray(label_png)
        assert ids.max() < NUM_CLASSES and np.array_equal(ids, labels)
        with Image.open(tmp_path / "imgs" / f"{name}.jpg") as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (32, 32)
            pixels = np.asarray(jpeg.convert("RGB"))
        assert np.abs(pixels.astype(int) - image).mean() < 12  # quality 95


def test_write_scene_folder_never_overwrites(tmp_path: Path) -> None:
    write_scene_folder(tmp_path, n=2, size_px=32)
    before = (tmp_path / "imgs" / "00000.jpg").read_bytes()
    with pytest.raises(GantuneError, match=str(tmp_path / "imgs")):
        write_scene_folder(tmp_path, n=2, size_px=32, seed=1)
    assert (tmp_path / "imgs" / "00000.jpg").read_bytes() == before
    # A labels folder alone with content is refused too.
    other = tmp_path / "other"
    (other / "labels").mkdir(parents=True)
    (other / "labels" / "x.png").write_bytes(b"")
    with pytest.raises(GantuneError, match=str(other / "labels")):
        write_scene_folder(other, n=1, size_px=32)
    assert not (other / "imgs").exists() or not any((other / "imgs").iterdir())


def test_write_scene_folder_bad_size_makes_no_folder(tmp_path: Path) -> None:
    with pytest.raises(GantuneError, match="1000px"):
        write_scene_folder(tmp_path / "out", n=1, size_px=1000)
    assert not (tmp_path / "out").exists()


def _check_item(item: dict, size: int, num_classes: int = NUM_CLASSES) -> None:
    assert item["image"].shape == (3, size, size) and item["image"].dtype == torch.float32
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["label"].shape == (num_classes, size, size)
    assert item["label"].dtype == torch.float32
    assert item["label_ids"].shape == (size, size) and item["label_ids"].dtype == torch.int64
    assert torch.equal(item["label"].sum(0), torch.ones(size, size))
    assert torch.equal(item["label"].argmax(0), item["label_ids"])
    assert isinstance(item["path"], str)


def test_scene_dataset_items(seed: int) -> None:
    ds = SceneDataset(n=4, size_px=32, seed=3)
    assert len(ds) == 4
    item = ds[1]
    _check_item(item, 32)
    image, labels = render_scene(1, 32, seed=3)
    assert np.array_equal(item["label_ids"].numpy(), labels)
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(item["image"], expected)
    flipping = SceneDataset(n=4, size_px=32, seed=3, flip=True)
    flips = [torch.equal(flipping[1]["label_ids"], item["label_ids"].flip(-1)) for _ in range(12)]
    assert any(flips) and not all(flips)
    with pytest.raises(GantuneError, match="num_classes"):
        SceneDataset(n=4, size_px=32, num_classes=10)
    with pytest.raises(IndexError):
        ds[4]
