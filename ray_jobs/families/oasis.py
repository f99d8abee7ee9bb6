"""The OASIS family (Schonfeld, Sushko et al., ICLR 2021): label map + 3D noise -> image, judged
by a U-Net D that classifies every pixel into its label's class or "fake", with LabelMix.

Phases as in boschresearch/OASIS `models/models.py`: D on the detached fake, the real and their
LabelMix; then G against the frozen D. There is no feature matching and no VGG term by default;
CX, DISTS and FFL can be added like for every family.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from losses.oasis import labelmix, labelmix_loss, n1_loss
from models.oasis import OASISDiscriminator, OASISGenerator
from ray_jobs.config import Config
from ray_jobs.families.base import Batch, Net, Phase, label_datasets
from ray_jobs.families.extras import build_extras, build_vgg, extra_terms, weighted_sum


class OasisFamily:
    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    paired_metrics: ClassVar[tuple[str, ...]] = ()
    phases: ClassVar[tuple[Phase, ...]] = (Phase("D", "D"), Phase("G", "G"))
    # `--smoke`: two blocks at 32 px, the narrowest widths.
    smoke_overrides: ClassVar[dict[str, Any]] = {"model.ngf": 4, "model.ndf": 4, "oasis.num_res_blocks": 2,
                                                 "oasis.z_dim": 8}

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.extras = build_extras(cfg)
        self.vgg = build_vgg(cfg, cfg.oasis.lambda_vgg)

    def build(self, net: str) -> nn.Module:
        o, d, m = self.cfg.oasis, self.cfg.data, self.cfg.model
        if net == "G":
            return OASISGenerator(d.num_classes, channels_G=m.ngf, crop_size=d.size_px, num_res_blocks=o.num_res_blocks,
                                  z_dim=o.z_dim, spade_ks=o.spade_ks, param_free_norm=o.param_free_norm)
        return OASISDiscriminator(d.num_classes, channels_D=m.ndf, crop_size=d.size_px, num_res_blocks=o.num_res_blocks)

    def datasets(self) -> tuple[Dataset, Dataset]:
        return label_datasets(self.cfg)

    def to(self, device: torch.device) -> "OasisFamily":
        self.extras.to(device)
        if self.vgg is not None:
            self.vgg.to(device)
        return self

    def _n1(self, logits: torch.Tensor, label: torch.Tensor, real: bool) -> torch.Tensor:
        o = self.cfg.oasis
        return n1_loss(logits, label, real, o.class_balancing, o.dontcare_label)

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        G, D = nets["G"], nets["D"]
        label, real = batch["label"], batch["image"]
        o = self.cfg.oasis
        if phase == "D":
            with torch.no_grad():
                fake = G(label)
            out_fake, out_real = D(fake), D(real)
            terms: dict[str, tuple[float, torch.Tensor]] = {
                "fake": (1.0, self._n1(out_fake, label, False)),
                "real": (1.0, self._n1(out_real, label, True)),
            }
            if o.lambda_labelmix > 0:
                mixed, mask = labelmix(label, real, fake)
                terms["labelmix"] = (o.lambda_labelmix, labelmix_loss(mask, D(mixed), out_fake, out_real))
            return weighted_sum(terms, "D")
        fake = G(label)
        terms = {"gan": (1.0, self._n1(D(fake), label, True))}
        if self.vgg is not None:
            terms["vgg"] = (o.lambda_vgg, self.vgg(fake.float(), real.float()))
        terms |= extra_terms(self.extras, self.cfg, fake, real)
        return weighted_sum(terms, "G")

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def eval_inputs(self, batch: Batch) -> Batch:
        return {"label": batch["label"]}

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cfg.oasis.z_dim, generator=g)

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        """From the label and 3D noise (fixed noise at evaluation; drawn when None)."""
        return nets["G"](inputs["label"], noise)

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_grid

        fake = self.generate(nets, self.eval_inputs(batch), None)
        return "images/label_real_fake", image_grid(batch["label"].argmax(1), batch["image"], fake)

    def hparams(self) -> dict[str, Any]:
        lo, o = self.cfg.loss, self.cfg.oasis
        return {"lambda_labelmix": o.lambda_labelmix, "lambda_vgg": o.lambda_vgg,
                **{k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}}
