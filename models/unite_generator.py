"""UNITE's generator (Zhan et al., CVPR 2021), the reference's `SEACEGenerator`, following
fnzhan/UNITE `models/networks/{generator,architecture,normalization}.py` layer for layer (131,839,314
parameters at the ADE20K 256 px config), and `WarpedFeatures`, its input from `models.unite`'s
correspondence network.

CoCosNet's SPADE-style decoder whose norms (SEACE) blend the label's and the warped exemplar's
features by the confidence map; its residual block, self-attention and PONO are those of
`models.exemplar_blocks`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.exemplar_blocks import ParamFreeNorm, ReflectResBlock, SelfAttention, latent_grid
from models.spade import check_int, init_weights


class WarpedFeatures(NamedTuple):
    """What the correspondence network hands the generator, all at (B, *, H/4, W/4) unless said:
    the label map (full size) and its adaptor features at H/2, H/2, H/4, H/4; the exemplar image
    and its adaptor features at the same four levels, each warped to the label's layout; and
    the confidence map (B, 1, H/4, W/4) in (0, 1)."""

    label: torch.Tensor
    label_feats: list[torch.Tensor]
    warped_feats: list[torch.Tensor]
    conf_map: torch.Tensor


class SelfAttentionMap(nn.Module):
    """The reference's `Self_Attn`: the input resized (nearest) to `size`, then the attention
    matrix softmax_j(q_i . k_j) (B, N, N), N = size[0] * size[1]; 1x1 bias-free q, k convs to
    in_dim / 4 channels."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        check_int("in_dim", in_dim, minimum=4)
        self.query_conv = nn.Conv2d(in_dim, in_dim // 4, kernel_size=1, bias=False)
        self.key_conv = nn.Conv2d(in_dim, in_dim // 4, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        q = self.query_conv(x).flatten(2).transpose(1, 2)
        return torch.softmax(torch.bmm(q, self.key_conv(x).flatten(2)), dim=-1)


class SEACE(nn.Module):
    """The reference's SEACE norm: param-free norm, then a scale and shift predicted from a blend
    of label features (`seg_nc` channels) and warped exemplar features (`ref_nc`), weighted per
    pixel by the confidence map (exemplar where confident). With `atten`, the exemplar features
    are first mixed along the label's self-attention (coef * aggregated + own; coef starts at 0).
    3x3 convs, zero padded."""

    def __init__(
        self,
        norm_nc: int,
        seg_nc: int,
        ref_nc: int,
        nhidden: int = 128,
        atten: bool = False,
        norm: ParamFreeNorm = ParamFreeNorm(),
    ) -> None:
        super().__init__()
        self.atten, self.ref_nc = atten, ref_nc
        self.param_free_norm = norm.build(norm_nc)
        self.seg_shared = nn.Sequential(nn.Conv2d(seg_nc, nhidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
        self.beta = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
        # ref_shared is built in every block, as the reference, but only runs with atten.
        self.ref_shared = nn.Sequential(nn.Conv2d(ref_nc, ref_nc, 3, padding=1), nn.ReLU())
        self.ref_shared2 = nn.Sequential(nn.Conv2d(ref_nc, nhidden, 3, padding=1), nn.ReLU())
        self.coef = nn.Parameter(torch.zeros(1))  # (1,), not 0-dim: DeepSpeed cannot flatten those

    def forward(
        self,
        x: torch.Tensor,
        seg: torch.Tensor,
        ref: torch.Tensor,
        atten_map: torch.Tensor | None,
        conf_map: torch.Tensor,
    ) -> torch.Tensor:
        b, _, h, w = x.shape
        seg = F.interpolate(seg, size=(h, w), mode="nearest")
        ref = F.interpolate(ref, size=(h, w), mode="nearest")
        conf = F.interpolate(conf_map, size=(h, w), mode="nearest")
        seg_feat = self.seg_shared(seg)
        if self.atten:
            if atten_map is None:
                raise ValueError("SEACE built with atten=True needs an attention map")
            n = atten_map.shape[1]
            if n == h * w:
                agg = self.ref_shared(ref)
                agg = torch.bmm(agg.flatten(2), atten_map.transpose(1, 2)).view(b, self.ref_nc, h, w)
            else:  # attention at a coarser grid (the reference's 64 x 64 for a 128 x 128 block)
                ah = round(math.sqrt(n * h / w))
                ref_small = F.interpolate(ref, size=(ah, n // ah), mode="nearest")
                agg = torch.bmm(self.ref_shared(ref_small).flatten(2), atten_map.transpose(1, 2))
                agg = F.interpolate(agg.view(b, self.ref_nc, ah, n // ah), size=(h, w), mode="nearest")
            ref = self.coef * agg + ref
        feat = seg_feat * (1 - conf) + self.ref_shared2(ref) * conf
        return self.param_free_norm(x) * (1 + self.gamma(feat)) + self.beta(feat)


def seace_block(
    fin: int, fout: int, seg_nc: int, ref_nc: int, atten: bool, nhidden: int, norm: ParamFreeNorm, spectral: bool
) -> ReflectResBlock:
    """The reference's SEACEResnetBlock: SPADE's reflection-padded residual block around SEACE."""
    return ReflectResBlock(fin, fout, lambda nc: SEACE(nc, seg_nc, ref_nc, nhidden, atten, norm), spectral)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class UniteGenerator(nn.Module):
    """The reference's `SEACEGenerator`: WarpedFeatures to an RGB image (B, 3, H, W) in [-1, 1].

    A conv of the concatenated deepest label and warped features at (sh, sw) = (crop / 32 /
    aspect_ratio, crop / 32), then SEACE blocks of widths ngf * (16, 16, 16, 8, 4, 2, 1) with five
    2x nearest upsamplings, conditioned coarse to fine on adaptor levels 4, 4, 4, 3, 3, 2 and, last,
    the label map with the warped exemplar image; three of them mix the exemplar features along
    the label features' self-attention at H/16, H/8 and H/4, and a non-local block runs at H/2.
    """

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        nef: int = 64,
        nhidden: int = 128,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        param_free_norm: str = "pono",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("ngf", ngf, minimum=2)  # the non-local block needs 4 * ngf // 8 >= 1
        check_int("nef", nef, minimum=2)  # the self-attention on 2 * nef channels needs >= 4
        check_int("nhidden", nhidden)
        norm = ParamFreeNorm(param_free_norm)
        self.sh, self.sw = latent_grid(crop_size, aspect_ratio)
        nf = ngf

        def block(fin: int, fout: int, feat_nc: int, atten: bool, seg_nc: int | None = None) -> ReflectResBlock:
            return seace_block(fin, fout, seg_nc or feat_nc, feat_nc, atten, nhidden, norm, spectral)

        self.fc = nn.Conv2d(16 * nef, 16 * nf, kernel_size=3, padding=1)
        self.G_head_0 = block(16 * nf, 16 * nf, 8 * nef, False)
        self.G_middle_0 = block(16 * nf, 16 * nf, 8 * nef, True)
        self.G_middle_1 = block(16 * nf, 16 * nf, 8 * nef, False)
        self.G_up_0 = block(16 * nf, 8 * nf, 4 * nef, True)
        self.G_up_1 = block(8 * nf, 4 * nf, 4 * nef, False)
        self.attn = SelfAttention(4 * nf, spectral)
        self.G_out_0 = block(4 * nf, 2 * nf, 2 * nef, True)
        self.G_out_1 = block(2 * nf, nf, 3, False, seg_nc=semantic_nc)
        self.conv_img1 = nn.Conv2d(nf, 3, kernel_size=3, padding=1)
        self.attn2 = SelfAttentionMap(2 * nef)
        self.attn3 = SelfAttentionMap(4 * nef)
        self.attn4 = SelfAttentionMap(8 * nef)
        init_weights(self)

    def forward(self, warp: WarpedFeatures) -> torch.Tensor:
        label, (s2, s3, s4, s5), (r1, r2, r3, r4, r5), conf = warp
        sh, sw = self.sh, self.sw
        if tuple(label.shape[2:]) != (32 * sh, 32 * sw):
            raise ValueError(
                f"UniteGenerator: label maps of {(32 * sh, 32 * sw)} expected, got {tuple(label.shape[2:])}"
            )
        atten2 = self.attn2(s2, (8 * sh, 8 * sw))
        atten3 = self.attn3(s3, (4 * sh, 4 * sw))
        atten4 = self.attn4(s4, (2 * sh, 2 * sw))

        x = self.fc(F.interpolate(torch.cat((s5, r5), dim=1), size=(sh, sw), mode="nearest"))
        x = self.G_head_0(x, s5, r5, None, conf)
        x = self.G_middle_0(_up(x), s4, r4, atten4, conf)
        x = self.G_middle_1(x, s4, r4, None, conf)
        x = self.G_up_0(_up(x), s3, r3, atten3, conf)
        x = self.G_up_1(_up(x), s3, r3, None, conf)
        x = self.G_out_0(self.attn(_up(x)), s2, r2, atten2, conf)
        x = self.G_out_1(_up(x), label, r1, None, conf)
        return torch.tanh(self.conv_img1(F.leaky_relu(x, 0.2)))
