"""SESAME's two-stream PatchGAN discriminator (Ntavelis et al., ECCV 2020; vglsd/OpenSESAME
`models/networks/discriminator.py`).

The label map and the image go through separate conv streams, each shaped like one scale of
SPADE's `NLayerDiscriminator` without its last conv. Before that last conv the image features are
scaled per pixel by one plus the channel sum of the semantic features (`x + x * sum_c(s)`). Its
output convention and constructor arguments are the same as `models.discriminator`, so it can
replace SPADE's D as is. The caller concatenates label map and image, image last, into the
`input_nc` channels, and the input is split here. Feature lists hold only the image stream's
pre-fusion features, then the patch prediction, as the reference's do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.discriminator import patchgan_body
from models.spade import CONV_NORMS, check_choice, check_int, init_weights


def _stream(input_nc: int, ndf: int, n_layers_D: int, norm: str) -> tuple[nn.ModuleList, int]:
    body, nf = patchgan_body(input_nc, ndf, n_layers_D, norm)
    return nn.ModuleList(body), nf


class SesameDiscriminator(nn.Module):
    """One scale: a semantic stream on the first `input_nc - image_nc` channels, an image stream
    on the last `image_nc`, fused, then a 1-channel 4x4 conv (stride 1, padding 2)."""

    def __init__(
        self,
        input_nc: int,
        ndf: int = 64,
        n_layers_D: int = 4,
        norm: str = "spectralinstance",
        image_nc: int = 3,
    ) -> None:
        super().__init__()
        check_int("image_nc", image_nc)
        check_int("input_nc", input_nc, minimum=image_nc + 1)
        check_int("ndf", ndf)
        check_int("n_layers_D", n_layers_D)
        # Checked here too: with n_layers_D = 1 no conv is normed, so conv_norm never sees it.
        check_choice("norm", norm, CONV_NORMS)
        self.image_nc = image_nc
        self.semantic, _ = _stream(input_nc - image_nc, ndf, n_layers_D, norm)
        self.image, nf = _stream(image_nc, ndf, n_layers_D, norm)
        self.head = nn.Conv2d(nf, 1, kernel_size=4, stride=1, padding=2)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        label, img = x[:, : -self.image_nc], x[:, -self.image_nc :]
        s = label
        for layer in self.semantic:
            s = layer(s)
        features = []
        for layer in self.image:
            img = layer(img)
            features.append(img)
        # The reference's fusion: with s summed over channels to one map, x * (1 + s) is a
        # per-pixel gate. The pre-fusion features stay in the list for feature matching.
        fused = img + img * s.sum(dim=1, keepdim=True)
        features.append(self.head(fused))
        return features


class MultiscaleSesameDiscriminator(nn.Module):
    """`num_D` SesameDiscriminators, the k-th seeing the input average-pooled k times."""

    def __init__(
        self,
        input_nc: int,
        num_D: int = 2,
        ndf: int = 64,
        n_layers_D: int = 4,
        norm: str = "spectralinstance",
        image_nc: int = 3,
    ) -> None:
        super().__init__()
        check_int("num_D", num_D)
        self.discriminators = nn.ModuleList(
            SesameDiscriminator(input_nc, ndf, n_layers_D, norm, image_nc) for _ in range(num_D)
        )

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for i, D in enumerate(self.discriminators):
            if i > 0:
                # Label and image pooled together, as in the reference and SPADE's D.
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            result.append(D(x))
        return result
