"""Image/label folders in the competition layout, and the dataset that serves them.

A dataset folder holds root/imgs/<stem>.jpg|.jpeg|.png (photos of any size, aspect and mode)
and root/labels/<stem>.png (single-channel, pixel values are class ids). `pair_files` pairs
them by stem and rejects pairing mistakes at once; `load_pair` reads and checks one pair;
`FolderDataset` serves training items; `validate_folder` checks every pair up front, so a
trainer fails before its first step rather than hours into a run. `check_image` and
`check_images` are the cheap up-front check of any image folder (the SR, unpaired and
inpainting sets): the header's size and mode, and that the whole file is there, without a full
decode where the format allows. Every mistake is a one-line GantuneError naming the file.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from gantune.errors import GantuneError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LABEL_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I")  # single channel, integer
# Photos deeper than 8 bits: PIL's convert("RGB") clips them at 255, a silently white image.
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# Images PIL reads that the layout leaves out: refused by name rather than silently skipped.
OTHER_IMAGE_SUFFIXES = (".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = ("resize", "crop")
_SHOW = 3  # how many offending files one message names
# What PIL raises on a broken file: OSError for most (truncated included), but corrupt headers
# also surface as SyntaxError, ValueError, EOFError, struct.error (an Exception) or a bomb.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error,
                  Image.DecompressionBombError)


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) paths paired by file stem, sorted by stem."""
    root = Path(root)
    if not root.is_dir():
        raise GantuneError(f"{root}: dataset folder not found (expected {root}/imgs and "
                           f"{root}/labels)")
    imgs_dir, labels_dir = root / "imgs", root / "labels"
    for folder, what in ((imgs_dir, "photos"), (labels_dir, "class-id PNGs")):
        if not folder.is_dir():
            raise GantuneError(f"{folder}: folder not found (a dataset folder holds imgs/ with "
                               f"photos and labels/ with class-id PNGs; this one is for {what})")
    images = _by_stem(imgs_dir, IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES,
                      "photos are read from .jpg, .jpeg or .png only; convert it or move it out")
    labels = _by_stem(labels_dir, (".png",), (".jpg", ".jpeg", *OTHER_IMAGE_SUFFIXES),
                      "labels are read from .png only (a lossy or other format changes class ids); "
                      "write it as a PNG of class ids or move it out")
    if not images:
        raise GantuneError(f"{imgs_dir}: no images (expected *.jpg, *.jpeg or *.png files)")
    unlabelled = [images[s] for s in sorted(images.keys() - labels.keys())]
    if unlabelled:
        raise GantuneError(f"{len(unlabelled)} image(s) without a label <stem>.png in "
                           f"{labels_dir}: {_names(unlabelled)}")
    orphans = [labels[s] for s in sorted(labels.keys() - images.keys())]
    if orphans:
        raise GantuneError(f"{len(orphans)} label(s) without an image <stem>.jpg|.jpeg|.png in "
                           f"{imgs_dir}: {_names(orphans)}")
    return [(images[s], labels[s]) for s in sorted(images)]


