"""UNITE (Zhan et al., CVPR 2021, "Unbalanced Feature Transport for Exemplar-based Image
Translation"): the correspondence network and `Unite`, which holds it and the generator
(`models.unite_generator`), following fnzhan/UNITE `models/networks/{correspondence,architecture,
normalization}.py` layer for layer, so that parameter counts match the reference (G 131,839,314 and
correspondence 76,266,870 at the ADE20K 256 px config: 151 label channels).

The correspondence network maps the label map and the exemplar image through two feature adaptors
into a shared domain at 1/4 resolution, predicts a mass per position on each side (the marginals)
and a confidence map, solves entropic OT between the two sets of positions (`models.sinkhorn`:
KL-relaxed marginals with `reach`; the reference's `reach=None` is its balanced limit), and warps
the exemplar, its adaptor features and its label map with the row-normalised transport plan. The
generator is CoCosNet's SPADE-style decoder whose norms (SEACE) blend the label's and the warped
exemplar's features by the confidence map. The blocks UNITE shares with CoCosNet are in
`models.exemplar_blocks`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.exemplar_blocks import (
    CorrResBlock,
    ParamFreeNorm,
    ReflectResBlock,
    SelfAttention,
    attention_warp,
    centre_normalize,
    feature_normalize,
    patch_vectors,
    spade_block,
)
from models.sinkhorn import SinkhornUOT, warp_matrix
from models.spade import check_int, conv_norm, init_weights
from models.unite_generator import UniteGenerator, WarpedFeatures

WARP_STRIDE = 4  # the two stride-2 convs of each adaptor: correspondence runs at 1/4 resolution


class FeatureAdaptor(nn.Module):
    """The reference's `AdaptiveFeatureGenerator`: an image or label map (B, in_nc, H, W) to five
    feature maps, widths nef * (2, 4, 8, 8, 4) at H/2, H/2, H/4, H/4, H/4.

    Five 3x3 spectral-instance convs (stride 1, 2, 1, 2, 1) with leaky ReLU between, then SPADE
    blocks conditioned on the input itself, a non-local block, and a dilated (4) block narrowing
    to 4 * nef, then a dilation-2 "degridding" conv.
    """

    def __init__(
        self,
        in_nc: int,
        nef: int = 64,
        nhidden: int = 128,
        norm: ParamFreeNorm = ParamFreeNorm(),
        nonlocal_block: bool = True,
        norm_E: str = "spectralinstance",
    ) -> None:
        super().__init__()

        def layer(fin: int, fout: int, stride: int = 1, dilation: int = 1) -> nn.Module:
            conv = nn.Conv2d(fin, fout, 3, stride=stride, padding=dilation, dilation=dilation)
            return conv_norm(conv, norm_E)

        def block(fin: int, fout: int, dilation: int = 1) -> ReflectResBlock:
            return spade_block(fin, fout, in_nc, norm, True, dilation, nhidden)

        self.layer1 = layer(in_nc, nef)
        self.layer2 = layer(nef, 2 * nef, stride=2)
        self.layer3 = layer(2 * nef, 4 * nef)
        self.layer4 = layer(4 * nef, 8 * nef, stride=2)
        self.layer5 = layer(8 * nef, 8 * nef)
        self.head_0 = block(8 * nef, 8 * nef)
        self.attn = SelfAttention(8 * nef, spectral=False) if nonlocal_block else None
        self.G_middle_0 = block(8 * nef, 8 * nef)
        self.G_middle_1 = block(8 * nef, 8 * nef)
        self.deeper2 = block(8 * nef, 4 * nef, dilation=4)
        self.degridding0 = layer(4 * nef, 4 * nef, dilation=2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        seg = x
        x2 = self.layer2(F.leaky_relu(self.layer1(x), 0.2))
        x3 = self.layer3(F.leaky_relu(x2, 0.2))
        x = self.layer5(F.leaky_relu(self.layer4(F.leaky_relu(x3, 0.2)), 0.2))
        x4 = self.head_0(x, seg)
        x = self.attn(x4) if self.attn is not None else x4
        x5 = self.G_middle_1(self.G_middle_0(x, seg), seg)
        out = self.degridding0(self.deeper2(x5, seg))
        return [x2, x3, x4, x5, out]


def add_coords(x: torch.Tensor) -> torch.Tensor:
    """Concatenate CoordConv channels: x and y in [-1, 1] across width and height, and their
    radius sqrt(x^2 + y^2)."""
    b, _, h, w = x.shape
    xx = torch.linspace(-1, 1, w, dtype=x.dtype, device=x.device).view(1, 1, 1, w).expand(b, 1, h, w)
    yy = torch.linspace(-1, 1, h, dtype=x.dtype, device=x.device).view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat((x, xx, yy, torch.sqrt(xx**2 + yy**2)), dim=1)


class UniteCorrespondence(nn.Module):
    """The reference's `NoVGGCorrespondence` at its ADE20K options (--maskmix --use_coordconv
    --adaptor_nonlocal --PONO --PONO_C --warp_mask_losstype direct, match_kernel 3).

    forward(label (B, semantic_nc, H, W) one-hot, exemplar (B, 3, H, W) in [-1, 1], exemplar_label
    (B, semantic_nc, H, W) one-hot, real (B, 3, H, W) or None) returns a dict:
      "warp": WarpedFeatures for the generator;
      "warped": (B, 3, H, W) the warped exemplar, nearest-upsampled from H/4;
      "warp_mask": (B, semantic_nc, H/4, W/4) the exemplar's label map warped, in [0, 1];
      "conf_map": (B, 1, H/4, W/4); "marginal_label", "marginal_exemplar": (B, N) masses,
      N = H/4 * W/4, each summing to 1; "warp_matrix": (B, N, N) rows summing to 1;
      "adapted_label": the label adaptor's last features (B, 4 nef, H/4, W/4), unit-norm per
      position; "adapted_real": the image adaptor's on `real`, only when it is given (training:
      the reference's domain alignment loss compares the two).
    H and W must be multiples of 8, >= 24.
    """

    def __init__(
        self,
        semantic_nc: int,
        nef: int = 64,
        corr_nc: int = 256,
        nhidden: int = 128,
        param_free_norm: str = "pono",
        match_kernel: int = 3,
        maskmix: bool = True,
        use_coordconv: bool = True,
        adaptor_nonlocal: bool = True,
        p: int = 1,
        blur: float = 0.025,
        reach: float | None = None,
        scaling: float = 0.5,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("nef", nef)
        check_int("corr_nc", corr_nc)
        check_int("nhidden", nhidden)
        check_int("match_kernel", match_kernel)
        if match_kernel % 2 == 0:
            raise GantuneError(f"match_kernel: expected an odd integer >= 1, got {match_kernel!r}")
        norm = ParamFreeNorm(param_free_norm)
        self.uot = SinkhornUOT(p, blur, reach, scaling)
        self.match_kernel, self.maskmix, self.use_coordconv = match_kernel, maskmix, use_coordconv
        self.adaptive_model_seg = FeatureAdaptor(semantic_nc, nef, nhidden, norm, adaptor_nonlocal)
        self.adaptive_model_img = FeatureAdaptor(3, nef, nhidden, norm, adaptor_nonlocal)
        ch = 4 * nef + (semantic_nc if maskmix else 0) + (3 if use_coordconv else 0)
        self.layer = nn.Sequential(*(CorrResBlock(ch) for _ in range(4)))

        def proj() -> nn.Conv2d:
            return nn.Conv2d(ch, corr_nc, kernel_size=1)

        # Matching features, marginal ("weight") features and confidence features, per side.
        self.phi, self.theta = proj(), proj()
        self.phi_w, self.theta_w = proj(), proj()
        self.phi_conf, self.theta_conf = proj(), proj()
        init_weights(self)

    def _shared(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """The shared residual stack on normalised adaptor features (+ CoordConv, + label map)."""
        if self.use_coordconv:
            x = add_coords(x)
        if self.maskmix:
            x = torch.cat((x, F.interpolate(seg, size=x.shape[2:], mode="nearest")), dim=1)
        return self.layer(x)

    def forward(
        self,
        label: torch.Tensor,
        exemplar: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        b, _, h, w = exemplar.shape
        # Even 1/4-scale maps for the non-local block's pooling; > 4 for the dilation-4 reflection pad.
        if h % 8 or w % 8 or min(h, w) < 24:
            raise ValueError(f"UniteCorrespondence: H and W must be multiples of 8, >= 24, got {(h, w)}")
        fh, fw = h // WARP_STRIDE, w // WARP_STRIDE
        seg_feats = self.adaptive_model_seg(label)
        ref_feats = self.adaptive_model_img(exemplar)
        adapted_label = feature_normalize(seg_feats[-1])
        out: dict[str, Any] = {"adapted_label": adapted_label}
        if real is not None:
            out["adapted_real"] = feature_normalize(self.adaptive_model_img(real)[-1])

        cont = self._shared(adapted_label, label)
        ref = self._shared(feature_normalize(ref_feats[-1]), exemplar_label)

        # Matching features: k x k patches of the projections, centred and normalised (--PONO_C).
        theta = patch_vectors(self.theta(cont), self.match_kernel)
        phi = patch_vectors(self.phi(ref), self.match_kernel)
        theta_t, phi_t = theta.transpose(1, 2), phi.transpose(1, 2)  # (B, N, D)

        # Marginals: each side's positions scored against the other side's mean feature. No loss
        # reaches theta_w / phi_w: the solver takes the masses detached and the warp's row
        # normalisation cancels them (in the reference too, up to float noise).
        theta_w = centre_normalize(self.theta_w(cont).flatten(2))
        phi_w = centre_normalize(self.phi_w(ref).flatten(2))
        a = torch.softmax(torch.einsum("bcn,bc->bn", theta_w, phi_w.mean(dim=2)), dim=1)
        bm = torch.softmax(torch.einsum("bcn,bc->bn", phi_w, theta_w.mean(dim=2)), dim=1)

        # Confidence: best match per label position, centred over positions, sharpened.
        theta_c = centre_normalize(self.theta_conf(cont).flatten(2))
        phi_c = centre_normalize(self.phi_conf(ref).flatten(2))
        best = torch.bmm(theta_c.transpose(1, 2), phi_c).max(dim=2).values
        conf = torch.sigmoid(10.0 * (best - best.mean(dim=1, keepdim=True))).view(b, 1, fh, fw)

        # OT: potentials from the solver's cost, the plan with 1 - <x, y> at eps = blur**p, as
        # the reference (its plan uses the cosine distance whatever p).
        _, g = self.uot(a, theta_t, bm, phi_t)
        cost = 1 - torch.bmm(theta_t, phi)
        warp = warp_matrix(g, cost, self.uot.blur**self.uot.p)

        def transport(x: torch.Tensor) -> torch.Tensor:
            return attention_warp(warp, F.interpolate(x, size=(fh, fw), mode="nearest"), (fh, fw))

        warped = [transport(exemplar)] + [transport(f) for f in ref_feats[:4]]
        out.update(
            warp=WarpedFeatures(label, seg_feats[:4], warped, conf),
            warped=F.interpolate(warped[0], scale_factor=WARP_STRIDE, mode="nearest"),
            warp_mask=transport(exemplar_label),
            conf_map=conf,
            marginal_label=a,
            marginal_exemplar=bm,
            warp_matrix=warp,
        )
        return out


class Unite(nn.Module):
    """The correspondence network and the generator, trained together by one optimizer (the
    reference's netCorr + netG).

    forward(label, exemplar_image, exemplar_label, real=None): label and exemplar_label one-hot
    (B, semantic_nc, H, W), exemplar_image and real (B, 3, H, W) in [-1, 1], H x W = (32 sh, 32 sw)
    of the generator. Returns the correspondence dict (see UniteCorrespondence) with "warps" =
    ["warped"] (what the warp-self loss compares) and "fake" (B, 3, H, W) in [-1, 1] added; pass
    `real` in training for "adapted_real".
    """

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        nef: int = 64,
        corr_nc: int = 256,
        nhidden: int = 128,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        param_free_norm: str = "pono",
        blur: float = 0.025,
        reach: float | None = None,
        p: int = 1,
        scaling: float = 0.5,
    ) -> None:
        super().__init__()
        self.corr = UniteCorrespondence(
            semantic_nc, nef, corr_nc, nhidden, param_free_norm, p=p, blur=blur, reach=reach, scaling=scaling
        )
        self.G = UniteGenerator(semantic_nc, ngf, nef, nhidden, crop_size, aspect_ratio, param_free_norm)

    def forward(
        self,
        label: torch.Tensor,
        exemplar_image: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        out = self.corr(label, exemplar_image, exemplar_label, real)
        out["warps"] = [out["warped"]]
        out["fake"] = self.G(out["warp"])
        return out
