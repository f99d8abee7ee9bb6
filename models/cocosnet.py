"""CoCosNet v1 (Zhang et al., CVPR 2020, "Cross-domain Correspondence Learning for Exemplar-based
Image Translation"): the correspondence network and `CoCosNet`, which holds it and the generator,
following microsoft/CoCosNet `models/networks/{correspondence,generator,architecture,
normalization}.py` layer for layer, so that parameter counts match the reference (ADE20K 256 px
config: 151 label channels, ngf 64, --use_attention --maskmix --PONO --PONO_C: generator
96,664,260, correspondence net 59,315,716).

The correspondence net maps the label map and the exemplar image into a shared domain (two
adaptive feature extractors, then a shared residual stack and 1x1 projections), correlates every
position of the label's features with every position of the exemplar's at 1/`warp_stride`
resolution, and warps the exemplar's colours by a softmax over that correlation
(temperature 0.01). The generator (`models.exemplar_blocks.CoCosNetGenerator`, shared with v2) is
SPADE's decoder conditioned on [warped exemplar, label map], with positional normalisation
(PONO), reflection padding and a self-attention block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.exemplar_blocks import (
    CoCosNetGenerator,
    CorrResBlock,
    ParamFreeNorm,
    attention_warp,
    check_positive,
    feature_normalize,
    patch_vectors,
    spade_block,
)
from models.spade import CONV_NORMS, check_choice, check_int, conv_norm, init_weights

WARP_MASK_LOSSTYPES = ("none", "direct", "cycle")
WARP_STRIDES = (2, 4)


class AdaptiveFeatureExtractor(nn.Module):
    """One domain's adaptive feature extractor (the reference's `AdaptiveFeatureGenerator`):
    five `norm_E` convs (widths ngf, 2, 4, 8, 8 x ngf; the second and fourth stride 2, the
    fourth stride 1 with warp_stride 2) with leaky ReLU 0.2 between, then three SPADE blocks
    (8, 8, 4 x ngf) conditioned on the input itself. Output: (B, 4 ngf, H / s, W / s)."""

    def __init__(
        self,
        in_nc: int,
        ngf: int = 64,
        adaptor_kernel: int = 3,
        warp_stride: int = 4,
        norm_E: str = "spectralinstance",
        spectral: bool = True,
        norm: ParamFreeNorm = ParamFreeNorm(),
    ) -> None:
        super().__init__()
        check_int("in_nc", in_nc)
        check_int("ngf", ngf)
        check_int("adaptor_kernel", adaptor_kernel)
        check_choice("norm_E", norm_E, CONV_NORMS)
        if warp_stride not in WARP_STRIDES:
            raise GantuneError(f"warp_stride: expected one of {WARP_STRIDES}, got {warp_stride!r}")
        # Padding 1 for every kernel size, as the reference (so kernel 4 halves exactly).
        k, s4 = adaptor_kernel, 1 if warp_stride == 2 else 2
        convs = [
            nn.Conv2d(in_nc, ngf, 3, stride=1, padding=1),
            nn.Conv2d(ngf, 2 * ngf, k, stride=2, padding=1),
            nn.Conv2d(2 * ngf, 4 * ngf, 3, stride=1, padding=1),
            nn.Conv2d(4 * ngf, 8 * ngf, k if s4 == 2 else 3, stride=s4, padding=1),
            nn.Conv2d(8 * ngf, 8 * ngf, 3, stride=1, padding=1),
        ]
        self.layers = nn.ModuleList(conv_norm(c, norm_E) for c in convs)
        self.head_0 = spade_block(8 * ngf, 8 * ngf, in_nc, norm, spectral)
        self.G_middle_0 = spade_block(8 * ngf, 8 * ngf, in_nc, norm, spectral)
        self.G_middle_1 = spade_block(8 * ngf, 4 * ngf, in_nc, norm, spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cond = x
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
        x = self.head_0(x, cond)
        x = self.G_middle_0(x, cond)
        return self.G_middle_1(x, cond)


def correlation(
    theta: torch.Tensor, phi: torch.Tensor, match_kernel: int = 3, channel_centering: bool = True
) -> torch.Tensor:
    """Cosine similarity (B, HW_theta, HW_phi) between match_kernel x match_kernel patches of two
    feature maps (B, C, H, W), zero-padded at the border.

    Each patch vector is centred first: on its own mean (channel_centering, --PONO_C) or on the
    mean over positions of each of its entries.
    """
    a, b = (patch_vectors(f, match_kernel, channel_centering) for f in (theta, phi))
    return torch.bmm(a.transpose(1, 2), b)


class CorrespondenceNet(nn.Module):
    """The reference's `NoVGGCorrespondence`: label map (B, semantic_nc, H, W) and exemplar
    (B, 3, H, W), with the exemplar's label map, to the exemplar warped onto the label's layout.

    H and W must be multiples of `warp_stride`; the correlation is taken at (H/s, W/s).
    """

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        maskmix: bool = True,
        warp_mask_losstype: str = "direct",
        warp_cycle: bool = False,
        match_kernel: int = 3,
        adaptor_kernel: int = 3,
        warp_stride: int = 4,
        warp_bilinear: bool = False,
        pono_c: bool = True,
        temperature: float = 0.01,
        corr_nc: int = 256,
        norm_E: str = "spectralinstance",
        spectral: bool = True,
        param_free_norm: str = "pono",
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("ngf", ngf)
        check_int("corr_nc", corr_nc)
        check_int("match_kernel", match_kernel)
        if match_kernel % 2 == 0:  # even kernels would shift the patches by half a position
            raise GantuneError(f"match_kernel: expected an odd integer >= 1, got {match_kernel!r}")
        check_choice("warp_mask_losstype", warp_mask_losstype, WARP_MASK_LOSSTYPES)
        check_positive("temperature", temperature)
        self.semantic_nc, self.maskmix, self.warp_stride = semantic_nc, maskmix, warp_stride
        self.warp_mask_losstype, self.warp_cycle = warp_mask_losstype, warp_cycle
        self.match_kernel, self.pono_c, self.temperature = match_kernel, pono_c, temperature
        self.warp_bilinear = warp_bilinear
        norm = ParamFreeNorm(param_free_norm)

        def extractor(in_nc: int) -> AdaptiveFeatureExtractor:
            return AdaptiveFeatureExtractor(in_nc, ngf, adaptor_kernel, warp_stride, norm_E, spectral, norm)

        self.adaptive_model_seg = extractor(semantic_nc)
        self.adaptive_model_img = extractor(3)
        # The reference fixes these at 256 + label channels; 4 * ngf is 256 at ngf 64.
        ch = 4 * ngf + (semantic_nc if maskmix else 0)
        self.layer = nn.Sequential(*(CorrResBlock(ch) for _ in range(4)))
        self.phi = nn.Conv2d(ch, corr_nc, 1)
        self.theta = nn.Conv2d(ch, corr_nc, 1)
        init_weights(self)  # the reference's init_weights('xavier', 0.02)

    def forward(
        self,
        label: torch.Tensor,
        exemplar: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Returns, with h, w = H / warp_stride, W / warp_stride:
        "warped" (B, 3, H, W), the exemplar warped, upsampled (nearest, or bilinear) to the input
        size as the generator sees it; "warped_low" (B, 3, h, w), before upsampling;
        "adapted_label", "adapted_exemplar" (B, 4 ngf, h, w), unit-norm per position;
        with `real`, "adapted_real", the real image's features for the domain alignment loss;
        with warp_mask_losstype != "none", "warp_mask" (B, semantic_nc, h, w), the exemplar's
        label warped the same way (class probabilities); with warp_cycle, "warp_cycle"
        (B, 3, h, w), warped_low warped back onto the exemplar.
        """
        b, _, H, W = exemplar.shape
        s = self.warp_stride
        if H % s or W % s:
            raise ValueError(f"exemplar: height and width must be multiples of {s}, got {(H, W)}")
        for name, t in (("label", label), ("exemplar_label", exemplar_label)):
            if t.shape != (b, self.semantic_nc, H, W):
                raise ValueError(f"{name}: expected {(b, self.semantic_nc, H, W)}, got {tuple(t.shape)}")
        h, w = H // s, W // s
        out: dict[str, torch.Tensor] = {}
        feat_seg = feature_normalize(self.adaptive_model_seg(label))
        feat_img = feature_normalize(self.adaptive_model_img(exemplar))
        out["adapted_label"], out["adapted_exemplar"] = feat_seg, feat_img
        if real is not None:
            out["adapted_real"] = feature_normalize(self.adaptive_model_img(real))

        if self.maskmix:
            feat_seg = torch.cat((feat_seg, F.interpolate(label, size=(h, w), mode="nearest")), 1)
            ref_seg = F.interpolate(exemplar_label, size=(h, w), mode="nearest")
            feat_img = torch.cat((feat_img, ref_seg), 1)
        theta = self.theta(self.layer(feat_seg))
        phi = self.phi(self.layer(feat_img))
        f = correlation(theta, phi, self.match_kernel, self.pono_c) / self.temperature
        attn = F.softmax(f, dim=-1)  # over exemplar positions, for each label position

        warped_low = attention_warp(attn, F.avg_pool2d(exemplar, s), (h, w))
        out["warped_low"] = warped_low
        mode = "bilinear" if self.warp_bilinear else "nearest"
        out["warped"] = F.interpolate(warped_low, scale_factor=s, mode=mode)

        attn_back = None
        if self.warp_mask_losstype == "direct":
            ref_seg = F.interpolate(exemplar_label, size=(h, w), mode="nearest")
            out["warp_mask"] = attention_warp(attn, ref_seg, (h, w))
        elif self.warp_mask_losstype == "cycle":
            attn_back = F.softmax(f.transpose(1, 2), dim=-1)  # label positions per exemplar's
            seg = F.interpolate(label, size=(h, w), mode="nearest")
            out["warp_mask"] = attention_warp(attn, attention_warp(attn_back, seg, (h, w)), (h, w))
        if self.warp_cycle:
            if attn_back is None:
                attn_back = F.softmax(f.transpose(1, 2), dim=-1)
            out["warp_cycle"] = attention_warp(attn_back, warped_low, (h, w))
        return out


