"""PatchGAN discriminators of pix2pixHD / SPADE (NVlabs/SPADE `models/networks/discriminator.py`).

Both return intermediate features as well as the prediction, for the feature-matching loss: an
`NLayerDiscriminator` returns a list of per-layer outputs with the patch prediction last, and a
`MultiscaleDiscriminator` returns one such list per scale, the input halved between scales. The
caller concatenates label map and image into the `input_nc` input channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from models.spade import CONV_NORMS, check_int, conv_norm, init_weights


def patchgan_body(input_nc: int, ndf: int, n_layers_D: int, norm: str) -> tuple[list[nn.Module], int]:
    """The convs of one PatchGAN scale up to, not including, its 1-channel conv, and the width
    they end at (SESAME's two streams are this body each)."""
    kw, padw = 4, 2
    nf = ndf
    layers: list[nn.Module] = [
        nn.Sequential(nn.Conv2d(input_nc, nf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2))
    ]
    for n in range(1, n_layers_D):
        nf_prev, nf = nf, min(nf * 2, 512)
        stride = 1 if n == n_layers_D - 1 else 2
        conv = nn.Conv2d(nf_prev, nf, kernel_size=kw, stride=stride, padding=padw)
        layers.append(nn.Sequential(conv_norm(conv, norm), nn.LeakyReLU(0.2)))
    return layers, nf


class NLayerDiscriminator(nn.Module):
    """4x4 convs with padding 2: a plain first conv (stride 2), n_layers_D - 1 normed convs
    (stride 2, the last of them stride 1, channels doubling up to 512), then a 1-channel conv
    (stride 1). Leaky ReLU 0.2 after every conv but the last."""

    def __init__(
        self,
        input_nc: int,
        ndf: int = 64,
        n_layers_D: int = 4,
        norm: str = "spectralinstance",
    ) -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("ndf", ndf)
        check_int("n_layers_D", n_layers_D)
        if norm not in CONV_NORMS:
            raise GantuneError(f"norm: expected one of {', '.join(CONV_NORMS)}, got {norm!r}")
        body, nf = patchgan_body(input_nc, ndf, n_layers_D, norm)
        self.layers = nn.ModuleList([*body, nn.Conv2d(nf, 1, kernel_size=4, stride=1, padding=2)])
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """`num_D` NLayerDiscriminators, the k-th seeing the input average-pooled k times."""

    def __init__(
        self,
        input_nc: int,
        num_D: int = 2,
        ndf: int = 64,
        n_layers_D: int = 4,
        norm: str = "spectralinstance",
    ) -> None:
        super().__init__()
        check_int("num_D", num_D)
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(input_nc, ndf, n_layers_D, norm) for _ in range(num_D)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for i, D in enumerate(self.discriminators):
            if i > 0:
                # count_include_pad=False: border pixels are not darkened by the zero padding.
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            result.append(D(x))
        return result
