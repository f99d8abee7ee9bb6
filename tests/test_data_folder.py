"""Tests for data/: the folder dataset (competition layout) with its one-line errors, the preview,
and the `gantune data` commands. Tiny images (32-64 px), so the file runs in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.classes import PALETTE
from data.folder import FolderDataset, validate_folder
from data.preview import THUMB_PX, write_preview
from data.scenes import render_scene, write_scene_folder
from gantune.errors import GantuneError
from ray_jobs.cli import main
from test_data import _check_item



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
