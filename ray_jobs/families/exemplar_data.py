"""What the exemplar families (cocosnet, cocosnet2, unite) add to the data: each item's exemplar,
retrieved from the training set as the `exemplar` section says, the ranking cached on disk
(data/exemplars.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from data import exemplars as ex
from gantune.errors import GantuneError
from ray_jobs.config import Config

log = logging.getLogger(__name__)


def _cache_dir() -> Path:
    from metrics.stats_cache import default_cache_dir

    return default_cache_dir().parent / "exemplars"


def _sets_key(cfg: Config) -> dict[str, Any]:
    """Everything that decides the training and evaluation pairs."""
    d = cfg.data
    key: dict[str, Any] = {"source": d.source, "size_px": d.size_px, "num_classes": d.num_classes, "n_eval": d.n_eval}
    if d.source == "scenes":
        return key | {"seed": d.seed, "n_train": d.n_train}
    from data.folder import pair_files
    from metrics.image_folder import files_key

    return key | {"files": files_key([p for pair in pair_files(Path(d.root)) for p in pair])}


def _ranking(cfg: Config, mode: str, queries: Dataset, pool: Dataset, training: bool) -> np.ndarray | None:
    """(len(queries), k) pool indices for `mode`, cached; None for a fresh random draw each time."""
    e = cfg.exemplar
    if mode == "random":
        if training:
            return None
        return ex.random_ranking(len(queries), len(pool), cfg.eval.seed)  # type: ignore[arg-type]
    k = e.top_k if training else 1
    settings: dict[str, Any] = {"mode": mode, "split": "train" if training else "eval", "k": k, **_sets_key(cfg)}
    if mode == "vgg":
        lo = cfg.loss
        settings["vgg"] = "random-seed0" if lo.random_backbones else "torchvision-vgg19"

    def compute() -> np.ndarray:
        log.info("retrieving %s exemplars for the %s set (%d queries, %d pairs)", mode,
                 settings["split"], len(queries), len(pool))  # type: ignore[arg-type]
        if mode == "iou":
            n = cfg.data.num_classes
            scores = ex.histogram_iou(ex.label_histograms(queries, n), ex.label_histograms(pool, n))
        else:
            from backbones.vgg import VGGFeatures

            lo = cfg.loss
            vgg = VGGFeatures("vgg19", [ex.VGG_LAYER], random_weights=lo.random_backbones,
                              weights_dir=lo.weights_dir or None)
            q = ex.vgg_descriptors(queries, vgg)
            scores = q @ (q if queries is pool else ex.vgg_descriptors(pool, vgg)).T
        return ex.rank(scores, k, exclude_self=training)

    return ex.cached(settings, _cache_dir(), compute)


def exemplar_datasets(cfg: Config, train: Dataset, evals: Dataset) -> tuple[Dataset, Dataset]:
    """The training and evaluation sets with an exemplar per item, both drawn from train."""
    e, d = cfg.exemplar, cfg.data
    n = len(train)  # type: ignore[arg-type]
    if n < 2:  # a pair's exemplar is another pair's photo
        where = f"{d.root}: {n} training pair" if d.source == "folder" else f"data.n_train={n}"
        raise GantuneError(f"{where}: exemplar retrieval needs at least 2 training pairs (an exemplar is another "
                           f"pair's photo)")
    train_ranking = _ranking(cfg, e.train_retrieval, train, train, training=True)
    eval_ranking = _ranking(cfg, e.eval_retrieval, evals, train, training=False)
    return (ex.ExemplarDataset(train, train, train_ranking, draw=True, self_ref_prob=e.self_ref_prob),
            ex.ExemplarDataset(evals, train, eval_ranking, draw=False))
