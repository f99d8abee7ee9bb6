"""OASIS generator, U-Net discriminator and losses: reference parameter counts and widths,
shapes, noise handling, the class-balanced N + 1 loss and LabelMix against values worked out by
hand. Tiny nets (width 4, 32-64 px, batch 2) on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gantune.errors import GantuneError
from losses.oasis import (
    class_balance_weights,
    labelmix,
    labelmix_loss,
    n1_loss,
    n1_target,
    oasis_d_loss,
    oasis_g_loss,
)
from models.oasis import OASISDiscriminator, OASISGenerator

N_CLASSES = 5


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _one_hot(classes: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(classes, n).permute(0, 3, 1, 2).float()


def _random_label(batch: int, h: int, w: int, n: int = N_CLASSES) -> torch.Tensor:
    return _one_hot(torch.randint(0, n, (batch, h, w)), n)


def _tiny_G(**kwargs) -> OASISGenerator:
    return OASISGenerator(N_CLASSES, channels_G=4, z_dim=8, **{"crop_size": 32, **kwargs})


def _tiny_D(**kwargs) -> OASISDiscriminator:
    return OASISDiscriminator(
        N_CLASSES, channels_D=4, **{"crop_size": 32, "num_res_blocks": 5, **kwargs}
    )


@pytest.fixture(scope="module")
def reference_nets() -> tuple[OASISGenerator, OASISDiscriminator]:
    """G and D at the reference's ADE20K 256 px config, on the meta device (no memory)."""
    with torch.device("meta"):
        return OASISGenerator(151), OASISDiscriminator(151)


# Counted from boschresearch/OASIS (OASIS_Generator, OASIS_Discriminator) at its ADE20K 256 px
# config: 150 labels + don't care = 151 channels, channels_G 64, z_dim 64, 6 blocks.
@pytest.mark.parametrize(
    "which, reference, exact",
    [(0, 74.32e6, 74_314_691), (1, 22.26e6, 22_258_904)],
    ids=["generator", "discriminator"],
)
def test_parameter_count_matches_reference(
    reference_nets: tuple[OASISGenerator, OASISDiscriminator],
    which: int,
    reference: float,
    exact: int,
) -> None:
    n = _n_params(reference_nets[which])
    assert abs(n - reference) / reference < 0.01
    assert n == exact


def test_reference_widths(reference_nets: tuple[OASISGenerator, OASISDiscriminator]) -> None:
    G, D = reference_nets
    assert G.fc.in_channels == 64 + 151  # z concatenated to the label map
    assert [b.conv_1.out_channels for b in G.body] == [1024, 1024, 512, 256, 128, 64]
    assert all(b.norm_0.mlp_shared[0].in_channels == 64 + 151 for b in G.body)
    assert [b.conv2.out_channels for b in D.body_down] == [128, 128, 256, 256, 512, 512]
    assert [b.conv1.in_channels for b in D.body_up] == [512, 1024, 512, 512, 256, 256]
    assert [b.conv2.out_channels for b in D.body_up] == [512, 256, 256, 128, 128, 64]
    assert D.layer_up_last.out_channels == 152


@pytest.mark.parametrize(
    "crop, aspect_ratio, num_res_blocks, out_hw",
    [(32, 1.0, 6, (32, 32)), (64, 2.0, 6, (32, 64)), (32, 1.0, 4, (32, 32))],
)
def test_generator_forward_backward(
    seed: int, crop: int, aspect_ratio: float, num_res_blocks: int, out_hw: tuple[int, int]
) -> None:
    G = _tiny_G(crop_size=crop, aspect_ratio=aspect_ratio, num_res_blocks=num_res_blocks)
    assert len(G.body) == num_res_blocks and G.body[-1].conv_1.out_channels == 4
    out = G(_random_label(2, *out_hw))
    assert out.shape == (2, 3, *out_hw)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0
    out.square().mean().backward()
    grad = G.fc.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_generator_noise(seed: int) -> None:
    # eval: spectral norm stops its power iteration; instance norm keeps outputs of order 0.1.
    G = _tiny_G(param_free_norm="instance", num_res_blocks=4).eval()
    label = _random_label(2, 32, 32)
    z = torch.randn(2, 8)

    def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool((a - b).abs().max() > 0.01 * b.abs().max())

    with torch.no_grad():
        out = G(label, z)
        assert torch.equal(G(label, z), out)
        # A (B, z_dim) vector is the same as that vector at every pixel.
        assert torch.allclose(G(label, z[:, :, None, None].expand(-1, -1, 32, 32)), out)
        assert differs(G(label, torch.randn(2, 8)), out)
        assert differs(G(label), G(label))  # z drawn per call
    with pytest.raises(ValueError, match="z: expected"):
        G(label, torch.randn(2, 7))
    G_plain = _tiny_G(use_3d_noise=False)
    assert G_plain.fc.in_channels == N_CLASSES
    with pytest.raises(ValueError, match="use_3d_noise=False"):
        G_plain(label, z)


