"""The SPADE family (GauGAN, Park et al. 2019): label map -> image, with an optional VAE style
encoder, a multi-scale PatchGAN D, and the searched perceptual terms (CX, DISTS, FFL).

Losses only *compute and report*: each phase returns its total and the unweighted terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn

from losses.adversarial import gan_loss
from losses.feature_matching import feature_matching_loss
from losses.kl import kld_loss
from models.discriminator import MultiscaleDiscriminator
from models.spade import ConvEncoder, SPADEGenerator, reparameterize
from ray_jobs.config import Config
from ray_jobs.diffaugment import diff_augment
from ray_jobs.families.base import Batch, Net, Phase



class SpadeG(nn.Module):
    """The generator side that G's optimizer steps: SPADE generator plus, with use_vae, its
    encoder (SPADE trains E with G's optimizer)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m, d = cfg.model, cfg.data
        self.generator = SPADEGenerator(
            semantic_nc=d.num_classes,
            ngf=m.ngf,
            crop_size=d.size_px,
            num_upsampling_layers=m.num_upsampling_layers,
            use_vae=m.use_vae,
            z_dim=m.z_dim,
            param_free_norm=m.param_free_norm,
        )
        self.encoder = (
            ConvEncoder(ngf=m.ngf, crop_size=d.size_px, z_dim=m.z_dim) if m.use_vae else None
        )

    def forward(
        self, label: torch.Tensor, image: torch.Tensor | None = None, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(fake, mu, logvar). With the encoder and a real image, z comes from its posterior;
        without an image (evaluation), z is the given noise or N(0, I)."""
        mu = logvar = None
        if self.encoder is not None and image is not None:
            mu, logvar = self.encoder(image)
            z = reparameterize(mu, logvar)
        fake = self.generator(label, z if self.encoder is not None else None)
        return fake, mu, logvar


@dataclass
class PerceptualLosses:
    """The image-space losses whose weights the search tunes, built only when weighted."""

    vgg: nn.Module | None
    cx: nn.Module | None
    dists: nn.Module | None
    ffl: nn.Module | None


def build_perceptual(cfg: Config) -> PerceptualLosses:
    from losses.contextual import ContextualLoss
    from losses.dists import DISTS
    from losses.ffl import FocalFrequencyLoss
    from losses.perceptual import VGGLoss

    lo = cfg.loss
    rw, wd = lo.random_backbones, lo.weights_dir or None
    return PerceptualLosses(
        vgg=VGGLoss(random_weights=rw, weights_dir=wd) if lo.lambda_vgg > 0 else None,
        cx=ContextualLoss(h=lo.cx_h, random_weights=rw, weights_dir=wd) if lo.lambda_cx > 0 else None,
        dists=DISTS(random_weights=rw, weights_dir=wd) if lo.lambda_dists > 0 else None,
        ffl=FocalFrequencyLoss(alpha=lo.ffl_alpha) if lo.lambda_ffl > 0 else None,
    )


class SpadeFamily:
    """Phases: D on real and detached fake, then G against the frozen D."""

    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    phases: ClassVar[tuple[Phase, ...]] = (Phase("D", "D"), Phase("G", "G"))
    # `--smoke`: the smallest SPADE that still has every part (one D scale of two layers).
    smoke_overrides: ClassVar[dict[str, Any]] = {"model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2}

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.perceptual = build_perceptual(cfg)

    def build(self, net: str) -> nn.Module:
        if net == "G":
            return SpadeG(self.cfg)
        return MultiscaleDiscriminator(
            input_nc=self.cfg.data.num_classes + 3,
            num_D=self.cfg.model.num_D,
            ndf=self.cfg.model.ndf,
            n_layers_D=self.cfg.model.n_layers_D,
        )

    def to(self, device: torch.device) -> "SpadeFamily":
        for loss in vars(self.perceptual).values():
            if loss is not None:
                loss.to(device)
        return self

    def _d_input(self, label: torch.Tensor, image: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """D's [label, image] input, augmented; `groups` stacked copies share each draw."""
        policy = self.cfg.train.diffaug
        if policy:
            return diff_augment(image, label, policy, groups)
        return torch.cat([label, image], dim=1)

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return (self.d_loss if phase == "D" else self.g_loss)(nets["G"], nets["D"], batch)

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def d_loss(self, G: nn.Module, D: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        mode = self.cfg.loss.gan_mode
        with torch.no_grad():
            fake, _, _ = G(batch["label"], batch["image"])
        pred_fake = D(self._d_input(batch["label"], fake.detach()))
        pred_real = D(self._d_input(batch["label"], batch["image"]))
        loss_fake = gan_loss(pred_fake, False, for_discriminator=True, mode=mode)
        loss_real = gan_loss(pred_real, True, for_discriminator=True, mode=mode)
        return loss_fake + loss_real, {"loss/D/fake": loss_fake.item(), "loss/D/real": loss_real.item()}

    def g_loss(self, G: nn.Module, D: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        lo, p = self.cfg.loss, self.perceptual
        label, real = batch["label"], batch["image"]
        fake, mu, logvar = G(label, real)
        # D sees fake and real in one pass, as SPADE's discriminate(), for feature matching; a
        # fake and its real share one augmentation draw.
        pred = D(self._d_input(torch.cat([label, label]), torch.cat([fake, real]), groups=2))
        n = fake.shape[0]
        pred_fake = [[f[:n] for f in scale] for scale in pred]
        pred_real = [[f[n:] for f in scale] for scale in pred]
        terms: dict[str, tuple[float, torch.Tensor]] = {
            "gan": (1.0, gan_loss(pred_fake, True, for_discriminator=False, mode=lo.gan_mode)),
        }
        if lo.lambda_feat > 0:
            terms["feat"] = (lo.lambda_feat, feature_matching_loss(pred_fake, pred_real))
        # The image-space losses run in float32 whatever G's precision (bf16 engines).
        fake32, real32 = fake.float(), real.float()
        if p.vgg is not None:
            terms["vgg"] = (lo.lambda_vgg, p.vgg(fake32, real32))
        if p.cx is not None:
            terms["cx"] = (lo.lambda_cx, p.cx(fake32, real32))
        if p.dists is not None:
            terms["dists"] = (lo.lambda_dists, p.dists(fake32, real32))
        if p.ffl is not None:
            terms["ffl"] = (lo.lambda_ffl, p.ffl(fake32, real32))
        if mu is not None and logvar is not None and lo.lambda_kld > 0:
            terms["kld"] = (lo.lambda_kld, kld_loss(mu, logvar))
        total = sum(w * t for w, t in terms.values())
        assert isinstance(total, torch.Tensor)
        return total, {f"loss/G/{k}": t.item() for k, (_, t) in terms.items()}

    def eval_inputs(self, batch: Batch) -> Batch:
        return {"label": batch["label"]}

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        """Evaluation samples: from the label alone, with fixed noise when G takes z."""
        fake, _, _ = nets["G"](inputs["label"], None, noise)
        return fake

    def image_grid(self, batch: Batch, fake: torch.Tensor) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_grid

        return "images/label_real_fake", image_grid(batch["label"].argmax(1), batch["image"], fake)

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        if not self.cfg.model.use_vae:
            return None
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cfg.model.z_dim, generator=g)

    def hparams(self) -> dict[str, Any]:
        lo = self.cfg.loss
        return {k: getattr(lo, k) for k in ("lambda_feat", "lambda_vgg", "lambda_kld",
                                            "lambda_cx", "lambda_dists", "lambda_ffl")}
