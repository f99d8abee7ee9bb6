"""PD-GAN generator, discriminator and coarse partial-conv net: reference parameter counts and
widths, the hard and soft SPDNorm maps, positional norm, SimAM and the partial conv against values
worked out by hand, shapes and gradients of tiny nets (width 4, 64-128 px: the generator's six
fixed upsamplings need a 2-pixel latent grid), and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from gantune.errors import GantuneError
from models.pconv import PartialConv, PConvCoarseNet
from models.pdgan import (
    PDGANDiscriminator,
    PDGANGenerator,
    PositionalNorm,
    SimAM,
    SPDNorm,
    SPDNormResBlock,
)
from net_helpers import n_params, one_thread  # noqa: F401  (one_thread: autouse fixture)


def _tiny_G(**kwargs) -> PDGANGenerator:
    return PDGANGenerator(**{"ngf": 4, "z_dim": 8, "crop_size": 128, "nhidden": 8, **kwargs})


def _hole(batch: int, h: int, w: int) -> torch.Tensor:
    mask = torch.zeros(batch, 1, h, w)
    mask[:, :, h // 4 : 3 * h // 4, w // 8 : 5 * w // 8] = 1
    mask[-1, :, 7 * h // 8 :, : w // 2] = 1
    return mask


@pytest.fixture(scope="module")
def reference_nets() -> tuple[PDGANGenerator, PDGANDiscriminator, PConvCoarseNet]:
    """The reference's 256 px config (ngf = ndf = 64, z_dim 256), on the meta device."""
    with torch.device("meta"):
        return PDGANGenerator(), PDGANDiscriminator(), PConvCoarseNet()


# Counted from KumapowerLIU/PD-GAN built at its default config: SPDNormGenerator, the
# MultiscaleDiscriminator (input_nc_D 6, n_layers_D 4, num_D 2, spectralinstance), and the
# partial-conv Encoder (60,039,936) + Decoder (18,098,499) with --norm instance.
@pytest.mark.parametrize(
    "which, reference, exact",
    [(0, 186.0e6, 186_007_263), (1, 5.53e6, 5_533_826), (2, 78.14e6, 78_138_435)],
    ids=["generator", "discriminator", "coarse"],
)
def test_parameter_count_matches_reference(reference_nets, which: int, reference: float, exact: int) -> None:
    n = n_params(reference_nets[which])
    assert abs(n - reference) / reference < 0.01
    assert n == exact


def test_reference_structure(reference_nets) -> None:
    G, D, C = reference_nets
    blocks = [unit.block for unit in G.generated]
    assert G.fc.out_features == 1024 * 4 * 4
    assert [b.conv_1.out_channels for b in blocks] == [1024, 1024, 512, 256, 128, 64]
    assert [b.mask_number for b in blocks] == [2, 3, 4, 5, 6, 7]
    assert [b.mask_conv.kernel_size for b in blocks] == [(3, 3)] * 4 + [(5, 5)] * 2
    for b in blocks:  # spectral norm on the block's convs; a learned shortcut at every width
        assert all(parametrize.is_parametrized(c) for c in (b.conv_0, b.conv_1, b.conv_s))
        assert b.norm_0.mlp_activate[0].in_channels == 3 and b.norm_0.mlp_gamma.in_channels == 128
    # Only the ring convs (4 * 9 + 2 * 25) and the unused scalars v (6) are frozen.
    assert sum(p.numel() for p in G.parameters() if not p.requires_grad) == 92
    first = D.multiscale.discriminators[0].layers[0][0]
    assert first.in_channels == 6 and len(D.multiscale.discriminators) == 2
    assert [blk.conv.input_conv.out_channels for blk in C.encoder] == [64, 128, 256, 512, 512, 512]
    assert len(C.middle) == 4 and C.decoder[-1][1].out_channels == 3


def _chebyshev_to_known(known: torch.Tensor) -> torch.Tensor:
    """Chessboard distance of each pixel of a 2D 0/1 map to its nearest 1, by brute force."""
    ones = known.nonzero().tolist()
    h, w = known.shape
    return torch.tensor(
        [[min(max(abs(i - a), abs(j - b)) for a, b in ones) for j in range(w)] for i in range(h)]
    ).float()


