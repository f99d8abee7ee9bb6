"""What the trainer needs to be the same program at every world size.

The process group (Ray Train's, torchrun's, or a one-process group), the per-worker share of the
global batch, a sampler whose global batches do not depend on the world size, and the few
collectives the loop uses: one flag that is true if any rank says so, one object from rank 0,
every rank's object, and rank 0's buffers. At world size 1 each is a no-op.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from gantune.errors import GantuneError


def init_distributed() -> None:
    """Join the process group Ray Train / torchrun set up, or make a one-process group.

    A one-process group uses an in-memory store, so concurrent trials never race for a port.
    """
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "gloo":  # also where Ray Train made the group: its workers build engines too
        _skip_shm_allreduce_op()
    if dist.is_initialized():
        return
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed asserts it is set
    if "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend)
    else:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _skip_shm_allreduce_op() -> None:
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op when it first makes an
    engine: 74 s on a fresh machine (measured; cached after), in `make demo` and every fresh CI run.
    Only its `inference_all_reduce` uses it; training reduces through gloo. So the op is marked
    incompatible, the way DeepSpeed's own probe marks an op it cannot build, and never built."""
    import deepspeed.ops

    probed = vars(deepspeed.ops).get("__compatible_ops__")  # probed lazily, on first access
    if probed is None:
        deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}
    else:
        probed["deepspeed_shm_comm"] = False


def per_worker_batch(global_batch: int, world: int) -> int:
    """optim.batch_size is the global batch; each of `world` workers takes an equal share."""
    if global_batch % world:
        raise GantuneError(
            f"optim.batch_size={global_batch} is the global batch and must divide among "
            f"{world} workers; use a multiple of {world}"
        )
    return global_batch // world


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Global batches that depend only on (seed, epoch): each epoch one seeded permutation is cut
    into global batches (the last partial one dropped), and rank r takes the r-th slice of each.

    So step k trains on the same images at 1, 2 or 8 workers, and a run resumed at another world
    size continues the same stream. `start` skips the global batches already trained this epoch.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, epoch: int,
                 start: int = 0) -> None:
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.per_worker = per_worker_batch(global_batch, world)
        self.seed, self.epoch, self.start = seed, epoch, start

    def __len__(self) -> int:
        return max(self.n // self.global_batch - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g)
        lo = self.rank * self.per_worker
        for b in range(self.start, self.n // self.global_batch):
            batch = order[b * self.global_batch : (b + 1) * self.global_batch]
            yield batch[lo : lo + self.per_worker].tolist()


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any: a rank-local decision to stop would leave the
    others waiting in the next collective."""
    if _world() == 1:
        return flag
    t = torch.tensor([float(flag)])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(value: float) -> float:
    """The mean of a float over the ranks, the same on every rank (a decision all must share)."""
    if _world() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / _world()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if _world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * _world()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _world() > 1:
        dist.barrier()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """DeepSpeed broadcasts rank 0's parameters at initialize, not its buffers (spectral-norm
    vectors, batch-norm statistics): send those too, so every rank holds one model."""
    if _world() == 1:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)
