"""A trainer's evaluation: the fixed evaluation set's inputs and noise, and what scores G_ema's
outputs on them: the objective (Inception statistics of the real set for fid and kid, cached;
the paired real images for psnr, ssim and l1) and the family's paired columns beside it.

Built once, on rank 0, at the first evaluation (trainer.py). `check_eval_set` refuses an
evaluation set too small for its objective: fewer images than data.n_eval (a folder's set is cut
to n_eval, never padded, so a small folder would be scored on fewer), or fewer than two for fid and
kid (a covariance, an unbiased MMD). Evaluation runs it first; it is cheap (a length), so the
trainer can run it when the sets are built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.utils.data import DataLoader, Dataset

from gantune.errors import GantuneError
from metrics import objectives
from ray_jobs.config import Config
from ray_jobs.family_config import LABEL_FAMILIES, UNPAIRED_FAMILIES


def _eval_images(family: str) -> str:
    """What a data.root folder holds the evaluation images of model.family as."""
    if family in UNPAIRED_FAMILIES:
        return "images in testA/"
    return "image/label pairs" if family in LABEL_FAMILIES else "images"


def check_eval_set(cfg: Config, eval_set: Dataset) -> None:
    """Refuse an evaluation set that cannot give the objective its sample count, or an Inception
    objective whose official weights are missing (one line)."""
    d, e = cfg.data, cfg.eval
    n = len(eval_set)  # type: ignore[arg-type]
    if n < d.n_eval:  # only a folder can hold fewer: the scenes are rendered to n_eval
        raise GantuneError(f"{d.root}: {n} evaluation {_eval_images(cfg.model.family)}, fewer than "
                           f"data.n_eval={d.n_eval} (the objective is scored on that many); add images or lower "
                           f"data.n_eval")
    if e.objective in objectives.INCEPTION_OBJECTIVES and n < 2:
        raise GantuneError(f"data.n_eval={n}: eval.objective {e.objective} needs at least 2 evaluation images "
                           f"(a covariance of their features)")
    if e.objective in objectives.INCEPTION_OBJECTIVES and not e.random_weights:
        from backbones import pretrained

        # Loaded at the first evaluation: missing weights fail now, with the file and the fetch command.
        pretrained.locate("inception", e.weights_dir or None)


class Evaluation:
    def __init__(self, cfg: Config, family: Any, eval_set: Dataset, device: torch.device) -> None:
        from metrics.paired import PairedEvaluator

        check_eval_set(cfg, eval_set)  # before any image is read: never a score on too few
        e = cfg.eval
        self.cfg, self.device = cfg, device
        loader = DataLoader(eval_set, batch_size=e.batch_size, shuffle=False)
        inputs, reals = [], []
        for batch in loader:
            inputs.append(family.eval_inputs(batch))
            reals.append(batch["image"])
        self.inputs = {k: torch.cat([b[k] for b in inputs]) for k in inputs[0]}
        real01 = (torch.cat(reals) + 1) / 2
        # The family's own columns (psnr and ssim for SR; l1, psnr and tv for inpainting), on the
        # same outputs as the objective.
        paired = (e.objective,) if e.objective in objectives.PAIRED_OBJECTIVES else ()
        paired += family.paired_metrics
        self.paired = PairedEvaluator(real01, paired, crop_border=e.crop_border, y_only=e.y_channel) if paired else None
        self.objective = self.paired if e.objective in objectives.PAIRED_OBJECTIVES else self._inception(real01, eval_set)

    def _inception(self, real01: torch.Tensor, eval_set: Dataset) -> Any:
        from metrics.fid import FidEvaluator

        e, d = self.cfg.eval, self.cfg.data
        # Everything that decides the evaluation images: the real statistics are cached on it.
        files = ""
        if d.source == "folder":  # names, sizes and mtimes: an edited photo invalidates the cache
            from metrics.image_folder import files_key

            files = files_key(sorted(p for p in Path(d.root).rglob("*") if p.is_file()))
        # The dataset class says which images of the scenes are the reals (label photos, winter B).
        items = type(getattr(eval_set, "dataset", eval_set)).__qualname__
        key = json.dumps({"source": d.source, "files": files, "seed": d.seed, "n_eval": d.n_eval,
                          "size_px": d.size_px, "num_classes": d.num_classes, "items": items}, sort_keys=True)
        return FidEvaluator(
            real01,
            dataset_key=key,
            random_weights=e.random_weights,
            dims=e.dims,
            seed=e.seed,
            weights_dir=e.weights_dir or None,
            batch_size=e.batch_size,
            device=self.device,
            cache_dir=e.cache_dir or None,
            progress=False,
            real_set_name="the evaluation set",
            statistic=e.objective,
        )

    @torch.no_grad()
    def __call__(self, family: Any, nets: Mapping[str, torch.nn.Module]) -> dict[str, float]:
        """The scores of `nets` (the EMA copies where they exist): fixed inputs, fixed noise."""
        e = self.cfg.eval
        n = len(next(iter(self.inputs.values())))
        noise = family.eval_noise(n, e.seed)
        fakes = []
        for i in range(0, n, e.batch_size):
            inputs = {k: v[i : i + e.batch_size].to(self.device) for k, v in self.inputs.items()}
            z = None if noise is None else noise[i : i + e.batch_size].to(self.device)
            fakes.append(((family.generate(nets, inputs, z).float() + 1) / 2).clamp(0, 1).cpu())
        images = torch.cat(fakes)
        metrics = {k: float(v) for k, v in self.objective(images).items()}
        if self.paired is not None and self.paired is not self.objective:
            metrics |= self.paired(images)
        return metrics
