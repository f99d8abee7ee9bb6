"""The family interface: what every generator family gives the trainer.

A family is a class in a file of its own here. It names its networks (`nets`: each an engine,
a checkpoint tag, a learning-rate key and whether it keeps an EMA copy) and its training phases
(`phases`: which net steps on which loss, and how often), and owns everything that depends on
the task: building the nets, the losses of each phase, what generation needs from a batch, the
image grid, its state and hooks. The trainer (trainer.py) is one loop over the phases for every
family; `models/` keeps only the `nn.Module`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from ray_jobs.config import Config

Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Net:
    """One network with its own DeepSpeed engine and optimizer."""

    name: str  # engine name, checkpoint tag, `loss/<phase>/...` prefix: G, D (train.d_ratio's D)
    lr_key: str  # its learning rate's key: an optim key (lr_G), or section.key of the family's own (pdgan.lr_prior)
    ema: bool = False  # keeps an exponential moving average (evaluation and grids use it)


def learning_rate(cfg: Config, net: Net) -> float:
    """The configured learning rate of `net`."""
    section, _, key = net.lr_key.rpartition(".")
    return getattr(getattr(cfg, section or "optim"), key)


@dataclass(frozen=True)
class Phase:
    """One optimisation step of one net on the family's loss for this phase; the other nets
    take part through their raw modules, frozen."""

    name: str  # the loss's name, logged as loss/<name>/...
    net: str  # the net whose engine steps
    every: int = 1  # run at steps divisible by this
    start: int = 0  # run from this step on (a stage after a pre-training one)
    stop: int | None = None  # run before this step only (a pre-training stage)

    def active(self, step: int) -> bool:
        return step % self.every == 0 and self.start <= step and (self.stop is None or step < self.stop)


class Family(Protocol):
    nets: ClassVar[tuple[Net, ...]]
    phases: tuple[Phase, ...]  # a class constant, or set from the config (stages)
    smoke_overrides: ClassVar[dict[str, Any]]  # `--smoke`: the smallest config with every part
    # Scores of G_ema's outputs against the real, reported beside the objective (metrics/paired.py).
    paired_metrics: ClassVar[tuple[str, ...]]

    def __init__(self, cfg: Config) -> None: ...

    def build(self, net: str) -> nn.Module:
        """A fresh network for `net` (the same seed gives the same weights)."""

    def datasets(self) -> tuple[Dataset, Dataset]:
        """The training set and the fixed evaluation set, from the `data` section: label pairs
        (`label_datasets`) with what the family adds to an item (an exemplar), or the task's
        own items (super-resolution pairs). Items carry "image", the real the metrics use."""

    def to(self, device: torch.device) -> "Family":
        """Move the family's own modules (loss networks) to device."""

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        """The phase's total loss, and its unweighted terms for logging (`loss/<phase>/<term>`).
        A total of None skips this step of the phase (a D stepper); it must be None on every
        rank alike."""

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        """A hook after the phase's optimizer step (clipping, a history pool)."""

    def eval_inputs(self, batch: Batch) -> Batch:
        """What generation needs from an evaluation batch (label, exemplar, low-res input)."""

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        """Fixed noise for n evaluation samples, or None when the family takes none."""

    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        """Images in [-1, 1] from evaluation inputs, with the EMA nets where they exist."""

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        """TensorBoard's image for a training batch, made with the EMA nets where they exist:
        (tag, HWC uint8 grid)."""

    def hparams(self) -> dict[str, Any]:
        """The family's searched loss weights, for TensorBoard's hparams view."""


def label_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """(training set, fixed evaluation set) of label-map/photo pairs: the built-in scenes or a
    folder. The evaluation set never flips or crops."""
    from pathlib import Path

    d = cfg.data
    if d.source == "scenes":
        from data.scenes import SceneDataset

        train = SceneDataset(d.n_train, d.size_px, seed=d.seed, num_classes=d.num_classes, flip=d.flip)
        # Held-out scenes: another seed, so the objective never scores the training pairs.
        evals = SceneDataset(d.n_eval, d.size_px, seed=d.seed + 1, num_classes=d.num_classes)
        return train, evals
    from torch.utils.data import Subset

    from data.folder import FolderDataset, validate_folder

    n = validate_folder(Path(d.root), d.num_classes)
    train = FolderDataset(Path(d.root), d.size_px, d.num_classes, mode="resize", flip=d.flip)
    evals_full = FolderDataset(Path(d.root), d.size_px, d.num_classes, mode="resize", flip=False)
    return train, Subset(evals_full, range(min(d.n_eval, n)))
