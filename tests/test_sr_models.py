"""Super-resolution networks (ESRGAN's RRDBNet and VGG-style discriminator, MSRResNet, RDN):
reference parameter counts and module names, output shapes at every scale, the residual
scalings and skips against values worked out by hand, the anti-aliasing blur, and argument
checks. Tiny nets (width 4-8, at most 64 px out, 128 px for one discriminator) on CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gantune.errors import GantuneError
from models.rdn import RDB, RDN
from models.sr import RRDB, BlurPool, RRDBNet, VGGStyleDiscriminator
from models.srresnet import MSRResNet
from net_helpers import n_params, one_thread  # noqa: F401  (one_thread: autouse fixture)


def _tiny_rrdbnet(**kwargs) -> RRDBNet:
    return RRDBNet(**{"num_feat": 8, "num_block": 2, "num_grow_ch": 4, **kwargs})


def _tiny_srresnet(**kwargs) -> MSRResNet:
    return MSRResNet(**{"num_feat": 8, "num_block": 2, **kwargs})


def _tiny_rdn(**kwargs) -> RDN:
    return RDN(**{"num_feat": 8, "num_block": 2, "num_conv": 3, "num_grow_ch": 4, **kwargs})


# Exact counts from the official code built on `meta`: BasicSR's RRDBNet(3, 3, scale, 64, 23, 32),
# VGGStyleDiscriminator(3, 64, input_size) and MSRResNet(3, 3, 64, 16, upscale), and
# EDSR-PyTorch's RDN with RDNconfig "B", G0 64, RDNkSize 3, n_colors 3.
@pytest.mark.parametrize(
    "build, target, exact",
    [
        (lambda: RRDBNet(scale=4), 16.70e6, 16_697_987),
        (lambda: RRDBNet(scale=2), 16.70e6, 16_703_171),
        (lambda: RRDBNet(scale=1), 16.72e6, 16_723_907),
        (lambda: VGGStyleDiscriminator(input_size=128), 14.50e6, 14_499_401),
        (lambda: VGGStyleDiscriminator(input_size=256), 21.06e6, 21_055_049),
        (lambda: RDN(scale=4), 22.27e6, 22_271_107),
        (lambda: RDN(scale=2), 22.12e6, 22_123_395),
        (lambda: RDN(scale=3), 22.31e6, 22_308_035),
        (lambda: MSRResNet(scale=4), 1.52e6, 1_517_571),
        (lambda: MSRResNet(scale=2), 1.37e6, 1_369_859),
        (lambda: MSRResNet(scale=3), 1.55e6, 1_554_499),
    ],
)
def test_parameter_counts_match_reference(build, target: float, exact: int) -> None:
    with torch.device("meta"):
        n = n_params(build())
    assert abs(n - target) / target < 0.01
    assert n == exact


def test_module_names_follow_reference() -> None:
    """Checkpoints of BasicSR / EDSR-PyTorch load by name: pin the key layout."""
    with torch.device("meta"):
        g, d = RRDBNet(), VGGStyleDiscriminator()
        sr, rdn = MSRResNet(), RDN()
    g_keys = list(g.state_dict())
    assert len(g_keys) == 4 + 23 * 3 * 10 + 8
    assert g_keys[:4] == ["conv_first.weight", "conv_first.bias", "body.0.rdb1.conv1.weight",
                          "body.0.rdb1.conv1.bias"]
    assert g_keys[-8:-6] == ["conv_up1.weight", "conv_up1.bias"]
    assert g_keys[-2:] == ["conv_last.weight", "conv_last.bias"]
    d_keys = list(d.state_dict())
    assert "conv0_0.bias" in d_keys and "conv1_0.bias" not in d_keys
    assert "bn0_0.weight" not in d_keys and "bn0_1.weight" in d_keys
    assert "bn4_1.running_var" in d_keys and "conv5_0.weight" not in d_keys
    assert d_keys[-4:] == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    assert d.linear1.in_features == 512 * 4 * 4
    assert {"body.15.conv2.weight", "upconv2.weight", "conv_hr.bias"} <= set(sr.state_dict())
    rdn_keys = set(rdn.state_dict())
    assert {"SFENet1.weight", "RDBs.15.convs.7.conv.0.weight", "RDBs.0.LFF.weight",
            "GFF.0.weight", "GFF.1.bias", "UPNet.0.weight", "UPNet.2.weight",
            "UPNet.4.weight"} <= rdn_keys
    assert rdn.RDBs[0].LFF.in_channels == 64 + 8 * 64


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_rrdbnet_shapes(scale: int, seed: int) -> None:
    G = _tiny_rrdbnet(scale=scale)
    assert G.conv_first.in_channels == 3 * (4 // scale) ** 2
    lr = torch.rand(2, 3, 64 // scale, 48 // scale)
    assert G(lr).shape == (2, 3, 64, 48)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_and_rdn_shapes(scale: int, seed: int) -> None:
    lr = torch.rand(2, 3, 16, 12)
    for G in (_tiny_srresnet(scale=scale), _tiny_rdn(scale=scale)):
        assert G(lr).shape == (2, 3, 16 * scale, 12 * scale)


@pytest.mark.parametrize("size", [64, 128])
def test_discriminator_shapes(size: int, seed: int) -> None:
    D = VGGStyleDiscriminator(num_feat=4, input_size=size)
    assert D.num_stages == {64: 4, 128: 5}[size]
    assert D(torch.rand(3, 3, size, size)).shape == (3, 1)
    with pytest.raises(ValueError, match="64x64|128x128"):
        D(torch.rand(3, 3, size // 2, size // 2))


def test_rrdbnet_pixel_unshuffle_order(seed: int) -> None:
    """At x2 the input is unshuffled in BasicSR's order: channel c * 4 + 2 * i + j holds
    x[c, 2y + i, 2x + j]. Read through conv_first set to a 1x1 identity on 12 channels."""
    G = _tiny_rrdbnet(scale=2, num_feat=12)
    with torch.no_grad():
        G.conv_first.weight.zero_()
        G.conv_first.bias.zero_()
        G.conv_first.weight[torch.arange(12), torch.arange(12), 1, 1] = 1.0
    seen: list[torch.Tensor] = []
    G.conv_first.register_forward_hook(lambda m, i, o: seen.append(o))
    x = torch.rand(1, 3, 6, 8)
    G(x)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(seen[0][0, c * 4 + 2 * i + j], x[0, c, i::2, j::2])


def test_rrdb_residual_scaling(seed: int) -> None:
    """A dense block whose last conv is zero is the identity, so an RRDB of three of them
    returns x + 0.2 x; with conv5 a plain copy of the input's channels a block gives 1.2 x."""
    block = RRDB(num_feat=4, num_grow_ch=2)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        for rdb in (block.rdb1, block.rdb2, block.rdb3):
            rdb.conv5.weight.zero_()
            rdb.conv5.bias.zero_()
    torch.testing.assert_close(block(x), 1.2 * x)
    rdb = block.rdb1
    with torch.no_grad():  # conv5 sees [x, x1..x4]: pick x's channels at the kernel centre
        rdb.conv5.weight[torch.arange(4), torch.arange(4), 1, 1] = 1.0
    torch.testing.assert_close(rdb(x), 1.2 * x)


