"""The SPADE family (GauGAN, Park et al. 2019): label map -> image, with an optional VAE style
encoder, a multi-scale PatchGAN D, and the searched perceptual terms (CX, DISTS, FFL).

Losses only *compute and report*: each phase returns its total and the unweighted terms.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from losses.adversarial import gan_loss
from losses.feature_matching import feature_matching_loss
from losses.kl import kld_loss
from models.discriminator import MultiscaleDiscriminator
from models.sesame import MultiscaleSesameDiscriminator
from models.spade import ConvEncoder, SPADEGenerator, reparameterize
from ray_jobs.config import Config
from ray_jobs.diffaugment import diff_augment
from ray_jobs.families.base import Batch, Net, Phase, label_datasets
from ray_jobs.families.extras import build_extras, build_vgg, extra_terms, weighted_sum



class SpadeG(nn.Module):
    """The generator side that G's optimizer steps: SPADE generator plus, with use_vae, its
    encoder (SPADE trains E with G's optimizer)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m, s, d = cfg.model, cfg.spade, cfg.data
        self.generator = SPADEGenerator(
            semantic_nc=d.num_classes,
            ngf=m.ngf,
            crop_size=d.size_px,
            num_upsampling_layers=s.num_upsampling_layers,
            use_vae=s.use_vae,
            z_dim=s.z_dim,
            param_free_norm=s.param_free_norm,
        )
        self.encoder = ConvEncoder(ngf=m.ngf, crop_size=d.size_px, z_dim=s.z_dim) if s.use_vae else None

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


class SpadeFamily:
    """Phases: D on real and detached fake, then G against the frozen D."""

    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    phases: ClassVar[tuple[Phase, ...]] = (Phase("D", "D"), Phase("G", "G"))
    paired_metrics: ClassVar[tuple[str, ...]] = ()
    # `--smoke`: the smallest SPADE that still has every part (one D scale of two layers).
    smoke_overrides: ClassVar[dict[str, Any]] = {"model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2}

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.extras = build_extras(cfg)
        self.vgg = build_vgg(cfg, cfg.spade.lambda_vgg)

    def build(self, net: str) -> nn.Module:
        if net == "G":
            return SpadeG(self.cfg)
        m = self.cfg.model
        # SESAME's two-stream D takes the same [label, image] input and returns the same
        # per-scale feature lists, so the losses do not change with model.D.
        D = MultiscaleSesameDiscriminator if m.D == "sesame" else MultiscaleDiscriminator
        return D(input_nc=self.cfg.data.num_classes + 3, num_D=m.num_D, ndf=m.ndf, n_layers_D=m.n_layers_D)

    def datasets(self) -> tuple[Dataset, Dataset]:
        return label_datasets(self.cfg)

    def to(self, device: torch.device) -> "SpadeFamily":
        self.extras.to(device)
        if self.vgg is not None:
            self.vgg.to(device)
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
        mode = self.cfg.spade.gan_mode
        with torch.no_grad():
            fake, _, _ = G(batch["label"], batch["image"])
        pred_fake = D(self._d_input(batch["label"], fake.detach()))
        pred_real = D(self._d_input(batch["label"], batch["image"]))
        loss_fake = gan_loss(pred_fake, False, for_discriminator=True, mode=mode)
        loss_real = gan_loss(pred_real, True, for_discriminator=True, mode=mode)
        return loss_fake + loss_real, {"loss/D/fake": loss_fake.item(), "loss/D/real": loss_real.item()}

    def g_loss(self, G: nn.Module, D: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        sp = self.cfg.spade
        label, real = batch["label"], batch["image"]
        fake, mu, logvar = G(label, real)
        # D sees fake and real in one pass, as SPADE's discriminate(), for feature matching; a
        # fake and its real share one augmentation draw.
        pred = D(self._d_input(torch.cat([label, label]), torch.cat([fake, real]), groups=2))
        n = fake.shape[0]
        pred_fake = [[f[:n] for f in scale] for scale in pred]
        pred_real = [[f[n:] for f in scale] for scale in pred]
        terms: dict[str, tuple[float, torch.Tensor]] = {
            "gan": (1.0, gan_loss(pred_fake, True, for_discriminator=False, mode=sp.gan_mode)),
        }
        if sp.lambda_feat > 0:
            terms["feat"] = (sp.lambda_feat, feature_matching_loss(pred_fake, pred_real))
        if self.vgg is not None:
            terms["vgg"] = (sp.lambda_vgg, self.vgg(fake.float(), real.float()))
        terms |= extra_terms(self.extras, self.cfg, fake, real)
        if mu is not None and logvar is not None and sp.lambda_kld > 0:
            terms["kld"] = (sp.lambda_kld, kld_loss(mu, logvar))
        return weighted_sum(terms, "G")

    def eval_inputs(self, batch: Batch) -> Batch:
        return {"label": batch["label"]}

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        """Evaluation samples: from the label alone, with fixed noise when G takes z."""
        fake, _, _ = nets["G"](inputs["label"], None, noise)
        return fake

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_grid

        fake = self.generate(nets, self.eval_inputs(batch), None)
        return "images/label_real_fake", image_grid(batch["label"].argmax(1), batch["image"], fake)

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        if not self.cfg.spade.use_vae:
            return None
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cfg.spade.z_dim, generator=g)

    def hparams(self) -> dict[str, Any]:
        lo, sp = self.cfg.loss, self.cfg.spade
        weights = {k: getattr(sp, k) for k in ("lambda_feat", "lambda_vgg")}
        weights |= {k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}
        return weights | ({"lambda_kld": sp.lambda_kld} if sp.use_vae else {})
