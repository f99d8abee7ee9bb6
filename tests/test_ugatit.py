"""U-GAT-IT generator and discriminator: reference parameter counts and state-dict names, shapes,
(Ada)ILN and the CAM against values worked out by hand, the rho clipper, the scSE and deconv
switches, and the loss terms. Tiny nets (width 4-8, 64 px, batch 2) on CPU; reference-size nets on
meta."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gantune.errors import GantuneError
from losses.ugatit import ugatit_d_loss, ugatit_g_losses
from models.ugatit import (
    ILN,
    SCSE,
    AdaILN,
    UGATITDiscriminator,
    UGATITGenerator,
    clip_rho,
    convert_reference_state_dict,
)
from net_helpers import n_params, one_thread  # noqa: F401  (one_thread: autouse fixture)


# Counted from znxlwm/UGATIT-pytorch's networks.py built on meta at its defaults (ch 64, n_res 4,
# img_size 256): ResnetGenerator(3, 3, 64, 4, 256, light), Discriminator(3, 64, n_layers 7 and 5).
@pytest.mark.parametrize(
    "build, target, exact",
    [
        (lambda: UGATITGenerator(), 278.96e6, 278_959_808),
        (lambda: UGATITGenerator(light=True), 10.59e6, 10_589_888),
        (lambda: UGATITDiscriminator(n_layers=7), 53.13e6, 53_130_176),
        (lambda: UGATITDiscriminator(n_layers=5), 3.29e6, 3_290_560),
    ],
)
def test_parameter_counts_match_reference(build, target: float, exact: int) -> None:
    with torch.device("meta"):
        net = build()
    assert abs(n_params(net) - target) / target < 0.01
    assert n_params(net) == exact


def test_switches_parameter_counts() -> None:
    with torch.device("meta"):
        base, light = UGATITGenerator(), UGATITGenerator(light=True)
        deconv = UGATITGenerator(upsample="deconv")
        scse, scse_light = UGATITGenerator(scse=True), UGATITGenerator(light=True, scse=True)
    assert n_params(deconv) == n_params(base)  # a 3x3 deconv has the weights of a 3x3 conv
    # Per block at 256 channels, reduction 2: fc 256 -> 128 -> 256 with biases, 1x1 conv to 1.
    per_block = (256 * 128 + 128) + (128 * 256 + 256) + (256 + 1)
    assert n_params(scse) - n_params(base) == 8 * per_block  # after 4 encoder + 4 decoder blocks
    assert n_params(scse_light) - n_params(light) == 8 * per_block


# The reference's names at ngf 4, one residual block: its checkpoints load with load_state_dict.
REFERENCE_G_KEYS = {
    "DownBlock.1.weight", "DownBlock.5.weight", "DownBlock.9.weight",
    "DownBlock.12.conv_block.1.weight", "DownBlock.12.conv_block.5.weight",
    "gap_fc.weight", "gmp_fc.weight", "conv1x1.weight", "conv1x1.bias", "FC.0.weight", "FC.2.weight",
    "gamma.weight", "beta.weight", "UpBlock1_1.conv1.weight", "UpBlock1_1.norm1.rho",
    "UpBlock1_1.conv2.weight", "UpBlock1_1.norm2.rho", "UpBlock2.2.weight", "UpBlock2.3.rho",
    "UpBlock2.3.gamma", "UpBlock2.3.beta", "UpBlock2.7.weight", "UpBlock2.8.rho", "UpBlock2.8.gamma",
    "UpBlock2.8.beta", "UpBlock2.11.weight",
}  # fmt: skip


def test_reference_state_dict_names() -> None:
    G = UGATITGenerator(ngf=4, n_blocks=1, img_size=32, light=True)
    assert set(G.state_dict()) == REFERENCE_G_KEYS
    # The reference's spectral norm keys (torch.nn.utils.spectral_norm) for the discriminator.
    D = UGATITDiscriminator(ndf=4, n_layers=3)
    reference = {}
    for layer in ("model.1", "model.4", "gap_fc", "gmp_fc", "conv"):
        out_nc, w = D.get_submodule(layer).weight.shape[0], D.get_submodule(layer).weight
        reference |= {
            f"{layer}.weight_orig": torch.randn_like(w),
            f"{layer}.weight_u": torch.randn(out_nc),
            f"{layer}.weight_v": torch.randn(w[0].numel()),
        }
        if layer.startswith("model"):
            reference[f"{layer}.bias"] = torch.randn(out_nc)
    reference |= {"conv1x1.weight": torch.randn(8, 16, 1, 1), "conv1x1.bias": torch.randn(8)}
    D.load_state_dict(convert_reference_state_dict(reference), strict=True)
    torch.testing.assert_close(D.gap_fc.parametrizations.weight.original, reference["gap_fc.weight_orig"])
    torch.testing.assert_close(D.conv.parametrizations.weight[0]._v, reference["conv.weight_v"])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"light": True}, {"scse": True}, {"upsample": "deconv"}, {"light": True, "scse": True, "n_blocks": 1}],
)
def test_generator_forward_backward(seed: int, kwargs: dict) -> None:
    G = UGATITGenerator(ngf=8, **{"n_blocks": 2, "img_size": 64, **kwargs})
    out, cam_logit, heatmap = G(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    assert cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, 16, 16) and heatmap.min() >= 0
    (out.square().mean() + cam_logit.mean()).backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    if kwargs.get("upsample") == "deconv":
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.UpBlock2) == 2
        assert not any(isinstance(m, torch.nn.Upsample) for m in G.UpBlock2)


def test_full_generator_takes_only_its_size() -> None:
    G = UGATITGenerator(ngf=4, n_blocks=1, img_size=32)
    with pytest.raises(ValueError, match="built for 32 px"):
        G(torch.zeros(1, 3, 64, 64))
    light = UGATITGenerator(ngf=4, n_blocks=1, img_size=32, light=True)
    assert light(torch.zeros(1, 3, 64, 48))[0].shape == (1, 3, 64, 48)


@pytest.mark.parametrize(
    "n_layers, size, logits_hw", [(5, 64, 6), (6, 64, 2), (7, 128, 2)]  # 256 px: 30x30 local, 6x6 global
)
def test_discriminator_forward_backward(seed: int, n_layers: int, size: int, logits_hw: int) -> None:
    D = UGATITDiscriminator(ndf=4, n_layers=n_layers)
    logits, cam_logit, heatmap = D(torch.rand(2, 3, size, size) * 2 - 1)
    assert logits.shape == (2, 1, logits_hw, logits_hw)
    assert cam_logit.shape == (2, 2) and heatmap.shape == (2, 1, logits_hw + 1, logits_hw + 1)
    (logits.mean() + cam_logit.mean()).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _mix_by_hand(x: torch.Tensor, rho: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """rho IN + (1 - rho) LN with unbiased variances, written out over explicit sums."""
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        ln_mean = x[i].sum() / (c * h * w)
        ln_var = ((x[i] - ln_mean) ** 2).sum() / (c * h * w - 1)
        for j in range(c):
            in_mean = x[i, j].sum() / (h * w)
            in_var = ((x[i, j] - in_mean) ** 2).sum() / (h * w - 1)
            x_in = (x[i, j] - in_mean) / math.sqrt(in_var + eps)
            x_ln = (x[i, j] - ln_mean) / math.sqrt(ln_var + eps)
            out[i, j] = rho[j] * x_in + (1 - rho[j]) * x_ln
    return out


def test_adailn_and_iln_by_hand(seed: int) -> None:
    x = torch.randn(2, 3, 2, 3) * 2 + 1
    rho = torch.tensor([0.0, 0.3, 1.0])
    gamma, beta = torch.randn(2, 3), torch.randn(2, 3)
    ada = AdaILN(3)
    assert torch.equal(ada.rho.flatten(), torch.full((3,), 0.9))
    ada.rho.data = rho.view(1, 3, 1, 1).clone()
    expected = _mix_by_hand(x, rho) * gamma[:, :, None, None] + beta[:, :, None, None]
    torch.testing.assert_close(ada(x, gamma, beta), expected)
    iln = ILN(3)
    torch.testing.assert_close(iln(x), _mix_by_hand(x, torch.zeros(3)))  # layer norm at init
    iln.rho.data, iln.gamma.data = rho.view(1, 3, 1, 1).clone(), torch.full((1, 3, 1, 1), 2.0)
    torch.testing.assert_close(iln(x), 2 * _mix_by_hand(x, rho) + iln.beta)
    # The reference's unbiased variance is not InstanceNorm2d's biased one.
    assert (iln(x) - 2 * F.instance_norm(x)).abs().max() > 0.1


def test_clip_rho() -> None:
    G = UGATITGenerator(ngf=4, n_blocks=1, img_size=32, light=True)
    rhos = [m.rho for m in G.modules() if isinstance(m, (AdaILN, ILN))]
    assert len(rhos) == 4  # two AdaILN in the block, two ILN in the decoder
    for r in rhos:
        r.data = torch.linspace(-1.0, 2.0, r.numel()).view_as(r)
    before = G.FC[0].weight.clone()
    clip_rho(G)
    for r in rhos:
        torch.testing.assert_close(r.flatten(), torch.linspace(-1.0, 2.0, r.numel()).clamp(0, 1))
    assert torch.equal(G.FC[0].weight, before)


def test_generator_cam_by_hand(seed: int) -> None:
    G = UGATITGenerator(ngf=4, n_blocks=1, img_size=32, light=True)
    x = torch.rand(2, 3, 32, 32)
    features = G.DownBlock(x)
    _, cam_logit, heatmap = G(x)
    w_avg, w_max = G.gap_fc.weight[0], G.gmp_fc.weight[0]
    expected = torch.stack(
        [features.mean(dim=(2, 3)) @ w_avg, features.amax(dim=(2, 3)) @ w_max], dim=1
    )
    torch.testing.assert_close(cam_logit, expected)
    attended = torch.cat([features * w_avg[:, None, None], features * w_max[:, None, None]], dim=1)
    torch.testing.assert_close(heatmap, F.relu(G.conv1x1(attended)).sum(dim=1, keepdim=True))


def test_discriminator_cam_weights_features_by_raw_fc_weights(seed: int) -> None:
    """As the reference: the logits use the spectrally normed fc, the feature weighting its raw
    weight. Doubling the raw weight leaves the logits and changes the heatmap (eval: fixed u, v)."""
    D = UGATITDiscriminator(ndf=4, n_layers=5).eval()
    x = torch.rand(2, 3, 64, 64)
    logits, cam_logit, heatmap = D(x)
    with torch.no_grad():
        D.gap_fc.parametrizations.weight.original.mul_(2.0)
    logits_2, cam_logit_2, heatmap_2 = D(x)
    torch.testing.assert_close(cam_logit_2, cam_logit)
    assert (heatmap_2 - heatmap).abs().max() > 1e-3 and (logits_2 - logits).abs().max() > 1e-5


def test_scse_by_hand(seed: int) -> None:
    block = SCSE(8, reduction=2)
    assert block.fc1.out_features == 4
    x = torch.randn(2, 8, 5, 5)
    for p in block.parameters():
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(block(x), x)  # both gates 0.5: their sum passes x through
    torch.nn.init.constant_(block.spatial.bias, 100.0)  # spatial gate 1, channel gate 0.5
    torch.testing.assert_close(block(x), 1.5 * x)
    # In the generator, zeroed scSE blocks leave the output of the plain generator.
    plain = UGATITGenerator(ngf=4, n_blocks=2, img_size=32, light=True)
    with_scse = UGATITGenerator(ngf=4, n_blocks=2, img_size=32, light=True, scse=True)
    for p in [*with_scse.scse_down.parameters(), *with_scse.scse_up.parameters()]:
        torch.nn.init.zeros_(p)
    with_scse.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(with_scse(x)[0], plain(x)[0])


def test_d_loss_by_hand() -> None:
    # Per D: logits to 1 / 0 and CAM logits to 1 / 0, summed (not halved), over global and local.
    t = torch.tensor
    real = [(t([[1.0, 0.0]]), t([[1.0, 1.0]])), (t([[3.0]]), t([[0.0, 2.0]]))]
    fake = [(t([[0.5, 0.5]]), t([[0.0, 0.0]])), (t([[-1.0]]), t([[1.0, 1.0]]))]
    # global: 0.5 + 0.25 + 0 + 0; local: 4 + 1 + 1 + 1
    assert torch.allclose(ugatit_d_loss(real, fake), torch.tensor(7.75))
    assert torch.allclose(ugatit_d_loss(real, fake, adv_weight=2.0), torch.tensor(15.5))
    with pytest.raises(ValueError, match="as many real as fake"):
        ugatit_d_loss(real, fake[:1])


def test_g_losses_by_hand() -> None:
    real = torch.zeros(1, 1, 1, 2)
    t = torch.tensor
    fake_outputs = [(t([[1.0, 0.0]]), t([[0.0, 1.0]])), (t([[2.0]]), t([[1.0, 1.0]]))]
    terms = ugatit_g_losses(
        fake_outputs,
        cam_translated=torch.tensor([[0.0, 0.0]]),  # BCE to 1 at logit 0: log 2
        cam_identity=torch.tensor([[0.0, math.log(3.0)]]),  # BCE to 0: (log 2 + log 4) / 2
        real=real,
        rec=torch.tensor([[[[0.5, -0.5]]]]),  # L1 0.5
        idt=torch.tensor([[[[0.1, 0.3]]]]),  # L1 0.2
    )
    expected = {
        "adv": 0.5 + 0.5 + 1.0 + 0.0,
        "cycle": 10 * 0.5,
        "identity": 10 * 0.2,
        "cam": 1000 * (math.log(2.0) + 1.5 * math.log(2.0)),
    }
    assert set(terms) == set(expected)
    for key, value in expected.items():
        assert math.isclose(terms[key].item(), value, rel_tol=1e-5), key


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: UGATITGenerator(ngf=0), "ngf"),
        (lambda: UGATITGenerator(img_size=30), "img_size"),
        (lambda: UGATITGenerator(upsample="bilinear"), "upsample"),
        (lambda: UGATITGenerator(scse=True, scse_reduction=0), "scse_reduction"),
        (lambda: UGATITGenerator(n_blocks=-1), "n_blocks"),
        (lambda: UGATITDiscriminator(n_layers=2), "n_layers"),
        (lambda: UGATITDiscriminator(ndf=0), "ndf"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()
