"""CoCosNet v1: reference parameter counts, shapes and ranges of a tiny forward, the patch
correlation and the softmax warp against hand computation, the shared exemplar blocks (PONO,
self-attention, the norm choice), and the shared exemplar losses as v1 uses them against values
worked out by hand. Tiny nets (ngf 4, 64 px, batch 2) and a random-weight VGG19 at 32 px on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from exemplar_helpers import assert_reference_count, blocky_label, n_params, one_hot
from exemplar_helpers import one_thread  # noqa: F401  (autouse fixture)
from gantune.errors import GantuneError
from losses.contextual import ContextualLoss, contextual_loss
from losses.exemplar import (
    FM_LAYERS,
    ExemplarVGGLoss,
    domain_alignment_loss,
    perceptual_mse_loss,
    self_ref_weights,
    warp_cycle_loss,
    warp_mask_nll_loss,
    warp_self_loss,
)
from models.cocosnet import CoCosNet, correlation
from models.exemplar_blocks import PositionalNorm, ReflectSPADE, SelfAttention

N_CLASSES = 5


def _tiny(**kwargs) -> CoCosNet:
    return CoCosNet(N_CLASSES, **{"ngf": 4, "crop_size": 64, "corr_nc": 8, **kwargs})


def _inputs(size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    label, exemplar_label = (blocky_label(2, size, size, N_CLASSES) for _ in range(2))
    exemplar, real = torch.rand(2, 2, 3, size, size).mul(2).sub(1).unbind(0)
    return label, exemplar, exemplar_label, real


@pytest.fixture(scope="module")
def reference_net() -> CoCosNet:
    """The reference's ADE20K 256 px config on the meta device: 150 labels + don't care, ngf 64,
    --use_attention --maskmix --warp_mask_losstype direct --PONO --PONO_C.

    Without spectral norm: on the meta device its power iteration takes seconds, and it adds no
    parameters (test_spectral_norm_adds_no_parameters)."""
    with torch.device("meta"):
        return CoCosNet(151, spectral=False, norm_E="instance")


def test_spectral_norm_adds_no_parameters() -> None:
    plain, spectral = _tiny(spectral=False, norm_E="instance"), _tiny()
    assert n_params(plain) == n_params(spectral)
    convs = (spectral.G.head_0.conv_0, spectral.G.attn.theta, spectral.corr.adaptive_model_seg.layers[1][0],
             spectral.corr.adaptive_model_img.G_middle_1.conv_s)
    assert all(parametrize.is_parametrized(c) for c in convs)
    assert not parametrize.is_parametrized(spectral.corr.theta)  # as the reference: plain 1x1 convs
    assert all(p.dim() > 0 for p in spectral.parameters())  # DeepSpeed cannot flatten 0-dim parameters


# Counted from microsoft/CoCosNet's SPADEGenerator and NoVGGCorrespondence built with the
# README's ADE20K training command; the targets are the figures they print (96.7M, 59.3M).
@pytest.mark.parametrize(
    "which, target, exact",
    [("G", 96.66e6, 96_664_260), ("corr", 59.32e6, 59_315_716)],
    ids=["generator", "correspondence"],
)
def test_parameter_count_matches_reference(
    reference_net: CoCosNet, which: str, target: float, exact: int
) -> None:
    assert_reference_count(getattr(reference_net, which), target, exact)


def test_reference_parts(reference_net: CoCosNet) -> None:
    G, corr = reference_net.G, reference_net.corr
    # Per-module counts of the reference, and its widths.
    assert n_params(G.attn) == 81_921
    assert n_params(corr.adaptive_model_seg) == 24_227_776
    assert n_params(corr.adaptive_model_img) == 22_949_056
    assert n_params(corr.layer) == 11_929_988
    assert G.fc.in_channels == 3 + 151  # [warped exemplar, label]
    assert G.head_0.norm_0.mlp_shared[1].in_channels == 3 + 151  # after its reflection pad
    assert corr.layer[0].conv1.in_channels == 256 + 151  # --maskmix
    assert corr.theta.out_channels == corr.phi.out_channels == 256
    assert corr.adaptive_model_seg.head_0.norm_0.mlp_shared[1].in_channels == 151
    assert corr.adaptive_model_img.head_0.norm_0.mlp_shared[1].in_channels == 3


def test_forward_shapes_and_ranges(seed: int) -> None:
    net = _tiny()
    label, exemplar, exemplar_label, real = _inputs()
    out = net(label, exemplar, exemplar_label, real)
    assert set(out) == {"fake", "warped", "warps", "warped_low", "warp_mask", "adapted_label",
                        "adapted_exemplar", "adapted_real"}
    assert out["fake"].shape == out["warped"].shape == (2, 3, 64, 64)
    assert len(out["warps"]) == 1 and out["warps"][0] is out["warped"]  # what G is conditioned on
    assert out["warped_low"].shape == (2, 3, 16, 16)
    assert out["warp_mask"].shape == (2, N_CLASSES, 16, 16)
    for key in ("adapted_label", "adapted_exemplar", "adapted_real"):
        assert out[key].shape == (2, 16, 16, 16)  # 4 ngf channels at 1/4
        assert torch.allclose(out[key].norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    assert out["fake"].abs().max() <= 1.0
    # A softmax warp is a convex combination of the exemplar's pooled pixels and labels.
    pooled = F.avg_pool2d(exemplar, 4).flatten(2)
    low = out["warped_low"].flatten(2)
    assert (low >= pooled.min(dim=2, keepdim=True).values - 1e-6).all()
    assert (low <= pooled.max(dim=2, keepdim=True).values + 1e-6).all()
    assert torch.equal(out["warped"], F.interpolate(out["warped_low"], scale_factor=4, mode="nearest"))
    assert torch.allclose(out["warp_mask"].sum(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    assert "adapted_real" not in net(label, exemplar, exemplar_label)

    # One optimizer for both: G's output trains the correspondence through the warped exemplar.
    out["fake"].square().mean().backward()
    for p in (net.G.fc.weight, net.corr.theta.weight, net.corr.phi.weight,
              net.corr.adaptive_model_seg.layers[0][0].parametrizations.weight.original,
              net.corr.adaptive_model_img.layers[0][0].parametrizations.weight.original):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("warp_stride, low", [(4, 16), (2, 32)])
def test_cycle_options(seed: int, warp_stride: int, low: int) -> None:
    net = _tiny(warp_mask_losstype="cycle", warp_cycle=True, warp_stride=warp_stride,
                match_kernel=1, warp_bilinear=True)
    label, exemplar, exemplar_label, _ = _inputs()
    out = net(label, exemplar, exemplar_label)
    assert out["warped_low"].shape == out["warp_cycle"].shape == (2, 3, low, low)
    assert out["warp_mask"].shape == (2, N_CLASSES, low, low)
    assert torch.allclose(out["warp_mask"].sum(dim=1), torch.ones(2, low, low), atol=1e-5)
    assert "warp_mask" not in _tiny(warp_mask_losstype="none")(label, exemplar, exemplar_label)
    with pytest.raises(ValueError, match="multiples of"):
        net(label[..., :63], exemplar[..., :63], exemplar_label[..., :63])


def _patch_vectors(x: torch.Tensor, k: int) -> torch.Tensor:
    """(C*k*k, H*W) zero-padded k x k patches of one map (C, H, W), channel-major, by loops."""
    c, h, w = x.shape
    pad = F.pad(x, (k // 2,) * 4)
    cols = [pad[:, i : i + k, j : j + k].reshape(-1) for i in range(h) for j in range(w)]
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("k, channel_centering", [(3, True), (3, False), (1, True)])
def test_correlation_by_hand(seed: int, k: int, channel_centering: bool) -> None:
    theta, phi = torch.randn(2, 1, 3, 3, 4).unbind(0)
    got = correlation(theta, phi, k, channel_centering)
    a, b = _patch_vectors(theta[0], k), _patch_vectors(phi[0], k)
    dim = 0 if channel_centering else 1
    a, b = a - a.mean(dim, keepdim=True), b - b.mean(dim, keepdim=True)
    expected = torch.tensor([[float(a[:, i] @ b[:, j] / (a[:, i].norm() * b[:, j].norm()))
                              for j in range(12)] for i in range(12)])
    assert got.shape == (1, 12, 12)
    assert torch.allclose(got[0], expected, atol=1e-5)


def test_warp_is_softmax_over_correlation(seed: int) -> None:
    net = _tiny(temperature=0.05).eval()
    corr = net.corr
    captured: dict[str, torch.Tensor] = {}
    corr.theta.register_forward_hook(lambda m, i, o: captured.__setitem__("theta", o))
    corr.phi.register_forward_hook(lambda m, i, o: captured.__setitem__("phi", o))
    label, exemplar, exemplar_label, _ = _inputs()
    with torch.no_grad():
        out = corr(label, exemplar, exemplar_label)
    attn = torch.softmax(correlation(captured["theta"], captured["phi"], 3) / 0.05, dim=-1)
    for key, values in (("warped_low", F.avg_pool2d(exemplar, 4)),
                        ("warp_mask", F.interpolate(exemplar_label, size=(16, 16), mode="nearest"))):
        expected = torch.einsum("bij,bcj->bci", attn, values.flatten(2)).view(2, -1, 16, 16)
        assert torch.allclose(out[key], expected, atol=1e-5)


def test_shared_blocks_by_hand() -> None:
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) * 1e-3  # unbiased variance 1e-6, eps matters
    expected = torch.tensor([-1e-3, 0.0, 1e-3]).view(1, 3, 1, 1) / math.sqrt(1e-6 + 1e-5)
    assert torch.allclose(PositionalNorm()(x), expected)
    # SPADE: norm(x) * (1 + gamma) + beta, with constant gamma 0.5 and beta -2 from zeroed weights.
    spade = ReflectSPADE(3, 1, nhidden=1)
    with torch.no_grad():
        for conv, bias in ((spade.mlp_shared[1], 1.0), (spade.mlp_gamma, 0.5), (spade.mlp_beta, -2.0)):
            conv.weight.zero_()
            conv.bias.fill_(bias)
    got = spade(x.expand(1, 3, 4, 4), torch.randn(1, 1, 2, 2))
    assert torch.allclose(got, (expected * 1.5 - 2.0).expand(1, 3, 4, 4))
    # v1's SPADE norms: PONO with eps 1e-5, a batch norm without affine parameters.
    assert _tiny().G.head_0.norm_0.param_free_norm.eps == 1e-5
    bn = _tiny(param_free_norm="batch").G.up_3.norm_1.param_free_norm
    assert isinstance(bn, torch.nn.BatchNorm2d) and not bn.affine
    attn = SelfAttention(16)
    y = torch.randn(2, 16, 4, 4)
    assert torch.equal(attn(y), y)  # zero gain at init: the identity
    with torch.no_grad():
        attn.gamma.fill_(1.0)
    assert not torch.allclose(attn(y), y)


def test_self_ref_weights_and_pseudo_pair_losses() -> None:
    w = self_ref_weights(torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(w, torch.tensor([1, 0, 1]) / (2 + 1e-5))
    assert torch.equal(self_ref_weights(torch.zeros(2)), torch.zeros(2))
    # warp_self: mean over B*C*H*W of |d| * w_b = (1/B) * sum_b w_b |d_b| = 0.4 / (1 + 1e-5) / 2.
    warped = torch.zeros(2, 3, 4, 4)
    real = torch.stack([torch.full((3, 4, 4), 0.4), torch.full((3, 4, 4), 1.0)])
    got = warp_self_loss(warped, real, torch.tensor([1.0, 0.0]))
    assert math.isclose(got.item(), 0.4 / (1 + 1e-5) / 2, rel_tol=1e-6)
    assert warp_self_loss([warped], real, torch.tensor([1.0, 0.0])) == got  # one level as a list
    assert math.isclose(warp_self_loss(warped, real).item(), (0.4 + 1.0) / 2, rel_tol=1e-6)  # plain mean
    assert perceptual_mse_loss(torch.zeros(1, 2, 1, 1), torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)) == 5.0


def test_domain_alignment_and_warp_cycle_by_hand() -> None:
    a, b = torch.zeros(1, 2, 2, 2), torch.tensor([0.5, -0.5, 1.0, 0.0] * 2).view(1, 2, 2, 2)
    assert math.isclose(domain_alignment_loss(a, b).item(), 0.5)
    exemplar = torch.tensor([[1.0, 3.0, 0.0, 0.0], [1.0, 3.0, 0.0, 4.0],
                             [2.0, 2.0, 5.0, 5.0], [2.0, 2.0, 5.0, 5.0]]).expand(1, 3, 4, 4)
    # 2x2 means [[2, 1], [2, 5]]; |[[2, 2], [0, 5]] - them| = [[0, 1], [2, 0]], mean 0.75.
    cycle = torch.tensor([[2.0, 2.0], [0.0, 5.0]]).expand(1, 3, 2, 2)
    assert math.isclose(warp_cycle_loss(cycle, exemplar).item(), 0.75)


def test_warp_mask_nll_loss_by_hand() -> None:
    # 4x4 maps, nearest-downsampled to 2x2: the top-left pixel of each 2x2 block counts.
    gt = torch.tensor([[0, 4, 1, 4], [4, 4, 4, 4], [1, 4, 2, 4], [4, 4, 4, 4]])
    ref = torch.tensor([[0, 2, 1, 2], [2, 2, 2, 2], [1, 2, 1, 2], [2, 2, 2, 2]])
    label, exemplar_label = one_hot(gt[None], N_CLASSES), one_hot(ref[None], N_CLASSES)
    # The exemplar keeps classes {0, 1} after downsampling: class 2 (bottom right) drops out,
    # and class 0 (top left) is "don't care". So only the two class-1 pixels count.
    p = torch.full((1, N_CLASSES, 2, 2), 0.1)
    p[0, 1, 0, 1], p[0, 1, 1, 0], p[0, 0, 0, 0] = 0.5, 0.25, 0.8
    expected = (-math.log(0.5 + 1e-10) - math.log(0.25 + 1e-10)) / (2 + 1e-5)
    assert math.isclose(warp_mask_nll_loss(p, label, exemplar_label).item(), expected, rel_tol=1e-6)
    with_class_0 = (-math.log(0.5) - math.log(0.25) - math.log(0.8)) / (3 + 1e-5)
    got = warp_mask_nll_loss(p, label, exemplar_label, dontcare_class=None)
    assert math.isclose(got.item(), with_class_0, rel_tol=1e-5)


def test_vgg_terms(seed: int) -> None:
    loss = ExemplarVGGLoss(random_weights=True, seed=3, chunk_size=7)
    fake = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    real, exemplar = torch.rand(2, 2, 3, 32, 32).mul(2).sub(1).unbind(0)
    terms = loss(fake, real, exemplar, torch.tensor([1.0, 0.0]))
    # CX is losses.contextual's CoCosNet loss of fake against the exemplar.
    cx = ContextualLoss(random_weights=True, seed=3)(fake, exemplar)
    assert torch.allclose(terms["cx"], cx, rtol=1e-4)  # real and exemplar batched here
    # fm and perc recomputed from the features: relu*_2 weighted 1/32 ... 1, sample 0 only.
    with torch.no_grad():
        ff, fr = loss.features(fake), loss.features(real)
    fm = sum(w * (ff[k][0] - fr[k][0]).abs().mean() / 2 / (1 + 1e-5)
             for k, w in zip(FM_LAYERS, (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)))
    assert torch.allclose(terms["fm"], fm, rtol=1e-5)
    assert torch.allclose(terms["perc"], (ff["relu5_2"] - fr["relu5_2"]).square().mean(), rtol=1e-5)
    sum(terms.values()).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    same = loss(real, real, exemplar, torch.ones(2))
    assert same["fm"] == 0 and same["perc"] == 0
    assert loss(fake, real, exemplar, torch.zeros(2))["fm"] == 0  # no self-reference sample
    # --use_22ctx adds 1 x CX(relu2_2 pooled 4) to the same terms.
    with_22 = ExemplarVGGLoss(use_22ctx=True, random_weights=True, seed=3)(fake, real, exemplar, torch.ones(2))
    fe = loss.features(exemplar)
    cx22 = contextual_loss(F.avg_pool2d(ff["relu2_2"], 4), F.avg_pool2d(fe["relu2_2"], 4))
    assert torch.allclose(with_22["cx"], terms["cx"] + cx22, rtol=1e-4)


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: _tiny(crop_size=48), "crop_size"),
        (lambda: _tiny(crop_size=32), "crop_size"),
        (lambda: _tiny(aspect_ratio=2.0), "aspect_ratio"),
        (lambda: _tiny(warp_mask_losstype="both"), "warp_mask_losstype"),
        (lambda: _tiny(warp_stride=8), "warp_stride"),
        (lambda: _tiny(match_kernel=2), "match_kernel"),
        (lambda: _tiny(temperature=0), "temperature"),
        (lambda: _tiny(param_free_norm="group"), "param_free_norm"),
        (lambda: _tiny(ngf=0), "ngf"),
        (lambda: ExemplarVGGLoss(perceptual_layer="relu3_1", random_weights=True), "perceptual_layer"),
        (lambda: self_ref_weights(torch.ones(2, 1)), "self_ref"),
        (lambda: warp_cycle_loss(torch.zeros(1, 3, 3, 3), torch.zeros(1, 3, 8, 8)), "exemplar"),
        (lambda: warp_self_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8), torch.ones(3)), "self_ref"),
        (lambda: domain_alignment_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2)), "adapted_real"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    # On the CPU: spectral norm's power iteration is slow on the meta device, tiny nets are not.
    with pytest.raises(GantuneError, match=rf"^{name}: "):
        build()
