"""A full disk (issue 10, item 5): a save that runs out of space fails in one line, removes its
partial copy and keeps the previous checkpoint, from which the run resumes once space is free.
The disk is real: a 96 MiB tmpfs mounted for the test (root only, as the SLURM tests)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ray_jobs import checkpoint
from ray_jobs.cli import main

CONFIG = """\
data: {size_px: 32, n_train: 8, n_eval: 4}
model: {ngf: 4, ndf: 8, num_D: 1, n_layers_D: 2}
spade: {lambda_vgg: 0.0}
optim: {batch_size: 2}
train: {steps: 2}
eval: {every: 2, random_weights: true, cache_dir: CACHE}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """Take all but `leave` bytes of the disk."""
    fill = disk / "fill"
    with open(fill, "wb") as f:
        chunk = b"\0" * 2**20
        try:
            while shutil.disk_usage(disk).free > leave:
                f.write(chunk[: max(min(len(chunk), shutil.disk_usage(disk).free - leave), 1)])
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return fill


def test_a_full_disk_fails_the_save_in_one_line_and_keeps_the_previous_checkpoint(
        small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("CACHE", str(tmp_path / "cache")))
    run = small_disk / "run"
    latest = run / "checkpoints" / "latest"
    assert main(["train", str(config), "--run-dir", str(run)]) == 0
    assert checkpoint.verify(latest)["step"] == 2
    assert not (run / "checkpoints" / "start").exists()  # the start point goes once `latest` exists
    capsys.readouterr()

    # Room for the config and the logs, not for a checkpoint (about 40 MB).
    fill = _fill(small_disk, leave=2**20)
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--set", "train.steps=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"gantune: error: {latest}: checkpoint not saved (no space left on device"), err
    assert "the previous one, if any, is kept" in err
    assert checkpoint.verify(latest)["step"] == 2  # untouched
    assert sorted(p.name for p in latest.parent.iterdir()) == ["latest"]  # its partial copy removed

    # Space again: the run goes on from step 2 to 4.
    fill.unlink()
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--set", "train.steps=4"]) == 0
    assert checkpoint.verify(latest)["step"] == 4
