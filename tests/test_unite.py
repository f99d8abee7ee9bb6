"""UNITE: reference parameter counts, the Sinkhorn (unbalanced) OT solver against a numpy loop
and its balanced limit, the warp, tiny forward/backward shapes, and the shared exemplar losses as
UNITE uses them (normalised domain features, the L1 warp-mask term, self-reference VGG feature
matching) against values worked out by hand. Tiny nets (widths 4-8, 64 px, batch 2) on CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from exemplar_helpers import assert_reference_count, blocky_label, one_hot
from exemplar_helpers import one_thread  # noqa: F401  (autouse fixture)
from gantune.errors import GantuneError
from losses.exemplar import domain_alignment_loss, vgg_feature_matching_loss, warp_mask_l1_loss
from models.exemplar_blocks import feature_normalize
from models.sinkhorn import SinkhornUOT, epsilon_schedule, sinkhorn_uot, transport_plan, uot_cost, warp_matrix
from models.unite import Unite, UniteCorrespondence
from models.unite_generator import UniteGenerator

N_CLASSES = 5


def _tiny(**kwargs) -> Unite:
    return Unite(N_CLASSES, **{"ngf": 4, "nef": 4, "corr_nc": 8, "nhidden": 8, "crop_size": 64, **kwargs})


# ----------------------------------------------------------------------------------------------
# Reference size.


@pytest.fixture(scope="module")
def reference_net() -> Unite:
    """The ADE20K 256 px config (150 labels + unknown = 151 channels), on the meta device."""
    with torch.device("meta"):
        return Unite(151)


# Counted from fnzhan/UNITE's SEACEGenerator and NoVGGCorrespondence built with train_ade.sh's
# options (--maskmix --use_attention --PONO --PONO_C --use_coordconv --adaptor_nonlocal, ADE20K
# defaults); targets 131.84M and 76.27M.
@pytest.mark.parametrize(
    "part, target, exact",
    [("G", 131.84e6, 131_839_314), ("corr", 76.27e6, 76_266_870)],
)
def test_parameter_count_matches_reference(reference_net: Unite, part: str, target: float, exact: int) -> None:
    assert_reference_count(getattr(reference_net, part), target, exact)


def test_reference_widths(reference_net: Unite) -> None:
    corr, G = reference_net.corr, reference_net.G
    assert corr.layer[0].conv1.in_channels == 256 + 151 + 3  # features, label map, CoordConv
    assert corr.theta.out_channels == 256
    assert corr.adaptive_model_seg.layer1[0].in_channels == 151
    assert corr.adaptive_model_img.layer1[0].in_channels == 3
    assert G.fc.in_channels == 1024 and (G.sh, G.sw) == (8, 8)
    blocks = [G.G_head_0, G.G_middle_0, G.G_middle_1, G.G_up_0, G.G_up_1, G.G_out_0, G.G_out_1]
    assert [b.conv_1.out_channels for b in blocks] == [1024, 1024, 1024, 512, 256, 128, 64]
    assert [b.norm_0.ref_shared2[0].in_channels for b in blocks] == [512, 512, 512, 256, 256, 128, 3]
    assert G.G_out_1.norm_0.seg_shared[0].in_channels == 151  # the last block sees the label map
    assert [b.norm_0.atten for b in blocks] == [False, True, False, True, False, True, False]


# ----------------------------------------------------------------------------------------------
# The Sinkhorn solver.


def test_epsilon_schedule_by_hand() -> None:
    # diameter 2, blur 0.025: 2 and 0.025 first, then 2 halved while above 0.025.
    expected = [2.0, 0.025, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert epsilon_schedule(2.0, 0.025, p=1, scaling=0.5) == pytest.approx(expected)
    # p = 2 squares everything: 4, then 4 / 4 per step while above 0.025**2.
    assert epsilon_schedule(2.0, 0.025, p=2, scaling=0.5)[:5] == pytest.approx([4.0, 0.025**2, 4.0, 1.0, 0.25])
    assert epsilon_schedule(0.01, 0.025) == pytest.approx([0.01, 0.025])  # already below blur


def test_uot_cost_by_hand() -> None:
    x = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    y = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]]])
    c = uot_cost(x, y, p=1)
    assert torch.allclose(c, torch.tensor([[[1.0, 0.0, math.sqrt(2.0)]]]))
    assert torch.allclose(uot_cost(x, y, p=2), torch.tensor([[[0.5, 0.0, 1.0]]]))
    c.sum().backward()  # d sqrt(d) / dx at d = 0 is set to 0, not inf
    assert x.grad is not None and torch.isfinite(x.grad).all()


def _numpy_sinkhorn(a, b, C, eps_list, rho):
    """Sinkhorn for KL-relaxed OT in the exp (kernel) domain, float64: both potentials updated
    from the other's previous value, averaged with the old one, damped by rho / (rho + eps)."""
    lam = lambda eps: 1.0 if rho is None else rho / (rho + eps)  # noqa: E731
    eps = eps_list[0]
    K = np.exp(-C / eps)
    f = -lam(eps) * eps * np.log(K @ b)
    g = -lam(eps) * eps * np.log(K.T @ a)
    for eps in eps_list:
        K = np.exp(-C / eps)
        f_new = -lam(eps) * eps * np.log(K @ (b * np.exp(g / eps)))
        g_new = -lam(eps) * eps * np.log(K.T @ (a * np.exp(f / eps)))
        f, g = (f + f_new) / 2, (g + g_new) / 2
    K = np.exp(-C / eps)
    return -lam(eps) * eps * np.log(K @ (b * np.exp(g / eps))), -lam(eps) * eps * np.log(K.T @ (a * np.exp(f / eps)))


