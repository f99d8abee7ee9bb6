"""Images with holes to fill, for the inpainting family.

Items are {"image": (3, S, S) in [-1, 1], "mask": (1, S, S), 1 = hole, "path"}. The images are
the built-in scenes or a folder of images (resized to S). The holes are:

- `freeform`: DeepFill v2's free-form masks (Yu et al. 2019): a few strokes of random vertices,
  angles, lengths and brush widths, plus random boxes; or
- `files`: masks read from a folder (any image; a pixel above 0 is a hole, as PD-GAN's irregular
  masks), resized by nearest neighbour, flipped at random in training. Each mask is checked when
  the set is built: readable, and at data.size_px neither without a hole (thin strokes of a much
  larger mask vanish in the resize) nor all hole (nothing left to fill from).

Training draws holes from torch's RNG; the evaluation set from a generator seeded per item, so
its holes are the same at every evaluation.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from tqdm import tqdm

from data.folder import check_image, check_images, read_image
from data.scenes import render_scene
from gantune.errors import GantuneError
from metrics.image_folder import list_images

MASK_KINDS = ("freeform", "files")


def freeform_mask(size: int, rng: np.random.Generator, max_strokes: int = 4, max_boxes: int = 2) -> np.ndarray:
    """(size, size) float32 hole mask: 1 to max_strokes strokes and 0 to max_boxes boxes."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        width = int(rng.integers(max(size // 32, 2), max(size // 8, 3) + 1))
        x, y = rng.uniform(0, size, 2)
        for _ in range(int(rng.integers(2, 7))):
            angle = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(size / 16, size / 3)
            nx = float(np.clip(x + length * math.cos(angle), 0, size - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, size - 1))
            draw.line([(x, y), (nx, ny)], fill=255, width=width)
            r = width / 2  # round joints, as DeepFill's brush
            draw.ellipse([nx - r, ny - r, nx + r, ny + r], fill=255)
            x, y = nx, ny
    for _ in range(int(rng.integers(0, max_boxes + 1))):
        w, h = rng.uniform(size / 8, size / 3, 2)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=255)
    return (np.asarray(canvas) > 0).astype(np.float32)


class InpaintDataset(Dataset):
    """n scenes (or the images of `root`) of size_px, each with a hole mask."""

    def __init__(self, size_px: int, *, n: int = 0, seed: int = 0, root: Path | None = None,
                 masks: str = "freeform", mask_root: Path | None = None, train: bool = True,
                 flip: bool = False) -> None:
        if masks not in MASK_KINDS:
            raise GantuneError(f"masks must be one of {', '.join(MASK_KINDS)}, got {masks!r}")
        if masks == "files" and mask_root is None:
            raise GantuneError("masks 'files' needs a mask folder")
        self.size_px, self.seed, self.train, self.flip, self.masks = size_px, seed, train, flip, masks
        self.files = list_images(root, min_count=1) if root is not None else []
        check_images(self.files, f"checking {root}")
        self.mask_files = list_images(mask_root, min_count=1) if masks == "files" else []
        for path in tqdm(self.mask_files, desc=f"checking {mask_root}", unit="mask",
                         disable=True if len(self.mask_files) < 200 else None):
            check_mask(path, size_px)
        self.n = len(self.files) if root is not None else n
        if self.n < 1:
            raise GantuneError("InpaintDataset: needs n >= 1 scenes or a folder of images")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"inpainting item {index} out of range 0..{self.n - 1}")
        if self.files:
            image = np.asarray(read_image(self.files[index]).resize((self.size_px, self.size_px), Image.BICUBIC))
            path = str(self.files[index])
        else:
            image, _ = render_scene(index, self.size_px, self.seed)
            path = f"scene:seed={self.seed}:index={index}"
        seed = int(torch.randint(2**62, ())) if self.train else 1_000_003 * self.seed + index
        rng = np.random.default_rng(seed)
        mask = self._mask(index, rng)
        if self.train and self.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1
        return {"image": pixels, "mask": torch.from_numpy(mask)[None], "path": path}

    def _mask(self, index: int, rng: np.random.Generator) -> np.ndarray:
        if self.masks == "freeform":
            return freeform_mask(self.size_px, rng)
        path = self.mask_files[int(rng.integers(len(self.mask_files))) if self.train else index % len(self.mask_files)]
        holes = _read_mask(path, self.size_px)
        if self.train and rng.random() < 0.5:
            holes = holes[:, ::-1]
        return np.ascontiguousarray(holes)


def _read_mask(path: Path, size_px: int) -> np.ndarray:
    """(size_px, size_px) float32 holes of the mask file at path (pixels above 0), resized by
    nearest neighbour."""
    try:
        with Image.open(path) as im:
            mask = im.convert("L").resize((size_px, size_px), Image.NEAREST)
    except OSError as e:
        raise GantuneError(f"{path}: cannot read mask ({' '.join(str(e).split())})") from None
    return (np.asarray(mask) > 0).astype(np.float32)


def check_mask(path: Path, size_px: int) -> None:
    """Refuse a mask file that is cut short or unreadable, or that at size_px has no hole (thin
    strokes of a much larger mask vanish in the resize) or nothing but hole (nothing to fill from)."""
    st = path.stat()
    holes = _hole_fraction(str(path), st.st_size, st.st_mtime_ns, size_px)
    if holes in (0.0, 1.0):
        raise GantuneError(f"{path}: mask has {'no' if holes == 0 else 'nothing but'} hole at data.size_px={size_px} "
                           f"(a pixel above 0 is a hole; thin strokes of a much larger mask vanish in the "
                           f"nearest-neighbour resize)")


@functools.lru_cache(maxsize=1 << 16)
def _hole_fraction(path: str, nbytes: int, mtime_ns: int, size_px: int) -> float:
    # Cached on the file's size and mtime: a training and an evaluation set read each mask once.
    check_image(Path(path), "mask", photo=False)
    return float(_read_mask(Path(path), size_px).mean())
