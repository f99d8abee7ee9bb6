"""Checkpoint folders: what `Trainer.save` writes and `Trainer.load` reads.

A checkpoint is one folder that every rank writes into:

    <tag>/              each DeepSpeed engine's own checkpoint (DeepSpeed's layout), one per net
    trainer_state.pt    the rest of the state (EMA copies such as G_ema, step, config, lineage,
                        each rank's RNG)
    COMPLETE            written last, JSON: step, trial_id, lineage, world size, and the size
                        of every other file in the folder

It is built in a temp folder next to its final place and renamed there, so a folder with the
marker is whole, and one without it, or with a file missing or of another size than the marker
says (a torn copy), is refused. Replacing a checkpoint moves the old one aside first (renamed,
atomic), renames the new one in, and only then deletes the old: at every moment one complete
checkpoint is on disk, and `usable` finds it.

Engines are saved at one world size and may be loaded at another. ZeRO-1 and -2 partition the
optimizer state by rank, and DeepSpeed refuses to load partitions written by another number of
ranks ("Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is
not currently supported"). Its answer is the universal checkpoint:
`deepspeed.checkpoint.ds_to_universal` merges the partitions into one file per parameter, and an
engine with `load_universal` re-partitions them for its own ranks. ZeRO-0 state is not
partitioned and loads anywhere as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gantune.errors import GantuneError
from ray_jobs import distributed as ddp

log = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "trainer_state.pt"


def save(ckpt_dir: Path, engines: dict[str, Any], state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write every engine (tagged by its name), `state` and the marker `meta` into ckpt_dir,
    atomically. Collective: every rank calls it with the same ckpt_dir, on a filesystem all
    ranks see. Rank 0 names the temp folder, every engine saves its part into it, and the state
    and marker are written only after a barrier, once every rank's part is on disk."""
    ckpt_dir = Path(ckpt_dir)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    tmp = None
    if rank == 0:
        ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in ckpt_dir.parent.glob(f".{ckpt_dir.name}.tmp-*"):  # a killed save's: space a full disk needs
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=ckpt_dir.parent, prefix=f".{ckpt_dir.name}.tmp-"))
    tmp = ddp.broadcast_object(tmp)
    try:
        for tag, engine in engines.items():
            engine.save_checkpoint(str(tmp), tag=tag)
        failed = None
    except (OSError, RuntimeError) as e:  # a full disk: torch.save raises RuntimeError, not OSError
        failed = e
    _fail_together(failed, tmp, ckpt_dir, rank)
    if rank == 0:
        try:
            torch.save(state, tmp / STATE_FILE)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            # Written last; what it says is what callers read without loading the weights.
            _write_synced(tmp / COMPLETE_MARKER, json.dumps({**meta, "files": files}) + "\n")
        except (OSError, RuntimeError) as e:
            failed = e
    _fail_together(failed, tmp, ckpt_dir, rank)
    if rank == 0:
        if ckpt_dir.exists():  # aside, not deleted: a complete checkpoint stays on disk throughout
            old = ckpt_dir.parent / f".{ckpt_dir.name}.old-{os.getpid()}"
            os.replace(ckpt_dir, old)
        os.replace(tmp, ckpt_dir)
        # The old one, and what saves killed earlier left: torn temp folders, copies set aside.
        for pattern in (f".{ckpt_dir.name}.old-*", f".{ckpt_dir.name}.tmp-*"):
            for stale in ckpt_dir.parent.glob(pattern):
                shutil.rmtree(stale, ignore_errors=True)
    ddp.barrier()
    return ckpt_dir


def _fail_together(error: BaseException | None, tmp: Path, ckpt_dir: Path, rank: int) -> None:
    """If the save failed on any rank, every rank raises (none waits in a barrier for one that
    gave up): the temp folder goes, the previous checkpoint stays, and the error is one line."""
    if not ddp.any_rank(error is not None):
        return
    if error is not None:  # the full story for `gantune -v`: a RuntimeError may be a bug, not the disk
        log.debug("saving %s failed", ckpt_dir, exc_info=error)
    free = shutil.disk_usage(tmp.parent).free if tmp.parent.exists() else None
    ddp.barrier()  # every rank is done writing into tmp
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    elif free is not None and free < 16 * 2**20:
        reason = f"no space left on device: {free / 2**20:.1f} MiB free"
    else:
        reason = str(error).splitlines()[0] if error is not None else "failed on another rank"
    raise GantuneError(f"{ckpt_dir}: checkpoint not saved ({reason}); the previous one, if any, is kept")


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_meta(ckpt_dir: Path) -> dict[str, Any]:
    """step, trial_id, lineage and world size of a complete checkpoint, from its marker."""
    marker = Path(ckpt_dir) / COMPLETE_MARKER
    if not marker.is_file():
        raise GantuneError(f"{ckpt_dir}: incomplete checkpoint (no {COMPLETE_MARKER} marker)")
    try:
        return dict(json.loads(marker.read_text()))
    except (ValueError, TypeError):
        raise GantuneError(f"{marker}: not a gantune checkpoint marker (written by an older version?)") from None


def verify(ckpt_dir: Path) -> dict[str, Any]:
    """The marker of a checkpoint whose every file is there at the size it was written; a torn
    write or copy is refused."""
    meta = read_meta(ckpt_dir)
    for name, size in meta.get("files", {}).items():
        path = Path(ckpt_dir) / name
        if not path.is_file() or path.stat().st_size != size:
            raise GantuneError(f"{ckpt_dir}: torn checkpoint ({name} is "
                               f"{'missing' if not path.is_file() else f'{path.stat().st_size} bytes, not {size}'})")
    return meta


def usable(ckpt_dir: Path) -> Path:
    """ckpt_dir if it is complete; else, with a warning, the newest complete one that can stand
    in for it: the copy a replacing save moved aside, or an earlier `checkpoint_*` of the same
    trial (Tune's copies). Raises when there is none."""
    ckpt_dir = Path(ckpt_dir)
    try:
        verify(ckpt_dir)
        return ckpt_dir
    except GantuneError as e:
        problem = str(e)
    parent = ckpt_dir.parent
    aside = sorted(parent.glob(f".{ckpt_dir.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    earlier = (sorted((p for p in parent.glob("checkpoint_*") if p.name < ckpt_dir.name), reverse=True)
               if ckpt_dir.name.startswith("checkpoint_") else [])
    for candidate in (*aside, *earlier):
        try:
            verify(candidate)
        except GantuneError:
            continue
        log.warning("%s; using %s instead", problem, candidate)
        return candidate
    raise GantuneError(f"{problem}, and no earlier complete checkpoint beside it")


def read_state(ckpt_dir: Path, tags: list[str]) -> dict[str, Any]:
    """The saved state of a complete checkpoint that has every engine in `tags`. A folder
    without its marker (a torn write) or with missing parts is refused, never a fresh start."""
    ckpt_dir = Path(ckpt_dir)
    verify(ckpt_dir)
    for part in (*tags, STATE_FILE):
        if not (ckpt_dir / part).exists():
            raise GantuneError(f"{ckpt_dir}: checkpoint is missing {part}")
    try:
        return dict(torch.load(ckpt_dir / STATE_FILE, map_location="cpu", weights_only=False))
    except Exception as e:
        raise GantuneError(f"{ckpt_dir / STATE_FILE}: unreadable checkpoint state ({e})") from None


def rng_state() -> dict[str, Any]:
    """This rank's random streams (noise, augmentation, data order of the workers)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


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
