"""Tests for data/: the classes, the procedural scenes, the folder dataset, the preview, and the
`gantune data` commands. Tiny images (32-64 px) and few of them, so the file runs in seconds."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.classes import CLASS_NAMES, NUM_CLASSES, PALETTE, Landscape, colorize
from data.folder import FolderDataset, validate_folder
from data.preview import THUMB_PX, write_preview
from data.scenes import SceneDataset, Style, draw_style, render_scene, write_scene_folder
from gantune.errors import GantuneError
from ray_jobs.cli import main

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


# --- folder dataset ------------------------------------------------------------------------


def _write_pair(root: Path, stem: str, image: Image.Image, labels: np.ndarray | Image.Image,
                suffix: str = ".png") -> None:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    image.save(root / "imgs" / f"{stem}{suffix}")
    label = labels if isinstance(labels, Image.Image) else Image.fromarray(labels.astype(np.uint8))
    label.save(root / "labels" / f"{stem}.png")


def _striped(width: int, height: int) -> tuple[Image.Image, np.ndarray]:
    """Four vertical stripes, classes 1..4 left to right, each readable from the red channel.
    Not mirror-symmetric, so a flip of one without the other shows."""
    ids = (np.arange(width) * 4 // width + 1)[None, :].repeat(height, 0).astype(np.uint8)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = ids * 60
    return Image.fromarray(rgb), ids


def _assert_aligned(item: dict) -> None:
    """Where the label says class k, the photo's red channel must say k too (away from edges)."""
    red = (item["image"][0] + 1) * 127.5
    ids = item["label_ids"].float()
    inside = red.sub(ids * 60).abs() < 20
    assert inside.float().mean() > 0.8


def test_folder_dataset_items(tmp_path: Path) -> None:
    write_scene_folder(tmp_path, n=3, size_px=32)
    ds = FolderDataset(tmp_path, size_px=48)
    assert len(ds) == 3 and validate_folder(tmp_path) == 3
    item = ds[2]
    _check_item(item, 48)
    assert item["path"] == str(tmp_path / "imgs" / "00002.jpg")
    # Same-size loading keeps the labels exactly.
    same = FolderDataset(tmp_path, size_px=32, num_classes=40)[0]
    _check_item(same, 32, num_classes=40)
    assert np.array_equal(same["label_ids"].numpy(), render_scene(0, 32)[1])


def test_folder_flip_keeps_image_and_label_aligned(tmp_path: Path, seed: int) -> None:
    photo, ids = _striped(40, 40)
    _write_pair(tmp_path, "a", photo, ids)
    ds = FolderDataset(tmp_path, size_px=40, flip=True)
    flipped = []
    for _ in range(12):
        item = ds[0]
        _assert_aligned(item)
        flipped.append(not np.array_equal(item["label_ids"].numpy(), ids))
    assert any(flipped) and not all(flipped)


