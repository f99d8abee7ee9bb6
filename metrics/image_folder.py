"""Image folders for the metrics: which files count, a key that changes when they do, and batches.

A folder holds its images directly, or, in the competition layout (`DIR/imgs`, `DIR/labels`),
under `imgs/`. Images of any size and mode are read as RGB floats in [0, 1]; the network does
the resize to 299 px, so a batch of mixed sizes is resized per image with that same resize.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from backbones.inception import INPUT_SIZE_PX
from gantune.errors import GantuneError

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")


def list_images(folder: str | os.PathLike[str], *, min_count: int = 2) -> list[Path]:
    """The image files of `folder` (or of `folder/imgs` when it has none), sorted by name."""
    root = Path(folder)
    if not root.is_dir():
        raise GantuneError(f"{root}: no such folder (expected a folder of images)")
    files = _images_in(root)
    if not files and (root / "imgs").is_dir():
        files = _images_in(root / "imgs")
    if not files:
        raise GantuneError(
            f"{root}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in it or in its imgs/"
        )
    if len(files) < min_count:
        raise GantuneError(f"{root}: {len(files)} image(s); at least {min_count} are needed")
    return files


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def files_key(files: Sequence[Path]) -> str:
    """A hash of the files' paths, sizes and modification times: it changes when any file does."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_image(path: Path) -> Tensor:
    """(3, H, W) float32 in [0, 1], the same values as torchvision's ToTensor on the RGB image."""
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception as e:  # PIL raises many types for broken or foreign files
        raise GantuneError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().div(255)


class ImageFolderBatches:
    """Re-iterable batches (B, 3, H, W) of `files`, in order; each pass reads the files again."""

    def __init__(self, files: Sequence[Path], batch_size: int) -> None:
        if batch_size < 1:
            raise GantuneError(f"batch_size: expected a positive integer, got {batch_size}")
        self.files = list(files)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, len(self.files), self.batch_size):
            images = [load_image(p) for p in self.files[start : start + self.batch_size]]
            if len({img.shape for img in images}) > 1:
                # The network resizes every input to 299 px; doing it here per image lets
                # differently sized images share a batch and gives the same pixels.
                images = [
                    F.interpolate(
                        img[None],
                        size=(INPUT_SIZE_PX, INPUT_SIZE_PX),
                        mode="bilinear",
                        align_corners=False,
                    )[0]
                    for img in images
                ]
            yield torch.stack(images)