@pytest.mark.parametrize("ks, steps", [(3, 1), (5, 2)])
def test_hard_map_by_hand(ks: int, steps: int) -> None:
    # Known: the 9x9 border and one pixel inside. The k-th dilation by a ks window reaches
    # pixels within k * steps, so ring k = ceil(d / steps) gets e^-k, capped at e^-mask_number.
    known = torch.zeros(9, 9)
    known[0, :] = known[-1, :] = known[:, 0] = known[:, -1] = 1
    known[2, 6] = 1
    block = SPDNormResBlock(4, 4, mask_number=2, mask_ks=ks, nhidden=4)
    rings = (_chebyshev_to_known(known) / steps).ceil().clamp(max=2)
    expected = torch.exp(-rings)
    torch.testing.assert_close(block.hard_map(known[None, None])[0, 0], expected)


def test_soft_map_by_hand(seed: int) -> None:
    block = SPDNormResBlock(4, 4, mask_number=2, mask_ks=3, nhidden=4)
    with torch.no_grad():
        block.attention[0].weight.zero_()
        block.attention[0].bias.fill_(0.3)
    known = (torch.rand(2, 1, 8, 8) > 0.5).float()
    soft = block.soft_map(torch.randn(2, 4, 8, 8), torch.rand(2, 3, 8, 8), known)
    expected = torch.where(known.bool(), 1.0, 1 / (1 + math.exp(-0.3))).expand(-1, 4, -1, -1)
    torch.testing.assert_close(soft, expected)


def test_positional_norm_and_spdnorm_by_hand(seed: int) -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 6.0])[None, :, None, None]  # one pixel, four channels
    mean, var = 3.0, (4 + 1 + 0 + 9) / 3  # unbiased variance over channels
    expected = [(v - mean) / math.sqrt(var + 1e-5) for v in (1.0, 2.0, 3.0, 6.0)]
    torch.testing.assert_close(PositionalNorm()(x).flatten(), torch.tensor(expected))
    # With a zero weight map SPDNorm is the bare norm; with weight w: norm * (1 + w g) + w b.
    norm = SPDNorm(4, nhidden=4)
    x, prior = torch.randn(2, 4, 5, 5), torch.rand(2, 3, 5, 5)
    torch.testing.assert_close(norm(x, prior, torch.zeros(2, 1, 5, 5)), PositionalNorm()(x))
    actv = F.relu(norm.mlp_activate[0](prior))
    w = torch.rand(2, 1, 5, 5)
    expected_t = PositionalNorm()(x) * (1 + norm.mlp_gamma(actv) * w) + norm.mlp_beta(actv) * w
    torch.testing.assert_close(norm(x, prior, w), expected_t)


def test_simam_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    d = [2.25, 0.25, 0.25, 2.25]  # (x - 2.5)^2
    var = sum(d) / 3  # over H * W - 1
    expected = [v / (1 + math.exp(-(di / (4 * (var + 1e-4)) + 0.5))) for v, di in zip((1, 2, 3, 4), d)]
    torch.testing.assert_close(SimAM()(x).flatten(), torch.tensor(expected))


def test_partial_conv_by_hand(seed: int) -> None:
    conv = PartialConv(1, 1, kernel_size=3, stride=1, padding=1)
    with torch.no_grad():
        conv.input_conv.weight.fill_(1.0)
    x = torch.randn(1, 1, 5, 5)
    known = torch.ones(1, 1, 5, 5)
    known[0, 0, 1:5, 1:5] = 0  # the 3x3 window at (3, 3) and below-right sees no known pixel
    out, new_known = conv(x, known)
    for i in range(5):
        for j in range(5):
            window = [(a, b) for a in range(i - 1, i + 2) for b in range(j - 1, j + 2) if 0 <= a < 5 and 0 <= b < 5]
            seen = [(a, b) for a, b in window if known[0, 0, a, b] == 1]
            mean = sum(x[0, 0, a, b].item() for a, b in seen) / len(seen) if seen else 0.0
            assert math.isclose(out[0, 0, i, j].item(), mean, abs_tol=1e-6)
            assert new_known[0, 0, i, j].item() == (1.0 if seen else 0.0)


@pytest.mark.parametrize("aspect_ratio, hw", [(1.0, (128, 128)), (2.0, (64, 128))])
def test_generator_forward_backward(seed: int, aspect_ratio: float, hw: tuple[int, int]) -> None:
    G = _tiny_G(aspect_ratio=aspect_ratio)
    assert G.output_size == hw
    out = G(torch.rand(2, 3, *hw) * 2 - 1, _hole(2, *hw))
    assert out.shape == (2, 3, *hw) and torch.isfinite(out).all() and out.abs().max() <= 1
    out.square().mean().backward()
    for name, p in G.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:  # the ring convs and the unused v
            assert p.grad is None and name.endswith(("mask_conv.weight", ".v")), name
    assert G.fc.weight.grad is not None and G.fc.weight.grad.abs().sum() > 0


