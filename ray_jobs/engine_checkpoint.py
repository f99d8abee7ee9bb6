"""Loading one DeepSpeed engine's part of a checkpoint, at the world size it was written at or
at another.

ZeRO-1 and -2 partition the optimizer state by rank, and DeepSpeed refuses to load partitions
written by another number of ranks ("Automatic adjustment of ZeRO's optimizer state
partitioning with a new world size is not currently supported"). Its answer is the universal
checkpoint: `deepspeed.checkpoint.ds_to_universal` merges the partitions into one file per
parameter, and an engine with `load_universal` re-partitions them for its own ranks. ZeRO-0
state is not partitioned and loads anywhere as it is.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from ray_jobs import distributed as ddp


def load_engine(engine: Any, ckpt_dir: Path, tag: str, saved_world: int, scratch: Path) -> None:
    """Load `ckpt_dir/tag` into engine (collective). `scratch` is a folder every rank sees,
    for the universal conversion when the world size changed under ZeRO."""
    if engine.zero_optimization_stage() == 0 or saved_world == engine.dp_world_size:
        path, _ = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_lr_scheduler_states=False)
    else:
        work = None
        if engine.global_rank == 0:
            scratch.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(dir=scratch, prefix=".universal-"))
            from deepspeed.checkpoint import ds_to_universal

            ds_to_universal.main(argparse.Namespace(
                input_folder=str(ckpt_dir / tag), output_folder=str(work / tag), num_extract_workers=1,
                num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True,
            ))
        work = ddp.broadcast_object(work)
        # The module (parameters and buffers: batch-norm statistics, spectral-norm vectors) is
        # not partitioned; the universal load restores parameters and optimizer state only.
        engine.load_checkpoint(str(ckpt_dir), tag=tag, load_module_only=True, load_optimizer_states=False)
        engine._config.load_universal_checkpoint = True  # read by load_checkpoint only
        try:
            path, _ = engine.load_checkpoint(str(work), tag=tag, load_lr_scheduler_states=False)
        finally:
            engine._config.load_universal_checkpoint = False
            ddp.barrier()
            if engine.global_rank == 0:
                shutil.rmtree(work, ignore_errors=True)
    if path is None:
        raise GantuneError(f"{ckpt_dir}/{tag}: DeepSpeed found no checkpoint to load")
