"""The super-resolution families: a low-resolution image -> the high-resolution one.

- `esrgan` (Wang et al. 2018): RRDBNet G and a VGG-style D, trained as BasicSR's
  `ESRGANModel`: each step G on L1 + VGG19 conv5_4 perceptual + relativistic average GAN, then D
  on the relativistic terms. `esrgan.pretrain_steps` first runs the PSNR-oriented stage (L1
  only, weight 1, D idle), which BasicSR runs as a separate model whose weights the GAN stage
  loads.
- `rdn` (Zhang et al. 2018) and `srresnet` (BasicSR's MSRResNet): G alone on L1. A family with
  no D is a family like the others: one net, one phase.

Shared (`sr` section): the degradation that makes the input (data/sr.py), `lambda_l1`, the SR
log's edge loss and BlurPool after upsampling. CX, DISTS and FFL can be added like for every
family. Nets work in [0, 1] as BasicSR; items and generated images are in [-1, 1] like every
family's. G keeps an EMA copy, BasicSR's `ema_decay` (train.ema_kimg here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from losses.sr import ESRGANPerceptualLoss, edge_loss, relativistic_d_losses, relativistic_g_loss
from ray_jobs import distributed as ddp
from ray_jobs.config import Config
from ray_jobs.families.base import Batch, Net, Phase
from ray_jobs.families.extras import build_extras, extra_terms, weighted_sum


def _to01(x: torch.Tensor) -> torch.Tensor:
    return (x + 1) / 2


class SRFamily:
    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True),)
    phases: tuple[Phase, ...] = (Phase("G", "G"),)
    paired_metrics: ClassVar[tuple[str, ...]] = ("psnr", "ssim")
    smoke_overrides: ClassVar[dict[str, Any]]

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.extras = build_extras(cfg)

    def build(self, net: str) -> nn.Module:
        raise NotImplementedError

    def datasets(self) -> tuple[Dataset, Dataset]:
        from data.sr import Degradation, SRDataset, noise_patches

        d, sr = self.cfg.data, self.cfg.sr
        degradation = Degradation(
            scale=sr.scale, kind=sr.degradation, blur_sigma_max=sr.blur_sigma_max, noise_sigma_max=sr.noise_sigma_max,
            jpeg_quality_min=sr.jpeg_quality_min, noise_patches=noise_patches(Path(sr.noise_root)) if sr.noise_root else (),
        )
        if d.source == "scenes":
            # Held-out scenes for evaluation: another seed, as for the label families.
            return (SRDataset(degradation, d.size_px, n=d.n_train, seed=d.seed, flip=d.flip),
                    SRDataset(degradation, d.size_px, n=d.n_eval, seed=d.seed + 1, train=False))
        train = SRDataset(degradation, d.size_px, root=Path(d.root), flip=d.flip)
        evals = SRDataset(degradation, d.size_px, root=Path(d.root), train=False)
        return train, torch.utils.data.Subset(evals, range(min(d.n_eval, len(evals))))

    def to(self, device: torch.device) -> "SRFamily":
        self.extras.to(device)
        return self

    def _pixel_terms(self, sr01: torch.Tensor, hr01: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        s = self.cfg.sr
        terms = {"l1": (s.lambda_l1, F.l1_loss(sr01, hr01))}
        if s.lambda_edge > 0:
            terms["edge"] = (s.lambda_edge, edge_loss(sr01, hr01))
        return terms | extra_terms(self.extras, self.cfg, sr01 * 2 - 1, hr01 * 2 - 1)

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        sr01 = nets["G"](_to01(batch["lr"]))
        return weighted_sum(self._pixel_terms(sr01, _to01(batch["image"])), phase)

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def eval_inputs(self, batch: Batch) -> Batch:
        return {"lr": batch["lr"]}

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        return (nets["G"](_to01(inputs["lr"])) * 2 - 1).clamp(-1, 1)

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_rows

        lr = F.interpolate(batch["lr"], size=batch["image"].shape[-2:], mode="nearest")  # the input, blown up
        return "images/lr_sr_hr", image_rows(lr, self.generate(nets, self.eval_inputs(batch), None), batch["image"])

    def hparams(self) -> dict[str, Any]:
        lo, s = self.cfg.loss, self.cfg.sr
        return {"lambda_l1": s.lambda_l1, "lambda_edge": s.lambda_edge,
                **{k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}}


class RdnFamily(SRFamily):
    smoke_overrides: ClassVar[dict[str, Any]] = {"rdn.num_feat": 4, "rdn.num_block": 1, "rdn.num_conv": 2,
                                                 "rdn.num_grow_ch": 4}

    def build(self, net: str) -> nn.Module:
        from models.rdn import RDN

        r, s = self.cfg.rdn, self.cfg.sr
        return RDN(scale=s.scale, num_feat=r.num_feat, num_block=r.num_block, num_conv=r.num_conv,
                   num_grow_ch=r.num_grow_ch, blurpool=s.blurpool)


class SrresnetFamily(SRFamily):
    smoke_overrides: ClassVar[dict[str, Any]] = {"srresnet.num_feat": 4, "srresnet.num_block": 1}

    def build(self, net: str) -> nn.Module:
        from models.srresnet import MSRResNet

        r, s = self.cfg.srresnet, self.cfg.sr
        return MSRResNet(num_feat=r.num_feat, num_block=r.num_block, scale=s.scale, blurpool=s.blurpool)


class EsrganFamily(SRFamily):
    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    # The D's crop is the whole 64 px image: the smallest its four stages of halving allow.
    smoke_overrides: ClassVar[dict[str, Any]] = {"data.size_px": 64, "esrgan.num_feat": 4, "esrgan.num_block": 1,
                                                 "esrgan.num_grow_ch": 4, "esrgan.num_feat_d": 4}

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        e = cfg.esrgan
        # BasicSR's order: G, then D, every step; the PSNR-oriented stage before them.
        self.phases = (Phase("pretrain", "G", stop=e.pretrain_steps),
                       Phase("G", "G", start=e.pretrain_steps), Phase("D", "D", start=e.pretrain_steps))
        lo = cfg.loss
        self.perceptual = (ESRGANPerceptualLoss(random_weights=lo.random_backbones, weights_dir=lo.weights_dir or None)
                           if e.lambda_perc > 0 else None)

    def build(self, net: str) -> nn.Module:
        from models.sr import RRDBNet, VGGStyleDiscriminator

        e, s = self.cfg.esrgan, self.cfg.sr
        if net == "G":
            return RRDBNet(scale=s.scale, num_feat=e.num_feat, num_block=e.num_block, num_grow_ch=e.num_grow_ch,
                           blurpool=s.blurpool)
        return VGGStyleDiscriminator(num_feat=e.num_feat_d, input_size=self.cfg.data.size_px)

    def to(self, device: torch.device) -> "EsrganFamily":
        super().to(device)
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        G, D, e = nets["G"], nets["D"], self.cfg.esrgan
        lr01, hr01 = _to01(batch["lr"]), _to01(batch["image"])
        if phase == "pretrain":  # BasicSR's RRDBNet_PSNR: L1 alone, weight 1
            return weighted_sum({"l1": (1.0, F.l1_loss(G(lr01), hr01))}, phase)
        if phase == "G":
            sr01 = G(lr01)
            terms = self._pixel_terms(sr01, hr01)
            if self.perceptual is not None:
                terms["perc"] = (e.lambda_perc, self.perceptual(sr01.float(), hr01.float()))
            with torch.no_grad():
                real_logits = D(hr01)
            terms["gan"] = (e.lambda_gan, relativistic_g_loss(real_logits, D(sr01)))
            return weighted_sum(terms, phase)
        with torch.no_grad():
            sr01 = G(lr01)
        real, fake = relativistic_d_losses(D(hr01), D(sr01))
        total, logs = weighted_sum({"real": (1.0, real), "fake": (1.0, fake)}, phase)
        if e.d_stepper > 0:
            # The SR log's stepper: D rests while it is winning. The mean over ranks decides, so
            # every rank skips or steps together.
            value = ddp.mean_over_ranks(total.item())
            if value < e.d_stepper:
                return None, logs | {f"loss/{phase}/skipped": 1.0}
            logs[f"loss/{phase}/skipped"] = 0.0
        return total, logs

    def hparams(self) -> dict[str, Any]:
        e = self.cfg.esrgan
        return super().hparams() | {"lambda_perc": e.lambda_perc, "lambda_gan": e.lambda_gan, "d_stepper": e.d_stepper}
