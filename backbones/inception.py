"""The FID Inception network: pool3 features of TensorFlow's 2015 Inception v3, in PyTorch.

The modules and their names follow `pt_inception-2015-12-05-6726825d.pth` (the pytorch-fid and
torch-fidelity file): torchvision's Inception v3 with 1008 classes and no auxiliary head, whose
Mixed_5b-d, Mixed_6b-e, Mixed_7b and Mixed_7c blocks average-pool without counting the padding
(as TensorFlow does), and whose last block max-pools instead. The official file therefore loads
with `load_state_dict(strict=True)`; any other file is refused.

Randomly initialised weights exist for tests and the offline demo only. Their features collapse
to ~1e-9 (every activation shrinks layer by layer), so `recalibrate_batch_norm` re-estimates the
batch-norm statistics on the real images before such a net is used; a distance on its features
is reported as `fd_random_inception`, never as FID.

`dims` picks the feature layer as pytorch-fid's `--dims` does: 64 (first max pool), 192 (second
max pool), 768 (Mixed_6e) or 2048 (pool3, the standard FID), each averaged over its grid. The
forward pass stops at that layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import pretrained
from gantune.errors import GantuneError

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
DIMS = (64, 192, 768, 2048)  # pytorch-fid's InceptionV3.BLOCK_INDEX_BY_DIM
INPUT_SIZE_PX = 299
BN_EPS = 0.001  # TensorFlow's batch-norm epsilon, kept by the ported weights


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm, ReLU: the unit every Inception block is made of."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # bn output is a fresh tensor


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TensorFlow's average pool ignores the zero padding at the borders.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for conv in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            b7dbl = conv(b7dbl)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b7, b7dbl, bp], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = conv(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches (Mixed_7b, Mixed_7c).

    The FID network's last block (Mixed_7c) max-pools in its pool branch where the paper and
    torchvision average; the ported weights were trained that way, so `max_pool` must match.
    """

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, b3dbl, self.branch_pool(pooled)], 1)


class FIDInception(nn.Module):
    """Images in [0, 1], shape (N, 3, H, W), any H and W -> features (N, dims); pool3 (2048)
    is the standard FID layer.

    Inputs are resized to 299x299 (bilinear, align_corners=False) and mapped to [-1, 1], as
    pytorch-fid does. A GAN whose output is in [-1, 1] passes `(x + 1) / 2`.
    `official` and `weights_id` say which weights it holds; build it with `build_fid_inception`.
    """

    def __init__(self, dims: int = FEATURE_DIM) -> None:
        super().__init__()
        if dims not in DIMS:
            raise GantuneError(f"dims: expected one of {', '.join(map(str, DIMS))} "
                               f"(pytorch-fid's --dims), got {dims!r}")
        self.dims = dims
        self.official = False
        self.weights_id = "untrained"
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        # The 1008-way classifier is unused; it is kept so the official file loads strictly.
        self.fc = nn.Linear(FEATURE_DIM, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(
            x, size=(INPUT_SIZE_PX, INPUT_SIZE_PX), mode="bilinear", align_corners=False
        )
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        if self.dims == 64:
            return x.mean(dim=(2, 3))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        if self.dims == 192:
            return x.mean(dim=(2, 3))
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
        ):
            x = block(x)
        if self.dims == 768:
            return x.mean(dim=(2, 3))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x.mean(dim=(2, 3))  # pool3: global average over the 8x8 grid


def build_fid_inception(
    *,
    random_weights: bool = False,
    seed: int = 0,
    weights_dir: str | os.PathLike[str] | None = None,
    dims: int = FEATURE_DIM,
) -> FIDInception:
    """The FID Inception in eval mode, with the official weights or, only when asked, random ones.

    Random weights are PyTorch's default initialisation drawn from `seed` (the global RNG is left
    as it was). They must be recalibrated with `recalibrate_batch_norm` before use.
    """
    if random_weights:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FIDInception(dims)
        net.weights_id = f"random:seed={seed}"
        log.warning("FID Inception with RANDOM weights (seed %d): distances are not FID", seed)
        return net.eval().requires_grad_(False)

    path = pretrained.locate("inception", weights_dir)
    state = pretrained.load_state_dict("inception", weights_dir)
    net = FIDInception(dims)
    pretrained.load_strict(net, state, f"{path}: not the FID Inception state dict")
    net.official = True
    net.weights_id = f"official:sha256={pretrained.WEIGHT_FILES['inception'].sha256}"
    return net.eval().requires_grad_(False)


def batch_norms(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def recalibrate_batch_norm(
    net: nn.Module, batches: Iterable[Tensor], *, device: torch.device
) -> int:
    """Re-estimate every batch norm's running statistics from `batches` (images in [0, 1]).

    One pass in train mode with momentum=None, so the running statistics are the plain average
    over all batches, not an exponential average dominated by the last one. Returns the number
    of images seen; the net is left in eval mode. This is what keeps a random net's features
    from collapsing to ~1e-9 (see DESIGN.md, "Pretrained weights").
    """
    bns = batch_norms(net)
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    n = 0
    try:
        for batch in batches:
            if batch.shape[0] < 2:
                continue  # a batch of one has no variance to estimate
            net(batch.to(device=device, dtype=torch.float32))
            n += batch.shape[0]
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        net.eval()
    if n == 0:
        raise GantuneError("batch-norm recalibration got no batch of 2 or more images")
    return n