def test_generator_noise_and_inputs(seed: int) -> None:
    G = _tiny_G().eval()  # eval: spectral norm stops its power iteration
    prior, mask, z = torch.rand(2, 3, 128, 128) * 2 - 1, _hole(2, 128, 128), torch.randn(2, 8)
    with torch.no_grad():
        out = G(prior, mask, z)
        assert torch.equal(G(prior, mask, z), out)
        assert not torch.allclose(G(prior, mask, torch.randn(2, 8)), out)
        assert not torch.allclose(G(prior.flip(-1), mask, z), out)
        assert not torch.allclose(G(prior, torch.zeros_like(mask), z), out)
        assert not torch.allclose(G(prior, mask), G(prior, mask))  # z drawn per call
    with pytest.raises(ValueError, match="z: expected"):
        G(prior, mask, torch.randn(2, 7))
    with pytest.raises(ValueError, match="prior, mask"):
        G(prior[:, :, :64], mask[:, :, :64], z)


def test_generator_simam_and_group_norm(seed: int) -> None:
    G = _tiny_G(attention="simam", norm="group", groups=2)
    assert sum(isinstance(m, SimAM) for m in G.modules()) == 6
    assert all(isinstance(u.block.norm_0.param_free_norm, torch.nn.GroupNorm) for u in G.generated)
    assert n_params(G) == n_params(_tiny_G())  # both switches are parameter-free
    out = G(torch.rand(2, 3, 128, 128) * 2 - 1, _hole(2, 128, 128))
    assert out.shape == (2, 3, 128, 128) and torch.isfinite(out).all()


def test_discriminator_forward(seed: int) -> None:
    D = PDGANDiscriminator(ndf=4).eval()
    image, mask = torch.rand(2, 3, 64, 64) * 2 - 1, _hole(2, 64, 64)
    out = D(image, mask)
    sizes = [[33, 17, 9, 10, 11], [17, 9, 5, 6, 7]]  # 4x4 convs with padding 2
    assert [[f.shape for f in scale] for scale in out] == [
        [(2, c, s, s) for c, s in zip([4, 8, 16, 32, 1], scale_sizes)] for scale_sizes in sizes
    ]
    # The mask, repeated to three channels, comes before the image.
    direct = D.multiscale(torch.cat((mask, mask, mask, image), dim=1))
    torch.testing.assert_close(out[1][-1], direct[1][-1])


def test_coarse_net_forward_backward(seed: int) -> None:
    C = PConvCoarseNet(ngf=4)
    image, mask = torch.rand(2, 3, 64, 128) * 2 - 1, _hole(2, 64, 128)
    out = C(image * (1 - mask), mask)
    assert out.shape == (2, 3, 64, 128) and out.abs().max() <= 1
    # Hole pixels never reach the net: the partial convs multiply them by the mask.
    torch.testing.assert_close(C(image, mask), out)
    out.square().mean().backward()
    grad = C.encoder[0].conv.input_conv.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert C.encoder[0].conv.mask_conv.weight.grad is None
    with pytest.raises(ValueError, match="multiples of 64"):
        C(image[:, :, :, :64], mask[:, :, :, :64])


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: _tiny_G(ngf=0), "ngf"),
        (lambda: _tiny_G(crop_size=96), "crop_size"),
        (lambda: _tiny_G(crop_size=64), "aspect_ratio"),  # a 1x1 latent grid
        (lambda: _tiny_G(aspect_ratio=0), "aspect_ratio"),
        (lambda: _tiny_G(norm="layer"), "norm"),
        (lambda: _tiny_G(norm="group", groups=3), "groups"),
        (lambda: _tiny_G(attention="cbam"), "attention"),
        (lambda: PDGANDiscriminator(norm_D="group"), "norm_D"),
        (lambda: PDGANDiscriminator(mask_nc=0), "mask_nc"),
        (lambda: PConvCoarseNet(norm="position"), "norm"),
        (lambda: PConvCoarseNet(ngf=4, norm="group", groups=8), "groups"),
        (lambda: PConvCoarseNet(res_num=-1), "res_num"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()
