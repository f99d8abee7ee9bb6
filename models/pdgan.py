"""PD-GAN (Liu et al., CVPR 2021, "PD-GAN: Probabilistic Diverse GAN for Image Inpainting"): the
SPDNorm generator and its discriminator (the partial-conv U-Net that gives the coarse prior is in
models/pconv.py), following KumapowerLIU/PD-GAN `models/network/pdgan.py`, `models/blocks/SPDNorm.py`,
`models/network/Discriminator.py`, `models/network/pconv.py` and `models/blocks/pconvblocks.py`
layer for layer, so that parameter counts match the reference (186,007,263 for G, 5,533,826
for D and 78,138,435 for the coarse net at its 256 px config, ngf = ndf = 64, z_dim 256).

The generator decodes a noise vector z, like SPADE's VAE mode, through six SPDNorm residual
blocks, each followed by a 2x transposed conv. SPDNorm is SPADE conditioned on the coarse prior
image, its scale and shift multiplied by a probability map: the *hard* map (1 on known pixels,
e^-k on the k-th ring into the hole, e^-K deeper) in the residual path, and the learned *soft*
map (1 on known pixels, a sigmoid attention in the hole) in the shortcut. So the prior holds the
known pixels and the hole's rim most, and leaves the hole's centre most to z.

Masks are hole masks here, 1 = hole (the reference's data convention); the reference's G and
coarse net take the inverse, 1 = known, which happens inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from gantune.errors import GantuneError
from models.discriminator import MultiscaleDiscriminator
from models.spade import CONV_NORMS, check_choice, check_int, conv_norm

ATTENTIONS = ("none", "simam")
# The SPDNorm's parameter-free norm: the reference's positional norm, or its unused options.
SPD_NORMS = ("position", "batch", "instance", "group")
# Per generator block: input and output width in units of ngf, hard-map rings, ring kernel size.
_G_BLOCKS = ((16, 16, 2, 3), (16, 16, 3, 3), (16, 8, 4, 3), (8, 4, 5, 3), (4, 2, 6, 5), (2, 1, 7, 5))
_LATENT_FACTOR = 2 ** len(_G_BLOCKS)


@torch.no_grad()
def init_normal(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's `init_weights('normal', 0.02)`: conv, transposed-conv and linear weights
    N(0, gain), zero biases, affine batch-norm scales N(1, gain).

    Spectrally normed weights keep PyTorch's default init (the reference inits a stale copy of
    them, see `models.spade.init_weights`), and frozen mask convs keep their ones.
    """
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if not parametrize.is_parametrized(m, "weight") and m.weight.requires_grad:
                nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def frozen_ones_conv(fin: int, fout: int, kernel_size: int, stride: int, padding: int) -> nn.Conv2d:
    """A bias-free conv of ones that only counts known pixels: frozen, but a parameter, as in the
    reference (its state-dict key and parameter count)."""
    conv = nn.Conv2d(fin, fout, kernel_size, stride, padding, bias=False)
    nn.init.ones_(conv.weight)
    conv.requires_grad_(False)
    return conv


class PositionalNorm(nn.Module):
    """Normalise each pixel over channels (Li et al., NeurIPS 2019): unbiased variance + eps."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(dim=1, keepdim=True)) / (x.var(dim=1, keepdim=True) + self.eps).sqrt()


class SimAM(nn.Module):
    """Parameter-free energy-based attention (Yang et al., ICML 2021): x * sigmoid(1 / e*), the
    inverse minimal energy of each activation against its channel's spatial statistics."""

    def __init__(self, lambda_: float = 1e-4) -> None:
        super().__init__()
        self.lambda_ = lambda_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)).square()
        inv_energy = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.lambda_)) + 0.5
        return x * torch.sigmoid(inv_energy)


def norm_layer(norm: str, channels: int, groups: int, affine: bool) -> nn.Module:
    """position (parameter-free only), batch, instance or group (`groups` groups) norm."""
    if norm == "position":
        return PositionalNorm()
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    return nn.GroupNorm(groups, channels, affine=affine)


class SPDNorm(nn.Module):
    """SPADE on the prior image (already at x's size), scale and shift weighted by a map:
    norm(x) * (1 + gamma * p) + beta * p."""

    def __init__(
        self, norm_nc: int, prior_nc: int = 3, norm: str = "position", groups: int = 32, nhidden: int = 128
    ) -> None:
        super().__init__()
        self.param_free_norm = norm_layer(norm, norm_nc, groups, affine=False)
        self.mlp_activate = nn.Sequential(nn.Conv2d(prior_nc, nhidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_activate(prior)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv) * weight) + self.mlp_beta(actv) * weight


