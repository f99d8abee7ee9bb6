"""SRResNet (Ledig et al., CVPR 2017, "Photo-Realistic Single Image Super-Resolution Using a
Generative Adversarial Network") in BasicSR's modified form, MSRResNet: residual blocks without
batch norm, as EDSR, and a bilinear-upsampled copy of the input added to the output. Follows
XPixelGroup/BasicSR `basicsr/archs/{srresnet_arch,arch_util}.py` layer for layer, with the same
module names, so that BasicSR checkpoints load and the parameter count matches the reference
(1,517,571 at x4, num_feat 64, 16 blocks).

Images are in [0, 1], as in BasicSR. SRGAN pairs it with `models.sr.VGGStyleDiscriminator`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.sr import check_bool, maybe_blur, scaled_kaiming_init_
from models.spade import check_int

SRRESNET_SCALES = (2, 3, 4)


class ResidualBlockNoBN(nn.Module):
    """conv 3x3, ReLU, conv 3x3, added to the input; Kaiming init scaled by 0.1, as BasicSR's
    default (`pytorch_init=False`, `res_scale=1`)."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        scaled_kaiming_init_([self.conv1, self.conv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class MSRResNet(nn.Module):
    """Low-resolution (N, num_in_ch, h, w) in [0, 1] to (N, num_out_ch, h * scale, w * scale).

    A 3x3 conv + leaky ReLU 0.1, `num_block` residual blocks (no long skip), then conv +
    PixelShuffle + leaky ReLU: once by `scale` at x2 / x3, twice by 2 at x4. A 3x3 conv + leaky
    ReLU and the output conv follow, and the bilinear upsampled input is added, so the network
    learns the residual. `blurpool` blurs after each PixelShuffle (off in the reference).
    BasicSR calls `scale` `upscale`.
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_block: int = 16,
        scale: int = 4,
        blurpool: bool = False,
    ) -> None:
        super().__init__()
        check_int("num_in_ch", num_in_ch)
        check_int("num_out_ch", num_out_ch)
        check_int("num_feat", num_feat)
        check_int("num_block", num_block)
        if isinstance(scale, bool) or scale not in SRRESNET_SCALES:
            raise GantuneError(f"scale: expected one of {SRRESNET_SCALES}, got {scale!r}")
        check_bool("blurpool", blurpool)
        if num_out_ch != num_in_ch:  # the bilinear skip adds the input to the output
            raise GantuneError(
                f"num_out_ch: must equal num_in_ch ({num_in_ch}) for the input skip, "
                f"got {num_out_ch}"
            )
        self.scale = scale
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_block)))
        shuffle = 2 if scale == 4 else scale
        self.upconv1 = nn.Conv2d(num_feat, num_feat * shuffle**2, 3, 1, 1)
        self.upconv2: nn.Conv2d | None = None
        if scale == 4:
            self.upconv2 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.pixel_shuffle = nn.PixelShuffle(shuffle)
        self.blur = maybe_blur(blurpool)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        # upconv2 last, as the reference: the same seed then gives the same weights.
        scaled_kaiming_init_([self.conv_first, self.upconv1, self.conv_hr, self.conv_last], 0.1)
        if self.upconv2 is not None:
            scaled_kaiming_init_([self.upconv2], 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, num_in_ch, h, w) in [0, 1]; returns (N, num_out_ch, h * scale, w * scale)."""
        out = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        for conv in (self.upconv1, self.upconv2):
            if conv is not None:
                out = F.leaky_relu(self.blur(self.pixel_shuffle(conv(out))), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base
