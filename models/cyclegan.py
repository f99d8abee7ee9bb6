"""CycleGAN (Zhu et al., ICCV 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks"): the ResNet generator and the 70x70 PatchGAN discriminator, following
junyanz/pytorch-CycleGAN-and-pix2pix `models/networks.py` (ResnetGenerator, ResnetBlock,
NLayerDiscriminator, init_weights). The losses and the history pool: losses/cyclegan.py.

Parameter counts match the reference at its default config (resnet_9blocks, ngf 64, instance norm,
no dropout; basic D, ndf 64): 11,378,179 per generator and 2,764,737 per discriminator. The
module layout and names are the reference's (`model.<index>...`), so its checkpoints load with
`load_state_dict`.
"""

from __future__ import annotations

import torch
from torch import nn

from gantune.errors import GantuneError
from models.spade import check_choice, check_int

NORMS = ("instance", "batch")
PADDINGS = ("reflect", "replicate", "zero")


def _norm(norm: str, channels: int) -> nn.Module:
    # The reference's instance norm has no affine parameters and keeps no running statistics.
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=True)


@torch.no_grad()
def init_normal(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's `init_weights('normal', 0.02)`: conv, deconv and linear weights N(0, gain),
    their biases zero, batch-norm scales N(1, gain) and shifts zero."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    """x + (pad, 3x3 conv, norm, ReLU, [dropout 0.5], pad, 3x3 conv, norm)(x), at a fixed width."""

    def __init__(
        self,
        dim: int,
        padding_type: str = "reflect",
        norm: str = "instance",
        use_dropout: bool = False,
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        check_choice("padding_type", padding_type, PADDINGS)
        check_choice("norm", norm, NORMS)

        def padded_conv() -> list[nn.Module]:
            if padding_type == "zero":
                return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=use_bias)]
            pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
            return [pad, nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias)]

        layers = [*padded_conv(), _norm(norm, dim), nn.ReLU()]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*padded_conv(), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image (B, input_nc, H, W) to image (B, output_nc, H, W) in [-1, 1].

    A 7x7 conv, two stride-2 3x3 convs (widths ngf, 2 ngf, 4 ngf), `n_blocks` residual blocks at
    4 ngf, two stride-2 3x3 transposed convs back to ngf, and a 7x7 conv with tanh; norm and ReLU
    after every conv but the last. H and W must be multiples of 4 to come back at the input size.
    As the reference, convs carry a bias only with instance norm (batch norm's shift replaces it).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("output_nc", output_nc)
        check_int("ngf", ngf)
        check_int("n_blocks", n_blocks, minimum=0)
        check_choice("norm", norm, NORMS)
        check_choice("padding_type", padding_type, PADDINGS)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=use_bias),
            _norm(norm, ngf),
            nn.ReLU(),
        ]
        for mult in (1, 2):
            conv = nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias)
            layers += [conv, _norm(norm, ngf * mult * 2), nn.ReLU()]
        layers += [ResnetBlock(4 * ngf, padding_type, norm, use_dropout, use_bias) for _ in range(n_blocks)]
        for mult in (4, 2):
            deconv = nn.ConvTranspose2d(
                ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias
            )
            layers += [deconv, _norm(norm, ngf * mult // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchGANDiscriminator(nn.Module):
    """Image (B, input_nc, H, W) to a map of real/fake logits, the reference's NLayerDiscriminator.

    4x4 convs with padding 1: a plain stride-2 conv, `n_layers - 1` normed stride-2 convs and one
    normed stride-1 conv (widths ndf * (1, 2, 4, 8, 8, ...), capped at 8 ndf), then a 1-channel
    stride-1 conv; leaky ReLU 0.2 after all but the last. At n_layers 3 each logit sees a 70x70
    patch, and a 256 px image gives a (B, 1, 30, 30) map. With LSGAN no sigmoid follows.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("ndf", ndf)
        check_int("n_layers", n_layers)
        check_choice("norm", norm, NORMS)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        nf = ndf
        for n in range(1, n_layers + 1):
            nf_prev, nf = nf, ndf * min(2**n, 8)
            stride = 1 if n == n_layers else 2
            conv = nn.Conv2d(nf_prev, nf, kernel_size=4, stride=stride, padding=1, bias=use_bias)
            layers += [conv, _norm(norm, nf), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(nf, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class GeneratorPair(nn.Module):
    """Both translations of an unpaired family, trained by one optimizer as the reference's
    G_A + G_B: `forward(x, to="B")` maps domain A images to B, `to="A"` maps B to A."""

    def __init__(self, to_b: nn.Module, to_a: nn.Module) -> None:
        super().__init__()
        self.to_b, self.to_a = to_b, to_a

    def forward(self, x: torch.Tensor, to: str) -> torch.Tensor:
        return _pick(self.to_b, self.to_a, to)(x)


class DiscriminatorPair(nn.Module):
    """The discriminators of both domains, trained by one optimizer as the reference's D_A + D_B:
    `forward(x, domain="B")` judges images as domain B (the reference's D_A), "A" as domain A."""

    def __init__(self, of_b: nn.Module, of_a: nn.Module) -> None:
        super().__init__()
        self.of_b, self.of_a = of_b, of_a

    def forward(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        return _pick(self.of_b, self.of_a, domain)(x)


def _pick(b: nn.Module, a: nn.Module, domain: str) -> nn.Module:
    if domain not in ("A", "B"):
        raise GantuneError(f"domain: expected 'A' or 'B', got {domain!r}")
    return b if domain == "B" else a