@pytest.mark.parametrize("rho", [0.5, None])
def test_sinkhorn_matches_numpy_loop(rho: float | None) -> None:
    rng = np.random.default_rng(0)
    for _ in range(2):
        a, b = rng.random(3) + 0.1, rng.random(4) + 0.1
        a, b = a / a.sum(), b / b.sum()
        C = rng.random((3, 4))
        eps_list = [1.0, 0.5, 0.25]
        f_np, g_np = _numpy_sinkhorn(a, b, C, eps_list, rho)
        t = lambda v: torch.from_numpy(v)[None]  # noqa: E731
        f, g = sinkhorn_uot(t(a), t(b), t(C), t(C.T.copy()), eps_list, rho)
        np.testing.assert_allclose(f[0].numpy(), f_np, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g[0].numpy(), g_np, rtol=1e-10, atol=1e-12)


def _converged(rho: float | None, eps: float = 0.1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, 5, generator=gen, dtype=torch.float64), 1)
    b = torch.softmax(torch.randn(2, 6, generator=gen, dtype=torch.float64), 1)
    C = torch.rand(2, 5, 6, generator=gen, dtype=torch.float64)
    f, g = sinkhorn_uot(a, b, C, C.transpose(1, 2), [eps] * 400, rho)
    return a, b, C, f, g, transport_plan(f, g, C, a, b, eps)


@pytest.mark.parametrize("rho", [None, 1e7])
def test_large_reach_is_balanced_ot(rho: float | None) -> None:
    a, b, _, _, _, plan = _converged(rho)
    torch.testing.assert_close(plan.sum(2), a, rtol=0, atol=1e-6)
    torch.testing.assert_close(plan.sum(1), b, rtol=0, atol=1e-6)


