"""CoCosNet v2 (Zhou et al., CVPR 2021, "Full-Resolution Correspondence Learning for Image
Translation"): the correspondence network and `CoCosNet2`, which holds it and the generator,
following microsoft/CoCosNet-v2 `models/networks/{correspondence,generator,architecture,
normalization}.py` layer for layer, so that parameter counts match the reference (DeepFashionHD
512 px, 20 label channels: correspondence 9,648,360, generator 36,763,203).

Correspondence: two feature pyramids (one for the label map, one for exemplar image + exemplar
label) give features at 1/8, 1/4, 1/2 and 1/1 of the image. At 1/8 every position attends to all
exemplar positions (softmax of cosine similarity / temperature); each finer level refines the
coarser match by GRU-assisted PatchMatch (`models.patch_match`). The generator is CoCosNet's
(`models.exemplar_blocks.CoCosNetGenerator`) conditioned on the four warps, with an 8 ngf head
and no attention; v2's SPADE uses PONO with epsilon 1e-8 and an affine batch norm.

Pure torch, CPU and GPU, any H and W that are multiples of 8 (the reference is square only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.exemplar_blocks import (
    CoCosNetGenerator,
    CorrResBlock,
    ParamFreeNorm,
    attention_warp,
    centre_normalize,
    check_positive,
    feature_normalize,
    spade_block,
)
from models.patch_match import PatchMatchGRU, window_candidates
from models.spade import CONV_NORMS, check_choice, check_int, conv_norm, init_weights

NUM_LEVELS = 4  # feature pyramid levels: 1/8, 1/4, 1/2, 1/1 of the image
V2_EPS = 1e-10  # the reference's feature_normalize / match_kernel_and_pono_c epsilon


def v2_norm(kind: str) -> ParamFreeNorm:
    """v2's SPADE norms: its PositionalNorm2d has epsilon 1e-8, its (sync) batch norm is affine."""
    return ParamFreeNorm(kind, pono_eps=1e-8, batch_affine=True)