class SPDNormResBlock(nn.Module):
    """Residual path (SPDNorm with the hard map, leaky ReLU, conv) x 2, plus a shortcut of SPDNorm
    with the soft map and a bias-free 1x1 conv, learned at every width as in the reference.

    The hard map has `mask_number` rings, each a dilation of the known region by a
    `mask_ks` x `mask_ks` window.
    """

    def __init__(
        self,
        fin: int,
        fout: int,
        mask_number: int,
        mask_ks: int,
        spectral: bool = True,
        norm: str = "position",
        groups: int = 32,
        nhidden: int = 128,
        prior_nc: int = 3,
    ) -> None:
        super().__init__()
        fmiddle = min(fin, fout)
        sn = "spectral" if spectral else "none"
        self.conv_0 = conv_norm(nn.Conv2d(fin, fmiddle, 3, padding=1), sn)
        self.conv_1 = conv_norm(nn.Conv2d(fmiddle, fout, 3, padding=1), sn)
        self.conv_s = conv_norm(nn.Conv2d(fin, fout, 1, bias=False), sn)
        self.norm_0 = SPDNorm(fin, prior_nc, norm, groups, nhidden)
        self.norm_1 = SPDNorm(fmiddle, prior_nc, norm, groups, nhidden)
        self.norm_s = SPDNorm(fin, prior_nc, norm, groups, nhidden)
        # Never used by the reference's forward; frozen, kept for its parameter count and keys.
        self.v = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.mask_number = mask_number
        self.mask_conv = frozen_ones_conv(1, 1, mask_ks, 1, math.ceil((mask_ks - 1) / 2))
        self.conv_to_f = nn.Sequential(
            nn.Conv2d(prior_nc, nhidden, 3, padding=1),
            nn.InstanceNorm2d(nhidden),
            nn.ReLU(),
            nn.Conv2d(nhidden, fin, 3, padding=1),
        )
        self.attention = nn.Sequential(nn.Conv2d(2 * fin, fin, 3, padding=1), nn.Sigmoid())

    def hard_map(self, known: torch.Tensor) -> torch.Tensor:
        """known (N, 1, h, w), 1 = known: 1 there, e^-i on the i-th ring of dilation into the hole
        (i = 1 .. mask_number), e^-mask_number beyond the last ring."""
        rings = torch.zeros_like(known)
        current = known
        with torch.no_grad():  # the reference's ring conv has no gradient; only its zeros count
            for i in range(self.mask_number):
                grown = (self.mask_conv(current) != 0).to(known.dtype)
                rings = rings + (grown - current) * math.exp(-(i + 1))
                current = grown
        return rings + known + (1 - current) * math.exp(-self.mask_number)

    def soft_map(self, x: torch.Tensor, prior: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """1 on known pixels; in the hole, a sigmoid of a conv over prior features and x."""
        attention = self.attention(torch.cat((self.conv_to_f(prior), x), dim=1))
        return (1 - known) * attention + known

    def forward(self, x: torch.Tensor, prior: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """x (N, fin, h, w); prior (N, 3, H, W) and known (N, 1, H, W) at any size, resized here."""
        prior = F.interpolate(prior, size=x.shape[2:], mode="nearest")
        known = F.interpolate(known, size=x.shape[2:], mode="nearest")
        hard = self.hard_map(known)
        x_s = self.conv_s(self.norm_s(x, prior, self.soft_map(x, prior, known)))
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, prior, hard), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, prior, hard), 0.2))
        return x_s + dx