def test_srresnet_adds_bilinear_input(seed: int) -> None:
    """With every conv zeroed the output is the input, bilinearly upsampled (half-pixel
    centres): a row [a, b] becomes [a, 3a/4 + b/4, a/4 + 3b/4, b] at x2."""
    G = _tiny_srresnet(scale=2)
    with torch.no_grad():
        for p in G.parameters():
            p.zero_()
    a, b = 0.2, 0.6
    x = torch.tensor([a, b]).repeat(1, 3, 1, 1)  # (1, 3, 1, 2)
    row = torch.tensor([a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b])
    torch.testing.assert_close(G(x), row.repeat(1, 3, 2, 1))


def test_rdn_scales_inputs_like_reference(seed: int) -> None:
    """img_range 255 (the default) equals the reference fed [0, 255] and divided back."""
    G255, G1 = _tiny_rdn(), _tiny_rdn(img_range=1.0)
    G1.load_state_dict(G255.state_dict())
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(G255(x), G1(255 * x) / 255, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(G255(x), G1(x))


def test_rdb_local_residual(seed: int) -> None:
    block = RDB(num_feat=4, num_grow_ch=3, num_conv=2)
    assert block.LFF.in_channels == 4 + 2 * 3
    with torch.no_grad():
        block.LFF.weight.zero_()
        block.LFF.bias.fill_(0.5)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(block(x), x + 0.5)


def test_blurpool_kernel_and_border() -> None:
    blur = BlurPool()
    delta = torch.zeros(1, 2, 5, 5)
    delta[:, :, 2, 2] = 16.0
    expected = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    out = blur(delta)
    assert out.shape == delta.shape
    torch.testing.assert_close(out[:, :, 1:4, 1:4], expected.expand(1, 2, 3, 3))
    assert out.sum() == 32.0
    # Reflect padding: a checkerboard vanishes everywhere, borders included (zero padding
    # would leave them at +-1/4 or more); a constant map stays constant.
    i = torch.arange(6)
    checker = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(1, 3, 6, 6)
    torch.testing.assert_close(blur(checker), torch.zeros_like(checker))
    const = torch.full((1, 1, 4, 4), 0.7)
    torch.testing.assert_close(blur(const), const)


def test_blurpool_keeps_checkpoints(seed: int) -> None:
    """The blur adds no parameters or state-dict keys, so plain checkpoints load into blurred
    nets, and it changes the output: it sits after each upsampling step."""
    lr = torch.rand(1, 3, 16, 16)
    # RRDBNet and MSRResNet reuse one BlurPool for both x2 steps; RDN has one per PixelShuffle.
    for build, n_blurs in ((_tiny_rrdbnet, 1), (_tiny_srresnet, 1), (_tiny_rdn, 2)):
        plain, blurred = build(), build(blurpool=True)
        blurred.load_state_dict(plain.state_dict(), strict=True)
        assert sum(isinstance(m, BlurPool) for m in blurred.modules()) == n_blurs
        assert not any(isinstance(m, BlurPool) for m in plain.modules())
        assert not torch.allclose(plain(lr), blurred(lr))
    rdn = _tiny_rdn(blurpool=True)
    assert isinstance(rdn.UPNet[1][1], BlurPool) and isinstance(rdn.UPNet[3][1], BlurPool)


@pytest.mark.parametrize(
    "build, arg",
    [
        (lambda: RRDBNet(scale=3), "scale"),
        (lambda: RRDBNet(num_feat=0), "num_feat"),
        (lambda: RRDBNet(num_grow_ch=2.0), "num_grow_ch"),
        (lambda: RRDBNet(blurpool="yes"), "blurpool"),
        (lambda: VGGStyleDiscriminator(input_size=96), "input_size"),
        (lambda: VGGStyleDiscriminator(input_size=32), "input_size"),
        (lambda: MSRResNet(scale=8), "scale"),
        (lambda: MSRResNet(num_out_ch=1), "num_out_ch"),
        (lambda: MSRResNet(num_block=0), "num_block"),
        (lambda: RDN(scale=1), "scale"),
        (lambda: RDN(img_range=0), "img_range"),
        (lambda: RDN(kernel_size=2), "kernel_size"),
        (lambda: RDN(num_conv=0), "num_conv"),
    ],
)
def test_bad_arguments_raise(build, arg: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{arg}\b"):
        build()


def test_rrdbnet_rejects_indivisible_input() -> None:
    G = _tiny_rrdbnet(scale=1)
    with pytest.raises(ValueError, match="multiples of 4"):
        G(torch.rand(1, 3, 10, 12))