def test_crop_mode_on_odd_aspect_ratios(tmp_path: Path) -> None:
    for stem, (w, h) in {"wide": (100, 37), "tall": (37, 100), "tiny": (20, 9)}.items():
        photo, ids = _striped(w, h)
        _write_pair(tmp_path, stem, photo, ids)
    for mode in ("crop", "resize"):
        ds = FolderDataset(tmp_path, size_px=32, mode=mode)
        for i in range(len(ds)):
            item = ds[i]
            _check_item(item, 32)
            _assert_aligned(item)
    crop = FolderDataset(tmp_path, size_px=32, mode="crop")
    torch.manual_seed(1)
    first = [crop[2]["label_ids"] for _ in range(6)]  # "wide": room to move sideways
    torch.manual_seed(1)
    again = [crop[2]["label_ids"] for _ in range(6)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert any(not torch.equal(first[0], other) for other in first[1:])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_photo_modes_are_converted(tmp_path: Path, mode: str) -> None:
    photo, ids = _striped(32, 32)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    _write_pair(tmp_path, "a", photo.convert(mode), ids, suffix=suffix)
    item = FolderDataset(tmp_path, size_px=32)[0]
    _check_item(item, 32)
    if mode == "L":
        assert torch.equal(item["image"][0], item["image"][1])


@pytest.mark.parametrize("mode", ["P", "I;16"])
def test_single_channel_label_modes_are_accepted(tmp_path: Path, mode: str) -> None:
    photo, ids = _striped(32, 32)
    label = Image.fromarray(ids).convert(mode) if mode != "I;16" else \
        Image.fromarray(ids.astype(np.uint16))
    _write_pair(tmp_path, "a", photo, label)
    item = FolderDataset(tmp_path, size_px=32)[0]
    assert np.array_equal(item["label_ids"].numpy(), ids)


# --- bad input: one line naming the file ---------------------------------------------------


def _raises(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(GantuneError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert match in message and "\n" not in message, message
    return message


def test_missing_root(tmp_path: Path) -> None:
    _raises(str(tmp_path / "nope"), FolderDataset, tmp_path / "nope", 32)
    (tmp_path / "imgs").mkdir()
    _raises(str(tmp_path / "labels"), FolderDataset, tmp_path, 32)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    message = _raises(str(tmp_path / "imgs"), FolderDataset, tmp_path, 32)
    assert "no images" in message


def test_images_without_labels_are_named_and_counted(tmp_path: Path) -> None:
    photo, ids = _striped(32, 32)
    _write_pair(tmp_path, "ok", photo, ids)
    for stem in ("b", "c", "d", "e"):
        photo.save(tmp_path / "imgs" / f"{stem}.jpg")
    message = _raises(str(tmp_path / "imgs" / "b.jpg"), FolderDataset, tmp_path, 32)
    assert message.startswith("4 image(s) without a label") and "and 1 more" in message


def test_label_without_image(tmp_path: Path) -> None:
    photo, ids = _striped(32, 32)
    _write_pair(tmp_path, "ok", photo, ids)
    Image.fromarray(ids).save(tmp_path / "labels" / "lonely.png")
    _raises(str(tmp_path / "labels" / "lonely.png"), validate_folder, tmp_path)


def test_label_value_out_of_range(tmp_path: Path) -> None:
    photo, ids = _striped(32, 32)
    ids[3, 3] = 29
    _write_pair(tmp_path, "a", photo, ids)
    ds = FolderDataset(tmp_path, 32)  # per-file problems surface when the item loads
    message = _raises(str(tmp_path / "labels" / "a.png"), ds.__getitem__, 0)
    assert "29" in message and "num_classes 29" in message
    _raises("a.png", validate_folder, tmp_path)
    assert validate_folder(tmp_path, num_classes=30) == 1


def test_colour_label_png_is_refused(tmp_path: Path) -> None:
    photo, ids = _striped(32, 32)
    _write_pair(tmp_path, "a", photo, Image.fromarray(PALETTE[ids]))
    message = _raises(str(tmp_path / "labels" / "a.png"), validate_folder, tmp_path)
    assert "mode RGB" in message


def test_unreadable_image(tmp_path: Path) -> None:
    photo, ids = _striped(32, 32)
    _write_pair(tmp_path, "a", photo, ids)
    (tmp_path / "imgs" / "a.png").unlink()
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"this is not a jpeg")
    _raises(str(tmp_path / "imgs" / "a.jpg"), FolderDataset(tmp_path, 32).__getitem__, 0)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    _write_pair(tmp_path, "a", noise, np.zeros((64, 64), np.uint8), suffix=".jpg")
    path = tmp_path / "imgs" / "a.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _raises(str(path), validate_folder, tmp_path)
    assert "cannot read image" in message


def test_image_and_label_sizes_must_match(tmp_path: Path) -> None:
    photo, _ = _striped(40, 30)
    _write_pair(tmp_path, "a", photo, np.zeros((32, 32), np.uint8))
    load = FolderDataset(tmp_path, 32).__getitem__
    message = _raises(str(tmp_path / "labels" / "a.png"), load, 0)
    assert "32x32" in message and "40x30" in message and str(tmp_path / "imgs" / "a.png") in message


def test_bad_dataset_options(tmp_path: Path) -> None:
    write_scene_folder(tmp_path, n=1, size_px=32)
    _raises("mode", FolderDataset, tmp_path, 32, mode="stretch")
    _raises("num_classes", FolderDataset, tmp_path, 32, num_classes=0)


# --- preview -------------------------------------------------------------------------------


def test_preview_grid(tmp_path: Path) -> None:
    write_scene_folder(tmp_path / "d", n=3, size_px=32)
    out = tmp_path / "grid.png"
    write_preview(tmp_path / "d", out, max_items=16)
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        sheet = np.asarray(grid.convert("RGB"))
    gap = 4  # 3 pairs: 2 columns, 2 rows of (label | photo) cells
    assert sheet.shape == (2 * (THUMB_PX + gap) + gap, 2 * (2 * THUMB_PX + gap) + gap, 3)
    label_cell = sheet[gap:gap + THUMB_PX, gap:gap + THUMB_PX].reshape(-1, 3)
    expected = {tuple(c) for c in PALETTE[np.unique(render_scene(0, 32)[1])]}
    assert {tuple(c) for c in np.unique(label_cell, axis=0)} == expected
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    write_preview(tmp_path / "d", out, max_items=1)
    with Image.open(out) as grid:
        assert grid.size == (2 * THUMB_PX + 2 * gap, THUMB_PX + 2 * gap)


def test_preview_of_a_bad_folder(tmp_path: Path) -> None:
    _raises(str(tmp_path / "missing"), write_preview, tmp_path / "missing", tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


# --- command line --------------------------------------------------------------------------


def test_cli_scenes_and_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "scenes", tmp_path / "grid.png"
    assert main(["data", "scenes", str(out), "--n", "3", "--size", "32"]) == 0
    assert len(list((out / "imgs").glob("*.jpg"))) == 3
    assert len(list((out / "labels").glob("*.png"))) == 3
    assert main(["data", "preview", str(out), "-o", str(png)]) == 0
    assert png.is_file()
    assert capsys.readouterr().err == ""


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gantune") and err.count("\n") == 1, err
    return err


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "imgs").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    assert main(["data", "preview", str(tmp_path / "empty"), "-o", str(tmp_path / "g.png")]) == 2
    assert str(tmp_path / "empty" / "imgs") in _one_error_line(capsys)
    assert main(["data", "scenes", str(tmp_path / "s"), "--n", "1", "--size", "1000"]) == 2
    assert "1000px" in _one_error_line(capsys)
    write_scene_folder(tmp_path / "full", n=1, size_px=32)
    assert main(["data", "scenes", str(tmp_path / "full"), "--n", "1", "--size", "32"]) == 2
    assert "refusing to overwrite" in _one_error_line(capsys)
    with pytest.raises(SystemExit) as info:
        main(["data", "scenes", str(tmp_path / "s"), "--n", "0"])
    assert info.value.code == 2
    _one_error_line(capsys)