def _by_stem(folder: Path, suffixes: tuple[str, ...], refused: tuple[str, ...], why: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        # Hidden files are editor droppings and our own half-written temp files; other files
        # (notes, class lists) are not data.
        if path.name.startswith("."):
            continue
        if path.suffix.lower() in refused:
            raise GantuneError(f"{path}: {why}")
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise GantuneError(f"{path}: two files with stem {path.stem!r} "
                               f"({found[path.stem].name} and {path.name}); keep one")
        found[path.stem] = path
    return found


def _names(paths: list[Path]) -> str:
    shown = ", ".join(str(p) for p in paths[:_SHOW])
    return shown + (f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else "")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_photo_mode(path: Path, mode: str) -> None:
    if mode in DEEP_MODES:
        raise GantuneError(f"{path}: mode {mode} (more than 8 bits a channel) would be clipped to white as RGB; "
                           f"save the photo as 8-bit RGB or grayscale")


def read_image(path: Path) -> Image.Image:
    """The photo at path as RGB. Truncated files fail here rather than load half an image."""
    try:
        with Image.open(path) as im:
            im.load()
            _check_photo_mode(path, im.mode)
            return im.convert("RGB")  # a copy even when already RGB: `with` closes im
    except _DECODE_ERRORS as e:
        raise GantuneError(f"{path}: cannot read image ({_one_line(e)})") from None


def check_image(path: Path, what: str = "image", photo: bool = True) -> tuple[int, int]:
    """(width, height) of the image at path, checked without a full decode where the format allows:
    a PNG's chunks are read to IEND with their CRCs, a JPEG is decoded at 1/8 scale (every byte
    still read), other formats in full. A cut or damaged file fails here, naming it; so does a
    photo deeper than 8 bits. Cached on the file's size and mtime: a train and an evaluation set
    of one folder check it once."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise GantuneError(f"{path}: cannot read {what} ({e.strerror})") from None
    return _check_image(str(path), st.st_size, st.st_mtime_ns, what, photo)


@functools.lru_cache(maxsize=1 << 16)
def _check_image(path: str, nbytes: int, mtime_ns: int, what: str, photo: bool) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
            if im.format == "PNG":
                im.verify()
            else:
                if im.format == "JPEG":
                    im.draft("RGB", (1, 1))
                im.load()
    except _DECODE_ERRORS as e:
        raise GantuneError(f"{path}: cannot read {what} ({_one_line(e)})") from None
    if photo:
        _check_photo_mode(Path(path), mode)
    return size


def check_images(paths: list[Path], desc: str, min_side_px: int = 0, what: str = "image",
                 photo: bool = True) -> None:
    """check_image for each of paths, with a progress bar for large folders; min_side_px refuses an
    image narrower or lower than that (a crop that does not fit), naming the file."""
    for path in tqdm(paths, desc=desc, unit="img", disable=True if len(paths) < 200 else None):
        w, h = check_image(path, what, photo)
        if w < min_side_px or h < min_side_px:
            raise GantuneError(f"{path}: {what} is {w}x{h} px, smaller than data.size_px={min_side_px} (the "
                               f"{min_side_px}x{min_side_px} px crop)")


def read_label(path: Path, num_classes: int) -> np.ndarray:
    """The class ids at path as an HxW integer array, checked against num_classes."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            ids = np.asarray(im) if mode in LABEL_MODES else None
    except _DECODE_ERRORS as e:
        raise GantuneError(f"{path}: cannot read label ({_one_line(e)})") from None
    if ids is None:
        hint = "; a colour-coded label? write class ids instead" if mode in ("RGB", "RGBA") else ""
        raise GantuneError(f"{path}: label must be a single-channel PNG of class ids (mode "
                           f"L, P, I;16 or I), got mode {mode}{hint}")
    if ids.size:
        low, high = int(ids.min()), int(ids.max())
        if high >= num_classes:
            raise GantuneError(f"{path}: label value {high} >= num_classes {num_classes}")
        if low < 0:
            raise GantuneError(f"{path}: negative label value {low}; expected 0..{num_classes - 1}")
    return ids.astype(np.uint8 if num_classes <= 256 else np.int32)


def _check_same_size(image_path: Path, size: tuple[int, int], label_path: Path, ids: np.ndarray) -> None:
    if size != (ids.shape[1], ids.shape[0]):
        raise GantuneError(f"{label_path}: label is {ids.shape[1]}x{ids.shape[0]} px but its "
                           f"image {image_path} is {size[0]}x{size[1]} px")


def load_pair(image_path: Path, label_path: Path, num_classes: int
              ) -> tuple[Image.Image, np.ndarray]:
    """One checked pair: the RGB photo and its HxW class ids, of the same size."""
    image = read_image(image_path)
    ids = read_label(label_path, num_classes)
    _check_same_size(image_path, image.size, label_path, ids)
    return image, ids


def validate_folder(root: Path, num_classes: int = 29) -> int:
    """Check every pair under root; returns the number of pairs. Labels are decoded in full (every
    class id is checked), photos by check_image (whole and readable, of their label's size)."""
    _check_num_classes(num_classes)
    pairs = pair_files(root)
    for image_path, label_path in tqdm(pairs, desc=f"checking {root}", unit="pair",
                                       disable=True if len(pairs) < 200 else None):
        size = check_image(image_path)
        _check_same_size(image_path, size, label_path, read_label(label_path, num_classes))
    log.info("%s: %d image/label pairs are valid", root, len(pairs))
    return len(pairs)


def make_item(image: np.ndarray, label_ids: np.ndarray, num_classes: int, path: str,
              flip: bool = False) -> dict[str, Any]:
    """The training item for an HxWx3 uint8 image and its HxW class ids.

    image: float32 3xHxW in [-1, 1]; label: float32 one-hot num_classes x H x W;
    label_ids: int64 HxW; path: where it came from.
    """
    if flip:  # image and label together, or the pair no longer matches
        image, label_ids = image[:, ::-1], label_ids[:, ::-1]
    pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    ids = torch.from_numpy(np.ascontiguousarray(label_ids)).long()
    one_hot = torch.zeros((num_classes, *ids.shape)).scatter_(0, ids[None], 1.0)
    return {"image": pixels.float() / 127.5 - 1, "label": one_hot, "label_ids": ids,
            "path": path}


def write_image_atomic(image: Image.Image, path: Path, format: str, **params: Any) -> None:
    """Save through a hidden temp file in the same folder, so readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=format, **params)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= 65536:
        raise GantuneError(f"num_classes must be in 1..65536, got {num_classes}")


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel centre, for nearest-neighbour resizing of labels."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


class FolderDataset(Dataset):
    """Paired photos and class-id labels under root, served at size_px x size_px.

    mode "resize" squashes the photo to the square; "crop" resizes its shorter side to size_px
    and takes a random square crop (torch's RNG, so a seeded DataLoader repeats). flip mirrors
    image and label together with probability 0.5. Pairing mistakes fail here; a broken file
    fails when its item is loaded (run validate_folder first to find them all up front).
    """

    def __init__(self, root: Path, size_px: int, num_classes: int = 29, mode: str = "resize",
                 flip: bool = False) -> None:
        if mode not in MODES:
            raise GantuneError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if size_px < 1:
            raise GantuneError(f"size_px must be positive, got {size_px}")
        _check_num_classes(num_classes)
        self.root, self.size_px, self.num_classes = Path(root), size_px, num_classes
        self.mode, self.flip = mode, flip
        self.pairs = pair_files(self.root)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image, ids = load_pair(image_path, label_path, self.num_classes)
        s = self.size_px
        w, h = image.size
        if self.mode == "resize":
            tw, th = s, s
        else:
            scale = s / min(w, h)
            tw, th = max(s, round(w * scale)), max(s, round(h * scale))
        if (tw, th) != (w, h):
            image = image.resize((tw, th), Image.Resampling.BICUBIC)
            ids = ids[_nearest(h, th)][:, _nearest(w, tw)]
        pixels = np.asarray(image)
        if self.mode == "crop":
            top = int(torch.randint(0, th - s + 1, ()))
            left = int(torch.randint(0, tw - s + 1, ()))
            pixels, ids = pixels[top:top + s, left:left + s], ids[top:top + s, left:left + s]
        flip = self.flip and bool(torch.rand(()) < 0.5)
        return make_item(pixels, ids, self.num_classes, str(image_path), flip)
