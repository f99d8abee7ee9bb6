"""VGG backbones and the feature-space losses (VGG perceptual, CX, DISTS, FFL) against references.

The references are torchvision's VGG, the dists-pytorch and focal-frequency-loss packages, and
the contextual loss formula as CoCosNet writes it (re-typed below, unchunked). Backbones are
randomly initialised (no weight downloads here); the same weights go into ours and the reference.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from backbones import vgg as vgg_mod
from backbones.vgg import VGGFeatures, layer_names, vgg_features
from gantune.errors import GantuneError
from losses.contextual import ContextualLoss, contextual_loss
from losses.dists import DISTS, alpha_beta_path
from losses.ffl import FocalFrequencyLoss
from losses.perceptual import VGGLoss


def _torchvision_features(arch: str) -> torch.nn.Sequential:
    """torchvision.models.<arch>().features, built without its 500 MB classifier being filled."""
    import torchvision

    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    return model.features.to_empty(device="cpu")


def _images(n: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    return x, y


# --- backbones/vgg.py -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_official_file_loads_strictly_and_matches_torchvision(arch, monkeypatch):
    tv = _torchvision_features(arch)
    torch.manual_seed(1)
    for p in tv.parameters():
        torch.nn.init.normal_(p, std=0.05)
    # What the official file holds: features.* plus a classifier we must ignore.
    official = {f"features.{k}": v.clone() for k, v in tv.state_dict().items()}
    official["classifier.0.weight"] = torch.zeros(2, 2)
    monkeypatch.setattr(vgg_mod.pretrained, "load_state_dict", lambda name, wdir=None: official)

    names = layer_names(arch)
    assert len(names) == len(tv)
    ours = VGGFeatures(arch, [names[-2]])  # the default is the official weights
    assert set(ours.state_dict()) <= set(official)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = tv[: len(names) - 1](x)
        got = ours(x)[names[-2]]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_official_weights_are_the_default_and_missing_file_says_where(monkeypatch):
    with pytest.raises(GantuneError, match="vgg19-dcbb9e9d.pth"):
        VGGFeatures("vgg19", ["relu1_1"])


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_foreign_weight_file_is_refused(damage, monkeypatch):
    features = vgg_features("vgg16", random_weights=True)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    if damage == "missing":
        del state["features.28.weight"]
    elif damage == "unexpected":
        state["features.31.weight"] = torch.zeros(1)
    else:
        state["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    monkeypatch.setattr(vgg_mod.pretrained, "load_state_dict", lambda name, wdir=None: state)
    with pytest.raises(GantuneError, match="vgg16 weights") as e:
        vgg_features("vgg16")
    assert "\n" not in str(e.value)
    assert ("features.28.weight" in str(e.value)) == (damage == "missing")


def test_random_init_is_torchvisions_seeded_and_leaves_global_rng_alone():
    before = torch.random.get_rng_state()
    a = vgg_features("vgg19", random_weights=True, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = vgg_features("vgg19", random_weights=True, seed=3)
    c = vgg_features("vgg19", random_weights=True, seed=4)
    assert torch.equal(a[0].weight, b[0].weight) and not torch.equal(a[0].weight, c[0].weight)
    w = a[28].weight  # conv5_1: Kaiming normal, fan_out = 512 * 9, ReLU gain
    assert abs(w.std().item() - (2 / (512 * 9)) ** 0.5) < 1e-3 * 2
    assert abs(w.mean().item()) < 1e-4 and torch.count_nonzero(a[28].bias) == 0


def test_feature_extractor_is_frozen_and_validates_layers():
    f = VGGFeatures("vgg19", ["relu1_1", "conv2_1"], random_weights=True)
    f.train()
    assert not f.training and all(not p.requires_grad for p in f.parameters())
    assert len(f.features) == layer_names("vgg19").index("conv2_1") + 1  # stops at the deepest
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    out = f(x)
    assert (out["conv2_1"] < 0).any()  # a conv output, not overwritten by an in-place ReLU
    out["relu1_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(GantuneError, match="layers: unknown vgg19 layer"):
        VGGFeatures("vgg19", ["relu6_1"], random_weights=True)
    with pytest.raises(GantuneError, match="arch='vgg11'"):
        VGGFeatures("vgg11", ["relu1_1"], random_weights=True)


def test_runtime_modules_import_neither_torchvision_nor_dists_pytorch():
    code = (
        "import sys, torch\n"
        "from losses.perceptual import VGGLoss\n"
        "from losses.contextual import ContextualLoss\n"
        "from losses.dists import DISTS\n"
        "from losses.ffl import FocalFrequencyLoss\n"
        "DISTS(random_weights=True)\n"
        "bad = [m for m in ('torchvision', 'DISTS_pytorch') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


# --- losses/perceptual.py ---------------------------------------------------------------------


def test_vgg_loss_equals_spade_computation_through_torchvision_vgg19(seed):
    loss = VGGLoss(random_weights=True, seed=5)
    tv = _torchvision_features("vgg19")[:30]  # up to relu5_1; keys keep torchvision's indices
    ours = {k.removeprefix("features."): v for k, v in loss.vgg.state_dict().items()}
    tv.load_state_dict(ours, strict=True)
    x, y = _images()
    x.requires_grad_(True)

    # SPADE: slices ending at relu1_1, relu2_1, relu3_1, relu4_1, relu5_1; [-1, 1] fed as is.
    def spade(img: torch.Tensor) -> list[torch.Tensor]:
        return [tv[: end + 1](img) for end in (1, 6, 11, 20, 29)]

    fx, fy = spade(x), spade(y)
    weights = [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]
    expected = sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(weights, fx, fy))
    (g_expected,) = torch.autograd.grad(expected, x)

    got = loss(x, y)
    (g_got,) = torch.autograd.grad(got, x)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-5, atol=1e-9)
    assert loss(y, y).item() == 0.0


def test_vgg_loss_arguments():
    with pytest.raises(GantuneError, match="layer_weights"):
        VGGLoss(layer_weights=[1.0], random_weights=True)
    loss = VGGLoss(["relu1_1"], [1.0], random_weights=True)
    with pytest.raises(GantuneError, match="y: expected the shape"):
        loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8))
    with pytest.raises(GantuneError, match=r"x: expected RGB images"):
        loss(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))


# --- losses/contextual.py ---------------------------------------------------------------------


def cx_unchunked(x, y, h=0.1, centering="channel"):
    """CoCosNet's ContextualLoss_forward, the whole HW x HW matrix at once, batch-averaged."""
    n, c = x.shape[:2]
    mu = y.mean(dim=1, keepdim=True) if centering == "channel" else y.mean(dim=(2, 3), keepdim=True)
    x, y = x - mu, y - mu
    x = (x / (x.norm(2, 1, keepdim=True) + sys.float_info.epsilon)).view(n, c, -1)
    y = (y / (y.norm(2, 1, keepdim=True) + sys.float_info.epsilon)).view(n, c, -1)
    d = 1 - torch.matmul(x.permute(0, 2, 1), y)
    d_norm = d / (torch.min(d, dim=-1, keepdim=True)[0] + 1e-3)
    w = torch.exp((1 - d_norm) / h)
    a = w / torch.sum(w, dim=-1, keepdim=True)
    cx = torch.mean(torch.max(a, dim=-1)[0], dim=1)
    return (-torch.log(cx)).mean()