@pytest.mark.parametrize("hw, num_res_blocks", [((64, 128), 6), ((32, 48), 4)])
def test_discriminator_forward_backward(
    seed: int, hw: tuple[int, int], num_res_blocks: int
) -> None:
    D = _tiny_D(crop_size=64, num_res_blocks=num_res_blocks)
    assert len(D.body_down) == len(D.body_up) == num_res_blocks
    logits = D(torch.randn(2, 3, *hw))
    assert logits.shape == (2, N_CLASSES + 1, *hw)
    logits.square().mean().backward()
    for block in (D.body_down[0], D.body_up[-1]):
        grad = block.conv1.parametrizations.weight.original.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of"):
        D(torch.randn(1, 3, hw[0] + 2 ** (num_res_blocks - 1), hw[1]))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: _tiny_G(crop_size=48), "crop_size"),
        (lambda: _tiny_G(aspect_ratio=0), "aspect_ratio"),
        (lambda: _tiny_G(aspect_ratio=4.0, crop_size=32, num_res_blocks=6), "aspect_ratio"),
        (lambda: _tiny_G(spade_ks=4), "spade_ks"),
        (lambda: _tiny_G(param_free_norm="group"), "param_free_norm"),
        (lambda: _tiny_D(crop_size=48), "crop_size"),
        (lambda: _tiny_D(num_res_blocks=1), "num_res_blocks"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()


# Classes [[0, 1, 1], [2, 2, 2]], 6 pixels. With class 0 "don't care": counts 2 and 3 over
# K = 2 classes, so 6 / (2 * 2) and 6 / (2 * 3). Without: counts 1, 2, 3 over K = 3.
@pytest.mark.parametrize(
    "dontcare, expected",
    [(True, [[0.0, 1.5, 1.5], [1.0, 1.0, 1.0]]), (False, [[2.0, 1.0, 1.0], [2 / 3] * 3])],
)
def test_class_balance_weights_by_hand(dontcare: bool, expected: list[list[float]]) -> None:
    label = _one_hot(torch.tensor([[[0, 1, 1], [2, 2, 2]]]), 3)
    weights = class_balance_weights(label, contain_dontcare_label=dontcare)
    assert torch.allclose(weights, torch.tensor([expected]))


def test_class_balance_counts_over_the_batch() -> None:
    # Class 1: 4 + 1 pixels, class 2: 3 pixels, 8 pixels, K = 2: 8 / (2 * 5) and 8 / (2 * 3).
    label = _one_hot(torch.tensor([[[1, 1], [1, 1]], [[1, 2], [2, 2]]]), 3)
    weights = class_balance_weights(label, contain_dontcare_label=True)
    expected = torch.tensor([[[0.8, 0.8], [0.8, 0.8]], [[0.8, 4 / 3], [4 / 3, 4 / 3]]])
    assert torch.allclose(weights, expected)


def test_n1_targets() -> None:
    label = _one_hot(torch.tensor([[[0, 3], [1, 2]]]), 4)
    assert n1_target(label, True).tolist() == [[[1, 4], [2, 3]]]
    assert n1_target(label, False).tolist() == [[[0, 0], [0, 0]]]
    # Confident on the label's class: a small loss as real, a large one as fake.
    logits = 20.0 * _one_hot(n1_target(label, True), 5)
    assert n1_loss(logits, label, True, contain_dontcare_label=False) < 1e-6
    assert n1_loss(logits, label, False) > 10.0
    logits_fake = 20.0 * _one_hot(n1_target(label, False), 5)
    assert n1_loss(logits_fake, label, False) < 1e-6


def test_n1_loss_by_hand(seed: int) -> None:
    classes = torch.tensor([[[0, 1, 1], [2, 2, 2]]])
    label = _one_hot(classes, 3)
    logits = torch.randn(1, 4, 2, 3)
    weights = [[0.0, 1.5, 1.5], [1.0, 1.0, 1.0]]  # from test_class_balance_weights_by_hand
    log_p = torch.log_softmax(logits, dim=1)
    pixels = [(i, j) for i in range(2) for j in range(3)]
    real = -sum(weights[i][j] * log_p[0, int(classes[0, i, j]) + 1, i, j] for i, j in pixels) / 6
    fake = -sum(log_p[0, 0, i, j] for i, j in pixels) / 6  # never balanced
    assert math.isclose(n1_loss(logits, label, True), real, rel_tol=1e-5)
    assert math.isclose(n1_loss(logits, label, False), fake, rel_tol=1e-5)
    logits_fake = torch.randn(1, 4, 2, 3)
    fake_2 = n1_loss(logits_fake, label, False)
    assert torch.allclose(oasis_d_loss(logits, logits_fake, label), real + fake_2)
    assert torch.allclose(oasis_g_loss(logits, label), torch.as_tensor(real))
    unbalanced = -log_p.gather(1, (classes + 1)[:, None]).mean()
    assert torch.allclose(n1_loss(logits, label, True, class_balancing=False), unbalanced)
    with pytest.raises(ValueError, match="N \\+ 1 channels"):
        n1_loss(logits[:, :3], label, True)


def test_labelmix_mixes_by_class() -> None:
    classes = torch.randint(0, 8, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    label = _one_hot(classes, 8)
    real, fake = torch.randn(2, 2, 3, 16, 16).unbind(0)
    mixed, mask = labelmix(label, real, fake, generator=torch.Generator().manual_seed(3))
    assert mask.shape == (2, 1, 16, 16)
    for c in classes.unique():
        values = mask[:, 0][classes == c].unique()
        assert values.numel() == 1 and values.item() in (0.0, 1.0)  # one coin per class
    assert 0 < mask.mean() < 1  # both coins show up with this seed
    assert torch.equal(mixed, torch.where(mask.bool(), real, fake))
    again, _ = labelmix(label, real, fake, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, mixed)


def test_labelmix_loss_zero_when_consistent(seed: int) -> None:
    mask = torch.randint(0, 2, (2, 1, 8, 8)).float()
    logits_real, logits_fake = torch.randn(2, 2, 6, 8, 8).unbind(0)
    consistent = mask * logits_real + (1 - mask) * logits_fake
    assert labelmix_loss(mask, consistent, logits_fake, logits_real) == 0
    off_by_half = labelmix_loss(mask, consistent + 0.5, logits_fake, logits_real)
    assert torch.allclose(off_by_half, torch.tensor(0.25))
    # A per-pixel D is consistent by construction; the U-Net D, seeing context, is not.
    per_pixel_D = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1), torch.nn.LeakyReLU(0.2), torch.nn.Conv2d(8, N_CLASSES + 1, 1)
    )
    label = _random_label(2, 32, 32)
    real, fake = torch.randn(2, 2, 3, 32, 32).unbind(0)
    mixed, mask = labelmix(label, real, fake)
    with torch.no_grad():
        for D, is_consistent in ((per_pixel_D, True), (_tiny_D(), False)):
            loss = labelmix_loss(mask, D(mixed), D(fake), D(real))
            assert (loss < 1e-10) == is_consistent


def test_oasis_losses_train_both_nets(seed: int) -> None:
    G, D = _tiny_G(), _tiny_D()
    label, real = _random_label(2, 32, 32), torch.rand(2, 3, 32, 32) * 2 - 1
    # D step, as the reference: fakes without G's graph, LabelMix weighted 10.
    with torch.no_grad():
        fake = G(label)
    logits_fake, logits_real = D(fake), D(real)
    mixed, mask = labelmix(label, real, fake)
    loss_D = oasis_d_loss(logits_real, logits_fake, label) + 10.0 * labelmix_loss(
        mask, D(mixed), logits_fake, logits_real
    )
    loss_D.backward()
    grads = [p.grad for p in D.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in G.parameters())
    # G step.
    D.zero_grad()
    oasis_g_loss(D(G(label)), label).backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
