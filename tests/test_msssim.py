"""MS-SSIM and the MS-SSIM + L1 loss: parity with pytorch_msssim 1.0.0's `ms_ssim` (float64 and
float32, square and non-square, odd sides, data ranges 1 and 2, 3-, 4- and 5-scale weights), the
size bound and its helpers, the Gaussian-weighted L1 against values worked out by hand, and the
loss's limits and gradients. pytorch_msssim asserts sides > 160 px whatever the number of scales,
so the parity images are 161-200 px (small batches, a few ms each)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as reference_ms_ssim

from gantune.errors import GantuneError
from losses.msssim import (
    STANDARD_WEIGHTS,
    MSSSIML1Loss,
    gaussian_l1,
    max_scales,
    min_size_px,
    ms_ssim,
    truncated_weights,
)

torch.set_num_threads(1)


def _pair(shape: tuple[int, ...], data_range: float, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """x uniform on [0, data_range], y a noisy copy: correlated, so every cs stays positive."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * data_range
    y = (x + 0.2 * data_range * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, data_range)
    return x.to(dtype), y.to(dtype)


def _gaussian(win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    offsets = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    return g / g.sum()


PARITY_CASES = [
    ((2, 3, 161, 161), 1.0, STANDARD_WEIGHTS),
    ((2, 3, 176, 200), 2.0, STANDARD_WEIGHTS),
    ((1, 3, 171, 193), 1.0, STANDARD_WEIGHTS),  # odd sides: the padded pooling
    ((2, 1, 200, 165), 2.0, (0.2, 0.3, 0.5)),
    ((2, 3, 169, 176), 1.0, (0.1, 0.2, 0.3, 0.4)),
    ((2, 3, 176, 176), 2.0, truncated_weights(3)),
]


@pytest.mark.parametrize("shape, data_range, weights", PARITY_CASES)
def test_float64_matches_pytorch_msssim(shape: tuple[int, ...], data_range: float, weights: tuple[float, ...]) -> None:
    x, y = _pair(shape, data_range, torch.float64)
    ours = ms_ssim(x, y, data_range=data_range, weights=weights, reduction="none")
    # Handed the same float64 window, the reference agrees to rounding.
    window = _gaussian().view(1, 1, 1, 11).repeat(shape[1], 1, 1, 1)
    same_window = reference_ms_ssim(x, y, data_range=data_range, size_average=False, win=window, weights=list(weights))
    assert ours.shape == (shape[0],)
    assert torch.allclose(ours, same_window, rtol=0, atol=1e-12)
    # Its own window is built in float32: that alone moves it by up to ~1e-6.
    default = reference_ms_ssim(x, y, data_range=data_range, size_average=False, weights=list(weights))
    assert torch.allclose(ours, default, rtol=0, atol=2e-6)
    mean = ms_ssim(x, y, data_range=data_range, weights=weights)
    assert mean.ndim == 0
    assert mean.item() == pytest.approx(same_window.mean().item(), abs=1e-12)


@pytest.mark.parametrize("shape, data_range, weights", PARITY_CASES)
def test_float32_matches_pytorch_msssim(shape: tuple[int, ...], data_range: float, weights: tuple[float, ...]) -> None:
    x, y = _pair(shape, data_range, torch.float32, seed=1)
    ours = ms_ssim(x, y, data_range=data_range, weights=weights, reduction="none")
    theirs = reference_ms_ssim(x, y, data_range=data_range, size_average=False, weights=list(weights))
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-5)
    mean = ms_ssim(x, y, data_range=data_range, weights=weights)
    assert mean.item() == pytest.approx(reference_ms_ssim(x, y, data_range=data_range, weights=list(weights)).item(),
                                        abs=1e-5)