def test_small_reach_relaxes_marginals() -> None:
    """KL-relaxed optimality: row sums a_i exp(-f_i / rho), columns b_j exp(-g_j / rho)."""
    rho = 0.05
    a, b, _, f, g, plan = _converged(rho)
    assert (plan.sum(2) - a).abs().max() > 1e-2  # no longer the balanced marginals
    torch.testing.assert_close(plan.sum(2), a * torch.exp(-f / rho), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(plan.sum(1), b * torch.exp(-g / rho), rtol=1e-6, atol=1e-9)


def test_warp_matrix_is_the_reference_normalisation() -> None:
    """exp((f_i + g_j - C_ij) / eps) * a_i * b_i over its row sum: the reference's f_div_C."""
    a, b, C, f, g, plan = _converged(None)
    eps = 0.1
    # The reference views both masses as (B, N, 1): a_i * b_i, a factor per row (any will do).
    row_factor = torch.rand(2, 5, 1, dtype=torch.float64) + 0.5
    ref = torch.exp((f[:, :, None] + g[:, None, :] - C) / eps) * a[:, :, None] * row_factor
    ref = ref / ref.sum(2, keepdim=True)
    W = warp_matrix(g, C, eps)
    torch.testing.assert_close(W, ref)
    # b enters through g only: not the row-normalised balanced plan, whose columns carry b.
    assert (W - plan / plan.sum(2, keepdim=True)).abs().max() > 1e-3


def test_sinkhorn_module_gradients(seed: int) -> None:
    x = F.normalize(torch.randn(2, 7, 4), dim=2).requires_grad_(True)
    y = F.normalize(torch.randn(2, 9, 4), dim=2).requires_grad_(True)
    a = torch.softmax(torch.randn(2, 7), 1).requires_grad_(True)
    b = torch.softmax(torch.randn(2, 9), 1)
    f, g = SinkhornUOT(p=1, blur=0.05)(a, x, b, y)
    assert f.shape == (2, 7) and g.shape == (2, 9)
    (f.sum() + g.square().sum()).backward()
    assert x.grad is not None and y.grad is not None and x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0
    assert a.grad is None  # the masses enter the potentials detached, as in geomloss


# ----------------------------------------------------------------------------------------------
# Tiny forward passes.


def test_forward_shapes_and_backward(seed: int) -> None:
    net = _tiny()
    label, ref_label = blocky_label(2, 64, 64, N_CLASSES), blocky_label(2, 64, 64, N_CLASSES)
    exemplar, real = torch.rand(2, 2, 3, 64, 64).unbind(0)
    out = net(label, exemplar * 2 - 1, ref_label, real * 2 - 1)
    assert out["fake"].shape == (2, 3, 64, 64) and out["fake"].abs().max() <= 1
    assert out["warped"].shape == (2, 3, 64, 64)
    assert out["warp_mask"].shape == (2, N_CLASSES, 16, 16)
    assert out["conf_map"].shape == (2, 1, 16, 16)
    assert out["marginal_label"].shape == out["marginal_exemplar"].shape == (2, 256)
    assert out["warp_matrix"].shape == (2, 256, 256)
    assert out["adapted_label"].shape == out["adapted_real"].shape == (2, 16, 16, 16)
    for key in ("adapted_label", "adapted_real"):  # unit-norm per position, as v1's and v2's
        torch.testing.assert_close(out[key].norm(dim=1), torch.ones(2, 16, 16))
    assert len(out["warps"]) == 1 and out["warps"][0] is out["warped"]
    torch.testing.assert_close(out["warp_matrix"].sum(2), torch.ones(2, 256))
    torch.testing.assert_close(out["marginal_label"].sum(1), torch.ones(2))
    # Convex combinations of one-hot exemplar labels: the warped map sums to 1 per pixel.
    torch.testing.assert_close(out["warp_mask"].sum(1), torch.ones(2, 16, 16))
    loss = (
        out["fake"].square().mean()
        + warp_mask_l1_loss(out["warp_mask"], label)
        + domain_alignment_loss(out["adapted_label"], out["adapted_real"])
    )
    loss.backward()
    for part in (net.G.fc, net.corr.theta, net.corr.layer[0].conv1):
        assert part.weight.grad is not None and torch.isfinite(part.weight.grad).all()
        assert part.weight.grad.abs().sum() > 0
    assert "adapted_real" not in net(label, exemplar, ref_label)  # no real image: no domain pair
    assert all(p.dim() > 0 for p in net.parameters())  # DeepSpeed cannot flatten 0-dim parameters


def test_constant_exemplar_warps_to_itself(seed: int) -> None:
    net = _tiny(crop_size=128, aspect_ratio=2.0).eval()  # 64 x 128 images
    label, ref_label = blocky_label(1, 64, 128, N_CLASSES), blocky_label(1, 64, 128, N_CLASSES)
    colour = torch.tensor([0.3, -0.5, 0.9]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = net(label, colour.expand(1, 3, 64, 128), ref_label)
    assert out["fake"].shape == (1, 3, 64, 128)
    torch.testing.assert_close(out["warped"], colour.expand(1, 3, 64, 128))


def test_wrong_image_size_raises() -> None:
    net = _tiny()
    with pytest.raises(ValueError, match="label maps of"):
        net(blocky_label(1, 96, 96, N_CLASSES), torch.zeros(1, 3, 96, 96), blocky_label(1, 96, 96, N_CLASSES))
    with pytest.raises(ValueError, match="multiples of 8"):
        net.corr(one_hot(torch.zeros(1, 60, 60, dtype=torch.long), N_CLASSES), torch.zeros(1, 3, 60, 60),
                 one_hot(torch.zeros(1, 60, 60, dtype=torch.long), N_CLASSES))


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: _tiny(crop_size=48), "crop_size"),
        (lambda: _tiny(crop_size=32), "crop_size"),
        (lambda: _tiny(aspect_ratio=0), "aspect_ratio"),
        (lambda: _tiny(aspect_ratio=2.0), "aspect_ratio"),  # a 1 x 2 latent grid
        (lambda: _tiny(param_free_norm="group"), "param_free_norm"),
        (lambda: _tiny(blur=0), "blur"),
        (lambda: _tiny(reach=-1.0), "reach"),
        (lambda: _tiny(p=3), "p"),
        (lambda: _tiny(scaling=1.5), "scaling"),
        (lambda: _tiny(ngf=0), "ngf"),
        (lambda: UniteCorrespondence(N_CLASSES, match_kernel=2), "match_kernel"),
        (lambda: UniteGenerator(0), "semantic_nc"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    # On CPU: tiny nets build in well under a second there, many times faster than on meta.
    with pytest.raises(GantuneError, match=rf"^{name}: "):
        build()


# ----------------------------------------------------------------------------------------------
# Losses, by hand.


def test_domain_alignment_loss_by_hand() -> None:
    # The reference's "no_vgg_feat" on the adaptors' features, normalised per position as the
    # correspondence net does: (3, 4) -> (0.6, 0.8) and (0, 2) -> (0, 1) against (1, 0) and
    # (0, -5) -> (0, -1): |0.6 - 1| + |0.8 - 0| + |0 - 0| + |1 + 1| = 3.2 over 4.
    feat_label = feature_normalize(torch.tensor([[[[3.0, 0.0]], [[4.0, 2.0]]]]))
    feat_real = feature_normalize(torch.tensor([[[[1.0, 0.0]], [[0.0, -5.0]]]]))
    assert domain_alignment_loss(feat_label, feat_real).item() == pytest.approx(0.8, rel=1e-6)


def _classes_4x4() -> torch.Tensor:
    # 2 x 2 blocks of 2 x 2 px: classes [[0, 1], [2, 1]] at 1/2 scale.
    return torch.tensor([[[0, 1], [2, 1]]]).repeat_interleave(2, 1).repeat_interleave(2, 2)


def test_warp_mask_l1_loss_by_hand() -> None:
    label = one_hot(_classes_4x4(), 3)
    warp_mask = torch.zeros(1, 3, 2, 2)
    warp_mask[0, :, 0, 0] = torch.tensor([0.5, 0.5, 0.0])  # target (1, 0, 0): errors 0.5 + 0.5
    warp_mask[0, :, 0, 1] = torch.tensor([0.0, 1.0, 0.0])  # exact
    warp_mask[0, :, 1, 0] = torch.tensor([0.0, 1.0, 0.0])  # target (0, 0, 1): errors 1 + 1
    warp_mask[0, :, 1, 1] = torch.tensor([0.0, 0.75, 0.25])  # target (0, 1, 0): 0.25 + 0.25
    assert warp_mask_l1_loss(warp_mask, label).item() == pytest.approx(3.5 / 12)
    with pytest.raises(GantuneError, match="^label: "):
        warp_mask_l1_loss(warp_mask, label[:, :2])


def test_self_reference_feature_loss_by_hand() -> None:
    fake = [torch.tensor([[[[1.0, 2.0]]], [[[5.0, 5.0]]]]), torch.tensor([[[[0.0]]], [[[9.0]]]])]
    real = [torch.tensor([[[[0.0, 0.0]]], [[[0.0, 0.0]]]]), torch.tensor([[[[2.0]]], [[[0.0]]]])]
    self_ref = torch.tensor([1.0, 0.0])  # only the first sample's exemplar is its own image
    s = 1 / (1 + 1e-5)
    # Layer 1: (1 + 2) * s over 4 elements; layer 2: 2 * s over 2 elements.
    expected = 0.5 * (3 * s / 4) + 3.0 * (2 * s / 2)
    got = vgg_feature_matching_loss(fake, real, self_ref, layer_weights=(0.5, 3.0))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert vgg_feature_matching_loss(fake, real, torch.zeros(2), (0.5, 3.0)).item() == 0
    # Without flags every sample counts: the plain mean, 0.5 * (3 + 10) / 4 + 3 * (2 + 9) / 2.
    assert vgg_feature_matching_loss(fake, real, None, (0.5, 3.0)).item() == pytest.approx(0.5 * 13 / 4 + 16.5)
    with pytest.raises(GantuneError, match="^self_ref: "):
        vgg_feature_matching_loss(fake, real, torch.ones(3), (0.5, 3.0))
