"""RDN (Zhang et al., CVPR 2018, "Residual Dense Network for Image Super-Resolution"), following
the PyTorch port in sanghyun-son/EDSR-PyTorch `src/model/rdn.py` layer for layer, with its module
names, so that its checkpoints load and the parameter count matches the reference (22,271,107 at
x4 with its config "B": G0 = 64, D = 16 blocks, C = 8 convs, G = 64).

The paper's G0, D, C and G are `num_feat`, `num_block`, `num_conv` and `num_grow_ch` here.
EDSR-PyTorch feeds images in [0, 255] (`rgb_range` 255) and RDN has no mean shift; this takes
[0, 1] like `models.sr` and `models.srresnet` and scales by `img_range` inside, so that
RDN(x) = reference(255 x) / 255 with the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from gantune.errors import GantuneError
from models.sr import check_bool, maybe_blur
from models.spade import check_int

RDN_SCALES = (2, 3, 4)


class RDBConv(nn.Module):
    """One dense layer: 3x3 conv + ReLU, its `growth` channels appended to the input's."""

    def __init__(self, in_ch: int, growth: int, kernel_size: int = 3) -> None:
        super().__init__()
        # A Sequential named `conv`, as the reference, so its keys are conv.0.weight / bias.
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, growth, kernel_size, padding=kernel_size // 2), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), dim=1)


class RDB(nn.Module):
    """Residual dense block: `num_conv` dense layers, then local feature fusion (a 1x1 conv
    back to `num_feat`) and local residual learning (the input added)."""

    def __init__(
        self, num_feat: int, num_grow_ch: int, num_conv: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        growth = num_grow_ch
        self.convs = nn.Sequential(
            *(RDBConv(num_feat + c * growth, growth, kernel_size) for c in range(num_conv))
        )
        self.LFF = nn.Conv2d(num_feat + num_conv * num_grow_ch, num_feat, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """Low-resolution (N, num_in_ch, h, w) in [0, 1] to (N, num_out_ch, h * scale, w * scale).

    Two shallow 3x3 convs (SFENet1, SFENet2), `num_block` RDBs, global feature fusion of all
    their outputs (1x1 then 3x3 conv, GFF) plus global residual learning from SFENet1's output,
    then the up-sampling net UPNet: conv to num_grow_ch * r**2 + PixelShuffle(r), once at x2 / x3
    and twice with r = 2 at x4, and a conv to `num_out_ch`. No activation in the upsampler or at
    the output. `blurpool` blurs after each PixelShuffle (off in the reference).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 16,
        num_conv: int = 8,
        num_grow_ch: int = 64,
        kernel_size: int = 3,
        img_range: float = 255.0,
        blurpool: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_in_ch", num_in_ch)
        check_int("num_out_ch", num_out_ch)
        if isinstance(scale, bool) or scale not in RDN_SCALES:
            raise GantuneError(f"scale: expected one of {RDN_SCALES}, got {scale!r}")
        check_int("num_feat", num_feat)
        check_int("num_block", num_block)
        check_int("num_conv", num_conv)
        check_int("num_grow_ch", num_grow_ch)
        check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:  # even kernels would shift the map by half a pixel
            raise GantuneError(f"kernel_size: expected an odd integer >= 1, got {kernel_size}")
        is_number = isinstance(img_range, (int, float)) and not isinstance(img_range, bool)
        if not is_number or not img_range > 0:
            raise GantuneError(f"img_range: expected a number > 0, got {img_range!r}")
        check_bool("blurpool", blurpool)
        self.img_range = float(img_range)
        pad = kernel_size // 2
        self.SFENet1 = nn.Conv2d(num_in_ch, num_feat, kernel_size, padding=pad)
        self.SFENet2 = nn.Conv2d(num_feat, num_feat, kernel_size, padding=pad)
        self.RDBs = nn.ModuleList(
            RDB(num_feat, num_grow_ch, num_conv, kernel_size) for _ in range(num_block)
        )
        self.GFF = nn.Sequential(
            nn.Conv2d(num_block * num_feat, num_feat, 1),
            nn.Conv2d(num_feat, num_feat, kernel_size, padding=pad),
        )
        # The blur shares the PixelShuffle's slot, so the convs keep the reference's indices
        # (UPNet.0, .2, .4) with or without it.
        r = 2 if scale == 4 else scale
        layers: list[nn.Module] = []
        in_ch = num_feat
        for _ in range(2 if scale == 4 else 1):
            layers += [
                nn.Conv2d(in_ch, num_grow_ch * r * r, kernel_size, padding=pad),
                nn.Sequential(nn.PixelShuffle(r), maybe_blur(blurpool)),
            ]
            in_ch = num_grow_ch
        layers.append(nn.Conv2d(num_grow_ch, num_out_ch, kernel_size, padding=pad))
        self.UPNet = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, num_in_ch, h, w) in [0, 1]; returns (N, num_out_ch, h * scale, w * scale)."""
        f1 = self.SFENet1(x * self.img_range)
        feat = self.SFENet2(f1)
        block_outs = []
        for block in self.RDBs:
            feat = block(feat)
            block_outs.append(feat)
        feat = self.GFF(torch.cat(block_outs, dim=1)) + f1
        return self.UPNet(feat) / self.img_range
