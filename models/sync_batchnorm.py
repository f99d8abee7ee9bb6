"""Batch norm synchronised across data-parallel ranks, on GPU and on CPU.

`torch.nn.SyncBatchNorm` is the module: on CUDA it runs torch's own kernels. Those kernels
(`batch_norm_stats`, `batch_norm_gather_stats_with_counts`) exist only for GPUs, and torch refuses
CPU tensors, so a multi-worker trial on CPU (gloo) would otherwise normalise each rank's shard by
its own statistics. On CPU this subclass computes the same statistics from sums that torch's
autograd-aware all-reduce (`torch.distributed.nn.functional.all_reduce`) adds up across ranks, so
the backward pass is synchronised too. At world size 1, or in eval mode, it is plain batch norm.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class SyncBatchNorm(nn.SyncBatchNorm):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_initialized() else None)
        syncs = self.training and group is not None and dist.get_world_size(group) > 1
        if not syncs or input.device.type != "cpu":
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        # Two passes, each summed over every rank's shard: the mean, then the squared
        # deviations from it. (E[x^2] - E[x]^2 cancels catastrophically where the batch is
        # nearly constant, as in SPADE's 1x1 and 2x2 layers.)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype)
        sums = all_reduce(torch.cat([count, x.sum(dims)]), group=group)
        n = sums[0]
        mean = sums[1:] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims), group=group) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)  # unbiased, as torch keeps it
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm*d in module becomes a SyncBatchNorm over the default process group,
    keeping its parameters and running statistics. torch's own conversion makes
    `torch.nn.SyncBatchNorm`s; they become this subclass, which adds only the CPU path."""
    module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for m in module.modules():
        if type(m) is nn.SyncBatchNorm:
            m.__class__ = SyncBatchNorm
    return module

