"""PD-GAN's perceptual, diversity and hole TV losses and its coarse net's PConv losses
(losses/pdgan.py) against values worked out by hand on small tensors."""

from __future__ import annotations

import pytest
import torch

from losses.pdgan import PConvLoss, PDGANPerceptualLoss, diversity_loss, gram, hole_tv_loss
from net_helpers import one_thread  # noqa: F401  (autouse fixture)


def test_hole_tv_counts_pairs_inside_the_dilated_hole_only() -> None:
    hole = torch.zeros(1, 1, 4, 5)
    hole[..., 1, 1] = 1  # dilated: rows 0-2, columns 0-2
    image = torch.zeros(1, 1, 4, 5)
    image[..., 0, 0] = 1.0  # inside: differs from (0, 1) and (1, 0)
    image[..., 3, 4] = 5.0  # outside the dilated hole: not counted
    # Column pairs: 4 rows x 4 pairs = 16, one counted difference of 1; rows: 3 x 5 = 15, one.
    assert hole_tv_loss(image, hole).item() == pytest.approx(1 / 16 + 1 / 15)
    assert hole_tv_loss(image, torch.zeros_like(hole)).item() == 0.0


def test_diversity_is_the_inverse_of_the_feature_distance() -> None:
    a, b = torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 0.5)
    assert diversity_loss(a, b).item() == pytest.approx(1 / (0.5 + 1e-5))
    assert diversity_loss(a, a).item() == pytest.approx(1e5)


def test_perceptual_sums_four_vgg16_layers_and_diversity_reads_the_hole() -> None:
    loss = PDGANPerceptualLoss(random_weights=True)
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    fx, fy = loss.vgg(x), loss.vgg(y)
    expected = sum((fx[k] - fy[k]).abs().mean() for k in ("relu1_1", "relu2_1", "relu3_1", "relu4_1"))
    assert loss(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., 8:24, 8:24] = 1
    outside = x.clone()
    outside[..., :8, :] = y[..., :8, :]  # differs from x only outside the hole
    assert loss.diversity(x, outside, hole).item() == pytest.approx(1e5)
    assert loss.diversity(x, y, hole).item() < 1e3


def test_gram_is_normalised_by_channels_and_pixels() -> None:
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2 channels, 1, 2)
    # [[1*1 + 2*2, 1*3 + 2*0], [3*1, 3*3]] / (2 * 1 * 2)
    assert torch.allclose(gram(f), torch.tensor([[[5.0, 3.0], [3.0, 9.0]]]) / 4)


def test_pconv_terms_split_the_error_between_hole_and_known_pixels() -> None:
    loss = PConvLoss(random_weights=True)
    real = torch.rand(1, 3, 32, 32) * 2 - 1
    hole = torch.zeros(1, 1, 32, 32)
    hole[..., :16, :] = 1  # the top half
    out = real.clone()
    out[..., :16, :] += 0.4  # wrong in the hole only
    terms = loss(out, real, hole)
    # Means over every pixel of the masked error: 0.4 on half of them.
    assert terms["hole"].item() == pytest.approx(0.2, rel=1e-5)
    assert terms["valid"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["perc"].item() > 0 and terms["style"].item() > 0
    assert terms["tv"].item() == pytest.approx(hole_tv_loss(out * hole + real * (1 - hole), hole).item())
    # A perfect output: only the real's own TV in the hole is left.
    perfect = loss(real, real, hole)
    assert all(perfect[k].item() == pytest.approx(0.0, abs=1e-6) for k in ("hole", "valid", "perc", "style"))
    assert perfect["tv"].item() == pytest.approx(hole_tv_loss(real, hole).item())
