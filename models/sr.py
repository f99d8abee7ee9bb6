"""ESRGAN (Wang et al., ECCVW 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial
Networks"): the RRDBNet generator and the VGG-style discriminator, following XPixelGroup/BasicSR
`basicsr/archs/{rrdbnet_arch,discriminator_arch,arch_util}.py` layer for layer, with the same
module names, so that BasicSR checkpoints load and parameter counts match the reference
(16,697,987 for RRDBNet x4 at num_feat 64, 23 blocks, num_grow_ch 32; 14,499,401 for the
discriminator at 128 px, num_feat 64).

Images are in [0, 1], as in BasicSR: the generator takes the low-resolution image and returns
the high-resolution one, unclamped (BasicSR clamps only when it writes images out).

Also here, shared with `models.srresnet` and `models.rdn`: `BlurPool`, the optional anti-aliasing
blur after each upsampling step, and `scaled_kaiming_init_`, BasicSR's `default_init_weights`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import kornia.filters
import torch
import torch.nn.functional as F
from kornia.filters.kernels import get_pascal_kernel_2d
from torch import nn

from gantune.errors import GantuneError
from models.spade import check_int

# RRDBNet's scales: x4 upsamples twice; x2 and x1 first pixel-unshuffle the input by 2 and 4.
RRDB_SCALES = (1, 2, 4)


def check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise GantuneError(f"{name}: expected true or false, got {value!r}")


@torch.no_grad()
def scaled_kaiming_init_(modules: Iterable[nn.Module], scale: float) -> None:
    """BasicSR's `default_init_weights(modules, scale)`: Kaiming-normal conv and linear weights
    (fan in, gain sqrt 2) times `scale`, zero biases. A scale of 0.1 keeps deep residual stacks
    near the identity at the start."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                m.weight.mul_(scale)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


class BlurPool(nn.Module):
    """Zhang 2019 ("Making Convolutional Networks Shift-Invariant Again") blur at stride 1: each
    channel correlated with [1, 2, 1] x [1, 2, 1] / 16, reflect-padded so the size is kept.

    After a PixelShuffle or nearest upsampling it removes the period-2 pattern behind
    checkerboard artefacts: a +1/-1 checkerboard comes out as exactly 0. kornia's BlurPool2D
    pads with zeros, so this uses kornia's binomial kernel with `filter2d`'s reflect border.
    Parameter-free; the kernel is a non-persistent buffer, so state dicts are unchanged.
    """

    kernel: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", get_pascal_kernel_2d(3, norm=True)[None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.filter2d(x, self.kernel.to(x.dtype), border_type="reflect")


def maybe_blur(blurpool: bool) -> nn.Module:
    return BlurPool() if blurpool else nn.Identity()


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (each sees the input and all earlier outputs), leaky
    ReLU 0.2 after the first four; the last maps back to `num_feat` and is added at 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        scaled_kaiming_init_([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, dim=1)), 0.2))
        return self.conv5(torch.cat(feats, dim=1)) * 0.2 + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks in a row, the result added at 0.2."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's generator: low-resolution (N, num_in_ch, h, w) in [0, 1] to (N, num_out_ch,
    h * scale, w * scale).

    A 3x3 conv, `num_block` RRDBs and a 3x3 conv with a long skip around them, then two rounds
    of 2x nearest upsampling + 3x3 conv + leaky ReLU, a 3x3 conv + leaky ReLU and the output
    conv. The trunk always upsamples 4x: at scale 2 (1) the input is first pixel-unshuffled by 2
    (4), so h and w must be multiples of 2 (4). `blurpool` blurs after each upsampling (off in
    the reference).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
        blurpool: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_in_ch", num_in_ch)
        check_int("num_out_ch", num_out_ch)
        if isinstance(scale, bool) or scale not in RRDB_SCALES:
            raise GantuneError(f"scale: expected one of {RRDB_SCALES}, got {scale!r}")
        check_int("num_feat", num_feat)
        check_int("num_block", num_block)
        check_int("num_grow_ch", num_grow_ch)
        check_bool("blurpool", blurpool)
        self.scale = scale
        self.unshuffle = 4 // scale
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.blur = maybe_blur(blurpool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, num_in_ch, h, w) in [0, 1]; returns (N, num_out_ch, h * scale, w * scale)."""
        if self.unshuffle > 1:
            if x.shape[-2] % self.unshuffle or x.shape[-1] % self.unshuffle:
                raise ValueError(
                    f"x: at scale {self.scale} height and width must be multiples of "
                    f"{self.unshuffle}, got {tuple(x.shape[-2:])}"
                )
            # Same channel order as BasicSR's pixel_unshuffle, so its checkpoints load.
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            up = self.blur(F.interpolate(feat, scale_factor=2, mode="nearest"))
            feat = F.leaky_relu(conv(up), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class VGGStyleDiscriminator(nn.Module):
    """SRGAN / ESRGAN discriminator: (N, num_in_ch, S, S) to one logit per image, (N, 1).

    Stage i is a 3x3 conv then a 4x4 stride-2 conv, each followed by affine batch norm (none
    after the very first conv, which has a bias instead) and leaky ReLU 0.2, at widths
    num_feat * (1, 2, 4, 8, 8, ...), until the map is 4x4; then linear to 100, leaky ReLU,
    linear to 1. The reference takes S = 128 (five stages) or 256 (six); any power of two
    >= 64 works here (64: four stages, for small CPU runs) with the same module names.
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, input_size: int = 128) -> None:
        super().__init__()
        check_int("num_in_ch", num_in_ch)
        check_int("num_feat", num_feat)
        check_int("input_size", input_size, minimum=64)
        if input_size & (input_size - 1):
            raise GantuneError(f"input_size: expected a power of two >= 64, got {input_size}")
        self.input_size = input_size
        self.num_stages = int(math.log2(input_size)) - 2  # each halves the map, down to 4x4
        fin = num_in_ch
        for i in range(self.num_stages):
            fout = num_feat * min(2**i, 8)
            # BasicSR's names (conv{i}_0, bn{i}_0, ...), so its checkpoints load.
            setattr(self, f"conv{i}_0", nn.Conv2d(fin, fout, 3, 1, 1, bias=i == 0))
            if i > 0:
                setattr(self, f"bn{i}_0", nn.BatchNorm2d(fout))
            setattr(self, f"conv{i}_1", nn.Conv2d(fout, fout, 4, 2, 1, bias=False))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(fout))
            fin = fout
        self.linear1 = nn.Linear(fin * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, num_in_ch, input_size, input_size) in [0, 1]; returns (N, 1) logits."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"x: expected {self.input_size}x{self.input_size} images, got {tuple(x.shape[-2:])}"
            )
        feat = x
        for i in range(self.num_stages):
            feat = getattr(self, f"conv{i}_0")(feat)
            if i > 0:
                feat = getattr(self, f"bn{i}_0")(feat)
            feat = F.leaky_relu(feat, 0.2)
            feat = F.leaky_relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(feat)), 0.2)
        return self.linear2(F.leaky_relu(self.linear1(feat.flatten(1)), 0.2))
