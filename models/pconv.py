"""The partial-conv U-Net that gives PD-GAN its coarse prior (KumapowerLIU/PD-GAN
`models/network/pconv.py`, `models/blocks/pconvblocks.py`): 78,138,435 parameters at the
reference's ngf 64. Masks are hole masks, 1 = hole; the reference's known-pixel masks are their
inverse, taken inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.pdgan import frozen_ones_conv, init_normal, norm_layer
from models.spade import check_choice, check_int

# The coarse net's affine norm (the reference's --norm, "instance" by default).
COARSE_NORMS = ("instance", "batch", "group")


class PartialConv(nn.Module):
    """Bias-free partial conv as the reference's: conv(x * m) / conv_ones(m), 0 where the window
    holds no known pixel, and the mask of those windows. Note the reference divides by the count
    of known pixels (over channels too) without Liu et al.'s window-size factor."""

    def __init__(self, fin: int, fout: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.input_conv = nn.Conv2d(fin, fout, kernel_size, stride, padding, bias=False)
        self.mask_conv = frozen_ones_conv(fin, fout, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.input_conv(x * known)
        with torch.no_grad():
            count = self.mask_conv(known)
        holes = count == 0
        out = (out / count.masked_fill(holes, 1.0)).masked_fill(holes, 0.0)
        return out, (~holes).to(out.dtype)


class _PConvDown(nn.Module):
    """Leaky ReLU (not on the image), a 4x4 stride-2 partial conv, then a norm if given."""

    def __init__(self, fin: int, fout: int, norm: str | None, groups: int, activate: bool) -> None:
        super().__init__()
        self.activate = activate
        self.conv = PartialConv(fin, fout, 4, 2, 1)
        self.norm = norm_layer(norm, fout, groups, affine=True) if norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, known = self.conv(F.leaky_relu(x, 0.2) if self.activate else x, known)
        return self.norm(x), known


class _PConvResBlock(nn.Module):
    """x + IN(pconv(ReLU(IN(pconv(x))))), 3x3 partial convs, plain instance norms at any --norm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_1 = PartialConv(dim, dim, 3, 1, 1)
        self.norm_1 = nn.InstanceNorm2d(dim)
        self.conv_2 = PartialConv(dim, dim, 3, 1, 1)
        self.norm_2 = nn.InstanceNorm2d(dim)

    def forward(self, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dx, mid = self.conv_1(x, known)
        dx, out_known = self.conv_2(F.relu(self.norm_1(dx)), mid)
        return x + self.norm_2(dx), out_known


class PConvCoarseNet(nn.Module):
    """The reference's first stage: a partial-conv U-Net, masked image and hole mask to a coarse
    RGB image in [-1, 1] (the whole image, not composited), PD-GAN's prior. PD-GAN loads it
    pretrained and frozen and detaches its output.

    Encoder: six 4x4 stride-2 partial convs, widths ngf * (1, 2, 4, 8, 8, 8), normed but the
    first and last; `res_num` partial-conv residual blocks; decoder: six (ReLU, 4x4 stride-2
    transposed conv, norm) blocks on [decoder, encoder skip], tanh last. H, W: multiples of 64, at
    least 128 x 64.
    """

    def __init__(self, ngf: int = 64, res_num: int = 4, norm: str = "instance", groups: int = 32) -> None:
        super().__init__()
        check_int("ngf", ngf)
        check_int("res_num", res_num, minimum=0)
        check_int("groups", groups)
        check_choice("norm", norm, COARSE_NORMS)
        if norm == "group" and ngf % groups:
            raise GantuneError(f"groups: expected a divisor of ngf={ngf} with norm='group', got {groups}")
        widths = [3, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf]
        self.encoder = nn.ModuleList(
            _PConvDown(widths[i], widths[i + 1], norm if 0 < i < 5 else None, groups, activate=i > 0)
            for i in range(6)
        )
        self.middle = nn.ModuleList(_PConvResBlock(8 * ngf) for _ in range(res_num))

        def up(fin: int, fout: int, last: bool = False) -> nn.Sequential:
            conv = nn.ConvTranspose2d(fin, fout, kernel_size=4, stride=2, padding=1)
            return nn.Sequential(nn.ReLU(), conv, nn.Tanh() if last else norm_layer(norm, fout, groups, affine=True))

        self.decoder = nn.ModuleList(
            [up(8 * ngf, 8 * ngf), up(16 * ngf, 8 * ngf), up(16 * ngf, 4 * ngf), up(8 * ngf, 2 * ngf)]
            + [up(4 * ngf, ngf), up(2 * ngf, 3, last=True)]
        )
        init_normal(self)

    def forward(self, masked_image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """masked_image (N, 3, H, W) in [-1, 1] (hole pixels are ignored); mask (N, 1, H, W), 1 = hole."""
        h, w = masked_image.shape[2:]
        # Six halvings; the bottleneck's instance norms need two pixels there.
        if h % 64 or w % 64 or (h // 64) * (w // 64) < 2:
            raise ValueError(f"PConvCoarseNet: H, W must be multiples of 64, not both 64, got {(h, w)}")
        x, known = masked_image, (1 - mask).expand(-1, 3, -1, -1)
        skips = []
        for block in self.encoder:
            x, known = block(x, known)
            skips.append(x)
        for res in self.middle:
            x, known = res(x, known)
        x = self.decoder[0](x)
        # The decoder's ReLU comes first, so the reference's in-place leaky ReLU on skips is moot.
        for skip, block in zip(reversed(skips[:-1]), self.decoder[1:]):
            x = block(torch.cat((x, skip), dim=1))
        return x