def test_negative_cs_is_clamped_like_the_reference() -> None:
    """An inverted image has cs near -1 at every scale: relu makes MS-SSIM 0, not a signed product."""
    x, _ = _pair((1, 3, 176, 176), 1.0, torch.float64)
    ours = ms_ssim(x, 1 - x, data_range=1.0, reduction="none")
    assert torch.equal(ours, torch.zeros(1, dtype=torch.float64))
    assert torch.equal(reference_ms_ssim(x, 1 - x, data_range=1.0, size_average=False), ours)


def test_identical_images_give_one_and_zero_loss() -> None:
    x = torch.rand(2, 3, 176, 176, dtype=torch.float64) * 2 - 1
    assert torch.allclose(ms_ssim(x, x, data_range=2.0, reduction="none"), torch.ones(2, dtype=torch.float64))
    assert MSSSIML1Loss()(x, x).item() == pytest.approx(0.0, abs=1e-12)


def test_loss_decreases_as_y_approaches_x() -> None:
    x, y = _pair((2, 3, 176, 176), 2.0, torch.float64)
    x, y = x - 1, y - 1  # into [-1, 1]
    loss = MSSSIML1Loss()
    values = [loss(x, x + t * (y - x)).item() for t in (1.0, 0.5, 0.25, 0.1, 0.0)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_too_small_images_raise_naming_the_size() -> None:
    x = torch.rand(1, 3, 160, 200)
    with pytest.raises(GantuneError, match=r"160x200.*5 scales.*>= 161 px"):
        ms_ssim(x, x, data_range=1.0)
    with pytest.raises(AssertionError):  # the reference's bound for 5 scales is the same
        reference_ms_ssim(x, x, data_range=1.0)
    # The bound follows the number of scales: 41 px for 3.
    small = torch.rand(1, 3, 41, 48)
    assert ms_ssim(small, small, data_range=1.0, weights=truncated_weights(3)).item() == pytest.approx(1.0)
    with pytest.raises(GantuneError, match=r"40x48.*3 scales.*>= 41 px"):
        ms_ssim(small[..., :40, :], small[..., :40, :], data_range=1.0, weights=truncated_weights(3))
    with pytest.raises(GantuneError, match=r"160x200"):
        MSSSIML1Loss()(x, x)


def test_max_scales_and_truncated_weights() -> None:
    sizes = [(10, 10), (11, 64), (21, 21), (40, 300), (41, 41), (64, 64), (160, 256), (161, 161), (256, 256),
             (321, 400)]
    assert [max_scales(h, w) for h, w in sizes] == [0, 1, 2, 2, 3, 3, 4, 5, 5, 6]
    assert [min_size_px(m) for m in (1, 3, 5)] == [11, 41, 161]
    assert max_scales(64, 64, win_size=7) == 4  # 6 * 8 < 64 <= 6 * 16
    three = truncated_weights(3)
    assert sum(three) == pytest.approx(1.0)
    assert three == pytest.approx(tuple(w / (0.0448 + 0.2856 + 0.3001) for w in STANDARD_WEIGHTS[:3]))
    assert truncated_weights(5) == pytest.approx(tuple(w / 1.0001 for w in STANDARD_WEIGHTS))
    with pytest.raises(GantuneError, match="n_scales=6"):
        truncated_weights(6)
    with pytest.raises(GantuneError, match="win_size=4"):
        max_scales(64, 64, win_size=4)


def test_gaussian_l1_against_hand_values() -> None:
    """Valid 11-tap filtering of a 1-channel 30x30 map: 20x20 = 400 positions."""
    g = _gaussian()
    y = torch.zeros(1, 1, 30, 30, dtype=torch.float64)
    # A uniform error of c counts fully, in units of the data range.
    assert gaussian_l1(y + 0.3, y, data_range=2.0).item() == pytest.approx(0.15, abs=1e-12)
    # An interior pixel (every window over it is valid) counts as in plain L1 over the 400 positions.
    x = y.clone()
    x[0, 0, 15, 15] = 0.8
    assert gaussian_l1(x, y).item() == pytest.approx(0.8 / 400, abs=1e-12)
    # A corner pixel sits only under the first window's corner tap.
    x = y.clone()
    x[0, 0, 0, 0] = 0.8
    assert gaussian_l1(x, y).item() == pytest.approx(0.8 * g[0].item() ** 2 / 400, abs=1e-15)
    # Per image, channels averaged.
    x = torch.zeros(2, 2, 30, 30, dtype=torch.float64)
    x[1, 0] = 0.5
    assert torch.allclose(gaussian_l1(x, torch.zeros_like(x), reduction="none"),
                          torch.tensor([0.0, 0.25], dtype=torch.float64))


def test_msssim_l1_loss_value() -> None:
    """alpha * (1 - the reference's MS-SSIM) + (1 - alpha) * an L1 weighted by an explicit 2D
    Gaussian, both on the images mapped from [-1, 1] to [0, 1]."""
    x01, y01 = _pair((2, 3, 176, 184), 1.0, torch.float64, seed=2)
    kernel = torch.outer(_gaussian(), _gaussian()).expand(3, 1, 11, 11)
    l1 = F.conv2d((x01 - y01).abs(), kernel, groups=3).mean()
    similarity = reference_ms_ssim(x01, y01, data_range=1.0)
    expected = 0.84 * (1 - similarity) + 0.16 * l1
    ours = MSSSIML1Loss()(x01 * 2 - 1, y01 * 2 - 1)
    assert ours.ndim == 0
    assert ours.item() == pytest.approx(expected.item(), abs=2e-6)
    # value_range only maps the images: [0, 1] inputs with value_range (0, 1) give the same loss.
    assert MSSSIML1Loss(value_range=(0.0, 1.0))(x01, y01).item() == pytest.approx(ours.item(), abs=1e-12)
    assert MSSSIML1Loss(alpha=0.0)(x01 * 2 - 1, y01 * 2 - 1).item() == pytest.approx(l1.item(), abs=1e-12)


def test_signed_images_are_mapped_before_ssim() -> None:
    """Two near-identical mid-grey images, +-0.03 apart in [-1, 1]: SSIM's luminance term on the
    signed values goes negative and relu zeroes MS-SSIM; mapped to [0, 1] they are close to 1."""
    noise = torch.randn(1, 3, 176, 176, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.05
    x, y = 0.03 + noise, -0.03 + noise
    assert ms_ssim(x, y, data_range=2.0).item() == 0.0
    assert MSSSIML1Loss()(x, y).item() < 0.02


@pytest.mark.parametrize("same", [False, True], ids=["different", "identical"])
def test_gradient_is_finite(same: bool) -> None:
    x, y = _pair((2, 3, 164, 170), 2.0, torch.float32, seed=4)
    x = (x - 1).requires_grad_(True)
    y = x.detach().clone() if same else y - 1
    MSSSIML1Loss()(x, y).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert same or x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"value_range": (1.0, -1.0)}, "value_range"),
        ({"weights": ()}, "weights"),
        ({"weights": (0.5, -0.5)}, "weights"),
        ({"win_size": 4}, "win_size"),
        ({"win_sigma": 0.0}, "win_sigma"),
        ({"K": (0.01,)}, "K"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(GantuneError, match=f"^{name}="):
        MSSSIML1Loss(**kwargs)


def test_bad_call_arguments_raise() -> None:
    x = torch.rand(1, 3, 176, 176)
    with pytest.raises(GantuneError, match="^y: expected the shape of x"):
        ms_ssim(x, x[..., :170], data_range=1.0)
    with pytest.raises(GantuneError, match="^data_range="):
        ms_ssim(x, x, data_range=0.0)
    with pytest.raises(GantuneError, match="^reduction="):
        ms_ssim(x, x, data_range=1.0, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(GantuneError, match="^x: expected"):
        gaussian_l1(x[0], x[0])
