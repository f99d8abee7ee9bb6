"""Exemplars for the exemplar-based families (CoCosNet v1/v2, UNITE): for each label map, a
reference photo from the training set whose style the generator transfers.

The experiment logs compare retrieval modes ("trainR_testR", "trainVGG_testIOU",
"trainIOU_testIOU"); each is chosen separately for training and evaluation:
- `random`: any other training pair (drawn anew at every access in training, fixed by the seed
  at evaluation);
- `iou`: the training pairs whose label histograms overlap most, IoU = sum(min) / sum(max) of
  the class fractions: what is known of a test label map alone;
- `vgg`: the training photos nearest in VGG19 features (relu5_2, averaged over space, cosine).
  It needs the photo, so at evaluation it looks at the held-out photo, as the logs' "trainVGG"
  does in training only.

A ranking (the `top_k` best pool indices per query) is computed once and cached under a hash of
everything it depends on. As in the official code's easy/hard reference lists, training draws
one of the top k each time, and with probability `self_ref_prob` the pair's own photo, drawn
again (its own flip), marked `self_ref` for the losses that need a known correspondence;
evaluation always takes the best. The built-in scenes are retrieved from like any folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gantune.errors import GantuneError

log = logging.getLogger(__name__)

RETRIEVALS = ("random", "iou", "vgg")
VGG_LAYER = "relu5_2"


def label_histograms(dataset: Dataset, num_classes: int) -> np.ndarray:
    """(N, num_classes) class fractions of every label map, in dataset order."""
    out = np.zeros((len(dataset), num_classes))  # type: ignore[arg-type]
    with torch.random.fork_rng():  # a dataset's flips draw from torch's RNG: leave training's alone
        for i in range(len(out)):
            ids = dataset[i]["label_ids"].numpy().ravel()
            out[i] = np.bincount(ids, minlength=num_classes)[:num_classes] / ids.size
    return out


def histogram_iou(queries: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(Q, P) IoU of class histograms: sum_c min(q_c, p_c) / sum_c max(q_c, p_c)."""
    q, p = queries[:, None, :], pool[None, :, :]
    return np.minimum(q, p).sum(-1) / np.maximum(np.maximum(q, p).sum(-1), 1e-12)


@torch.no_grad()
def vgg_descriptors(dataset: Dataset, vgg: torch.nn.Module, batch_size: int = 32) -> np.ndarray:
    """(N, D) unit-norm spatial means of VGG19 relu5_2 features of every photo (ImageNet input)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    chunks = []
    with torch.random.fork_rng():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = ((batch["image"].float() + 1) / 2 - mean) / std
            f = vgg(x)[VGG_LAYER].mean(dim=(2, 3))
            chunks.append(torch.nn.functional.normalize(f, dim=1))
    return torch.cat(chunks).double().numpy()


def rank(scores: np.ndarray, top_k: int, exclude_self: bool) -> np.ndarray:
    """(Q, top_k) pool indices by decreasing score (ties: lower index first); with exclude_self,
    query i never gets pool item i (the pool is the query set)."""
    scores = scores.astype(np.float64, copy=True)
    if exclude_self:
        np.fill_diagonal(scores, -np.inf)
    k = min(top_k, scores.shape[1] - int(exclude_self))
    if k < 1:
        raise GantuneError("exemplars: the training set needs at least 2 pairs to retrieve from")
    return np.argsort(-scores, axis=1, kind="stable")[:, :k].astype(np.int64)


def random_ranking(n_queries: int, n_pool: int, seed: int) -> np.ndarray:
    """(Q, 1) seeded random pool indices: evaluation's fixed `random` exemplars."""
    if n_pool < 1:
        raise GantuneError("exemplars: the training set is empty")
    return np.random.default_rng(seed).integers(0, n_pool, size=(n_queries, 1)).astype(np.int64)


def cached(settings: dict[str, Any], cache_dir: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """compute(), stored once under a hash of settings (written atomically, as the FID stats)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"exemplars-{settings['mode']}-{digest}.npy"
    if path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except Exception as e:  # a damaged file is recomputed, not trusted
            log.warning("ignoring unreadable exemplar cache %s (%s)", path, e)
    ranking = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, ranking)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return ranking


class ExemplarDataset(Dataset):
    """`base`'s items with `exemplar` (3xHxW in [-1, 1]), `exemplar_label` (one-hot) and
    `self_ref` (1.0 where the exemplar is the pair's own photo).

    ranking: (len(base), k) indices into pool, or None for `random` in training (any other pool
    item, drawn at each access; base must then be the pool). draw: training (a random one of the
    top k, and self-references); otherwise always ranking[:, 0].
    """

    def __init__(self, base: Dataset, pool: Dataset, ranking: np.ndarray | None, draw: bool,
                 self_ref_prob: float = 0.0) -> None:
        n = len(base)  # type: ignore[arg-type]
        if ranking is None and not (draw and base is pool):
            raise GantuneError("exemplars: a random draw at each access is for the training set only")
        if ranking is not None and ranking.shape[0] != n:
            raise GantuneError(f"exemplars: ranking has {ranking.shape[0]} rows for {n} items")
        self.base, self.pool, self.ranking, self.draw, self.self_ref_prob = base, pool, ranking, draw, self_ref_prob

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _pick(self, index: int) -> int:
        if self.ranking is None:
            j = int(torch.randint(0, len(self.pool) - 1, ()))  # type: ignore[arg-type]
            return j + (j >= index)
        if not self.draw:
            return int(self.ranking[index, 0])
        return int(self.ranking[index, int(torch.randint(0, self.ranking.shape[1], ()))])

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.base[index])
        self_ref = self.draw and bool(torch.rand(()) < self.self_ref_prob)
        ex = self.base[index] if self_ref else self.pool[self._pick(index)]
        item |= {"exemplar": ex["image"], "exemplar_label": ex["label"],
                 "self_ref": torch.tensor(float(self_ref))}
        return item
