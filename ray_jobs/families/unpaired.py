"""The unpaired translation families: domain A <-> domain B, no pairs.

- `cyclegan` (Zhu et al. 2017) as junyanz/pytorch-CycleGAN-and-pix2pix's `CycleGANModel`: one
  forward of both generators per step, the G phase first (LSGAN against the frozen Ds, cycle and
  identity L1), then the D phase on the *same* fakes, each passed through its domain's history
  pool.
- `ugatit` (Kim et al. 2020) as znxlwm/UGATIT-pytorch's `UGATIT.train`: the D phase first on
  fresh fakes (LSGAN on the patch and CAM logits of a global and a local D per domain), then the
  G phase (adversarial, cycle, identity and CAM terms), then rho clipped into [0, 1]. Two of the
  U-GAT-IT log's tricks are switches, off by default: histogram matching of each generator's input
  photos to the other domain (ugatit.hist_match) and CartoonGAN's blur term for D (ugatit.blur_weight).

In both, G is both generators (one optimizer, as the reference's G_A + G_B) and D every
discriminator (one optimizer).

Evaluation translates A to B with the EMA copy of G; the real set of FID is domain B.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from losses.cyclegan import ImagePool, cyclegan_d_loss, cyclegan_g_losses
from ray_jobs.config import Config
from ray_jobs.families.base import Batch, Net, Phase
from ray_jobs.families.extras import build_extras, extra_terms, weighted_sum


def unpaired_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """Summer/winter scenes, or a folder in CycleGAN's trainA/trainB/testA/testB layout."""
    from data.unpaired import UnpairedFolder, UnpairedScenes

    d = cfg.data
    if d.source == "scenes":
        # Held-out scenes for evaluation: another seed, as for every family.
        return (UnpairedScenes(d.n_train, d.size_px, d.seed, flip=d.flip),
                UnpairedScenes(d.n_eval, d.size_px, d.seed + 1, train=False))
    train = UnpairedFolder(Path(d.root), d.size_px, flip=d.flip)
    evals = UnpairedFolder(Path(d.root), d.size_px, train=False)
    return train, torch.utils.data.Subset(evals, range(min(d.n_eval, len(evals))))


class UnpairedFamily:
    """What the unpaired families share: their data, evaluation inputs (A) and extras."""

    nets: ClassVar[tuple[Net, ...]] = (Net("G", "lr_G", ema=True), Net("D", "lr_D"))
    paired_metrics: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.extras = build_extras(cfg)

    def datasets(self) -> tuple[Dataset, Dataset]:
        return unpaired_datasets(self.cfg)

    def to(self, device: torch.device) -> "UnpairedFamily":
        self.extras.to(device)
        return self

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        pass

    def eval_inputs(self, batch: Batch) -> Batch:
        return {"A": batch["A"]}

    def eval_noise(self, n: int, seed: int) -> torch.Tensor | None:
        return None


