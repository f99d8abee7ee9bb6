"""PSNR and SSIM as BasicSR computes them (metrics/paired.py), against piq and by hand, and the
KID statistic of the Inception evaluator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import piq
import pytest
import torch

from gantune.errors import GantuneError
from metrics.fid import FidEvaluator
from metrics.kid import kernel_inception_distance
from metrics.paired import PairedEvaluator, prepare, psnr, ssim, y_channel


def eight_bit(seed: int, n: int = 3, size: int = 32) -> torch.Tensor:
    """Images already on the 8-bit grid, so BasicSR's rounding leaves them as they are."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).double() / 255


def test_psnr_of_a_known_offset() -> None:
    real = torch.full((2, 3, 16, 16), 128 / 255, dtype=torch.float64)
    fake = real + 10 / 255  # MSE (10/255)^2 on the 8-bit grid: PSNR = 20 log10(25.5)
    assert torch.allclose(psnr(fake, real), torch.full((2,), 20 * math.log10(25.5), dtype=torch.float64))
    assert psnr(real, real).isinf().all()  # identical images, as BasicSR


def test_psnr_and_ssim_on_rgb_equal_piq() -> None:
    real = eight_bit(0)
    fake = (real + 0.08 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).clamp(0, 1)
    fake = prepare(fake)  # on the 8-bit grid for piq too
    ours = psnr(fake, real)
    theirs = piq.psnr(fake, real, data_range=1.0, reduction="none")
    assert torch.allclose(ours, theirs.double(), rtol=1e-6), (ours, theirs)
    ours = ssim(fake, real)
    theirs = piq.ssim(fake, real, data_range=1.0, reduction="none", kernel_size=11, kernel_sigma=1.5, downsample=False)
    assert torch.allclose(ours, theirs.double(), rtol=1e-5), (ours, theirs)
    assert 0 < ours.min() and ours.max() < 1


def test_y_channel_is_bt601_studio_range() -> None:
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(5, 3, 1, 1)
    y = y_channel(colours).flatten() * 255
    assert torch.allclose(y, torch.tensor([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]), atol=1e-4)


def test_y_channel_and_crop_border_score_what_they_select() -> None:
    real, fake = eight_bit(2), eight_bit(3)
    crop = 4
    cropped = lambda x: x[..., crop:-crop, crop:-crop]  # noqa: E731
    assert torch.allclose(psnr(fake, real, crop_border=crop), psnr(cropped(fake), cropped(real)))
    y_real, y_fake = y_channel(cropped(real)), y_channel(cropped(fake))
    ours = psnr(fake, real, crop_border=crop, y_only=True)
    assert torch.allclose(ours, piq.psnr(y_fake, y_real, data_range=1.0, reduction="none").double(), rtol=1e-6)
    ours = ssim(fake, real, crop_border=crop, y_only=True)
    theirs = piq.ssim(y_fake, y_real, data_range=1.0, reduction="none", kernel_size=11, kernel_sigma=1.5, downsample=False)
    assert torch.allclose(ours, theirs.double(), rtol=1e-5)
    # Y weighs the channels unequally: it is not the RGB score.
    assert not torch.allclose(ours, ssim(fake, real, crop_border=crop))


def test_paired_evaluator_reports_the_mean_under_its_name() -> None:
    real = eight_bit(4)
    fake = eight_bit(5)
    result = PairedEvaluator(real, ("psnr",), crop_border=2, y_only=True)(fake)
    assert list(result) == ["metric/psnr_y"]
    assert result["metric/psnr_y"] == pytest.approx(float(psnr(fake, real, crop_border=2, y_only=True).mean()))
    assert PairedEvaluator(real, ("ssim",))(real) == {"metric/ssim": pytest.approx(1.0)}
    with pytest.raises(GantuneError, match="differ in shape"):
        PairedEvaluator(real, ("ssim",))(fake[:2])
    with pytest.raises(GantuneError, match="at least 11x11"):
        ssim(fake, real, crop_border=11)


class TinyFeatures(torch.nn.Module):
    """A fixed random projection of 8x8-pooled pixels: features for the evaluator, cacheable."""

    weights_id = "tiny-features-v1"

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 16)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))


def test_kid_statistic_is_kid_of_the_features_and_is_cached(tmp_path: Path) -> None:
    real, fake = eight_bit(6, n=24).float(), eight_bit(7, n=20).float()
    net = TinyFeatures()
    make = lambda: FidEvaluator(real, dataset_key="real-24", feature_net=net, statistic="kid",  # noqa: E731
                                cache_dir=tmp_path, device="cpu", progress=False, batch_size=8)
    evaluator = make()
    result = evaluator(fake)
    assert list(result) == ["metric/kd_injected_features", "metric/official_inception"]
    with torch.no_grad():
        expected, _ = kernel_inception_distance(net(fake).double(), net(real).double(), num_subsets=100, subset_size=1000)
    assert result["metric/kd_injected_features"] == pytest.approx(expected, rel=1e-9)
    (cached,) = tmp_path.glob("kd_injected_features-*.npz")
    assert np.load(cached)["features"].shape == (24, 16)
    again = make()  # from the cache: the same features, the same value
    assert again(fake)["metric/kd_injected_features"] == pytest.approx(expected, rel=1e-9)
    with pytest.raises(GantuneError, match="'fid' or 'kid'"):
        FidEvaluator(real, dataset_key=None, feature_net=net, statistic="is")


def test_l1_and_tv_against_hand_computed_values() -> None:
    from metrics.paired import l1, tv

    real = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    fake = real.clone()
    fake[..., :2, :] = 51 / 255  # the top half off by 51 levels
    assert l1(fake, real).item() == pytest.approx(0.5 * 51 / 255)
    # A vertical step of height 1 between rows 1 and 2: 4 of the 24 neighbour pairs differ by 1.
    step = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    step[..., 2:, :] = 1.0
    assert tv(step).item() == pytest.approx(2 * 4 / 24)
    assert tv(real).item() == 0.0
    scores = PairedEvaluator(real, ("l1", "tv"))(fake)
    assert scores == {"metric/l1": pytest.approx(0.1), "metric/tv": pytest.approx(2 * 4 * 0.2 / 24),
                      "metric/tv_real": 0.0}
    with pytest.raises(GantuneError, match="expected metrics from"):
        PairedEvaluator(real, ("lpips",))
