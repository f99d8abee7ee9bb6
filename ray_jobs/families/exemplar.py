"""The exemplar families: CoCosNet v1 (`cocosnet`), CoCosNet v2 (`cocosnet2`) and UNITE
(`unite`). Label map + exemplar photo -> image: G is the correspondence net and the generator in
one module (one optimizer, as the official netCorr + netG), D SPADE's multi-scale PatchGAN (or
SESAME's) on [label, image].

Phases in the official `pix2pix_trainer.py` order: G's step first, then D's on a fake of the same
batch, detached (drawn again from the stepped G: the official D sees the fake from before G's
step, which would need the G phase to hand its output over). G's loss is the official `compute_generator_loss` term for term, each weighted
by its key in the family's section (losses/exemplar.py); D's is hinge on real and fake, both
weighted by `lambda_gan` like G's adversarial term. The three differ in their net, their warp
terms and the perceptual layer only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from losses.adversarial import gan_loss
from losses.exemplar import (
    ExemplarVGGLoss,
    domain_alignment_loss,
    warp_cycle_loss,
    warp_mask_l1_loss,
    warp_mask_nll_loss,
    warp_self_loss,
)
from losses.feature_matching import feature_matching_loss
from models.discriminator import MultiscaleDiscriminator
from models.sesame import MultiscaleSesameDiscriminator
from ray_jobs.config import Config
from ray_jobs.families.base import Batch, Net, Phase, label_datasets
from ray_jobs.families.exemplar_data import exemplar_datasets
from ray_jobs.families.extras import build_extras, extra_terms, weighted_sum

# The smallest nets with every part, at the 64 px these families need (a 2x2 latent grid).
_SMOKE = {"data.size_px": 64, "model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2}


class ExemplarFamily:
    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    paired_metrics: ClassVar[tuple[str, ...]] = ()
    phases: ClassVar[tuple[Phase, ...]] = (Phase("G", "G"), Phase("D", "D"))
    smoke_overrides: ClassVar[dict[str, Any]] = _SMOKE
    section: ClassVar[str]  # the family's config section: its loss weights
    perceptual_layer: ClassVar[str] = "relu5_2"  # the official --which_perceptual

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.w = getattr(cfg, self.section)
        self.extras = build_extras(cfg)
        lo = cfg.loss
        self.vgg = ExemplarVGGLoss(self.perceptual_layer, random_weights=lo.random_backbones,
                                   weights_dir=lo.weights_dir or None)

    def build_G(self) -> nn.Module:
        raise NotImplementedError

    def build(self, net: str) -> nn.Module:
        if net == "G":
            return self.build_G()
        m = self.cfg.model
        D = MultiscaleSesameDiscriminator if m.D == "sesame" else MultiscaleDiscriminator
        return D(input_nc=self.cfg.data.num_classes + 3, num_D=m.num_D, ndf=m.ndf, n_layers_D=m.n_layers_D)

    def datasets(self) -> tuple[Dataset, Dataset]:
        return exemplar_datasets(self.cfg, *label_datasets(self.cfg))

    def to(self, device: torch.device) -> "ExemplarFamily":
        self.extras.to(device)
        self.vgg.to(device)
        return self

    def _G(self, G: nn.Module, batch: Batch, real: bool) -> dict[str, Any]:
        return G(batch["label"], batch["exemplar"], batch["exemplar_label"], batch["image"] if real else None)

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        G, D = nets["G"], nets["D"]
        label, real = batch["label"], batch["image"]
        w = self.w
        if phase == "D":
            with torch.no_grad():
                fake = self._G(G, batch, real=False)["fake"]
            pred = D(torch.cat([torch.cat([label, fake.detach()], 1), torch.cat([label, real], 1)]))
            n = fake.shape[0]
            return weighted_sum({
                "fake": (w.lambda_gan, gan_loss([[f[:n] for f in s] for s in pred], False, for_discriminator=True)),
                "real": (w.lambda_gan, gan_loss([[f[n:] for f in s] for s in pred], True, for_discriminator=True)),
            }, "D")
        out = self._G(G, batch, real=True)
        fake = out["fake"]
        # D sees fake and real in one pass (feature matching compares the two halves).
        pred = D(torch.cat([torch.cat([label, fake], 1), torch.cat([label, real], 1)]))
        n = fake.shape[0]
        pred_fake = [[f[:n] for f in s] for s in pred]
        pred_real = [[f[n:] for f in s] for s in pred]
        self_ref = batch["self_ref"]
        vgg = self.vgg(fake.float(), real.float(), batch["exemplar"].float(), self_ref)
        terms: dict[str, tuple[float, torch.Tensor]] = {
            "gan": (w.lambda_gan, gan_loss(pred_fake, True, for_discriminator=False)),
            "feat": (w.lambda_feat, feature_matching_loss(pred_fake, pred_real)),
            "fm": (w.lambda_fm, vgg["fm"]),
            "perc": (w.lambda_perc, vgg["perc"]),
            "ctx": (w.lambda_ctx, vgg["cx"]),
            "domain": (w.lambda_domain, domain_alignment_loss(out["adapted_label"], out["adapted_real"])),
        }
        terms |= self.warp_terms(out, batch)
        terms |= extra_terms(self.extras, self.cfg, fake, real)
        return weighted_sum({k: v for k, v in terms.items() if v[0] > 0}, "G")

    def warp_terms(self, out: dict[str, Any], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        """The family's own terms on the warp."""
        return {}

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def eval_inputs(self, batch: Batch) -> Batch:
        return {k: batch[k] for k in ("label", "exemplar", "exemplar_label")}

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        return self._G(nets["G"], inputs, real=False)["fake"]

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_grid

        out = self._G(nets["G"], batch, real=False)
        return ("images/label_exemplar_warped_fake",
                image_grid(batch["label"].argmax(1), batch["exemplar"], out["warped"], out["fake"]))

    def hparams(self) -> dict[str, Any]:
        lo = self.cfg.loss
        own = {k: v for k, v in vars(self.w).items() if k.startswith("lambda_")}
        return own | {k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}


