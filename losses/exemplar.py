"""Generator losses of the exemplar-based families, CoCosNet v1, CoCosNet v2 and UNITE, written
once: microsoft/CoCosNet, microsoft/CoCosNet-v2 and fnzhan/UNITE share them term for term in their
`models/pix2pix_model.py` (`compute_generator_loss`, `get_ctx_loss`) and
`models/networks/correspondence.py` (the domain alignment term, `loss_novgg_featpair`).

All are unweighted; the families differ only in the weights and the perceptual layer
(`REFERENCE_WEIGHTS`). Each takes the models' outputs under the keys all three families share:
  domain_alignment_loss(out["adapted_label"], out["adapted_real"])
  warp_self_loss(out["warps"], real, self_ref)
  warp_cycle_loss(out["warp_cycle"], exemplar)             CoCosNet v1 (warp_cycle=True), v2
  warp_mask_nll_loss(out["warp_mask"], label, exemplar_label)   v1, UNITE
  warp_mask_l1_loss(out["warp_mask"], label)                     UNITE
  ExemplarVGGLoss(perceptual_layer)(out["fake"], real, exemplar, self_ref) -> {"fm", "perc", "cx"}
The rest of G's objective, the hinge GAN loss (`losses.adversarial`) and the discriminator feature
matching (`losses.feature_matching`), is SPADE's.

`self_ref` flags (B,) mark the samples whose exemplar is (an augmented copy of) the real image
itself; the pseudo-pair terms (warp_self, fm) count only those, weighted as the references:
s_b / (sum_b s_b + 1e-5) inside a mean over all elements. With self_ref=None they take the plain
mean. VGG19 is torchvision's, with the preprocessing of `losses.contextual` (the references'
--vgg_normal_correct on their Caffe VGG19).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backbones.vgg import VGGFeatures, layer_weights_for
from gantune.errors import GantuneError
from losses.contextual import (
    _IMAGENET_MEAN,
    _IMAGENET_STD,
    COCOSNET_AVG_POOL,
    COCOSNET_H,
    COCOSNET_LAYER_WEIGHTS,
    COCOSNET_LAYERS,
    _check_options,
    contextual_loss,
)

# The references' VGG19 features for every VGG term (their r12 ... r52) and the "fm" weights.
FM_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
FM_LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)
PERCEPTUAL_LAYERS = ("relu5_2", "relu4_2")  # --which_perceptual 5_2 or 4_2


@dataclass(frozen=True)
class ExemplarLossWeights:
    """Effective weights of G's loss terms in a reference training command (option defaults
    filled in), and the layer of the perceptual term."""

    gan: float  # weight_gan (hinge; D's terms carry it too)
    feat: float  # lambda_feat / weight_ganFeat: discriminator feature matching
    fm: float  # lambda_vgg (weight_vgg) x fm_ratio: vgg_feature_matching_loss
    perc: float  # weight_perceptual: perceptual_mse_loss
    cx: float  # lambda_vgg (weight_vgg) x ctx_w (weight_contextual): the contextual loss
    domain: float  # novgg_featpair: domain_alignment_loss
    warp_self: float  # warp_self_w / weight_warp_self
    warp_cycle: float  # warp_cycle_w / weight_warp_cycle
    warp_mask_nll: float  # weight_mask with --warp_mask_losstype direct / cycle
    warp_mask_l1: float  # UNITE's hard-coded "mask" term
    perceptual_layer: str  # --which_perceptual


REFERENCE_WEIGHTS = {
    # microsoft/CoCosNet README, ADE20K: --weight_mask 100 --warp_mask_losstype direct. (Its
    # DeepFashion command: warp_self 100, perc 0.001 at relu4_2, fm 10; CelebA-HQ: warp_cycle 0.1.)
    "cocosnet": ExemplarLossWeights(
        gan=10.0, feat=10.0, fm=1.0, perc=0.01, cx=10.0, domain=10.0,
        warp_self=0.0, warp_cycle=0.0, warp_mask_nll=100.0, warp_mask_l1=0.0, perceptual_layer="relu5_2",
    ),
    # microsoft/CoCosNet-v2 README, DeepFashionHD: --weight_warp_self 500 --weight_warp_cycle 1
    # --which_perceptual 4_2 --weight_perceptual 0.001 --weight_fm_ratio 1.
    "cocosnet2": ExemplarLossWeights(
        gan=10.0, feat=10.0, fm=10.0, perc=0.001, cx=10.0, domain=10.0,
        warp_self=500.0, warp_cycle=1.0, warp_mask_nll=0.0, warp_mask_l1=0.0, perceptual_layer="relu4_2",
    ),
    # fnzhan/UNITE train_ade.sh: its `dataset_mode == 'ade20klayout' or 'cocolayout'` is always
    # true, so the L1 mask term (x 500) runs and weight_mask's NLL never does, on every dataset.
    "unite": ExemplarLossWeights(
        gan=10.0, feat=10.0, fm=1.0, perc=0.01, cx=10.0, domain=10.0,
        warp_self=0.0, warp_cycle=0.0, warp_mask_nll=0.0, warp_mask_l1=500.0, perceptual_layer="relu5_2",
    ),
}  # fmt: skip


def self_ref_weights(self_ref: torch.Tensor) -> torch.Tensor:
    """Per-sample weights s_b / (sum_b s_b + 1e-5) of the (B,) self-reference flags: 1/K for each
    of K self-reference samples, 0 for the others (all 0 when there are none)."""
    if self_ref.ndim != 1:
        raise GantuneError(f"self_ref: expected (B,) flags, got shape {tuple(self_ref.shape)}")
    s = self_ref.detach().float()
    return s / (s.sum() + 1e-5)


def _weighted_l1(x: torch.Tensor, y: torch.Tensor, self_ref: torch.Tensor | None) -> torch.Tensor:
    """mean over all elements of |x - y| * w_b (the references' `weighted_l1_loss`): the mean
    also divides by B, so K self-reference samples weigh 1 / (B K) each. Plain mean for None."""
    diff = (x - y).abs()
    if self_ref is None:
        return diff.mean()
    if self_ref.shape != x.shape[:1]:
        raise GantuneError(f"self_ref: expected ({x.shape[0]},) flags, got {tuple(self_ref.shape)}")
    return (diff * self_ref_weights(self_ref).view(-1, *([1] * (x.ndim - 1)))).mean()


def _levels(x: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)


def _pool_to(image: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """`image` average-pooled to `like`'s size by a whole factor."""
    h, w = like.shape[-2:]
    factor = image.shape[-1] // w
    if image.shape[:2] != like.shape[:2] or factor < 1 or image.shape[-2:] != (h * factor, w * factor):
        raise GantuneError(
            f"{name}: expected (B, C) = {tuple(like.shape[:2])} and a whole multiple of {(h, w)}, "
            f"got {tuple(image.shape)}"
        )
    return F.avg_pool2d(image, factor) if factor > 1 else image


def domain_alignment_loss(
    adapted_label: torch.Tensor | Sequence[torch.Tensor], adapted_real: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """sum over levels of mean |f_label - f_real|: the unit-normalised adapted features of the
    label map and of the real image (one map (B, C, h, w), or CoCosNet v2's list of pyramid
    levels). Gradients flow into both extractors, as in the references."""
    a, b = _levels(adapted_label), _levels(adapted_real)
    if not a or [t.shape for t in a] != [t.shape for t in b]:
        raise GantuneError(
            f"adapted_real: expected the shapes of adapted_label {[tuple(t.shape) for t in a]}, "
            f"got {[tuple(t.shape) for t in b]}"
        )
    return sum((F.l1_loss(x, y) for x, y in zip(a, b)), a[0].new_zeros(()))


def warp_self_loss(
    warps: torch.Tensor | Sequence[torch.Tensor], real: torch.Tensor, self_ref: torch.Tensor | None = None
) -> torch.Tensor:
    """The references' `G_warp_self`: sum over the warps (B, 3, h, w) of the weighted L1
    (`_weighted_l1`) between each and the real image (B, 3, H, W) average-pooled to its size.
    CoCosNet v1 and UNITE: the full-size warp only; v2: its four levels."""
    levels = _levels(warps)
    if not levels:
        raise GantuneError("warps: expected at least one warped exemplar, got none")
    return sum((_weighted_l1(w, _pool_to(real, w, "real"), self_ref) for w in levels), real.new_zeros(()))


def warp_cycle_loss(warp_cycle: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
    """The references' `G_warp_cycle`: mean |exemplar warped there and back (B, 3, h, w) -
    the exemplar (B, 3, H, W) average-pooled to (h, w)|."""
    return F.l1_loss(warp_cycle, _pool_to(exemplar, warp_cycle, "exemplar"))


def _check_maps(name: str, x: torch.Tensor, like: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[:2] != like.shape[:2]:
        b, n = like.shape[:2]
        raise GantuneError(f"{name}: expected one-hot maps ({b}, {n}, H, W), got {tuple(x.shape)}")


def _downsample(label: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(label.detach().float(), size=like.shape[2:], mode="nearest")


def warp_mask_nll_loss(
    warp_mask: torch.Tensor, label: torch.Tensor, exemplar_label: torch.Tensor, dontcare_class: int | None = 0
) -> torch.Tensor:
    """The references' warped-mask loss (--warp_mask_losstype direct / cycle, weight_mask): NLL
    of the input's class in the warped exemplar label map.

    warp_mask: (B, N, h, w) class probabilities; label, exemplar_label: one-hot (B, N, H, W),
    downsampled (nearest) to (h, w). Pixels whose class is absent from that sample's (downsampled)
    exemplar label, or is `dontcare_class` (class 0, "no loss from unknown class", in the
    references), get weight 0. Loss = sum(w * -log(p + 1e-10)) / (sum(w) + 1e-5) over the batch.
    """
    _check_maps("label", label, warp_mask)
    _check_maps("exemplar_label", exemplar_label, warp_mask)
    gt = _downsample(label, warp_mask).argmax(dim=1)  # (B, h, w)
    ref = _downsample(exemplar_label, warp_mask).argmax(dim=1)
    present = torch.zeros(warp_mask.shape[:2], dtype=torch.bool, device=gt.device)
    present.scatter_(1, ref.flatten(1), True)
    weights = present.gather(1, gt.flatten(1)).view_as(gt).float()
    if dontcare_class is not None:
        weights = weights * (gt != dontcare_class).float()
    nll = -torch.log(warp_mask.float().gather(1, gt[:, None]).squeeze(1) + 1e-10)
    return (nll * weights).sum() / (weights.sum() + 1e-5)


def warp_mask_l1_loss(warp_mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """UNITE's "mask" term: mean |warp_mask - label downsampled (nearest) to its size|, warp_mask
    (B, N, h, w) the exemplar's one-hot label map warped, label (B, N, H, W) one-hot."""
    _check_maps("label", label, warp_mask)
    return F.l1_loss(warp_mask, _downsample(label, warp_mask))


def vgg_feature_matching_loss(
    fake_feats: Sequence[torch.Tensor],
    real_feats: Sequence[torch.Tensor],
    self_ref: torch.Tensor | None = None,
    layer_weights: Sequence[float] = FM_LAYER_WEIGHTS,
) -> torch.Tensor:
    """The references' "fm": sum_l w_l * weighted L1(fake_l, real_l.detach()) over VGG layers
    (`_weighted_l1`: self-reference samples only, or the plain mean for self_ref None)."""
    if not len(fake_feats) == len(real_feats) == len(layer_weights):
        raise GantuneError(
            f"fake_feats, real_feats, layer_weights: expected one per layer, got "
            f"{len(fake_feats)}, {len(real_feats)}, {len(layer_weights)}"
        )
    loss = fake_feats[0].new_zeros(())
    for fake, real, w in zip(fake_feats, real_feats, layer_weights):
        loss = loss + w * _weighted_l1(fake, real.detach(), self_ref)
    return loss


def perceptual_mse_loss(fake_feat: torch.Tensor, real_feat: torch.Tensor) -> torch.Tensor:
    """The references' "perc": mean (fake - real.detach())^2 at one deep VGG layer, all samples."""
    return (fake_feat - real_feat.detach()).square().mean()


class ExemplarVGGLoss(nn.Module):
    """The references' three VGG terms from one VGG19 pass per image: "fm" (fake vs real,
    `vgg_feature_matching_loss`), "perc" (fake vs real at `perceptual_layer`) and "cx", the
    contextual loss of `losses.contextual` (8 CX(relu5_2) + 4 CX(relu4_2) + 2 CX(relu3_2 pooled
    2) [+ 1 CX(relu2_2 pooled 4) with use_22ctx], h 0.1) of fake against the exemplar."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        perceptual_layer: str = "relu5_2",
        use_22ctx: bool = False,
        h: float = COCOSNET_H,
        chunk_size: int = 1024,
        *,
        centering: str = "channel",
        random_weights: bool = False,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if perceptual_layer not in PERCEPTUAL_LAYERS:
            raise GantuneError(
                f"perceptual_layer: expected one of {', '.join(PERCEPTUAL_LAYERS)}, got {perceptual_layer!r}"
            )
        _check_options(h, chunk_size, centering)
        self.perceptual_layer, self.h, self.chunk_size, self.centering = perceptual_layer, h, chunk_size, centering
        self.ctx_layers = list(zip(COCOSNET_LAYERS, COCOSNET_LAYER_WEIGHTS, COCOSNET_AVG_POOL))
        if use_22ctx:
            self.ctx_layers.append(("relu2_2", 1.0, 4))
        self.fm_weights = layer_weights_for(FM_LAYERS, FM_LAYER_WEIGHTS)
        self.vgg = VGGFeatures("vgg19", FM_LAYERS, random_weights=random_weights, seed=seed, weights_dir=weights_dir)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG19 features of [-1, 1] images at FM_LAYERS."""
        return self.vgg(((images + 1) / 2 - self.mean) / self.std)

    def forward(
        self, fake: torch.Tensor, real: torch.Tensor, exemplar: torch.Tensor, self_ref: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """fake, real, exemplar: (B, 3, H, W) in [-1, 1]; self_ref: (B,) flags or None (every
        sample counts in "fm"). Unweighted terms."""
        for name, t in (("real", real), ("exemplar", exemplar)):
            if t.shape != fake.shape or fake.ndim != 4 or fake.shape[1] != 3:
                raise GantuneError(
                    f"{name}: expected RGB images of fake's shape {tuple(fake.shape)}, got {tuple(t.shape)}"
                )
        f_fake = self.features(fake)
        b = fake.shape[0]
        with torch.no_grad():  # the targets' features are constants in the references
            both = self.features(torch.cat([real, exemplar]))
        f_real = {k: v[:b] for k, v in both.items()}
        f_ex = {k: v[b:] for k, v in both.items()}
        fm = vgg_feature_matching_loss(
            [f_fake[k] for k in FM_LAYERS], [f_real[k] for k in FM_LAYERS], self_ref, self.fm_weights
        )
        perc = perceptual_mse_loss(f_fake[self.perceptual_layer], f_real[self.perceptual_layer])
        cx = fake.new_zeros((), dtype=torch.float32)
        for layer, w, k in self.ctx_layers:
            x, y = f_fake[layer], f_ex[layer]
            if k > 1:
                x, y = F.avg_pool2d(x, k), F.avg_pool2d(y, k)
            cx = cx + w * contextual_loss(x, y, self.h, self.chunk_size, centering=self.centering)
        return {"fm": fm, "perc": perc, "cx": cx}
