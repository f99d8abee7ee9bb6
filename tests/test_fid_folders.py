"""FID between image folders (`fid_between_folders`) and `gantune fid`.

The random stand-in keeps these fast; the official Inception is only used to check that its
absence is reported in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbones import pretrained
from data.scenes import render_scene
from gantune.errors import GantuneError
from metrics.fid import fid_between_folders
from scene_images import write_scenes

WEIGHTS_FILE = pretrained.WEIGHT_FILES["inception"].filename


def test_folders_of_mixed_images_and_competition_layout(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    imgs = [render_scene(i, 48, 0)[0] for i in range(5)]
    Image.fromarray(imgs[0]).convert("L").save(a / "0.png")
    Image.fromarray(imgs[1]).convert("RGBA").save(a / "1.png")
    Image.fromarray(imgs[2]).resize((64, 40)).save(a / "2.jpg")
    Image.fromarray(imgs[3]).save(a / "3.JPEG")
    Image.fromarray(imgs[4]).save(a / "4.bmp")
    (a / "notes.txt").write_text("not an image")
    b = write_scenes(tmp_path / "b" / "imgs", 20, 5, 48).parent  # DIR/imgs, as competitions ship
    result = fid_between_folders(
        a, b, batch_size=5, device="cpu", random_weights=True, progress=False
    )
    assert (result.metric, result.n_a, result.n_b) == ("fd_random_inception", 5, 5)
    assert np.isfinite(result.value) and result.value > 0
    assert "NOT FID" in result.note and str(a) in result.note


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing", "no such folder"),
        ("empty", "no images"),
        ("one", "at least 2"),
        ("broken", "bad.png"),
    ],
)
def test_folder_errors(case: str, match: str, tmp_path: Path) -> None:
    good = write_scenes(tmp_path / "good", 0, 2, 32)
    bad = tmp_path / "bad_dir"
    if case != "missing":
        bad.mkdir()
    if case == "one":
        write_scenes(bad, 0, 1, 32)
    if case == "broken":
        write_scenes(bad, 0, 2, 32)
        (bad / "bad.png").write_bytes(b"\x89PNG this is not a png")
    with pytest.raises(GantuneError, match=match):
        fid_between_folders(
            bad, good, batch_size=4, device="cpu", random_weights=True, progress=False
        )


def test_cli_fid_random_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ray_jobs.cli import main

    a, b = write_scenes(tmp_path / "a", 0, 4, 32), write_scenes(tmp_path / "b", 10, 4, 32)
    assert (
        main(["fid", str(a), str(b), "--random-weights", "--batch-size", "4", "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("fd_random_inception: ") and "(4 vs 4 images)" in out
    assert "NOT FID" in out and "fid:" not in out.lower()


def test_cli_fid_without_weights_and_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray_jobs.cli import main

    a, b = write_scenes(tmp_path / "a", 0, 2, 32), write_scenes(tmp_path / "b", 10, 2, 32)
    assert main(["fid", str(a), str(b)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and WEIGHTS_FILE in lines[0] and lines[0].startswith("gantune: error:")
    assert main(["fid", str(tmp_path / "nope"), str(b), "--random-weights"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "no such folder" in err


def test_cli_fid_dims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ray_jobs.cli import main

    a, b = write_scenes(tmp_path / "a", 0, 4, 32), write_scenes(tmp_path / "b", 10, 4, 32)
    args = ["fid", str(a), str(b), "--random-weights", "--device", "cpu"]
    assert main(args + ["--dims", "192"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fd_random_inception_dims192: ") and "(4 vs 4 images)" in out
    with pytest.raises(SystemExit) as exc:  # a usage mistake: argparse exits, in one line
        main(args + ["--dims", "100"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dims" in err[0]
