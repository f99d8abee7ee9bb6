"""CoCosNet v2: reference parameter counts, shapes and gradients of a tiny forward, v2's SPADE
norm variant, the PatchMatch pieces by hand, identity and translation recovered by the matching,
the seeded propagation order, and the shared exemplar losses as v2 uses them (four warp levels, a
feature pyramid, relu4_2) against values worked out by hand. Tiny nets (nef 8, ngf 4, 32-64 px)
on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from exemplar_helpers import assert_reference_count, n_params
from exemplar_helpers import one_thread  # noqa: F401  (autouse fixture)
from gantune.errors import GantuneError
from losses.contextual import contextual_loss
from losses.exemplar import ExemplarVGGLoss, domain_alignment_loss, warp_self_loss
from models.cocosnet2 import V2_EPS, CoCosNet2, CoCosNet2Correspondence
from models.discriminator import MultiscaleDiscriminator
from models.exemplar_blocks import feature_normalize
from models.patch_match import evaluate, offsets_to_indices, propagate, window_candidates

N_LABEL = 6


@pytest.fixture(scope="module")
def reference_net() -> CoCosNet2:
    """The DeepFashionHD 512 px config (20 pose channels, nef 32, ngf 64) on the meta device."""
    with torch.device("meta"):
        return CoCosNet2(20)


# Counted from microsoft/CoCosNet-v2 (NoVGGHPMCorrespondence, SPADEGenerator) built with its
# DeepFashionHD training options: label_nc 20, nef 32, ngf 64, --PONO --PONO_C, norm_G
# spectralspadesyncbatch3x3, norm_E spectralinstance, featEnc_kernel 3, crop_size 512.
@pytest.mark.parametrize(
    "part, target, exact",
    [("corr", 9.65e6, 9_648_360), ("G", 36.76e6, 36_763_203)],
)
def test_parameter_counts_match_reference(
    reference_net: CoCosNet2, part: str, target: float, exact: int
) -> None:
    assert_reference_count(getattr(reference_net, part), target, exact)


def test_parameter_counts_per_module(reference_net: CoCosNet2) -> None:
    corr = reference_net.corr
    assert n_params(corr.adaptive_model_seg) == 4_610_436
    assert n_params(corr.adaptive_model_img) == 4_645_860
    assert n_params(corr.patch_match) == 369_280  # initial layer 27,712 + update block
    assert n_params(corr.patch_match.refine_net) == 341_568
    assert reference_net.G.fc.in_channels == 4 * 3 + 20  # four warps, then the label map
    assert (reference_net.G.sh, reference_net.G.sw) == (16, 16)


def test_spade_norm_is_v2s() -> None:
    # v2's PositionalNorm2d has epsilon 1e-8 (v1's 1e-5), its SPADE batch norm is affine.
    net = CoCosNet2(N_LABEL, ngf=1, nef=1, crop_size=64)
    assert net.G.head_0.norm_0.param_free_norm.eps == 1e-8
    assert net.corr.adaptive_model_seg.G_middle_1.norm_s.param_free_norm.eps == 1e-8
    bn = CoCosNet2(N_LABEL, ngf=1, nef=1, crop_size=64, param_free_norm="batch").corr.adaptive_model_img.head_0.norm_0
    assert isinstance(bn.param_free_norm, torch.nn.BatchNorm2d) and bn.param_free_norm.affine


def test_discriminator_count_is_reference_minus_unused_decoder() -> None:
    # The reference's D (2 scales of 4 layers, ndf 64, 20 + 3 input channels) has 6,354,346
    # parameters, 785,704 of them in a decoder `dec` that its forward never calls.
    with torch.device("meta"):
        D = MultiscaleDiscriminator(20 + 3, num_D=2, ndf=64, n_layers_D=4)
    assert n_params(D) == 6_354_346 - 785_704


def _inputs(batch: int, size: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    label = torch.rand(batch, N_LABEL, size, size, generator=g)
    exemplar = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    exemplar_label = torch.rand(batch, N_LABEL, size, size, generator=g)
    real = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return label, exemplar, exemplar_label, real


def test_forward_shapes_and_gradients(seed: int) -> None:
    net = CoCosNet2(N_LABEL, ngf=4, nef=8, crop_size=64)
    label, exemplar, exemplar_label, real = _inputs(2, 64)
    cond: list[torch.Tensor] = []
    net.G.head_0.norm_0.register_forward_hook(lambda m, args, o: cond.append(args[1]))
    out = net(label, exemplar, exemplar_label, real=real, generator=torch.Generator())
    # G's condition: the four warps coarse to fine, resized (nearest) to the label's size, then the label.
    expected = [F.interpolate(w, size=(64, 64), mode="nearest") for w in out["warps"]] + [label]
    assert torch.equal(cond[0], torch.cat(expected, dim=1))
    fake = out["fake"]
    assert isinstance(fake, torch.Tensor) and fake.shape == (2, 3, 64, 64)
    assert torch.isfinite(fake).all() and fake.abs().max() <= 1.0
    assert [tuple(w.shape) for w in out["warps"]] == [(2, 3, s, s) for s in (8, 16, 32, 64)]
    assert out["warped"] is out["warps"][-1]
    assert out["warp_cycle"].shape == (2, 3, 8, 8)
    widths = [(32, 8), (32, 16), (16, 32), (8, 64)]  # 4, 4, 2, 1 x nef
    for key in ("adapted_label", "adapted_real"):
        assert [tuple(f.shape) for f in out[key]] == [(2, c, s, s) for c, s in widths]
    # Warps are convex combinations of exemplar pixels.
    for w in out["warps"]:
        assert w.min() >= exemplar.min() - 1e-5 and w.max() <= exemplar.max() + 1e-5

    loss = fake.square().mean() + sum(w.square().mean() for w in out["warps"])
    loss = loss + out["warp_cycle"].mean()
    loss = loss + domain_alignment_loss(out["adapted_label"], out["adapted_real"])
    loss.backward()
    corr = net.corr
    trained = [net.G.fc.weight, corr.theta[0].weight, corr.theta[3].weight, corr.phi[2].weight]
    trained += [corr.adaptive_model_seg.layer1[0].parametrizations.weight.original]
    trained += [corr.adaptive_model_img.G_middle_2.norm_0.mlp_gamma.weight]
    for p in trained:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # As in the reference: no loss reaches the GRU or the layer starting its hidden state.
    assert all(p.grad is None for p in corr.patch_match.parameters())


def test_forward_rejects_sizes_not_multiple_of_8() -> None:
    net = CoCosNet2Correspondence(N_LABEL, nef=4)
    label, exemplar, exemplar_label, _ = _inputs(1, 36)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(label, exemplar, exemplar_label)


def _random_features(batch: int, sizes: list[int], seed: int = 2) -> list[torch.Tensor]:
    """Unit-norm random features with nef = 8 channels, as the correspondence nets below."""
    g = torch.Generator().manual_seed(seed)
    return [feature_normalize(torch.randn(batch, 8, s, s, generator=g), V2_EPS) for s in sizes]


SIZES = [4, 8, 16, 32]  # 1/8 ... 1/1 of a 32 px image


@pytest.mark.parametrize("rounding", ["reference", "nearest"])
def test_identical_features_give_the_identity_warp(seed: int, rounding: str) -> None:
    corr = CoCosNet2Correspondence(N_LABEL, nef=8, offset_rounding=rounding)
    feats = _random_features(2, SIZES)
    exemplar = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    warps, cycle, best = corr.match(feats, feats, exemplar, torch.Generator().manual_seed(0))
    for s, warp, level_best in zip(SIZES, warps, best):
        target = F.avg_pool2d(exemplar, 32 // s) if s < 32 else exemplar
        torch.testing.assert_close(warp, target, atol=1e-3, rtol=0)
        identity = torch.arange(s * s).expand(2, -1)
        agreement = (level_best == identity).float().mean()
        if rounding == "nearest":
            assert agreement == 1.0
        else:
            # The untrained GRU's tiny updates move some first candidates one column left under
            # the reference's truncation (up to a third, depending on its init); the exact match
            # stays among the other candidates, as the warp above shows.
            assert 0.5 < agreement <= 1.0
    torch.testing.assert_close(cycle, F.avg_pool2d(exemplar, 8), atol=1e-3, rtol=0)


def test_translated_exemplar_is_warped_back(seed: int) -> None:
    """Exemplar and its features shifted by (1, 2) coarse pixels: every position whose match
    lies inside the exemplar gets the right pixel, at every level."""
    corr = CoCosNet2Correspondence(N_LABEL, nef=8)
    feats = _random_features(2, SIZES)
    dy, dx = 1, 2
    shifted = [torch.roll(f, (dy * s // 4, dx * s // 4), dims=(2, 3)) for f, s in zip(feats, SIZES)]
    exemplar = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    moved = torch.roll(exemplar, (dy * 8, dx * 8), dims=(2, 3))
    warps, _, _ = corr.match(feats, shifted, moved, torch.Generator().manual_seed(0))
    for s, warp in zip(SIZES, warps):
        k = s // 4
        target = F.avg_pool2d(exemplar, 32 // s) if s < 32 else exemplar
        inside = (..., slice(0, s - dy * k), slice(0, s - dx * k))
        torch.testing.assert_close(warp[inside], target[inside], atol=1e-3, rtol=0)


def test_propagation_order_comes_from_the_generator(seed: int) -> None:
    corr = CoCosNet2Correspondence(N_LABEL, nef=8, iteration_count=2)
    feats = _random_features(1, SIZES)
    other = _random_features(1, SIZES, seed=5)
    exemplar = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(7)
    warps_a, _, _ = corr.match(feats, other, exemplar, g)
    # One coin per round: 3 finer levels x 2 rounds.
    expected = torch.Generator().manual_seed(7)
    torch.rand(6, generator=expected)
    assert torch.equal(g.get_state(), expected.get_state())
    warps_b, _, _ = corr.match(feats, other, exemplar, torch.Generator().manual_seed(7))
    for a, b in zip(warps_a, warps_b):
        assert torch.equal(a, b)


def test_propagate_by_hand() -> None:
    rows = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).view(1, 1, 2, 3)
    cols = -rows
    h_rows, h_cols = propagate(rows, cols, "horizontal")
    # Candidates: the left neighbour's, the own, the right neighbour's; zero past the border.
    assert h_rows[0, :, 0].tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 0]]
    assert torch.equal(h_cols, -h_rows)
    v_rows, _ = propagate(rows, cols, "vertical")
    assert v_rows[0, :, :, 1].tolist() == [[0, 2], [2, 5], [5, 0]]


def test_offsets_to_indices_by_hand() -> None:
    # 3 x 3 grid, position (1, 1): a row update of -1e-4 truncates to one column left under the
    # reference's flattened index (3 * 0.9999 + 1 = 3.9997 -> 3), rounds back to 4 with
    # "nearest"; offsets past the grid are clamped.
    rows = torch.zeros(1, 2, 3, 3)
    cols = torch.zeros(1, 2, 3, 3)
    rows[0, 0, 1, 1] = -1e-4
    rows[0, 1, 1, 1], cols[0, 1, 1, 1] = 5.0, -5.0
    ref = offsets_to_indices(rows, cols, "reference")
    near = offsets_to_indices(rows, cols, "nearest")
    assert ref[0, :, 4].tolist() == [3, 6] and near[0, :, 4].tolist() == [4, 6]
    assert ref[0, 0, :4].tolist() == [0, 1, 2, 3]  # whole offsets are the same either way


def test_window_candidates_by_hand() -> None:
    # Coarse 2 x 2; position (0, 0) best matches (1, 1) (flat 3), the rest themselves.
    best = torch.tensor([[3, 1, 2, 3]])
    rows, cols = window_candidates(best, (2, 2), (4, 4))
    assert rows.shape == (1, 16, 4, 4)
    steps = [-2, 0, 2, 4]  # the 4 x 4 window, dilation 2, around twice the coarse offset
    assert rows[0, :, 0, 0].tolist() == [2 + s for s in steps for _ in steps]
    assert cols[0, :, 0, 0].tolist() == [2 + s for _ in steps for s in steps]
    assert rows[0, :, 1, 1].tolist() == rows[0, :, 0, 0].tolist()  # nearest 2x upsampling
    assert rows[0, 5, 2:, 2:].eq(0).all() and cols[0, 5, 2:, 2:].eq(0).all()


def test_evaluate_keeps_the_best_third() -> None:
    # 1 x 3 grid of orthogonal features: only the zero offset matches, and it wins everywhere.
    left = torch.eye(3).view(1, 3, 3)
    rows = torch.zeros(1, 3, 1, 3)
    # Three candidate column offsets per position (columns of this table), in varied order.
    cols = torch.tensor([[1.0, -1.0, -2.0], [2.0, 0.0, 0.0], [0.0, 1.0, -1.0]]).view(1, 3, 1, 3)
    out_rows, out_cols, prob = evaluate(left, left, rows, cols, temperature=0.01)
    assert out_rows.shape == out_cols.shape == prob.shape == (1, 1, 1, 3)
    assert out_cols.flatten().tolist() == [0.0, 0.0, 0.0]
    # softmax of (1, 0, 0) / 0.01: 1 / (1 + 2 e^-100)
    assert torch.allclose(prob, torch.ones(1, 1, 1, 3))


def test_warp_self_loss_by_hand() -> None:
    # Real 2 x 2 per channel [[1, 3], [5, 7]]: pooled 1 x 1 is 4.
    real = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).expand(2, 3, 2, 2)
    coarse = torch.zeros(2, 3, 1, 1)  # |0 - 4| = 4
    fine = torch.ones(2, 3, 2, 2)  # |1 - (1, 3, 5, 7)| = (0, 2, 4, 6): mean 3
    assert torch.isclose(warp_self_loss([coarse, fine], real), torch.tensor(7.0))
    # Self-reference flags (1, 0) on a batch of 2: sample 0 weighs 1 / (1 + 1e-5) in the
    # reference's mean over all elements, which halves it.
    got = warp_self_loss([coarse, fine], real, torch.tensor([1.0, 0.0]))
    assert math.isclose(got.item(), 3.5 / (1 + 1e-5), rel_tol=1e-6)
    with pytest.raises(GantuneError, match="^real: "):
        warp_self_loss([torch.zeros(2, 3, 3, 3)], real)


def test_pyramid_domain_alignment_loss_by_hand() -> None:
    # v2's feature-pair loss: the L1 summed over pyramid levels.
    a = [torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 4, 4)]
    b = [torch.full((1, 2, 2, 2), 0.25), torch.ones(1, 1, 4, 4)]
    b[1][..., 0, 0] = 3.0  # one of 16 elements off by 2
    assert torch.isclose(domain_alignment_loss(a, b), torch.tensor(0.25 + 2 / 16))
    with pytest.raises(GantuneError, match="^adapted_real: "):
        domain_alignment_loss(a, b[:1])


def test_vgg_losses() -> None:
    vgg_losses = ExemplarVGGLoss("relu4_2", random_weights=True)  # random VGG19: tests need no download
    g = torch.Generator().manual_seed(4)
    fake, real, exemplar = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(3))
    # The preprocessing: [-1, 1] to [0, 1], then torchvision's ImageNet mean and std.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    feats = vgg_losses.vgg(((fake + 1) / 2 - mean) / std)
    torch.testing.assert_close(vgg_losses.features(fake)["relu3_2"], feats["relu3_2"])

    same = vgg_losses(fake, fake, fake)
    assert same["fm"] == 0 and same["perc"] == 0 and same["cx"] < 1e-3
    out = vgg_losses(fake, real, exemplar)
    f_real = vgg_losses.features(real)
    layers = ["relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"]
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1]
    expected_fm = sum(
        w * (feats[layer] - f_real[layer]).abs().mean() for layer, w in zip(layers, weights)
    )
    torch.testing.assert_close(out["fm"], expected_fm)
    torch.testing.assert_close(out["perc"], (feats["relu4_2"] - f_real["relu4_2"]).square().mean())
    f_ex = vgg_losses.features(exemplar)
    expected_cx = (
        8 * contextual_loss(feats["relu5_2"], f_ex["relu5_2"])
        + 4 * contextual_loss(feats["relu4_2"], f_ex["relu4_2"])
        + 2 * contextual_loss(F.avg_pool2d(feats["relu3_2"], 2), F.avg_pool2d(f_ex["relu3_2"], 2))
    )
    torch.testing.assert_close(out["cx"], expected_cx, rtol=1e-4, atol=1e-6)  # real, exemplar batched
    assert out["cx"] > 0.1

    # Flags (1, 0): sample 0 weighs 1 / (1 + 1e-5) in a mean over both samples.
    weighted = vgg_losses(fake, real, exemplar, torch.tensor([1.0, 0.0]))
    alone = vgg_losses(fake[:1], real[:1], exemplar[:1])
    assert math.isclose(weighted["fm"].item(), 0.5 * alone["fm"].item() / (1 + 1e-5), rel_tol=1e-5)
    torch.testing.assert_close(weighted["perc"], out["perc"])  # never sample-weighted


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"semantic_nc": 0}, "semantic_nc"),
        ({"crop_size": 48}, "crop_size"),
        ({"crop_size": 32}, "crop_size"),
        ({"aspect_ratio": 0}, "aspect_ratio"),
        ({"aspect_ratio": 2.0}, "aspect_ratio"),
        ({"temperature": 0.0}, "temperature"),
        ({"iteration_count": 0}, "iteration_count"),
        ({"featEnc_kernel": 4}, "featEnc_kernel"),
        ({"param_free_norm": "group"}, "param_free_norm"),
        ({"norm_E": "group"}, "norm_E"),
        ({"offset_rounding": "floor"}, "offset_rounding"),
    ],
)
def test_bad_arguments_raise_gantune_error(kwargs: dict[str, object], name: str) -> None:
    # Tiny widths on the CPU: spectral norm's power iterations are slow on the meta device.
    args = {"semantic_nc": N_LABEL, "ngf": 1, "nef": 1, "crop_size": 64, **kwargs}
    with pytest.raises(GantuneError, match=rf"^{name}: "):
        CoCosNet2(**args)  # type: ignore[arg-type]