@pytest.mark.parametrize("centering", ["channel", "spatial"])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, 36, 1000])
def test_cx_chunked_equals_full_matrix_values_and_gradients(centering, chunk_size):
    g = torch.Generator().manual_seed(0)
    # Non-negative like ReLU features, but no all-zero position: the formula's gradient at a
    # zero vector is 1/float_eps in CoCosNet as here, and would only compare rounding noise.
    x = torch.rand(2, 8, 6, 6, generator=g).requires_grad_(True)  # HW = 36
    y = torch.rand(2, 8, 6, 6, generator=g).requires_grad_(True)
    ref = cx_unchunked(x.double(), y.double(), h=0.2, centering=centering)
    ref_gx, ref_gy = torch.autograd.grad(ref, (x, y))
    got = contextual_loss(x, y, 0.2, chunk_size, centering=centering)
    gx, gy = torch.autograd.grad(got, (x, y))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref.float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(gx, ref_gx, rtol=0, atol=1e-5)
    torch.testing.assert_close(gy, ref_gy, rtol=0, atol=1e-5)
    assert gx.abs().max() > 1e-3  # the comparison is not between two zeros


def test_cx_spatial_centering_accepts_feature_maps_of_different_sizes():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(1, 4, 5, 3, generator=g), torch.randn(1, 4, 4, 4, generator=g)
    torch.testing.assert_close(
        contextual_loss(x, y, 0.1, 4, centering="spatial"),
        cx_unchunked(x, y, 0.1, "spatial"),
        rtol=0,
        atol=1e-5,
    )
    with pytest.raises(GantuneError, match="centering='channel' needs"):
        contextual_loss(x, y)


