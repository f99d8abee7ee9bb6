"""The contextual loss (CX; Mechrez et al. 2018) as CoCosNet uses it, `lambda_cx` in configs.

The formula is microsoft/CoCosNet's `ContextualLoss_forward` (models/networks/ContextualLoss.py).
For features x_i (generated, i over positions) and y_j (target):
  centre both on the target's mean; L2-normalise over channels (norm + float eps);
  d_ij = 1 - <x_i, y_j>;  d~_ij = d_ij / (min_k d_ik + 1e-3);  w_ij = exp((1 - d~_ij) / h);
  CX_ij = w_ij / sum_k w_ik;  CX = mean_i max_j CX_ij;  loss = -log(CX), averaged over the batch.
The 1e-3 is ContextualLoss_forward's (CoCosNet's other CX class and Mechrez's code use 1e-5),
and its max runs over the target positions j for each generated position i.
The image loss is CoCosNet's `get_ctx_loss` (models/pix2pix_model.py): 8 * CX(relu5_2)
+ 4 * CX(relu4_2) + 2 * CX(relu3_2 after 2x2 average pooling) [+ 1 * CX(relu2_2 after 4x4
average pooling) with --use_22ctx], h = 0.1, the target (exemplar) features detached.
(Its variables say "5_1", but the features it passes are r52, r42, r32 and r22.)

Centring: CoCosNet's published training commands all pass --PONO, which centres each position
on the target's mean over channels (centering="channel", our default); without it the target's
mean over positions is used, as in Mechrez et al. (centering="spatial").

Memory: the HW x HW distance matrix is never held. Rows are processed `chunk_size` at a time,
each under activation checkpointing, so forward and backward keep O(chunk_size x HW) floats.

Input range: images in [-1, 1]. CoCosNet (--vgg_normal_correct) maps them to [0, 1] and then
preprocesses for its Caffe-converted VGG19 (BGR x 255 minus the Caffe mean). We load
torchvision's VGG19, so after the same [0, 1] mapping we apply torchvision's ImageNet
normalisation, the preprocessing those weights were trained with.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from backbones.vgg import VGGFeatures, layer_weights_for
from gantune.errors import GantuneError

COCOSNET_LAYERS = ("relu5_2", "relu4_2", "relu3_2")
COCOSNET_LAYER_WEIGHTS = (8.0, 4.0, 2.0)
COCOSNET_AVG_POOL = (1, 1, 2)  # average-pooling kernel applied to each layer's features first
COCOSNET_H = 0.1
CENTERINGS = ("channel", "spatial")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_REL_EPS = 1e-3  # ContextualLoss_forward's epsilon in d / (min d + eps)


def _cx_rows(x_rows: torch.Tensor, y_n: torch.Tensor, h: float) -> torch.Tensor:
    """max_j CX_ij for a block of rows: x_rows (N, R, C), y_n (N, C, M) -> (N, R)."""
    d = 1.0 - torch.bmm(x_rows, y_n)
    d_rel = d / (d.min(dim=-1, keepdim=True).values + _REL_EPS)
    logits = (1.0 - d_rel) / h
    # max_j w_ij / sum_k w_ik, written as exp(max - logsumexp): the same value, without the
    # overflow of exp(1 / h) for small h or identical features.
    return torch.exp(logits.max(dim=-1).values - torch.logsumexp(logits, dim=-1))


def _check_options(h: float, chunk_size: int, centering: str) -> None:
    if not h > 0:
        raise GantuneError(f"h={h!r}: expected a bandwidth > 0")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise GantuneError(f"chunk_size={chunk_size!r}: expected an integer >= 1")
    if centering not in CENTERINGS:
        raise GantuneError(f"centering={centering!r}: expected one of {list(CENTERINGS)}")


def contextual_loss(
    x_feats: torch.Tensor,
    y_feats: torch.Tensor,
    h: float = COCOSNET_H,
    chunk_size: int = 1024,
    *,
    centering: str = "channel",
) -> torch.Tensor:
    """CX loss between feature maps (N, C, H, W): -log CX per sample, averaged over the batch.

    x_feats are the generated image's features, y_feats the target's. Gradients flow to both;
    detach y_feats to treat it as a constant (the module does). Computed in float32 at least,
    `chunk_size` rows of the distance matrix at a time.
    """
    if x_feats.ndim != 4 or y_feats.ndim != 4:
        raise GantuneError(
            f"x_feats, y_feats: expected (N, C, H, W) feature maps, got "
            f"{tuple(x_feats.shape)} and {tuple(y_feats.shape)}"
        )
    if x_feats.shape[:2] != y_feats.shape[:2]:
        raise GantuneError(
            f"y_feats: expected the batch size and channels of x_feats {tuple(x_feats.shape[:2])}, "
            f"got {tuple(y_feats.shape[:2])}"
        )
    _check_options(h, chunk_size, centering)
    if centering == "channel" and x_feats.shape != y_feats.shape:
        raise GantuneError(
            f"centering='channel' needs feature maps of one size, got "
            f"{tuple(x_feats.shape)} and {tuple(y_feats.shape)}"
        )

    # Relative distances divide by (min d + 1e-3); half precision would swamp them.
    with torch.autocast(device_type=x_feats.device.type, enabled=False):
        dtype = torch.promote_types(x_feats.dtype, torch.float32)
        x, y = x_feats.to(dtype), y_feats.to(dtype)
        n, c = x.shape[:2]
        if centering == "channel":
            mu = y.mean(dim=1, keepdim=True)
        else:
            mu = y.mean(dim=(2, 3), keepdim=True)
        x, y = x - mu, y - mu
        x = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + sys.float_info.epsilon)
        y = y / (torch.linalg.vector_norm(y, dim=1, keepdim=True) + sys.float_info.epsilon)
        x_t = x.reshape(n, c, -1).transpose(1, 2)  # (N, HW_x, C)
        y_n = y.reshape(n, c, -1)  # (N, C, HW_y)

        # Checkpoint each block of rows: backward recomputes it instead of keeping its
        # (rows x HW) intermediates, so only one block's matrices are alive at a time.
        needs_graph = torch.is_grad_enabled() and (x_t.requires_grad or y_n.requires_grad)
        rows: list[torch.Tensor] = []
        for start in range(0, x_t.shape[1], chunk_size):
            block = x_t[:, start : start + chunk_size]
            if needs_graph:
                rows.append(checkpoint(_cx_rows, block, y_n, h, use_reentrant=False))
            else:
                rows.append(_cx_rows(block, y_n, h))
        cx = torch.cat(rows, dim=1).mean(dim=1)
        return -torch.log(cx).mean()


class ContextualLoss(nn.Module):
    """CoCosNet's contextual loss on images: sum_l w_l * CX(VGG19_l(x), VGG19_l(y).detach())."""

    def __init__(
        self,
        layers: Sequence[str] = COCOSNET_LAYERS,
        layer_weights: Sequence[float] = COCOSNET_LAYER_WEIGHTS,
        h: float = COCOSNET_H,
        chunk_size: int = 1024,
        *,
        avg_pool: Sequence[int] = COCOSNET_AVG_POOL,
        centering: str = "channel",
        random_weights: bool = False,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        layers = list(layers)
        weights = layer_weights_for(layers, layer_weights)
        if len(avg_pool) != len(layers) or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in avg_pool
        ):
            raise GantuneError(
                f"avg_pool={list(avg_pool)}: expected one integer kernel >= 1 per layer "
                f"({len(layers)})"
            )
        _check_options(h, chunk_size, centering)  # now, not at the first training step
        self.layers = layers
        self.layer_weights = weights
        self.avg_pool = list(avg_pool)
        self.h = h
        self.chunk_size = chunk_size
        self.centering = centering
        self.vgg = VGGFeatures(
            "vgg19", layers, random_weights=random_weights, seed=seed, weights_dir=weights_dir
        )
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG19 features of [-1, 1] images, each average-pooled as configured."""
        feats = self.vgg(((images + 1) / 2 - self.mean) / self.std)
        return {
            layer: F.avg_pool2d(feats[layer], k) if k > 1 else feats[layer]
            for layer, k in zip(self.layers, self.avg_pool)
        }

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: generated images, y: exemplars/targets; both (N, 3, H, W) in [-1, 1]."""
        for name, t in (("x", x), ("y", y)):
            if t.ndim != 4 or t.shape[1] != 3:
                raise GantuneError(
                    f"{name}: expected RGB images (N, 3, H, W), got {tuple(t.shape)}"
                )
        fx = self.features(x)
        with torch.no_grad():  # CoCosNet detaches the exemplar's features
            fy = self.features(y)
        loss = x.new_zeros((), dtype=torch.float32)
        for layer, w in zip(self.layers, self.layer_weights):
            cx = contextual_loss(
                fx[layer], fy[layer], self.h, self.chunk_size, centering=self.centering
            )
            loss = loss + w * cx
        return loss