class CocosnetFamily(ExemplarFamily):
    section = "cocosnet"

    def build_G(self) -> nn.Module:
        from models.cocosnet import CoCosNet

        c, d = self.cfg.cocosnet, self.cfg.data
        return CoCosNet(d.num_classes, ngf=self.cfg.model.ngf, crop_size=d.size_px, use_attention=c.use_attention,
                        warp_cycle=c.lambda_warp_cycle > 0, warp_stride=c.warp_stride)

    def warp_terms(self, out: dict[str, Any], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        c = self.cfg.cocosnet
        terms = {"mask": (c.lambda_mask, warp_mask_nll_loss(out["warp_mask"], batch["label"], batch["exemplar_label"]))}
        if c.lambda_warp_self > 0:  # off at the official ADE20K settings
            terms["warp_self"] = (c.lambda_warp_self, warp_self_loss(out["warps"], batch["image"], batch["self_ref"]))
        if c.lambda_warp_cycle > 0:  # the cycle warp is only built then
            terms["warp_cycle"] = (c.lambda_warp_cycle, warp_cycle_loss(out["warp_cycle"], batch["exemplar"]))
        return terms


class Cocosnet2Family(ExemplarFamily):
    section = "cocosnet2"
    perceptual_layer = "relu4_2"
    smoke_overrides = {**_SMOKE, "cocosnet2.nef": 4, "cocosnet2.iteration_count": 1}

    def build_G(self) -> nn.Module:
        from models.cocosnet2 import CoCosNet2

        c, d = self.cfg.cocosnet2, self.cfg.data
        return CoCosNet2(d.num_classes, ngf=self.cfg.model.ngf, nef=c.nef, crop_size=d.size_px,
                         iteration_count=c.iteration_count)

    def warp_terms(self, out: dict[str, Any], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        c = self.cfg.cocosnet2
        return {"warp_self": (c.lambda_warp_self, warp_self_loss(out["warps"], batch["image"], batch["self_ref"])),
                "warp_cycle": (c.lambda_warp_cycle, warp_cycle_loss(out["warp_cycle"], batch["exemplar"]))}


class UniteFamily(ExemplarFamily):
    section = "unite"
    smoke_overrides = {**_SMOKE, "unite.nef": 4}

    def build_G(self) -> nn.Module:
        from models.unite import Unite

        u, d = self.cfg.unite, self.cfg.data
        return Unite(d.num_classes, ngf=self.cfg.model.ngf, nef=u.nef, crop_size=d.size_px, reach=u.reach or None)

    def warp_terms(self, out: dict[str, Any], batch: Batch) -> dict[str, tuple[float, torch.Tensor]]:
        return {"mask": (self.cfg.unite.lambda_mask, warp_mask_l1_loss(out["warp_mask"], batch["label"]))}
