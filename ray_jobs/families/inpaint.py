"""The inpainting family `pdgan` (PD-GAN, Liu et al. 2021): an image with holes -> the image, as
KumapowerLIU/PD-GAN's `PDGANModel`.

Three nets: the coarse net C (models/pconv.py), G (models/pdgan.py) and D. The reference trains C
as a model of its own (`--model PConv`) and PD-GAN over it, frozen; here C's stage comes first
(`pdgan.prior_steps`, the PConv losses), from `pdgan.prior_weights` when given (with 0 steps:
a trained coarse net used as it is). Then each
step the D phase (hinge on two outputs of two noises and on the real) and the G phase: hinge,
D feature matching, VGG16 perceptual, hole TV and the diversity term between the two outputs.
The reference's D and G phases share one forward of G; here each phase draws its own noises.

G works on C's whole coarse image (detached) and the hole mask; the output is composited with
the known pixels, which evaluation scores. Evaluation uses G's EMA copy, as every family here
(the reference keeps none). C's norms (instance, group) act alike in training and evaluation,
so C needs no EMA copy.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from gantune.errors import GantuneError
from losses.adversarial import gan_loss
from losses.feature_matching import feature_matching_loss
from losses.pdgan import PCONV_WEIGHTS, PConvLoss, PDGANPerceptualLoss, hole_tv_loss
from ray_jobs.config import Config
from ray_jobs.families.base import Batch, Net, Phase
from ray_jobs.families.extras import build_extras, extra_terms, weighted_sum


def load_prior(path: str, sha256: str) -> dict[str, torch.Tensor]:
    """The coarse net's state dict from `pdgan.prior_weights`, checked against `pdgan.prior_sha256`."""
    data = Path(path).read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise GantuneError(f"pdgan.prior_weights={path}: SHA-256 {hashlib.sha256(data).hexdigest()} is not "
                           f"pdgan.prior_sha256={sha256} (a different or damaged file)")
    import io

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on a file that is not a state dict
        raise GantuneError(f"pdgan.prior_weights={path}: not a torch state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GantuneError(f"pdgan.prior_weights={path}: expected a state dict of the coarse net (name -> tensor)")
    return state


class PdganFamily:
    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"), Net("C", "pdgan.lr_prior"))
    paired_metrics: ClassVar[tuple[str, ...]] = ("l1", "psnr", "tv")
    # `--smoke`: G's six 2x stages need 128 px; every width at its smallest.
    smoke_overrides: ClassVar[dict[str, Any]] = {
        "data.size_px": 128, "model.ngf": 4, "model.ndf": 4, "model.num_D": 1, "model.n_layers_D": 2,
        "pdgan.z_dim": 8, "pdgan.nhidden": 8, "pdgan.prior_ngf": 4, "pdgan.prior_res_num": 1,
        "pdgan.prior_steps": 1,
    }

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        p, lo = cfg.pdgan, cfg.loss
        stage = p.prior_steps
        self.phases = (Phase("prior", "C", stop=stage), Phase("D", "D", start=stage), Phase("G", "G", start=stage))
        backbone = {"random_weights": lo.random_backbones, "weights_dir": lo.weights_dir or None}
        # The VGG16 of the perceptual and diversity terms; the coarse stage's own only while it runs.
        self.perceptual = PDGANPerceptualLoss(**backbone)
        self.pconv_loss = PConvLoss(**backbone) if stage > 0 else None
        self.msssim = None
        if p.lambda_msssim_l1 > 0:
            from losses.msssim import MSSSIML1Loss, max_scales, truncated_weights

            # Wang et al.'s five scales from 161 px; fewer, renormalised, below (losses/msssim.py).
            scales = min(5, max_scales(cfg.data.size_px, cfg.data.size_px))
            self.msssim = MSSSIML1Loss(weights=truncated_weights(scales))
        self.extras = build_extras(cfg)

    def build(self, net: str) -> nn.Module:
        from models.pconv import PConvCoarseNet
        from models.pdgan import PDGANDiscriminator, PDGANGenerator

        m, p = self.cfg.model, self.cfg.pdgan
        if net == "G":
            return PDGANGenerator(ngf=m.ngf, z_dim=p.z_dim, crop_size=self.cfg.data.size_px, norm=p.norm,
                                  groups=p.groups, attention=p.attention, nhidden=p.nhidden)
        if net == "D":
            return PDGANDiscriminator(ndf=m.ndf, n_layers_D=m.n_layers_D, num_D=m.num_D)
        coarse = PConvCoarseNet(ngf=p.prior_ngf, res_num=p.prior_res_num, norm=p.prior_norm, groups=p.groups)
        if p.prior_weights:
            try:
                coarse.load_state_dict(load_prior(p.prior_weights, p.prior_sha256))
            except RuntimeError as e:  # missing, unexpected or mis-shaped keys
                first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
                raise GantuneError(f"pdgan.prior_weights={p.prior_weights}: does not fit the coarse net of "
                                   f"pdgan.prior_ngf={p.prior_ngf}, prior_res_num={p.prior_res_num} "
                                   f"({first})") from None
        return coarse

    def datasets(self) -> tuple[Dataset, Dataset]:
        from data.inpaint import InpaintDataset

        d, p = self.cfg.data, self.cfg.pdgan
        masks = {"masks": p.masks, "mask_root": Path(p.mask_root) if p.masks == "files" else None}
        if d.source == "scenes":
            # Held-out scenes for evaluation: another seed, as for every family.
            return (InpaintDataset(d.size_px, n=d.n_train, seed=d.seed, flip=d.flip, **masks),
                    InpaintDataset(d.size_px, n=d.n_eval, seed=d.seed + 1, train=False, **masks))
        train = InpaintDataset(d.size_px, root=Path(d.root), flip=d.flip, **masks)
        evals = InpaintDataset(d.size_px, root=Path(d.root), seed=d.seed + 1, train=False, **masks)
        return train, torch.utils.data.Subset(evals, range(min(d.n_eval, len(evals))))

    def to(self, device: torch.device) -> "PdganFamily":
        for loss in (self.perceptual, self.pconv_loss, self.msssim):
            if loss is not None:
                loss.to(device)
        self.extras.to(device)
        return self

    @staticmethod
    def _masked(batch: Batch) -> torch.Tensor:
        return batch["image"] * (1 - batch["mask"])

    def _prior(self, C: nn.Module, masked: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the reference detaches the frozen coarse net's output
            return C(masked, hole)

    def _outputs(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """G's whole images for two noises z_A, z_B (one pass, as the reference)."""
        hole = batch["mask"]
        prior = self._prior(nets["C"], self._masked(batch), hole)
        n = hole.shape[0]
        z = torch.randn(2 * n, self.cfg.pdgan.z_dim, dtype=prior.dtype, device=prior.device)
        out = nets["G"](prior.repeat(2, 1, 1, 1), hole.repeat(2, 1, 1, 1), z)
        return out[:n], out[n:]

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        real, hole = batch["image"], batch["mask"]
        if phase == "prior":
            assert self.pconv_loss is not None
            out = nets["C"](self._masked(batch), hole)
            terms = self.pconv_loss(out.float(), real.float(), hole.float())
            return weighted_sum({k: (PCONV_WEIGHTS[k], t) for k, t in terms.items()}, phase)
        D, p = nets["D"], self.cfg.pdgan
        if phase == "D":
            with torch.no_grad():
                fake_a, fake_b = self._outputs(nets, batch)
            n = real.shape[0]
            pred = D(torch.cat((fake_a, fake_b, real)), hole.repeat(3, 1, 1, 1))
            fakes = [[f[: 2 * n] for f in scale] for scale in pred]
            reals = [[f[2 * n :] for f in scale] for scale in pred]
            # The reference scores the real once per output: its real term counts twice.
            terms = {"fake": (1.0, gan_loss(fakes, False, for_discriminator=True)),
                     "real": (2.0, gan_loss(reals, True, for_discriminator=True))}
            return weighted_sum(terms, phase)
        fake_a, fake_b = self._outputs(nets, batch)
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        for name, fake in (("a", fake_a), ("b", fake_b)):
            # D on [fake, real] in one pass, as the reference's discriminate(), for feature matching.
            pred = D(torch.cat((fake, real)), hole.repeat(2, 1, 1, 1))
            n = real.shape[0]
            pred_fake = [[f[:n] for f in scale] for scale in pred]
            pred_real = [[f[n:] for f in scale] for scale in pred]
            composite = fake * hole + real * (1 - hole)
            terms[f"gan_{name}"] = (p.lambda_gan, gan_loss(pred_fake, True, for_discriminator=False))
            if p.lambda_feat > 0:
                terms[f"feat_{name}"] = (p.lambda_feat, feature_matching_loss(pred_fake, pred_real))
            terms[f"perc_{name}"] = (p.lambda_perc, self.perceptual(fake.float(), real.float()))
            terms[f"tv_{name}"] = (p.lambda_tv, hole_tv_loss(composite, hole))
            if self.msssim is not None:
                terms[f"msssim_l1_{name}"] = (p.lambda_msssim_l1, self.msssim(fake.float(), real.float()))
        if p.lambda_div > 0:
            terms["diversity"] = (p.lambda_div, self.perceptual.diversity(fake_a.float(), fake_b.float(), hole.float()))
        return weighted_sum(terms | extra_terms(self.extras, self.cfg, fake_a, real), phase)

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def eval_inputs(self, batch: Batch) -> Batch:
        # The known pixels only: evaluation never sees the hole's ground truth.
        return {"masked": self._masked(batch), "mask": batch["mask"]}

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, self.cfg.pdgan.z_dim, generator=g)

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        """The composite: G's output in the hole, the known pixels elsewhere."""
        masked, hole = inputs["masked"], inputs["mask"]
        prior = self._prior(nets["C"], masked, hole)
        z = None if noise is None else noise.to(prior.dtype)
        return nets["G"](prior, hole, z) * hole + masked

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_rows

        inputs = self.eval_inputs(batch)
        shown = inputs["masked"] + inputs["mask"]  # holes white
        prior = self._prior(nets["C"], inputs["masked"], inputs["mask"])
        return "images/masked_prior_output_real", image_rows(shown, prior, self.generate(nets, inputs, None),
                                                             batch["image"])

    def hparams(self) -> dict[str, Any]:
        lo, p = self.cfg.loss, self.cfg.pdgan
        return {**{k: getattr(p, k) for k in ("lambda_gan", "lambda_feat", "lambda_perc", "lambda_tv", "lambda_div",
                                             "lambda_msssim_l1")},
                **{k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}}
