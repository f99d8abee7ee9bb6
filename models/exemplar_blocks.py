"""Blocks shared by the exemplar-based families: CoCosNet v1 (`models.cocosnet`), CoCosNet v2
(`models.cocosnet2`) and UNITE (`models.unite`).

All three official repositories (microsoft/CoCosNet, microsoft/CoCosNet-v2, fnzhan/UNITE) grew
from CoCosNet v1's `models/networks/{normalization,architecture,correspondence,generator}.py`;
what they still share lives here, written once:
- positional normalisation (PONO) and the choice of SPADE's parameter-free norm (`ParamFreeNorm`:
  v2 differs in PONO's epsilon and an affine batch norm);
- SPADE with reflection-padded convs, and the residual block around it or around any other
  conditional norm (UNITE's SEACE), optionally dilated (UNITE's adaptors);
- the correspondence nets' residual block, SAGAN self-attention, feature normalisation, patch
  vectors and the softmax warp;
- `CoCosNetGenerator`, the SPADE decoder conditioned on [warped exemplar(s), label map] of both
  CoCosNet versions (v1: one warp, 16 ngf head, self-attention; v2: four warps, 8 ngf head).

Where `models.spade` has the same block (conv_norm, init_weights) it is reused; its SPADE pads
with zeros, these with reflection, so they are separate classes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantune.errors import GantuneError
from models.spade import check_choice, check_int, init_weights

PARAM_FREE_NORMS = ("pono", "instance", "batch")  # "pono": the references' --PONO, set in all their scripts
NHIDDEN = 128  # SPADE's hidden width in the references
FLOAT_EPS = sys.float_info.epsilon  # the references' feature_normalize epsilon (v2's is 1e-10)


def check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise GantuneError(f"{name}: expected a number > 0, got {value!r}")


def latent_grid(crop_size: int, aspect_ratio: float) -> tuple[int, int]:
    """The (sh, sw) = (crop_size / 32 / aspect_ratio, crop_size / 32) grid the generators start
    from. Reflection padding by 1 needs at least 2 x 2 (the references fail below)."""
    check_int("crop_size", crop_size)
    check_positive("aspect_ratio", aspect_ratio)
    if crop_size % 32 or crop_size < 64:
        raise GantuneError(f"crop_size: expected a multiple of 32, >= 64, got {crop_size}")
    sw = crop_size // 32
    sh = round(sw / aspect_ratio)
    if sh < 2:
        raise GantuneError(f"aspect_ratio: {aspect_ratio} leaves a latent grid of height {sh} (< 2)")
    return sh, sw


def _sn(conv: nn.Conv2d, spectral: bool) -> nn.Module:
    return spectral_norm(conv) if spectral else conv


def feature_normalize(x: torch.Tensor, eps: float = FLOAT_EPS) -> torch.Tensor:
    """x / (||x||_2 over channels (dim 1) + eps), the references' `feature_normalize`."""
    return x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)


def centre_normalize(x: torch.Tensor, channel_centering: bool = True, eps: float = FLOAT_EPS) -> torch.Tensor:
    """x (B, C, ...) centred on its mean over channels (--PONO_C) or, per channel, over positions,
    then L2-normalised over channels: the references' matching features."""
    dims = 1 if channel_centering else tuple(range(2, x.ndim))
    return feature_normalize(x - x.mean(dim=dims, keepdim=True), eps)