class _GeneratorUnit(nn.Module):
    """An SPDNorm block, optional SimAM, then a 4x4 stride-2 transposed conv (2x upsampling)."""

    def __init__(self, block: SPDNormResBlock, fout: int, attention: str) -> None:
        super().__init__()
        self.block = block
        self.attention = SimAM() if attention == "simam" else nn.Identity()
        self.up = nn.ConvTranspose2d(fout, fout, kernel_size=4, stride=2, padding=1)

    def forward(self, x: torch.Tensor, prior: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return self.up(self.attention(self.block(x, prior, known)))


class PDGANGenerator(nn.Module):
    """Noise, coarse prior and hole mask to an RGB image in [-1, 1] (the whole image: the caller
    composites it with the known pixels where it needs to).

    A linear map of z starts a (sh, sw) grid, sw = crop_size / 64, sh = round(sw / aspect_ratio);
    six SPDNorm units upsample it 64x, widths ngf * (16, 16, 8, 4, 2, 1). `norm` is the SPDNorm's
    parameter-free norm (the reference's "position"; "group" uses `groups`), `attention` "simam"
    adds SimAM after each residual block, `nhidden` is the SPDNorm's hidden width (128 in the
    reference). sh >= 2 or sw >= 2: the first block's instance norm needs two pixels.
    """

    def __init__(
        self,
        ngf: int = 64,
        z_dim: int = 256,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        spectral: bool = True,
        norm: str = "position",
        groups: int = 32,
        attention: str = "none",
        nhidden: int = 128,
    ) -> None:
        super().__init__()
        check_int("ngf", ngf)
        check_int("z_dim", z_dim)
        check_int("crop_size", crop_size)
        check_int("nhidden", nhidden)
        check_int("groups", groups)
        check_choice("norm", norm, SPD_NORMS)
        check_choice("attention", attention, ATTENTIONS)
        if norm == "group" and ngf % groups:
            raise GantuneError(f"groups: expected a divisor of ngf={ngf} with norm='group', got {groups}")
        if crop_size % _LATENT_FACTOR:
            raise GantuneError(f"crop_size: expected a multiple of {_LATENT_FACTOR}, got {crop_size}")
        is_number = isinstance(aspect_ratio, (int, float)) and not isinstance(aspect_ratio, bool)
        if not is_number or not aspect_ratio > 0:
            raise GantuneError(f"aspect_ratio: expected a number > 0, got {aspect_ratio!r}")
        self.ngf, self.z_dim = ngf, z_dim
        self.sw = crop_size // _LATENT_FACTOR
        self.sh = round(self.sw / aspect_ratio)
        if self.sh < 1 or self.sh * self.sw < 2:
            raise GantuneError(
                f"aspect_ratio: {aspect_ratio} with crop_size {crop_size} leaves a latent grid of "
                f"{self.sh}x{self.sw}; the first block needs at least 2 pixels"
            )
        self.fc = nn.Linear(z_dim, 16 * ngf * self.sh * self.sw)
        self.generated = nn.ModuleList(
            _GeneratorUnit(
                SPDNormResBlock(a * ngf, b * ngf, number, ks, spectral, norm, groups, nhidden), b * ngf, attention
            )
            for a, b, number, ks in _G_BLOCKS
        )
        # The reference hard-codes 64 input channels here, i.e. ngf at its default.
        self.conv_img = nn.Conv2d(ngf, 3, 3, padding=1)
        init_normal(self)

    @property
    def output_size(self) -> tuple[int, int]:
        return self.sh * _LATENT_FACTOR, self.sw * _LATENT_FACTOR

    def forward(self, prior: torch.Tensor, mask: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """prior: (N, 3, H, W) coarse image in [-1, 1]; mask: (N, 1, H, W), 1 = hole; z: (N, z_dim),
        drawn from N(0, I) when None. (H, W) is `output_size`."""
        n = prior.shape[0]
        if prior.shape[2:] != self.output_size or mask.shape != (n, 1, *self.output_size):
            raise ValueError(
                f"prior, mask: expected (N, 3, H, W) and (N, 1, H, W) with (H, W) = {self.output_size}, "
                f"got {tuple(prior.shape)} and {tuple(mask.shape)}"
            )
        if z is None:
            z = torch.randn(n, self.z_dim, dtype=prior.dtype, device=prior.device)
        if z.shape != (n, self.z_dim):
            raise ValueError(f"z: expected ({n}, {self.z_dim}), got {tuple(z.shape)}")
        known = 1 - mask
        x = self.fc(z).view(n, 16 * self.ngf, self.sh, self.sw)
        for unit in self.generated:
            x = unit(x, prior, known)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class PDGANDiscriminator(nn.Module):
    """SPADE's multiscale PatchGAN on [hole mask repeated to `mask_nc` channels, image], the
    reference's D (`input_nc_D` = 6), normal-initialised as the reference. Returns one feature
    list per scale, the patch logits last, for hinge and feature-matching losses."""

    def __init__(
        self,
        ndf: int = 64,
        n_layers_D: int = 4,
        num_D: int = 2,
        norm_D: str = "spectralinstance",
        mask_nc: int = 3,
    ) -> None:
        super().__init__()
        check_int("mask_nc", mask_nc)
        check_choice("norm_D", norm_D, CONV_NORMS)
        self.mask_nc = mask_nc
        self.multiscale = MultiscaleDiscriminator(mask_nc + 3, num_D, ndf, n_layers_D, norm_D)
        init_normal(self)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> list[list[torch.Tensor]]:
        """image (N, 3, H, W) in [-1, 1]; mask (N, 1, H, W), 1 = hole."""
        return self.multiscale(torch.cat((mask.expand(-1, self.mask_nc, -1, -1), image), dim=1))