class CoCosNet(nn.Module):
    """Correspondence net (`corr`, the reference's netCorr) and generator (`G`, its netG) in one
    module, so one optimizer trains both, as the reference does."""

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        use_attention: bool = True,
        maskmix: bool = True,
        warp_mask_losstype: str = "direct",
        warp_cycle: bool = False,
        match_kernel: int = 3,
        adaptor_kernel: int = 3,
        warp_stride: int = 4,
        warp_bilinear: bool = False,
        pono_c: bool = True,
        temperature: float = 0.01,
        corr_nc: int = 256,
        param_free_norm: str = "pono",
        norm_E: str = "spectralinstance",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        # G first: its argument checks (crop_size, aspect_ratio) fail before the larger net is built.
        self.G = CoCosNetGenerator(
            semantic_nc, 1, ngf, crop_size, aspect_ratio, 16, use_attention, ParamFreeNorm(param_free_norm), spectral
        )
        self.corr = CorrespondenceNet(
            semantic_nc,
            ngf,
            maskmix=maskmix,
            warp_mask_losstype=warp_mask_losstype,
            warp_cycle=warp_cycle,
            match_kernel=match_kernel,
            adaptor_kernel=adaptor_kernel,
            warp_stride=warp_stride,
            warp_bilinear=warp_bilinear,
            pono_c=pono_c,
            temperature=temperature,
            corr_nc=corr_nc,
            norm_E=norm_E,
            spectral=spectral,
            param_free_norm=param_free_norm,
        )

    def forward(
        self,
        label: torch.Tensor,
        exemplar: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """label, exemplar_label: (B, semantic_nc, H, W) one-hot; exemplar, real: (B, 3, H, W) in
        [-1, 1]. Returns CorrespondenceNet's outputs, "warps" = ["warped"] (what G is conditioned
        on and the warp-self loss compares) and "fake" (B, 3, H, W) in [-1, 1]; the warped
        exemplar reaches G undetached, so G's losses train the correspondence too."""
        corr_out = self.corr(label, exemplar, exemplar_label, real)
        warps = [corr_out["warped"]]
        return {**corr_out, "warps": warps, "fake": self.G(label, warps)}