def patch_vectors(x: torch.Tensor, match_kernel: int, channel_centering: bool = True) -> torch.Tensor:
    """The k x k patches of x (B, C, H, W), zero-padded at the border, as centred unit vectors
    (B, C k k, H W), channel-major."""
    v = x.flatten(2) if match_kernel == 1 else F.unfold(x, match_kernel, padding=match_kernel // 2)
    return centre_normalize(v, channel_centering)


def attention_warp(attn: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """attn (B, N_out, N_in) applied to values (B, C, h, w), h * w = N_in: (B, C, *size)."""
    out = torch.bmm(attn, values.flatten(2).transpose(1, 2))
    return out.transpose(1, 2).reshape(values.shape[0], values.shape[1], *size)


class PositionalNorm(nn.Module):
    """PONO: each position normalised over its channels, (x - mean_c) / sqrt(var_c + eps), with the
    unbiased variance as the references' `PositionalNorm2d` (eps 1e-5; CoCosNet v2's 1e-8)."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=1, keepdim=True)) / x.var(dim=1, keepdim=True).add(self.eps).sqrt()


@dataclass(frozen=True)
class ParamFreeNorm:
    """Which parameter-free norm a SPADE-style layer applies: "pono", "instance" or "batch" (the
    references' syncbatch). CoCosNet v2 uses pono_eps 1e-8 and an affine batch norm."""

    kind: str = "pono"
    pono_eps: float = 1e-5
    batch_affine: bool = False

    def __post_init__(self) -> None:
        check_choice("param_free_norm", self.kind, PARAM_FREE_NORMS)

    def build(self, nc: int) -> nn.Module:
        if self.kind == "pono":
            return PositionalNorm(self.pono_eps)
        if self.kind == "instance":
            return nn.InstanceNorm2d(nc, affine=False)
        return nn.BatchNorm2d(nc, affine=self.batch_affine)


class ReflectSPADE(nn.Module):
    """SPADE of the exemplar references: a parameter-free norm, then a per-pixel scale and shift
    from the condition map, its three 3x3 convs reflection-padded (their module layout)."""

    def __init__(
        self, norm_nc: int, cond_nc: int, norm: ParamFreeNorm = ParamFreeNorm(), nhidden: int = NHIDDEN
    ) -> None:
        super().__init__()
        check_int("norm_nc", norm_nc)
        check_int("cond_nc", cond_nc)
        check_int("nhidden", nhidden)
        self.param_free_norm = norm.build(norm_nc)
        self.mlp_shared = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(cond_nc, nhidden, 3), nn.ReLU())
        self.pad = nn.ReflectionPad2d(1)
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        actv = self.pad(self.mlp_shared(F.interpolate(cond, size=x.shape[2:], mode="nearest")))
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class ReflectResBlock(nn.Module):
    """SPADE's pre-activation residual block with reflection padding: (norm, leaky ReLU 0.2,
    reflection pad, 3x3 conv of `dilation`) x 2, and (norm, bias-free 1x1 conv) as a learned
    shortcut on a width change; convs spectrally normed. `make_norm(nc)` builds each conditional
    norm, called as norm(x, *cond): ReflectSPADE (`spade_block`) or UNITE's SEACE."""

    def __init__(
        self, fin: int, fout: int, make_norm: Callable[[int], nn.Module], spectral: bool = True, dilation: int = 1
    ) -> None:
        super().__init__()
        check_int("fin", fin)
        check_int("fout", fout)
        check_int("dilation", dilation)
        self.learned_shortcut, self.dilation = fin != fout, dilation
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin, fmiddle, 3, dilation=dilation), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle, fout, 3, dilation=dilation), spectral)
        self.norm_0 = make_norm(fin)
        self.norm_1 = make_norm(fmiddle)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), spectral)
            self.norm_s = make_norm(fin)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (self.dilation,) * 4, mode="reflect")

    def forward(self, x: torch.Tensor, *cond: torch.Tensor | None) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, *cond)) if self.learned_shortcut else x
        dx = self.conv_0(self._pad(F.leaky_relu(self.norm_0(x, *cond), 0.2)))
        dx = self.conv_1(self._pad(F.leaky_relu(self.norm_1(dx, *cond), 0.2)))
        return x_s + dx


def spade_block(
    fin: int,
    fout: int,
    cond_nc: int,
    norm: ParamFreeNorm = ParamFreeNorm(),
    spectral: bool = True,
    dilation: int = 1,
    nhidden: int = NHIDDEN,
) -> ReflectResBlock:
    """The references' SPADEResnetBlock (UNITE's Ada_SPADEResnetBlock with `dilation`)."""
    return ReflectResBlock(fin, fout, lambda nc: ReflectSPADE(nc, cond_nc, norm, nhidden), spectral, dilation)


