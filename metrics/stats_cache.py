"""The cache of real-image statistics: files under a hash of what decided them, read back only
when intact, written atomically (temp file, then os.replace), as NVlabs/stylegan3's metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$GANTUNE_CACHE_DIR/fid_stats, else $XDG_CACHE_HOME/gantune/fid_stats, else
    ~/.cache/gantune/fid_stats."""
    if os.environ.get("GANTUNE_CACHE_DIR"):
        return Path(os.environ["GANTUNE_CACHE_DIR"]) / "fid_stats"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gantune" / "fid_stats"


def cache_path(cache_dir: Path, settings: dict[str, object]) -> Path:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return cache_dir / f"{settings['metric']}-{digest[:24]}.npz"


def load_cached(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # a foreign or damaged file is recomputed, not trusted
        log.warning("ignoring unreadable statistics cache %s (%s)", path, e)
        return None


def save_atomic(path: Path, arrays: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # `mu` and `sigma` keys: pytorch-fid reads the same file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