class FeaturePyramid(nn.Module):
    """The reference's AdaptiveFeatureGenerator: an encoder down to 1/8 and a SPADE decoder back
    to full size with skip connections, its SPADE blocks conditioned on the input itself.

    Returns [1/8 (4 nef), 1/4 (4 nef), 1/2 (2 nef), 1/1 (nef)] feature maps.
    """

    def __init__(
        self,
        input_nc: int,
        nef: int = 32,
        kernel_size: int = 3,
        norm_E: str = "spectralinstance",
        param_free_norm: str = "pono",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        kw, pw = kernel_size, kernel_size // 2

        def down(fin: int, fout: int, k: int, stride: int, pad: int) -> nn.Module:
            return conv_norm(nn.Conv2d(fin, fout, k, stride=stride, padding=pad), norm_E)

        # The reference fixes layer1's kernel at 3 but pads it by featEnc_kernel // 2.
        self.layer1 = down(input_nc, nef, 3, 1, pw)
        self.layer2 = nn.Sequential(down(nef, 2 * nef, 3, 1, 1), CorrResBlock(2 * nef))
        self.layer3 = nn.Sequential(down(2 * nef, 4 * nef, kw, 2, pw), CorrResBlock(4 * nef))
        self.layer4 = nn.Sequential(down(4 * nef, 4 * nef, kw, 2, pw), CorrResBlock(4 * nef))
        self.layer5 = nn.Sequential(down(4 * nef, 4 * nef, kw, 2, pw), CorrResBlock(4 * nef))
        norm = v2_norm(param_free_norm)
        self.head_0 = spade_block(4 * nef, 4 * nef, input_nc, norm, spectral)
        self.G_middle_0 = spade_block(4 * nef, 4 * nef, input_nc, norm, spectral)
        self.G_middle_1 = spade_block(4 * nef, 2 * nef, input_nc, norm, spectral)
        self.G_middle_2 = spade_block(2 * nef, nef, input_nc, norm, spectral)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.layer1(x)
        x2 = self.layer2(F.leaky_relu(x1, 0.2))
        x3 = self.layer3(F.leaky_relu(x2, 0.2))
        x4 = self.layer4(F.leaky_relu(x3, 0.2))
        x5 = self.layer5(F.leaky_relu(x4, 0.2))
        x6 = self.head_0(x5, x)
        x7 = self.G_middle_0(self._up(x6) + x4, x)
        x8 = self.G_middle_1(self._up(x7) + x3, x)
        x9 = self.G_middle_2(self._up(x8) + x2, x)
        return [x6, x7, x8, x9]


def full_attention_warp(
    left: torch.Tensor, right: torch.Tensor, exemplar: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The coarsest level: softmax over all exemplar positions. Returns the warped exemplar
    (B, 3, H, W), the cycle warp (the warp taken back to the exemplar's grid by the transposed
    attention, B, 3, H, W) and the best match (B, H*W)."""
    h, w = left.shape[2:]
    logits = torch.bmm(left.flatten(2).transpose(1, 2), right.flatten(2)) / temperature
    warp = attention_warp(F.softmax(logits, dim=-1), exemplar, (h, w))
    cycle = attention_warp(F.softmax(logits.transpose(1, 2), dim=-1), warp, (h, w))
    return warp, cycle, logits.argmax(dim=-1)


class CoCosNet2Correspondence(nn.Module):
    """The reference's NoVGGHPMCorrespondence: warps the exemplar to the label map's layout at
    1/8, 1/4, 1/2 and full resolution.

    label (B, semantic_nc, H, W), exemplar image (B, 3, H, W) in [-1, 1] and its label map
    (B, semantic_nc, H, W); H and W multiples of 8. Returns a dict: "warps" (coarse to fine,
    (B, 3, H / 2**(3 - l), W / 2**(3 - l))), "warp_cycle" (B, 3, H / 8, W / 8), and the
    L2-normalised pyramid features "adapted_label" and, with `real`, "adapted_real" (the
    exemplar encoder on the real image and its label) for `losses.exemplar.domain_alignment_loss`.
    """

    def __init__(
        self,
        semantic_nc: int,
        nef: int = 32,
        featEnc_kernel: int = 3,
        temperature: float = 0.01,
        iteration_count: int = 5,
        pono_c: bool = True,
        norm_E: str = "spectralinstance",
        param_free_norm: str = "pono",
        spectral: bool = True,
        offset_rounding: str = "reference",
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("nef", nef)
        check_int("featEnc_kernel", featEnc_kernel)
        if featEnc_kernel % 2 == 0:  # stride-2 convs would not halve the grid exactly
            raise GantuneError(f"featEnc_kernel: expected an odd integer >= 1, got {featEnc_kernel!r}")
        check_int("iteration_count", iteration_count)
        check_positive("temperature", temperature)
        check_choice("norm_E", norm_E, CONV_NORMS)
        self.temperature, self.pono_c = float(temperature), pono_c
        options = (nef, featEnc_kernel, norm_E, param_free_norm, spectral)
        self.adaptive_model_seg = FeaturePyramid(semantic_nc, *options)
        # The exemplar's pyramid sees image and label map concatenated, image first.
        self.adaptive_model_img = FeaturePyramid(semantic_nc + 3, *options)
        widths = (4 * nef, 4 * nef, 2 * nef, nef)
        self.phi = nn.ModuleList(nn.Conv2d(c, nef, kernel_size=1) for c in widths)  # exemplar
        self.theta = nn.ModuleList(nn.Conv2d(c, nef, kernel_size=1) for c in widths)  # label
        # One PatchMatch + GRU for the three finer levels, as the reference.
        self.patch_match = PatchMatchGRU(nef, iteration_count, self.temperature, offset_rounding)
        init_weights(self)

    def match(
        self,
        thetas: Sequence[torch.Tensor],
        phis: Sequence[torch.Tensor],
        exemplar: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """Hierarchical matching of label features `thetas` to exemplar features `phis` (coarse
        to fine, normalised). Returns the warps, the cycle warp, and each level's first candidate
        (B, H_l * W_l; flat indices into the exemplar's grid at that level), which seeds the next
        level: the argmax at the coarsest level, the last evaluation's best after the GRU update
        at the others."""
        full_h = exemplar.shape[2]
        warps: list[torch.Tensor] = []
        best: list[torch.Tensor] = []
        cycle = exemplar
        for level, (theta, phi) in enumerate(zip(thetas, phis)):
            h, w = theta.shape[2:]
            factor = full_h // h
            ex = F.avg_pool2d(exemplar, factor) if factor > 1 else exemplar
            if level == 0:
                warp, cycle, level_best = full_attention_warp(theta, phi, ex, self.temperature)
            else:
                hc, wc = thetas[level - 1].shape[2:]
                rows, cols = window_candidates(best[-1], (hc, wc), (h, w))
                indices, warp = self.patch_match(theta, phi, ex, rows, cols, generator)
                level_best = indices[:, 0]
            warps.append(warp)
            best.append(level_best)
        return warps, cycle, best

    def forward(
        self,
        label: torch.Tensor,
        exemplar_image: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        h, w = label.shape[2:]
        if h % 8 or w % 8:
            raise ValueError(f"label: height and width must be multiples of 8, got {(h, w)}")

        def pyramid(net: FeaturePyramid, x: torch.Tensor) -> list[torch.Tensor]:
            return [feature_normalize(f, V2_EPS) for f in net(x)]

        feats_label = pyramid(self.adaptive_model_seg, label)
        feats_ex = pyramid(self.adaptive_model_img, torch.cat((exemplar_image, exemplar_label), dim=1))
        # Matching features: centred (over channels with pono_c, else over positions), normalised.
        thetas = [centre_normalize(conv(f), self.pono_c, V2_EPS) for conv, f in zip(self.theta, feats_label)]
        phis = [centre_normalize(conv(f), self.pono_c, V2_EPS) for conv, f in zip(self.phi, feats_ex)]
        warps, cycle, _ = self.match(thetas, phis, exemplar_image, generator)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {
            "warps": warps,
            "warp_cycle": cycle,
            "adapted_label": feats_label,
        }
        if real is not None:
            out["adapted_real"] = pyramid(self.adaptive_model_img, torch.cat((real, label), dim=1))
        return out


class CoCosNet2(nn.Module):
    """Correspondence network and generator, trained together by one optimizer as the
    reference's netCorr + netG.

    forward(label, exemplar_image, exemplar_label, real=None, generator=None) returns the
    correspondence's dict plus "fake" (B, 3, H, W) in [-1, 1] and "warped", the full-resolution
    warp (the last of "warps"). `generator` draws PatchMatch's propagation order.
    """

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        nef: int = 32,
        crop_size: int = 512,
        aspect_ratio: float = 1.0,
        featEnc_kernel: int = 3,
        temperature: float = 0.01,
        iteration_count: int = 5,
        pono_c: bool = True,
        norm_E: str = "spectralinstance",
        param_free_norm: str = "pono",
        spectral: bool = True,
        offset_rounding: str = "reference",
    ) -> None:
        super().__init__()
        self.corr = CoCosNet2Correspondence(
            semantic_nc, nef, featEnc_kernel, temperature, iteration_count, pono_c, norm_E,
            param_free_norm, spectral, offset_rounding,
        )  # fmt: skip
        self.G = CoCosNetGenerator(
            semantic_nc, NUM_LEVELS, ngf, crop_size, aspect_ratio, 8, False, v2_norm(param_free_norm), spectral
        )

    def forward(
        self,
        label: torch.Tensor,
        exemplar_image: torch.Tensor,
        exemplar_label: torch.Tensor,
        real: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        out = self.corr(label, exemplar_image, exemplar_label, real, generator)
        warps = out["warps"]
        assert isinstance(warps, list)
        out["fake"] = self.G(label, warps)
        out["warped"] = warps[-1]
        return out
