"""Adversarial, feature-matching and KL losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gantune.errors import GantuneError
from losses.adversarial import gan_loss
from losses.feature_matching import feature_matching_loss
from losses.kl import kld_loss

PRED = torch.tensor([[-2.0, 0.5, 1.0, 3.0]])


def _softplus(v: float) -> float:
    return math.log(1.0 + math.exp(v))


@pytest.mark.parametrize(
    "mode, target_is_real, for_discriminator, expected",
    [
        # hinge D: mean(max(0, 1 - p)) for real, mean(max(0, 1 + p)) for fake; G: -mean(p)
        ("hinge", True, True, (3 + 0.5 + 0 + 0) / 4),
        ("hinge", False, True, (0 + 1.5 + 2 + 4) / 4),
        ("hinge", True, False, -(-2 + 0.5 + 1 + 3) / 4),
        # LSGAN: mean((p - 1)^2) for real, mean(p^2) for fake, same for D and G
        ("ls", True, True, (9 + 0.25 + 0 + 4) / 4),
        ("ls", False, True, (4 + 0.25 + 1 + 9) / 4),
        ("ls", True, False, (9 + 0.25 + 0 + 4) / 4),
        # BCE with logits: -log sigmoid(p) = softplus(-p) for real, softplus(p) for fake
        ("original", True, True, sum(_softplus(-p) for p in (-2, 0.5, 1, 3)) / 4),
        ("original", False, True, sum(_softplus(p) for p in (-2, 0.5, 1, 3)) / 4),
        ("original", True, False, sum(_softplus(-p) for p in (-2, 0.5, 1, 3)) / 4),
    ],
)
def test_gan_loss_values(
    mode: str, target_is_real: bool, for_discriminator: bool, expected: float
) -> None:
    loss = gan_loss(PRED, target_is_real, for_discriminator, mode)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_hinge_generator_must_aim_for_real() -> None:
    with pytest.raises(ValueError, match="target_is_real"):
        gan_loss(PRED, False, False, "hinge")


def test_unknown_mode_is_gantune_error() -> None:
    with pytest.raises(GantuneError, match="^mode: "):
        gan_loss(PRED, True, True, "wasserstein")


@pytest.mark.parametrize("mode", ["hinge", "ls", "original"])
def test_multiscale_uses_last_element_and_averages_scales(mode: str) -> None:
    pred_small = torch.tensor([[[[0.0]]]])
    # The features (first elements) would change the loss if they were used.
    features = [torch.full((1, 2, 3, 3), 50.0), torch.full((1, 2, 2, 2), -50.0)]
    multiscale = [[features[0], PRED], [features[1], pred_small]]
    per_scale = [gan_loss(PRED, True, True, mode), gan_loss(pred_small, True, True, mode)]
    expected = (per_scale[0] + per_scale[1]) / 2
    torch.testing.assert_close(gan_loss(multiscale, True, True, mode), expected)
    torch.testing.assert_close(gan_loss([PRED, pred_small], True, True, mode), expected)


def test_multiscale_hinge_is_mean_of_scale_means_not_of_elements() -> None:
    # Scale 1: 0.875 over 4 elements; scale 2: 1.0 over 1. Element mean would be 0.9.
    loss = gan_loss([[PRED], [torch.zeros(1, 1, 1, 1)]], True, True, "hinge")
    assert loss.item() == pytest.approx((0.875 + 1.0) / 2)


def _feats() -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    fake = [
        [
            torch.zeros(1, 1, 2, 2),
            torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]),
            torch.full((1, 1, 1, 1), 9.0),
        ],
        [torch.full((1, 2, 1, 1), 2.0), torch.full((1, 1, 1, 1), -9.0)],
    ]
    real = [
        [torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 1, 1)],
        [torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1)],
    ]
    for t in [t for scale in fake + real for t in scale]:
        t.requires_grad_(True)
    return fake, real


def test_feature_matching_value_skips_predictions() -> None:
    fake, real = _feats()
    # Scale 1: |0 - 1| = 1 and mean(0, 1, 2, 3) = 1.5; scale 2: |2 - 0| = 2. Divided by 2 scales.
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx((1.0 + 1.5 + 2.0) / 2)


def test_feature_matching_gradient_reaches_fake_only() -> None:
    fake, real = _feats()
    feature_matching_loss(fake, real).backward()
    for scale in real:
        for t in scale:
            assert t.grad is None
    # d/dfake of mean|fake - real| / num_D with fake < real: -1 / 4 elements / 2 scales.
    torch.testing.assert_close(fake[0][0].grad, torch.full((1, 1, 2, 2), -0.125))
    assert fake[0][-1].grad is None  # the prediction is not matched


def test_feature_matching_rejects_mismatched_scales() -> None:
    fake, real = _feats()
    with pytest.raises(ValueError, match="scales"):
        feature_matching_loss(fake, real[:1])


def test_kld_value() -> None:
    mu = torch.tensor([[1.0, 0.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # -0.5 * [(1 + 0 - 1 - 1) + (1 + ln2 - 0 - 2) + (1 + 0 - 4 - 1) + (1 + 0 - 1 - 1)]
    assert kld_loss(mu, logvar).item() == pytest.approx(0.5 * (7 - math.log(2.0)))


def test_kld_zero_at_standard_normal_and_positive_elsewhere() -> None:
    assert kld_loss(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    assert kld_loss(mu, logvar).item() > 0
