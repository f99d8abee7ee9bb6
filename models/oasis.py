"""OASIS (Schönfeld, Sushko et al., ICLR 2021, "You Only Need Adversarial Supervision for Semantic
Image Synthesis"): the generator and the U-Net discriminator, following boschresearch/OASIS
`models/{generator,discriminator,norms}.py`, so that parameter counts match the reference
(74.31M and 22.26M at the ADE20K 256 px config: 151 label channels, widths 64, six blocks).

The generator is SPADE's residual decoder conditioned on the label map concatenated with 3D
noise: a z of `z_dim` values per sample, broadcast to every pixel (or a full per-pixel map). The
discriminator is a U-Net of residual blocks that classifies every pixel into one of the
`semantic_nc` classes or "fake" (channel 0), for the N+1 loss of `losses.oasis`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.spade import (
    PARAM_FREE_NORMS,
    SPADE,
    check_choice,
    check_int,
    conv_norm,
    init_weights,
)


def _sn(conv: nn.Conv2d, spectral: bool) -> nn.Module:
    return conv_norm(conv, "spectral" if spectral else "none")


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class OASISResBlock(nn.Module):
    """The generator's block: SPADE's pre-activation residual block (SPADE, leaky ReLU, conv)
    x 2 with a learned bias-free 1x1 shortcut on a width change, and `spade_ks` SPADE kernels."""

    def __init__(
        self,
        fin: int,
        fout: int,
        cond_nc: int,
        spectral: bool = True,
        param_free_norm: str = "batch",
        spade_ks: int = 3,
    ) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = _sn(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1), spectral)
        self.conv_1 = _sn(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1), spectral)
        self.norm_0 = SPADE(fin, cond_nc, param_free_norm, kernel_size=spade_ks)
        self.norm_1 = SPADE(fmiddle, cond_nc, param_free_norm, kernel_size=spade_ks)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, kernel_size=1, bias=False), spectral)
            self.norm_s = SPADE(fin, cond_nc, param_free_norm, kernel_size=spade_ks)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, cond), 0.2))
        return x_s + dx


class OASISGenerator(nn.Module):
    """One-hot label map (`semantic_nc` channels) and noise to an RGB image in [-1, 1].

    A 3x3 conv of the downsampled [z, label] map starts a (sh, sw) grid, sw = crop_size /
    2**(num_res_blocks - 1), sh = round(sw / aspect_ratio); `num_res_blocks` SPADE blocks follow,
    2x nearest upsampling between them, all conditioned on [z, label] at full resolution. Block
    output widths are channels_G * (16, 16, 8, 4, 2, 1) at the default six blocks; with another
    count the last block still ends at channels_G, widths doubling backwards up to 16x.
    """

    def __init__(
        self,
        semantic_nc: int,
        channels_G: int = 64,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        num_res_blocks: int = 6,
        z_dim: int = 64,
        use_3d_noise: bool = True,
        spade_ks: int = 3,
        param_free_norm: str = "batch",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("channels_G", channels_G)
        check_int("crop_size", crop_size)
        check_int("num_res_blocks", num_res_blocks)
        check_int("z_dim", z_dim)
        check_choice("param_free_norm", param_free_norm, PARAM_FREE_NORMS)
        check_int("spade_ks", spade_ks)
        if spade_ks % 2 == 0:  # even kernels would shift the map by half a pixel
            raise GantuneError(f"spade_ks: expected an odd integer >= 1, got {spade_ks!r}")
        is_number = isinstance(aspect_ratio, (int, float)) and not isinstance(aspect_ratio, bool)
        if not is_number or not aspect_ratio > 0:
            raise GantuneError(f"aspect_ratio: expected a number > 0, got {aspect_ratio!r}")
        factor = 2 ** (num_res_blocks - 1)
        if crop_size % factor:
            raise GantuneError(
                f"crop_size: expected a multiple of {factor} with num_res_blocks="
                f"{num_res_blocks}, got {crop_size}"
            )
        self.semantic_nc, self.z_dim, self.use_3d_noise = semantic_nc, z_dim, use_3d_noise
        self.sw = crop_size // factor
        self.sh = round(self.sw / aspect_ratio)
        if self.sh < 1:
            raise GantuneError(f"aspect_ratio: {aspect_ratio} leaves a latent grid of height 0")

        # The reference puts z before the label channels: keep that order for its checkpoints.
        cond_nc = semantic_nc + (z_dim if use_3d_noise else 0)
        n = num_res_blocks
        widths = [channels_G * min(16, 2 ** (n - 1 - i)) for i in range(n)]
        self.fc = nn.Conv2d(cond_nc, 16 * channels_G, kernel_size=3, padding=1)
        self.body = nn.ModuleList(
            OASISResBlock(fin, fout, cond_nc, spectral, param_free_norm, spade_ks)
            for fin, fout in zip([16 * channels_G] + widths[:-1], widths)
        )
        self.conv_img = nn.Conv2d(channels_G, 3, kernel_size=3, padding=1)
        init_weights(self)

    def forward(self, label: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """label: (B, semantic_nc, H, W) one-hot. z: None (drawn from N(0, I) per sample),
        (B, z_dim) broadcast to every pixel, or a (B, z_dim, H, W) per-pixel noise map."""
        cond = label
        if self.use_3d_noise:
            b, _, h, w = label.shape
            if z is None:
                z = torch.randn(b, self.z_dim, dtype=label.dtype, device=label.device)
            if z.dim() == 2:
                z = z[:, :, None, None].expand(-1, -1, h, w)
            if z.shape != (b, self.z_dim, h, w):
                raise ValueError(
                    f"z: expected ({b}, {self.z_dim}) or ({b}, {self.z_dim}, {h}, {w}), "
                    f"got {tuple(z.shape)}"
                )
            cond = torch.cat((z, label), dim=1)
        elif z is not None:
            raise ValueError("z given to an OASISGenerator built with use_3d_noise=False")

        x = self.fc(F.interpolate(cond, size=(self.sh, self.sw), mode="nearest"))
        for i, block in enumerate(self.body):
            x = block(_up(x) if i > 0 else x, cond)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class OASISDBlock(nn.Module):
    """The discriminator's residual block, 3x3 convs with leaky ReLU 0.2 before each, and a
    1x1 shortcut conv (with bias) on a width change.

    "down" average-pools 2x after the convs and in the shortcut; "up" upsamples 2x (nearest)
    before the first conv and the shortcut conv. The `first` block sees the image, so its first
    conv has no activation before it.
    """

    def __init__(
        self, fin: int, fout: int, mode: str, first: bool = False, spectral: bool = True
    ) -> None:
        super().__init__()
        check_choice("mode", mode, ("down", "up"))
        self.mode, self.first = mode, first
        self.learned_shortcut = fin != fout
        self.conv1 = _sn(nn.Conv2d(fin, fout, kernel_size=3, padding=1), spectral)
        self.conv2 = _sn(nn.Conv2d(fout, fout, kernel_size=3, padding=1), spectral)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, kernel_size=1), spectral)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "up":
            x = _up(x)  # the reference upsamples before the activation: same result, nearest
            x_s = self.conv_s(x) if self.learned_shortcut else x
            dx = self.conv1(F.leaky_relu(x, 0.2))
            return x_s + self.conv2(F.leaky_relu(dx, 0.2))
        # The reference pools after the shortcut conv except in the first block; a 1x1 conv and
        # average pooling commute, so pool first everywhere (4x fewer conv FLOPs).
        x_s = F.avg_pool2d(x, 2)
        if self.learned_shortcut:
            x_s = self.conv_s(x_s)
        dx = self.conv1(x if self.first else F.leaky_relu(x, 0.2))
        dx = self.conv2(F.leaky_relu(dx, 0.2))
        return x_s + F.avg_pool2d(dx, 2)


class OASISDiscriminator(nn.Module):
    """Image (B, 3, H, W) to per-pixel logits (B, semantic_nc + 1, H, W): channel 0 is "fake",
    channel c + 1 is label class c.

    A U-Net: `num_res_blocks` downsampling blocks, then as many upsampling blocks, each after the
    first taking the matching encoder output concatenated before its input, then a 1x1 conv. At
    the default six blocks the encoder widths are channels_D * (2, 2, 4, 4, 8, 8), the reference's
    fixed (128, 128, 256, 256, 512, 512), and the decoder mirrors them down to channels_D. H and
    W must be multiples of 2**num_res_blocks.
    """

    def __init__(
        self,
        semantic_nc: int,
        channels_D: int = 64,
        crop_size: int = 256,
        num_res_blocks: int = 6,
        spectral: bool = True,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("channels_D", channels_D)
        check_int("crop_size", crop_size)
        check_int("num_res_blocks", num_res_blocks, minimum=2)
        if crop_size % 2**num_res_blocks:
            raise GantuneError(
                f"crop_size: expected a multiple of {2**num_res_blocks} with num_res_blocks="
                f"{num_res_blocks}, got {crop_size}"
            )
        n = num_res_blocks
        # Widths per encoder level: 3, then pairs doubling from 2 * channels_D, capped at 8x.
        ch = [3] + [channels_D * min(8, 2 ** ((i + 1) // 2)) for i in range(1, n + 1)]
        self.body_down = nn.ModuleList(
            OASISDBlock(ch[i], ch[i + 1], "down", first=i == 0, spectral=spectral)
            for i in range(n)
        )
        up = [OASISDBlock(ch[n], ch[n - 1], "up", spectral=spectral)]
        # Inputs after the first: the encoder output of the same resolution, then the decoder's.
        up += [
            OASISDBlock(2 * ch[n - i], ch[n - 1 - i], "up", spectral=spectral)
            for i in range(1, n - 1)
        ]
        up.append(OASISDBlock(2 * ch[1], channels_D, "up", spectral=spectral))
        self.body_up = nn.ModuleList(up)
        self.layer_up_last = nn.Conv2d(channels_D, semantic_nc + 1, kernel_size=1)
        init_weights(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        factor = 2 ** len(self.body_down)
        if image.shape[2] % factor or image.shape[3] % factor:
            raise ValueError(
                f"OASISDiscriminator: image height and width must be multiples of {factor}, "
                f"got {tuple(image.shape[2:])}"
            )
        x = image
        skips = []
        for block in self.body_down:
            x = block(x)
            skips.append(x)
        x = self.body_up[0](x)
        for skip, block in zip(reversed(skips[:-1]), self.body_up[1:]):
            x = block(torch.cat((skip, x), dim=1))
        return self.layer_up_last(x)