class CycleganFamily(UnpairedFamily):
    phases: tuple[Phase, ...] = (Phase("G", "G"), Phase("D", "D"))
    smoke_overrides: ClassVar[dict[str, Any]] = {"model.ngf": 4, "model.ndf": 4, "model.n_layers_D": 2,
                                                 "cyclegan.n_blocks": 1}

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        c = cfg.cyclegan
        # The pools live with the family: not checkpointed, and new (empty) when a PBT exploit
        # brings other loss weights; they refill within pool_size fakes.
        self.pools = {domain: ImagePool(c.pool_size) for domain in ("A", "B")}
        self._fakes: dict[str, torch.Tensor] = {}  # this step's fakes, from the G phase to the D phase

    def build(self, net: str) -> nn.Module:
        from models.cyclegan import DiscriminatorPair, GeneratorPair, PatchGANDiscriminator, ResnetGenerator

        m, c = self.cfg.model, self.cfg.cyclegan
        if net == "G":
            return GeneratorPair(*(ResnetGenerator(ngf=m.ngf, n_blocks=c.n_blocks) for _ in range(2)))
        return DiscriminatorPair(*(PatchGANDiscriminator(ndf=m.ndf, n_layers=m.n_layers_D) for _ in range(2)))

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        G, D, c = nets["G"], nets["D"], self.cfg.cyclegan
        real_A, real_B = batch["A"], batch["B"]
        if phase == "G":
            fake_B, fake_A = G(real_A, "B"), G(real_B, "A")
            rec_A, rec_B = G(fake_B, "A"), G(fake_A, "B")
            identity = c.lambda_identity > 0
            idt_A = G(real_B, "B") if identity else None
            idt_B = G(real_A, "A") if identity else None
            # Unweighted terms (every lambda 1) for the log; the reference's weights below.
            terms = cyclegan_g_losses(D(fake_B, "B"), D(fake_A, "A"), real_A, real_B, rec_A, rec_B, idt_A, idt_B,
                                      lambda_A=1.0, lambda_B=1.0, lambda_identity=1.0 if identity else 0.0)
            weights = {"G_A": 1.0, "G_B": 1.0, "cycle_A": c.lambda_A, "cycle_B": c.lambda_B,
                       "idt_A": c.lambda_B * c.lambda_identity, "idt_B": c.lambda_A * c.lambda_identity}
            self._fakes = {"A": fake_A.detach(), "B": fake_B.detach()}
            weighted = {k: (weights[k], t) for k, t in terms.items()}
            # The shared extras judge the A -> B translation against real B photos.
            return weighted_sum(weighted | extra_terms(self.extras, self.cfg, fake_B, real_B), phase)
        # D of each domain on its real images and on the pooled fakes of the G phase.
        terms = {}
        for domain, real in (("A", real_A), ("B", real_B)):
            fake = self.pools[domain].query(self._fakes[domain])
            terms[f"D_{domain}"] = (1.0, cyclegan_d_loss(D(real, domain), D(fake, domain)))
        return weighted_sum(terms, phase)

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        return nets["G"](inputs["A"], "B")

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        from ray_jobs.logging_tb import image_rows

        with torch.no_grad():
            G = nets["G"]
            fake_B = G(batch["A"], "B")
            return "images/A_AtoB_AtoBtoA_B", image_rows(batch["A"], fake_B, G(fake_B, "A"), batch["B"])

    def hparams(self) -> dict[str, Any]:
        lo, c = self.cfg.loss, self.cfg.cyclegan
        return {"lambda_A": c.lambda_A, "lambda_B": c.lambda_B, "lambda_identity": c.lambda_identity,
                **{k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}}


