"""U-GAT-IT (Kim et al., ICLR 2020, "Unsupervised Generative Attentional Networks with Adaptive
Layer-Instance Normalization for Image-to-Image Translation"): the generator with its CAM attention
and AdaILN decoder, the CAM discriminator and the rho clipper, following znxlwm/UGATIT-pytorch
`networks.py` and `UGATIT.py`. The losses: losses/ugatit.py.

Parameter counts match the reference at its 256 px config (ch 64, n_res 4): 278,959,808 for the
full generator (its gamma/beta MLP reads the whole 64x64x256 feature map), 10,589,888 for `light`
(the MLP reads the pooled features), 53,130,176 for the global (7-layer) and 3,290,560 for the local
(5-layer) discriminator. Module names are the reference's, so its generator checkpoints load with
`load_state_dict`; discriminator checkpoints go through `convert_reference_state_dict` first.

Two switches, off by default, are ours: `scse` adds a concurrent spatial and channel
squeeze-excitation block (Roy et al., MICCAI 2018) after every generator residual block, and
`upsample="deconv"` replaces the decoder's nearest 2x upsampling + 3x3 conv by a stride-2 3x3
transposed conv with the same parameter count.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from gantune.errors import GantuneError
from models.cyclegan import ResnetBlock
from models.spade import check_choice, check_int

UPSAMPLES = ("resize", "deconv")


def _layer_instance_mix(x: torch.Tensor, rho: torch.Tensor, eps: float) -> torch.Tensor:
    """rho * instance-normed x + (1 - rho) * layer-normed x. Unbiased variances, as the
    reference's torch.var (InstanceNorm2d would use the biased one)."""
    x_in = (x - x.mean(dim=(2, 3), keepdim=True)) / torch.sqrt(x.var(dim=(2, 3), keepdim=True) + eps)
    x_ln = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(x.var(dim=(1, 2, 3), keepdim=True) + eps)
    return rho * x_in + (1 - rho) * x_ln


class AdaILN(nn.Module):
    """Adaptive layer-instance norm: the IN/LN mix, learned per channel (rho, from 0.9), scaled
    and shifted per sample by (B, C) gamma and beta from the generator's MLP."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        check_int("num_features", num_features)
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = _layer_instance_mix(x, self.rho, self.eps)
        return out * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Layer-instance norm of the decoder's upsampling layers: the IN/LN mix (rho from 0, so
    layer norm at first) and a learned per-channel affine."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        check_int("num_features", num_features)
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _layer_instance_mix(x, self.rho, self.eps) * self.gamma + self.beta


@torch.no_grad()
def clip_rho(net: nn.Module, low: float = 0.0, high: float = 1.0) -> None:
    """The reference's RhoClipper(0, 1): clamp every (Ada)ILN rho into [low, high]. Call it on
    both generators after each generator optimizer step."""
    for m in net.modules():
        if isinstance(m, (AdaILN, ILN)):
            m.rho.clamp_(low, high)


class ResnetAdaILNBlock(nn.Module):
    """x + (pad, 3x3 conv, AdaILN, ReLU, pad, 3x3 conv, AdaILN)(x), bias-free convs."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel_size=3, bias=False)
        self.norm1 = AdaILN(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size=3, bias=False)
        self.norm2 = AdaILN(dim)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")), gamma, beta))
        out = self.norm2(self.conv2(F.pad(out, (1, 1, 1, 1), mode="reflect")), gamma, beta)
        return out + x


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al., MICCAI 2018): x gated per
    channel (pool, fc to C / reduction, ReLU, fc, sigmoid) plus x gated per pixel (1x1 conv to one
    channel, sigmoid), added as the paper's scSE."""

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        check_int("channels", channels)
        check_int("reduction", reduction)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * channel_gate[:, :, None, None] + x * torch.sigmoid(self.spatial(x))


