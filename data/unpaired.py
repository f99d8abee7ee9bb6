"""Unpaired image sets for A <-> B translation (CycleGAN, U-GAT-IT).

Items are {"A": (3, S, S), "B": (3, S, S), "image": the B image (what FID compares A->B's
output with), "path"}, in [-1, 1]. As CycleGAN's unaligned dataset, training pairs the i-th A
with a random B; the evaluation set pairs them by index, so its inputs never change.

- The built-in scenes: domain A is summer days, domain B winter days, rendered from different
  layouts (B's scenes come from another seed), so no B is the translation of an A.
- A folder in CycleGAN's layout: trainA/, trainB/, testA/, testB/ of images, resized to S,
  each checked to be readable and whole when the set is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from data.folder import check_images, read_image
from data.scenes import Style, render_scene
from gantune.errors import GantuneError
from metrics.image_folder import list_images

DOMAIN_STYLES = {"A": Style(time_of_day="day", season="summer"), "B": Style(time_of_day="day", season="winter")}
_B_SEED_OFFSET = 7919  # B's layouts: another set of scenes than A's


def _to_item(image: np.ndarray, flip: bool) -> torch.Tensor:
    if flip:
        image = image[:, ::-1]
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1  # a writable copy


class UnpairedScenes(Dataset):
    """n summer scenes (A) and n winter scenes of other layouts (B), rendered on access."""

    def __init__(self, n: int, size_px: int, seed: int = 0, *, train: bool = True, flip: bool = False) -> None:
        if n < 1:
            raise GantuneError(f"number of scenes must be at least 1, got {n}")
        self.n, self.size_px, self.seed, self.train, self.flip = n, size_px, seed, train, flip

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"scene index {index} out of range 0..{self.n - 1}")
        b_index = int(torch.randint(self.n, ())) if self.train else index
        a = render_scene(index, self.size_px, self.seed, DOMAIN_STYLES["A"])[0]
        b = render_scene(b_index, self.size_px, self.seed + _B_SEED_OFFSET, DOMAIN_STYLES["B"])[0]
        item = self._item(a, b)
        return item | {"path": f"scenes:seed={self.seed}:A={index}:B={b_index}"}

    def _item(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        flip_a = self.train and self.flip and bool(torch.rand(()) < 0.5)
        flip_b = self.train and self.flip and bool(torch.rand(()) < 0.5)
        B = _to_item(b, flip_b)
        return {"A": _to_item(a, flip_a), "B": B, "image": B}


class UnpairedFolder(UnpairedScenes):
    """CycleGAN's layout: root/trainA, trainB (training) or testA, testB (evaluation)."""

    def __init__(self, root: Path, size_px: int, *, train: bool = True, flip: bool = False) -> None:
        split = "train" if train else "test"
        self.files = {d: list_images(_domain_dir(root, split + d), min_count=1) for d in ("A", "B")}
        for d, files in self.files.items():
            check_images(files, f"checking {Path(root) / (split + d)}")
        super().__init__(len(self.files["A"]), size_px, train=train, flip=flip)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"image index {index} out of range 0..{self.n - 1}")
        n_b = len(self.files["B"])
        b_index = int(torch.randint(n_b, ())) if self.train else index % n_b
        a, b = self.files["A"][index], self.files["B"][b_index]
        return self._item(self._load(a), self._load(b)) | {"path": f"{a}|{b}"}

    def _load(self, path: Path) -> np.ndarray:
        image = read_image(path).resize((self.size_px, self.size_px), Image.BICUBIC)
        return np.asarray(image)


def _domain_dir(root: Path, name: str) -> Path:
    path = Path(root) / name
    if not path.is_dir():
        raise GantuneError(f"{root}: expected CycleGAN's layout trainA/ trainB/ testA/ testB/, {name}/ is missing")
    return path
