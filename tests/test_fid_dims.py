"""The Inception feature layers of pytorch-fid's `--dims` (64, 192, 768, 2048).

Parity: pytorch-fid's InceptionV3 with the output block of each dims, holding the same random
weights, with the grid average its `get_activations` applies. The 64 px ranking test records why
the demo scores the random stand-in on 192-d features: on 64 px scenes the pool3 stand-in gave
one value for every blur level (measured: 155, 147 and 148 for 2x, 4x and 8x down-and-up
sampling), while the 192-d features grow with the blur.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from backbones.inception import DIMS, FIDInception, build_fid_inception, recalibrate_batch_norm
from gantune.errors import GantuneError
from metrics.fid import FidEvaluator, metric_name
from ray_jobs import config as config_lib
from scene_images import scenes

CPU = torch.device("cpu")


def down_up(x: torch.Tensor, size_px: int) -> torch.Tensor:
    """Lose the detail finer than size_px, keep the layout and colours."""
    small = F.interpolate(x, size=size_px, mode="bilinear", antialias=True)
    return F.interpolate(small, size=x.shape[-1], mode="bilinear").clamp(0, 1)


@pytest.mark.parametrize("dims", [64, 192, 768])
def test_features_match_pytorch_fid_block(dims: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytorch_fid.inception as pfi

    calibrated = build_fid_inception(random_weights=True, seed=0)
    recalibrate_batch_norm(calibrated, [scenes(100, 6, 64)], device=CPU)
    state = calibrated.state_dict()
    ours = FIDInception(dims)
    ours.load_state_dict(state)  # every dims holds the whole official state dict
    ours.eval()
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
    ref = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[dims]]).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(dims))
    with torch.no_grad():
        a = ours(x)
        b = F.adaptive_avg_pool2d(ref(x)[0], (1, 1)).flatten(1)  # as get_activations does
    assert a.shape == (3, dims)
    assert a.std() > 0.05
    assert (a - b).abs().max() < 1e-5


def test_dims_names_and_choices() -> None:
    assert config_lib.FID_DIMS == DIMS
    assert metric_name(False, 2048) == "fid" and metric_name(True, 2048) == "fd_random_inception"
    assert metric_name(False, 192) == "fid_dims192"
    assert metric_name(True, 64) == "fd_random_inception_dims64"
    with pytest.raises(GantuneError, match="dims: expected one of 64, 192, 768, 2048"):
        FIDInception(100)
    with pytest.raises(GantuneError, match=r"eval.dims must be one of \[64, 192, 768, 2048\], got 1000"):
        config_lib.with_values(config_lib.Config(), {"eval.dims": 1000})


def test_evaluator_caches_each_layer_apart(tmp_path: Path) -> None:
    real, fake = scenes(0, 8, 32), scenes(20, 8, 32)
    kw = dict(dataset_key="scenes-0-8-32", random_weights=True, batch_size=8, device="cpu",
              cache_dir=tmp_path, progress=False)
    ev192 = FidEvaluator(real, dims=192, **kw)  # type: ignore[arg-type]
    ev2048 = FidEvaluator(real, **kw)  # type: ignore[arg-type]
    assert ev192.mu_real.shape == (192,) and ev2048.mu_real.shape == (2048,)
    assert len(list(tmp_path.iterdir())) == 2
    result = ev192(fake)
    assert set(result) == {"metric/fd_random_inception_dims192", "metric/official_inception"}
    assert "fd_random_inception_dims192" in ev192.note and "NOT FID" in ev192.note
    # From the cache, the same value.
    assert FidEvaluator(real, dims=192, **kw)(fake) == result  # type: ignore[arg-type]


def test_192d_stand_in_ranks_blur_of_64px_scenes() -> None:
    # The demo's objective: 64 px scenes, the random stand-in recalibrated on 48 of them.
    real, other = scenes(0, 48, 64), scenes(200, 48, 64)
    ev = FidEvaluator(real, dataset_key=None, random_weights=True, dims=192, batch_size=48,
                      device="cpu", progress=False)
    flat = other.mean(dim=(2, 3), keepdim=True).expand_as(other).contiguous()
    values = [ev(x)[ev.metric_key] for x in
              (other, down_up(other, 32), down_up(other, 16), down_up(other, 8), flat)]
    assert values == sorted(values), values
    assert values[1] > 1.5 * values[0], values  # 2x blur is clearly worse than real scenes


@pytest.mark.parametrize("objective, note", [
    ("metric/fid", None),
    ("metric/fid_dims192", "another Inception layer than pool3"),
    ("metric/fd_random_inception_dims192", "randomly initialised Inception features, not FID"),
    ("metric/kid", None),
    ("metric/kd_random_inception", "kernel distance on randomly initialised Inception features, not KID"),
    ("metric/kid_dims768", "not comparable to published KID"),
    ("metric/psnr_y", None),
])
def test_search_summary_names_what_the_objective_is(
    objective: str, note: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ray_jobs.summary import print_summary

    summary = {"objective": objective, "objective_is_fid": objective == "metric/fid",
               "trials": [], "best_trial": None, "best_config": None, "best_value": None}
    print_summary(summary, tmp_path)
    out = capsys.readouterr().out
    assert ("note:" in out) == (note is not None)
    if note:
        assert note in out