def _cam(
    x: torch.Tensor, gap_fc: nn.Module, gmp_fc: nn.Module, gap_weight: torch.Tensor, gmp_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation map attention: logits (B, 2) of one-unit fcs on the average- and
    max-pooled features, and the features scaled per channel by each fc's weights, concatenated
    (B, 2C, H, W)."""
    gap_logit = gap_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
    gmp_logit = gmp_fc(F.adaptive_max_pool2d(x, 1).flatten(1))
    attended = torch.cat((x * gap_weight[:, :, None, None], x * gmp_weight[:, :, None, None]), dim=1)
    return torch.cat((gap_logit, gmp_logit), dim=1), attended


class UGATITGenerator(nn.Module):
    """Image (B, input_nc, H, W) to (image (B, output_nc, H, W) in [-1, 1], CAM logits (B, 2),
    heatmap (B, 1, H / 4, W / 4)).

    Encoder: 7x7 conv, two stride-2 3x3 convs (ngf, 2 ngf, 4 ngf; instance norm, ReLU), `n_blocks`
    residual blocks. CAM: average- and max-pool logits, features weighted by the two fcs, a 1x1
    conv back to 4 ngf and ReLU; the heatmap is its channel sum. An MLP (two bias-free fcs with
    ReLU) maps the flattened features (`light`: their spatial mean) to per-sample gamma and beta
    for the `n_blocks` AdaILN residual blocks of the decoder, then two 2x upsamplings with 3x3 conv,
    ILN and ReLU, and a 7x7 conv with tanh. All convs are bias-free except the CAM's 1x1.

    The full model only takes `img_size` x `img_size` inputs (its MLP's width is fixed by them);
    `light` takes any size (a multiple of 4 comes back at its own size). The reference uses PyTorch's default init.
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 4,
        img_size: int = 256,
        light: bool = False,
        scse: bool = False,
        scse_reduction: int = 2,
        upsample: str = "resize",
    ) -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("output_nc", output_nc)
        check_int("ngf", ngf)
        check_int("n_blocks", n_blocks, minimum=0)
        check_int("img_size", img_size)
        check_int("scse_reduction", scse_reduction)
        check_choice("upsample", upsample, UPSAMPLES)
        if img_size % 4:
            raise GantuneError(f"img_size: expected a multiple of 4, got {img_size}")
        self.n_blocks, self.img_size, self.light, self.scse = n_blocks, img_size, light, scse
        dim = 4 * ngf

        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(),
        ]
        for mult in (1, 2):
            conv = nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, bias=False)
            down += [nn.ReflectionPad2d(1), conv, nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU()]
        self._n_stem = len(down)
        down += [ResnetBlock(dim, "reflect", "instance", use_dropout=False, use_bias=False) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)

        self.gap_fc = nn.Linear(dim, 1, bias=False)
        self.gmp_fc = nn.Linear(dim, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * dim, dim, kernel_size=1)
        mlp_in = dim if light else (img_size // 4) ** 2 * dim
        self.FC = nn.Sequential(
            nn.Linear(mlp_in, dim, bias=False), nn.ReLU(), nn.Linear(dim, dim, bias=False), nn.ReLU()
        )
        self.gamma = nn.Linear(dim, dim, bias=False)
        self.beta = nn.Linear(dim, dim, bias=False)
        # The reference's names UpBlock1_1 ... UpBlock1_n, kept so its checkpoints load.
        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaILNBlock(dim))

        up: list[nn.Module] = []
        for mult in (4, 2):
            fin, fout = ngf * mult, ngf * mult // 2
            if upsample == "resize":
                up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1)]
                up.append(nn.Conv2d(fin, fout, kernel_size=3, bias=False))
            else:
                up.append(
                    nn.ConvTranspose2d(fin, fout, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False)
                )
            up += [ILN(fout), nn.ReLU()]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

        if scse:
            # Separate lists, so that the reference's indices in DownBlock stay as they are.
            self.scse_down = nn.ModuleList(SCSE(dim, scse_reduction) for _ in range(n_blocks))
            self.scse_up = nn.ModuleList(SCSE(dim, scse_reduction) for _ in range(n_blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.light and tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"UGATITGenerator: built for {self.img_size} px (light=False), got {tuple(x.shape[2:])}"
            )
        for i, layer in enumerate(self.DownBlock):
            x = layer(x)
            if self.scse and i >= self._n_stem:
                x = self.scse_down[i - self._n_stem](x)

        # The CAM weights the features by the fc weights that also give its logits.
        cam_logit, x = _cam(x, self.gap_fc, self.gmp_fc, self.gap_fc.weight, self.gmp_fc.weight)
        x = F.relu(self.conv1x1(x))
        heatmap = x.sum(dim=1, keepdim=True)

        style = self.FC(x.mean(dim=(2, 3)) if self.light else x.flatten(1))
        gamma, beta = self.gamma(style), self.beta(style)
        for i in range(self.n_blocks):
            x = getattr(self, f"UpBlock1_{i + 1}")(x, gamma, beta)
            if self.scse:
                x = self.scse_up[i](x)
        return self.UpBlock2(x), cam_logit, heatmap


class UGATITDiscriminator(nn.Module):
    """Image (B, input_nc, H, W) to (patch logits (B, 1, h, w), CAM logits (B, 2), heatmap
    (B, 1, h + 1, w + 1)).

    Reflection-padded 4x4 spectral-normed convs with leaky ReLU 0.2: `n_layers - 2` with stride 2
    (widths ndf, 2 ndf, ...) and one with stride 1, doubling the width again, to C = ndf *
    2**(n_layers - 2); then the CAM (spectral-normed fcs, a plain 1x1 conv, leaky ReLU) and a
    spectral-normed 4x4 conv to one channel. The reference pairs a global D (n_layers 7: 256 px
    gives 6x6 logits; it needs inputs of at least 128 px) with a local one (n_layers 5: 30x30).

    Spectral norm is torch's parametrization: with the same weights and u, v it gives the
    reference's outputs exactly in eval mode. In training its one power-iteration step per forward
    updates u before v (the reference's older spectral_norm: v before u), a difference that fades
    as u and v converge.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("ndf", ndf)
        check_int("n_layers", n_layers, minimum=3)

        def block(fin: int, fout: int, stride: int) -> list[nn.Module]:
            conv = spectral_norm(nn.Conv2d(fin, fout, kernel_size=4, stride=stride))
            return [nn.ReflectionPad2d(1), conv, nn.LeakyReLU(0.2)]

        layers = block(input_nc, ndf, 2)
        for i in range(1, n_layers - 2):
            layers += block(ndf * 2 ** (i - 1), ndf * 2**i, 2)
        layers += block(ndf * 2 ** (n_layers - 3), ndf * 2 ** (n_layers - 2), 1)
        self.model = nn.Sequential(*layers)

        dim = ndf * 2 ** (n_layers - 2)
        self.gap_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(dim, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * dim, dim, kernel_size=1)
        self.conv = spectral_norm(nn.Conv2d(dim, 1, kernel_size=4, bias=False))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model(x)
        # As the reference, whose `parameters()[0]` of a spectral-normed fc is the raw weight: the
        # features are weighted by the fcs' weights before spectral normalisation.
        gap_weight = self.gap_fc.parametrizations.weight.original
        gmp_weight = self.gmp_fc.parametrizations.weight.original
        cam_logit, x = _cam(x, self.gap_fc, self.gmp_fc, gap_weight, gmp_weight)
        x = F.leaky_relu(self.conv1x1(x), 0.2)
        heatmap = x.sum(dim=1, keepdim=True)
        return self.conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), cam_logit, heatmap


def convert_reference_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reference checkpoint's state dict with the keys of torch.nn.utils.spectral_norm
    (`weight_orig`, `weight_u`, `weight_v`) renamed to those of the parametrization used here.
    Keys without spectral norm pass unchanged, so generator state dicts come through as they are."""
    renames = {
        "weight_orig": "parametrizations.weight.original",
        "weight_u": "parametrizations.weight.0._u",
        "weight_v": "parametrizations.weight.0._v",
    }
    out = {}
    for key, value in state.items():
        prefix, _, last = key.rpartition(".")
        new_last = renames.get(last, last)
        out[f"{prefix}.{new_last}" if prefix else new_last] = value
    return out


class GlobalLocalDiscriminator(nn.Module):
    """One domain's two discriminators, the reference's disG* (global) and disL* (local):
    `forward(x)` returns [global(x), local(x)], each (logits, cam_logits, heatmap)."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers_global: int = 7, n_layers_local: int = 5) -> None:
        super().__init__()
        self.global_d = UGATITDiscriminator(input_nc, ndf, n_layers_global)
        self.local_d = UGATITDiscriminator(input_nc, ndf, n_layers_local)

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return [self.global_d(x), self.local_d(x)]