class CorrResBlock(nn.Module):
    """The correspondence nets' residual block: (reflection pad, 3x3 conv, instance norm) x 2 with
    one PReLU (a single slope) after the first and after the sum."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        check_int("ch", ch)
        self.conv1 = nn.Conv2d(ch, ch, 3)
        self.conv2 = nn.Conv2d(ch, ch, 3)
        self.norm = nn.InstanceNorm2d(ch, affine=False)
        self.prelu = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prelu(self.norm(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect"))))
        return self.prelu(self.norm(self.conv2(F.pad(out, (1, 1, 1, 1), mode="reflect"))) + x)


class SelfAttention(nn.Module):
    """SAGAN / BigGAN self-attention (the references' `Attention`): x + gamma * o(g softmax(theta^T
    phi)), bias-free 1x1 convs (ch/8 query and key, ch/2 value), key and value max-pooled 2x,
    gamma starting at 0. H and W must be even."""

    def __init__(self, ch: int, spectral: bool = True) -> None:
        super().__init__()
        check_int("ch", ch, minimum=8)
        self.ch = ch
        self.theta = _sn(nn.Conv2d(ch, ch // 8, 1, bias=False), spectral)
        self.phi = _sn(nn.Conv2d(ch, ch // 8, 1, bias=False), spectral)
        self.g = _sn(nn.Conv2d(ch, ch // 2, 1, bias=False), spectral)
        self.o = _sn(nn.Conv2d(ch // 2, ch, 1, bias=False), spectral)
        # Shape (1,), not the reference's 0-dim scalar: DeepSpeed cannot flatten 0-dim parameters.
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # (B, ch/8, HW)
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # (B, ch/8, HW/4)
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # (B, ch/2, HW/4)
        beta = F.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # (B, HW, HW/4)
        o = self.o(torch.bmm(g, beta.transpose(1, 2)).view(b, self.ch // 2, h, w))
        return self.gamma * o + x


class CoCosNetGenerator(nn.Module):
    """The SPADEGenerator of both CoCosNet references: the warped exemplar(s), each resized
    (nearest) to the label's size, and the label map concatenated, warps first, into the SPADE
    condition (3 num_warps + semantic_nc channels), to an RGB image in [-1, 1].

    A 3x3 conv of the condition at the (sh, sw) grid of `latent_grid` starts the decoder; seven
    reflection-padded SPADE blocks follow, widths (head, head, head, 8, 4, 2, 1) x ngf with
    head = `head_mult`, with five 2x nearest upsamplings and, with `use_attention`, self-attention
    before the 4 ngf -> 2 ngf block. v1: num_warps 1, head_mult 16, use_attention; v2: num_warps 4,
    head_mult 8, no attention, ParamFreeNorm(pono_eps=1e-8, batch_affine=True).
    """

    def __init__(
        self,
        semantic_nc: int,
        num_warps: int = 1,
        ngf: int = 64,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        head_mult: int = 16,
        use_attention: bool = True,
        norm: ParamFreeNorm = ParamFreeNorm(),
        spectral: bool = True,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("num_warps", num_warps)
        check_int("ngf", ngf, minimum=2 if use_attention else 1)  # attention needs 4 ngf >= 8
        check_int("head_mult", head_mult, minimum=8)
        self.sh, self.sw = latent_grid(crop_size, aspect_ratio)
        self.num_warps, self.use_attention = num_warps, use_attention
        cond_nc = 3 * num_warps + semantic_nc
        nf, head = ngf, head_mult * ngf

        def block(fin: int, fout: int) -> ReflectResBlock:
            return spade_block(fin, fout, cond_nc, norm, spectral)

        self.fc = nn.Conv2d(cond_nc, head, 3, padding=1)
        self.head_0 = block(head, head)
        self.G_middle_0 = block(head, head)
        self.G_middle_1 = block(head, head)
        self.up_0 = block(head, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        if use_attention:
            self.attn = SelfAttention(4 * nf, spectral)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, nf)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        init_weights(self)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, label: torch.Tensor, warps: Sequence[torch.Tensor]) -> torch.Tensor:
        """label: (B, semantic_nc, 32 sh, 32 sw) one-hot; warps: num_warps warped exemplars
        (B, 3, h, w), coarse to fine."""
        if len(warps) != self.num_warps:
            raise ValueError(f"warps: expected {self.num_warps} warped exemplars, got {len(warps)}")
        size = label.shape[2:]
        resized = [w if w.shape[2:] == size else F.interpolate(w, size=size, mode="nearest") for w in warps]
        cond = torch.cat((*resized, label), dim=1)
        x = self.fc(F.interpolate(cond, size=(self.sh, self.sw), mode="nearest"))
        x = self.head_0(x, cond)
        x = self.G_middle_0(self._up(x), cond)
        x = self.G_middle_1(x, cond)
        x = self.up_0(self._up(x), cond)
        x = self.up_1(self._up(x), cond)
        x = self._up(x)
        if self.use_attention:
            x = self.attn(x)
        x = self.up_2(x, cond)
        x = self.up_3(self._up(x), cond)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))
