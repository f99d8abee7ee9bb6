"""`gantune tune tune_spaces/<family>_pbt.yaml --smoke` for every family's space, on the built-in
scenes: a 2-trial PBT search each, on one Ray cluster for the module, whose summary.json holds
every trial's objective values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterator

import pytest

from ray_jobs.cli import main

OBJECTIVES = {"esrgan_pbt": ("metric/psnr", "max"), "rdn_pbt": ("metric/psnr_y", "max"),
              "srresnet_pbt": ("metric/psnr", "max")}
SPACES = sorted(p.name for p in (Path(__file__).parents[1] / "tune_spaces").glob("*_pbt.yaml"))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("space", SPACES)
def test_a_smoke_search_of_each_family_space(space: str, ray_cluster: None, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    name = space.removesuffix(".yaml")  # each space's `name`
    rc = main(["tune", str(Path(__file__).parents[1] / "tune_spaces" / space), "--smoke"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    summary = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
    # Label-to-image spaces judge on FID (its smoke stand-in), super-resolution on PSNR.
    objective, mode = OBJECTIVES.get(name, ("metric/fd_random_inception_dims192", "min"))
    assert summary["complete"] and (summary["objective"], summary["mode"]) == (objective, mode)
    assert len(summary["trials"]) == 2
    for trial in summary["trials"]:
        assert trial["error"] is None and trial["steps"] == 4
        assert [h["step"] for h in trial["history"] if "restored_from" not in h][:2] == [2, 4]
        assert all(math.isfinite(h["value"]) and h["value"] > 0 for h in trial["history"])
