"""Where the pretrained weight files live, and their checksums.

No weights are downloaded at run time: compute nodes often have no internet. A file is looked
up in a configured folder (argument or $GANTUNE_WEIGHTS_DIR), then in the torch hub cache
($TORCH_HOME/hub/checkpoints) under the file names torchvision and pytorch-fid use, and its
sha256 is checked before it is loaded. `gantune weights fetch` downloads them on a login node.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gantune.errors import GantuneError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    name: str  # what configs and the CLI call it
    filename: str  # the standard file name in the torch hub cache
    url: str
    sha256: str
    size_bytes: int
    used_by: str


WEIGHT_FILES: dict[str, WeightFile] = {
    "vgg16": WeightFile(
        name="vgg16",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size_bytes=553_433_881,
        used_by="DISTS",
    ),
    "vgg19": WeightFile(
        name="vgg19",
        filename="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        size_bytes=574_673_361,
        used_by="VGG perceptual loss, contextual loss (CX)",
    ),
    "inception": WeightFile(
        name="inception",
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
        sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        size_bytes=95_628_359,
        used_by="FID, KID (pytorch-fid's Inception)",
    ),
}

WEIGHTS_DIR_ENV = "GANTUNE_WEIGHTS_DIR"


def weight_file(name: str) -> WeightFile:
    if name not in WEIGHT_FILES:
        raise GantuneError(f"unknown weights {name!r}: expected one of {sorted(WEIGHT_FILES)}")
    return WEIGHT_FILES[name]


def hub_checkpoint_dir() -> Path:
    """$TORCH_HOME/hub/checkpoints, where torchvision and pytorch-fid cache their downloads."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders looked in, first match wins: argument, $GANTUNE_WEIGHTS_DIR, hub cache."""
    dirs = [Path(d) for d in (weights_dir, os.environ.get(WEIGHTS_DIR_ENV)) if d]
    return dirs + [hub_checkpoint_dir()]


def locate(name: str, weights_dir: str | os.PathLike[str] | None = None) -> Path:
    """The path of a weight file, or a one-line error that says where to put it."""
    wf = weight_file(name)
    dirs = search_dirs(weights_dir)
    for d in dirs:
        if (d / wf.filename).is_file():
            return d / wf.filename
    raise GantuneError(
        f"missing {name} weights ({wf.used_by}): put {wf.filename} in {dirs[0]}"
        + (f" or {', '.join(map(str, dirs[1:]))}" if len(dirs) > 1 else "")
        + f"; `gantune weights fetch {name}` downloads it on a machine with internet"
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> bool:
    # Keyed on size and mtime so a replaced file is hashed again; hashing 550 MB takes seconds.
    return sha256_of(Path(path)) == expected


def verify(name: str, path: Path) -> None:
    wf = weight_file(name)
    st = path.stat()
    if not _verified(str(path), st.st_size, st.st_mtime_ns, wf.sha256):
        raise GantuneError(
            f"{path}: sha256 does not match the official {name} weights ({wf.sha256[:12]}...); "
            f"the file is corrupt or not {wf.filename}: delete it and fetch it again"
        )


def load_state_dict(
    name: str, weights_dir: str | os.PathLike[str] | None = None
) -> dict[str, torch.Tensor]:
    """Locate, verify and load an official weight file onto the CPU."""
    path = locate(name, weights_dir)
    verify(name, path)
    log.info("loading %s weights from %s", name, path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file passed the size check but not torch
        raise GantuneError(f"{path}: cannot be read as a torch state dict ({e})") from None


def load_strict(
    net: torch.nn.Module, state: dict[str, torch.Tensor], what: str, prefix: str = ""
) -> None:
    """`net.load_state_dict(state, strict=True)`, refused in one line that starts with `what`
    and lists the first missing and unexpected keys (written with `prefix`, as in the file)."""
    expected, found = set(net.state_dict()), set(state)
    if expected != found:
        missing = [prefix + k for k in sorted(expected - found, key=_natural)]
        unexpected = [prefix + k for k in sorted(found - expected, key=_natural)]
        raise GantuneError(
            f"{what}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:  # the right keys with the wrong shapes
        detail = " ".join(str(e).split())
        raise GantuneError(f"{what}: {detail[:300]}") from None


def _natural(key: str) -> list[Any]:
    """features.10.weight after features.9.weight."""
    return [int(part) if part.isdigit() else part for part in key.split(".")]


def fetch(name: str, dest_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download one weight file (needs internet), verify it, and move it into place atomically."""
    wf = weight_file(name)
    dest = Path(dest_dir) if dest_dir else hub_checkpoint_dir()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / wf.filename
    if target.is_file() and sha256_of(target) == wf.sha256:
        return target
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{wf.filename}.", suffix=".part")
    os.close(fd)
    try:
        try:
            torch.hub.download_url_to_file(wf.url, tmp, hash_prefix=None, progress=True)
        except Exception as e:
            raise GantuneError(f"cannot download {wf.url}: {e}") from None
        got = sha256_of(Path(tmp))
        if got != wf.sha256:
            raise GantuneError(f"{wf.url}: downloaded file has sha256 {got}, expected {wf.sha256}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def status(name: str, weights_dir: str | os.PathLike[str] | None = None) -> tuple[str, Path]:
    """('ok' | 'missing' | 'bad checksum', path) for `gantune weights list|verify`."""
    wf = weight_file(name)
    try:
        path = locate(name, weights_dir)
    except GantuneError:
        return "missing", search_dirs(weights_dir)[0] / wf.filename
    try:
        verify(name, path)
    except GantuneError:
        return "bad checksum", path
    return "ok", path