class UgatitFamily(UnpairedFamily):
    phases: tuple[Phase, ...] = (Phase("D", "D"), Phase("G", "G"))
    # `--smoke`: the light G (any size), and Ds shallow enough for 32 px.
    smoke_overrides: ClassVar[dict[str, Any]] = {"model.ngf": 4, "model.ndf": 4, "ugatit.light": True,
                                                 "ugatit.n_blocks": 1, "ugatit.n_layers_global": 5,
                                                 "ugatit.n_layers_local": 4}

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        # This step's generator inputs (batch A, batch B, A fed to G_A->B, B fed to G_B->A): the D and
        # G phases of one step share one histogram-matching draw. Keyed by the batch's tensors.
        self._fed: tuple[torch.Tensor, ...] = ()
        # The draws have a generator of their own: the global one picks the training B photos and
        # flips, which must not move when the switch is on. Restarts with the family (resume, exploit).
        self._coin = torch.Generator().manual_seed(cfg.train.seed)

    def _generator_inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The photos translated this step: A and B as they came, or (ugatit.hist_match) matched to
        the other domain's batch with probability hist_match_prob, one draw per step."""
        from data.histmatch import match_domains

        real_A, real_B = batch["A"], batch["B"]
        if not (self._fed and self._fed[0] is real_A and self._fed[1] is real_B):
            u = self.cfg.ugatit
            self._fed = (real_A, real_B,
                         *match_domains(real_A, real_B, u.hist_match, u.hist_match_prob, u.hist_match_ratio,
                                        self._coin))
        return self._fed[2], self._fed[3]

    def build(self, net: str) -> nn.Module:
        from models.cyclegan import DiscriminatorPair, GeneratorPair
        from models.ugatit import GlobalLocalDiscriminator, UGATITGenerator

        m, u = self.cfg.model, self.cfg.ugatit
        if net == "G":
            return GeneratorPair(*(UGATITGenerator(ngf=m.ngf, n_blocks=u.n_blocks, img_size=self.cfg.data.size_px,
                                                   light=u.light, scse=u.scse, upsample=u.upsample) for _ in range(2)))
        return DiscriminatorPair(*(GlobalLocalDiscriminator(ndf=m.ndf, n_layers_global=u.n_layers_global,
                                                            n_layers_local=u.n_layers_local) for _ in range(2)))

    def loss(self, phase: str, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[torch.Tensor | None, dict[str, float]]:
        from losses.ugatit import blur_images, ugatit_blur_d_loss, ugatit_d_loss, ugatit_g_losses

        G, D, u = nets["G"], nets["D"], self.cfg.ugatit
        real_A, real_B = batch["A"], batch["B"]
        # What each generator translates: its source photos, histogram-matched when that is on. The
        # Ds' reals and the identity passes keep the photos as they came.
        src_A, src_B = self._generator_inputs(batch)
        if phase == "D":
            with torch.no_grad():
                fake_A, fake_B = G(src_B, "A")[0], G(src_A, "B")[0]
            terms = {f"D_{domain}": (u.adv_weight, ugatit_d_loss(D(real, domain), D(fake, domain)))
                     for domain, real, fake in (("A", real_A, fake_A), ("B", real_B, fake_B))}
            if u.blur_weight > 0:  # CartoonGAN: blurred reals of the domain are fakes to its Ds
                terms |= {f"blur_{domain}": (u.blur_weight, ugatit_blur_d_loss(D(blur_images(real, u.blur_sigma),
                                                                                  domain)))
                          for domain, real in (("A", real_A), ("B", real_B))}
            return weighted_sum(terms, phase)
        fake_A2B, cam_A2B, _ = G(src_A, "B")
        fake_B2A, cam_B2A, _ = G(src_B, "A")
        rec_A, rec_B = G(fake_A2B, "A")[0], G(fake_B2A, "B")[0]
        idt_A, cam_A2A, _ = G(real_A, "A")
        idt_B, cam_B2B, _ = G(real_B, "B")
        weights = {"adv": u.adv_weight, "cycle": u.cycle_weight, "identity": u.identity_weight, "cam": u.cam_weight}
        terms = {}
        # Unweighted per domain X: X's Ds on the fakes translated into X, the CAM of the
        # generator into X on the other domain's photos (1) and on X's own (0). The cycle returns
        # to what was translated, the identity to X's photos.
        for domain, parts, fed in (("A", (D(fake_B2A, "A"), cam_B2A, cam_A2A, real_A, rec_A, idt_A), src_A),
                                   ("B", (D(fake_A2B, "B"), cam_A2B, cam_B2B, real_B, rec_B, idt_B), src_B)):
            unweighted = ugatit_g_losses(*parts, adv_weight=1.0, cycle_weight=1.0, identity_weight=1.0, cam_weight=1.0,
                                         cycle_real=fed)
            terms |= {f"{k}_{domain}": (weights[k], t) for k, t in unweighted.items()}
        return weighted_sum(terms | extra_terms(self.extras, self.cfg, fake_A2B, real_B), phase)

    def after_step(self, phase: str, nets: Mapping[str, nn.Module]) -> None:
        from models.ugatit import clip_rho

        if phase == "G":  # the reference's RhoClipper(0, 1) on both generators
            clip_rho(getattr(nets["G"], "module", nets["G"]))

    @torch.no_grad()
    def generate(self, nets: Mapping[str, nn.Module], inputs: Batch, noise: torch.Tensor | None) -> torch.Tensor:
        return nets["G"](inputs["A"], "B")[0]

    def image_grid(self, nets: Mapping[str, nn.Module], batch: Batch) -> tuple[str, np.ndarray]:
        import torch.nn.functional as F

        from ray_jobs.logging_tb import image_rows

        with torch.no_grad():
            fake_B, _, heatmap = nets["G"](batch["A"], "B")
            rec_A = nets["G"](fake_B, "A")[0]
        # The CAM heatmap, normalised per image and blown up to the image, as the reference's cam().
        h = heatmap - heatmap.amin((1, 2, 3), keepdim=True)
        h = h / h.amax((1, 2, 3), keepdim=True).clamp_min(1e-8)
        h = F.interpolate(h, size=batch["A"].shape[-2:], mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        return "images/A_AtoB_AtoBtoA_cam", image_rows(batch["A"], fake_B, rec_A, h * 2 - 1)

    def hparams(self) -> dict[str, Any]:
        lo, u = self.cfg.loss, self.cfg.ugatit
        return {"adv_weight": u.adv_weight, "cycle_weight": u.cycle_weight, "identity_weight": u.identity_weight,
                "cam_weight": u.cam_weight, "blur_weight": u.blur_weight, "blur_sigma": u.blur_sigma,
                "hist_match": u.hist_match, "hist_match_prob": u.hist_match_prob,
                "hist_match_ratio": u.hist_match_ratio,
                **{k: getattr(lo, k) for k in ("lambda_cx", "lambda_dists", "lambda_ffl")}}