def test_cx_is_stable_where_the_literal_formula_overflows():
    x = torch.randn(1, 16, 4, 4, requires_grad=True)
    assert not torch.isfinite(cx_unchunked(x, x.detach(), h=0.01))  # exp(1/h) = inf in float32
    loss = contextual_loss(x, x.detach(), h=0.01)
    loss.backward()
    assert 0 <= loss.item() < 1e-4 and torch.isfinite(x.grad).all()


def _peak_cpu_bytes(fn) -> int:
    """The most CPU memory alive at once while fn runs, from the profiler's allocation records."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.events() if e.cpu_parent is None]  # allocations net of frees
    events.sort(key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.cpu_memory_usage
        peak = max(peak, live)
    return peak


def test_cx_chunking_bounds_peak_memory_in_forward_and_backward():
    hw, chunk = 32 * 32, 128
    x = torch.randn(1, 16, 32, 32, requires_grad=True)
    y = torch.randn(1, 16, 32, 32)
    matrix_bytes = hw * hw * 4

    full = _peak_cpu_bytes(lambda: contextual_loss(x, y, 0.1, hw).backward())
    chunked = _peak_cpu_bytes(lambda: contextual_loss(x, y, 0.1, chunk).backward())
    assert full > 2 * matrix_bytes  # the meter sees the HW x HW matrices when they exist
    # A few (chunk x HW) blocks and the features; one full matrix would already be 8x more.
    assert chunked < matrix_bytes, (chunked, full)


def test_contextual_loss_module_is_cocosnets_get_ctx_loss():
    loss = ContextualLoss(random_weights=True, seed=2, chunk_size=5)
    assert (loss.layers, loss.layer_weights, loss.avg_pool, loss.h) == (
        ["relu5_2", "relu4_2", "relu3_2"], [8.0, 4.0, 2.0], [1, 1, 2], 0.1,
    )  # fmt: skip
    x, y = _images(n=2, size=64, seed=3)
    x.requires_grad_(True)
    y.requires_grad_(True)
    got = loss(x, y)
    got.backward()
    assert y.grad is None  # the exemplar's features are detached

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        fx = loss.vgg(((x + 1) / 2 - mean) / std)
        fy = loss.vgg(((y + 1) / 2 - mean) / std)
        expected = (
            8 * cx_unchunked(fx["relu5_2"], fy["relu5_2"])
            + 4 * cx_unchunked(fx["relu4_2"], fy["relu4_2"])
            + 2 * cx_unchunked(F.avg_pool2d(fx["relu3_2"], 2), F.avg_pool2d(fy["relu3_2"], 2))
        )
    torch.testing.assert_close(got.detach(), expected, rtol=0, atol=1e-5)
    assert got.item() > 0.1 and loss(y, y).item() < got.item() / 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"h": 0.0}, "h=0.0"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"layer_weights": [1.0]}, "layer_weights"),
        ({"avg_pool": [1, 1, 0]}, "avg_pool"),
        ({"centering": "global"}, "centering='global'"),
        ({"layers": ["relu9_9"], "layer_weights": [1.0], "avg_pool": [1]}, "unknown vgg19 layer"),
    ],
)
def test_contextual_loss_arguments(kwargs, match):
    with pytest.raises(GantuneError, match=match):
        ContextualLoss(random_weights=True, **kwargs)


# --- losses/dists.py --------------------------------------------------------------------------


def test_dists_matches_dists_pytorch_values_and_input_gradients(monkeypatch):
    from DISTS_pytorch import DISTS_pt

    torch.manual_seed(0)
    tv = _torchvision_features("vgg16")
    for m in tv:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            torch.nn.init.normal_(m.bias, std=0.1)

    class _VGG16:
        features = tv

    monkeypatch.setattr(DISTS_pt.models, "vgg16", lambda *a, **k: _VGG16())
    ref = DISTS_pt.DISTS(load_weights=False)
    shipped = torch.load(alpha_beta_path(), weights_only=True)
    ref.alpha.data, ref.beta.data = shipped["alpha"], shipped["beta"]

    ours = DISTS(random_weights=True)
    # Copy the reference's conv weights: its stageK.<i> is torchvision's features.<i>.
    copied = {
        "features." + k.split(".", 1)[1]: v
        for k, v in ref.state_dict().items()
        if k.startswith("stage") and not k.endswith("filter")
    }
    ours.vgg.load_state_dict(copied, strict=True)
    torch.testing.assert_close(ours.alpha, shipped["alpha"], rtol=0, atol=0)

    g = torch.Generator().manual_seed(4)
    x01 = torch.rand(2, 3, 32, 32, generator=g, requires_grad=True)
    y01 = (x01.detach() + 0.2 * torch.rand(2, 3, 32, 32, generator=g)).clamp(0, 1)

    expected = ref(x01, y01, require_grad=True, batch_average=True)
    (g_expected,) = torch.autograd.grad(expected, x01)
    got = ours(x01 * 2 - 1, y01 * 2 - 1)  # ours takes [-1, 1]
    (g_got,) = torch.autograd.grad(got, x01)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-4, atol=1e-6)
    assert g_expected.abs().max() > 1e-5
    per_image = ours.distance(x01.detach() * 2 - 1, y01 * 2 - 1)
    torch.testing.assert_close(per_image, ref(x01.detach(), y01), rtol=0, atol=1e-6)
    assert ours(y01 * 2 - 1, y01 * 2 - 1).abs().item() < 1e-6


def test_dists_without_the_package_says_how_to_install(monkeypatch):
    import losses.dists as dists_mod

    monkeypatch.setattr(dists_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GantuneError, match="pip install dists-pytorch"):
        DISTS(random_weights=True)


# --- losses/ffl.py ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 2.0])
@pytest.mark.parametrize("patch_factor", [1, 2])
@pytest.mark.parametrize("ave_spectrum", [False, True])
@pytest.mark.parametrize("log_matrix", [False, True])
@pytest.mark.parametrize("batch_matrix", [False, True])
def test_ffl_matches_focal_frequency_loss(
    alpha, patch_factor, ave_spectrum, log_matrix, batch_matrix
):
    from focal_frequency_loss import FocalFrequencyLoss as Reference

    opts = dict(alpha=alpha, patch_factor=patch_factor, ave_spectrum=ave_spectrum,
                log_matrix=log_matrix, batch_matrix=batch_matrix)  # fmt: skip
    pred, target = _images(n=2, size=16, seed=7)
    pred.requires_grad_(True)
    expected = Reference(loss_weight=1.0, **opts)(pred, target)
    (g_expected,) = torch.autograd.grad(expected, pred)
    got = FocalFrequencyLoss(**opts)(pred, target)
    (g_got,) = torch.autograd.grad(got, pred)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_got, g_expected, rtol=1e-5, atol=1e-7)
    assert g_expected.abs().max() > 1e-4


def test_ffl_given_matrix_and_identical_images():
    from focal_frequency_loss import FocalFrequencyLoss as Reference

    pred, target = _images(n=2, size=16, seed=8)
    matrix = torch.rand(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(
        FocalFrequencyLoss(patch_factor=2)(pred, target, matrix),
        Reference(patch_factor=2)(pred, target, matrix),
        rtol=1e-6,
        atol=1e-6,
    )
    same = FocalFrequencyLoss()(target, target)  # 0/0 in the weight matrix becomes 0, not NaN
    assert same.item() == 0.0
    with pytest.raises(GantuneError, match="patch_factor=3"):
        FocalFrequencyLoss(patch_factor=3)(pred, target)
    with pytest.raises(GantuneError, match="matrix: expected spectrum weights"):
        FocalFrequencyLoss()(pred, target, matrix * 2)
