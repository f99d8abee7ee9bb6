"""SPADE generator, encoder and multiscale discriminator: reference parameter counts, shapes,
gradients, and one-line errors for bad arguments. Tiny nets (ngf 8, 64 px, batch 2) on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from gantune.errors import GantuneError
from models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from models.spade import SPADE, ConvEncoder, SPADEGenerator, reparameterize

N_CLASSES = 29


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _one_hot_seg(batch: int, h: int, w: int, n: int = N_CLASSES) -> torch.Tensor:
    labels = torch.randint(0, n, (batch, h, w))
    return F.one_hot(labels, n).permute(0, 3, 1, 2).float()


# Measured from NVlabs/SPADE at ngf=64, 256x256, ADE20K (150 labels + dontcare = 151 channels).
@pytest.mark.parametrize(
    "build, reference",
    [
        (lambda: SPADEGenerator(151, ngf=64, crop_size=256), 96.49e6),
        (lambda: SPADEGenerator(151, ngf=64, crop_size=256, use_vae=True), 111.94e6),
        (lambda: MultiscaleDiscriminator(151 + 3, num_D=2, ndf=64, n_layers_D=4), 5.84e6),
    ],
    ids=["generator", "generator_vae", "discriminator_2scale"],
)
def test_parameter_count_matches_reference(build, reference: float) -> None:
    with torch.device("meta"):
        net = build()
    assert abs(_n_params(net) - reference) / reference < 0.01


@pytest.mark.parametrize(
    "num_up, crop, grid",
    [("normal", 64, 2), ("more", 64, 1), ("most", 128, 1)],
)
def test_generator_forward_backward(seed: int, num_up: str, crop: int, grid: int) -> None:
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=crop, num_upsampling_layers=num_up)
    assert (G.sh, G.sw) == (grid, grid)
    assert hasattr(G, "up_4") == (num_up == "most")
    seg = _one_hot_seg(2, crop, crop)
    out = G(seg)
    assert out.shape == (2, 3, crop, crop)
    assert torch.isfinite(out).all()
    assert out.abs().max() <= 1.0
    out.square().mean().backward()
    grad = G.fc.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_generator_output_follows_label_map(seed: int) -> None:
    # eval: in train mode each forward runs a spectral-norm power iteration, moving the weights.
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64).eval()
    seg = _one_hot_seg(2, 64, 64)
    with torch.no_grad():
        a, b = G(seg), G(seg)
        c = G(seg.flip(-1))
    assert torch.equal(a, b)  # no hidden noise without use_vae
    assert not torch.allclose(a, c)


def test_generator_aspect_ratio_and_options(seed: int) -> None:
    G = SPADEGenerator(
        N_CLASSES, ngf=8, crop_size=64, aspect_ratio=2.0, param_free_norm="instance", spectral=False
    )
    assert not parametrize.is_parametrized(G.head_0.conv_0)
    assert isinstance(G.head_0.norm_0.param_free_norm, torch.nn.InstanceNorm2d)
    out = G(_one_hot_seg(2, 32, 64))
    assert out.shape == (2, 3, 32, 64)  # height = sh * 2**5 with sh = round(sw / 2) = 1
    G_sn = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64)
    assert parametrize.is_parametrized(G_sn.head_0.conv_0)
    assert parametrize.is_parametrized(G_sn.up_0.conv_s) and G_sn.up_0.conv_s.bias is None
    assert not hasattr(G_sn.head_0, "conv_s")  # fin == fout: identity shortcut


def test_generator_init_is_reference_xavier(seed: int) -> None:
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64)
    # xavier_normal(gain=0.02) on the plain convs; PyTorch's default would give std ~0.07 here.
    assert G.conv_img.weight.std() < 0.01
    assert torch.count_nonzero(G.conv_img.bias) == 0
    assert torch.count_nonzero(G.head_0.norm_0.mlp_gamma.bias) == 0


def test_spade_applies_one_plus_gamma_and_beta(seed: int) -> None:
    norm = SPADE(4, N_CLASSES, param_free_norm="instance", kernel_size=3, nhidden=16)
    with torch.no_grad():
        norm.mlp_gamma.weight.zero_()
        norm.mlp_gamma.bias.fill_(1.0)
        norm.mlp_beta.weight.zero_()
        norm.mlp_beta.bias.fill_(0.5)
    x = torch.randn(2, 4, 8, 8) * 3 + 1
    out = norm(x, _one_hot_seg(2, 32, 32))
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * 2.0 + 0.5
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_vae_encoder_to_generator_end_to_end(seed: int) -> None:
    E = ConvEncoder(ngf=8, crop_size=64, z_dim=16)
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64, use_vae=True, z_dim=16)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    seg = _one_hot_seg(2, 64, 64)
    mu, logvar = E(image)
    assert mu.shape == logvar.shape == (2, 16)
    out = G(seg, reparameterize(mu, logvar))
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    out.square().mean().backward()
    first = E.layers[0][0].parametrizations.weight.original
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert G.fc.weight.grad.abs().sum() > 0


def test_vae_generator_z_controls_output(seed: int) -> None:
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64, use_vae=True, z_dim=16).eval()
    seg = _one_hot_seg(1, 64, 64)
    z = torch.randn(1, 16)
    with torch.no_grad():
        assert torch.equal(G(seg, z), G(seg, z))
        assert not torch.allclose(G(seg), G(seg))  # z sampled when not given


def test_encoder_256_has_six_layers(seed: int) -> None:
    E = ConvEncoder(ngf=4, crop_size=256, z_dim=8)
    assert len(E.layers) == 6 and E.fc_mu.in_features == 8 * 4 * 4 * 4
    mu, logvar = E(torch.randn(2, 3, 64, 64))  # resized to 256 inside, as the reference
    assert mu.shape == logvar.shape == (2, 8)


def test_reparameterize_is_mu_plus_scaled_noise() -> None:
    mu = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(4.0), -2.0]], requires_grad=True)
    torch.manual_seed(3)
    z = reparameterize(mu, logvar)
    torch.manual_seed(3)
    eps = torch.randn(1, 3)
    torch.testing.assert_close(z, mu + eps * torch.tensor([[1.0, 2.0, math.exp(-1.0)]]))
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(1, 3))


# Spatial sizes per layer, 4x4 convs with padding 2: stride 2 gives s // 2 + 1, stride 1 s + 1.
_D_SIZES = {64: [33, 17, 9, 10, 11], 32: [17, 9, 5, 6, 7], 16: [9, 5, 3, 4, 5]}


@pytest.mark.parametrize("num_D", [1, 2, 3])
def test_multiscale_discriminator_features(seed: int, num_D: int) -> None:
    D = MultiscaleDiscriminator(N_CLASSES + 3, num_D=num_D, ndf=8, n_layers_D=4)
    x = torch.randn(2, N_CLASSES + 3, 64, 64)
    out = D(x)
    assert len(out) == num_D
    for scale, feats in enumerate(out):
        sizes = _D_SIZES[64 >> scale]
        assert [f.shape for f in feats] == [
            (2, c, s, s) for c, s in zip([8, 16, 32, 64, 1], sizes)
        ]
    if num_D >= 2:
        pooled = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
        torch.testing.assert_close(out[1][-1], D.discriminators[1](pooled)[-1])


def test_nlayer_discriminator_structure() -> None:
    D = NLayerDiscriminator(10, ndf=64, n_layers_D=5)
    first, last = D.layers[0][0], D.layers[-1]
    assert not parametrize.is_parametrized(first) and first.bias is not None
    assert not parametrize.is_parametrized(last) and last.bias is not None
    for block in D.layers[1:-1]:
        conv, norm = block[0][0], block[0][1]
        assert parametrize.is_parametrized(conv) and conv.bias is None
        assert isinstance(norm, torch.nn.InstanceNorm2d) and not norm.affine
    assert [b[0][0].out_channels for b in D.layers[1:-1]] == [128, 256, 512, 512]  # capped
    assert [b[0][0].stride for b in D.layers[1:-1]] == [(2, 2), (2, 2), (2, 2), (1, 1)]


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: SPADEGenerator(N_CLASSES, crop_size=100), "crop_size"),
        (lambda: SPADEGenerator(N_CLASSES, crop_size=64, num_upsampling_layers="most"),
         "crop_size"),
        (lambda: SPADEGenerator(N_CLASSES, num_upsampling_layers="many"), "num_upsampling_layers"),
        (lambda: SPADEGenerator(N_CLASSES, param_free_norm="syncbatch"), "param_free_norm"),
        (lambda: SPADEGenerator(0), "semantic_nc"),
        (lambda: SPADEGenerator(N_CLASSES, ngf=0), "ngf"),
        (lambda: SPADEGenerator(N_CLASSES, ngf=1, num_upsampling_layers="most"), "ngf"),
        (lambda: SPADEGenerator(N_CLASSES, aspect_ratio=0.0), "aspect_ratio"),
        (lambda: SPADEGenerator(N_CLASSES, crop_size=32, aspect_ratio=3.0), "aspect_ratio"),
        (lambda: SPADE(8, N_CLASSES, kernel_size=4), "kernel_size"),
        (lambda: ConvEncoder(norm="group"), "norm"),
        (lambda: NLayerDiscriminator(32, norm="group"), "norm"),
        (lambda: NLayerDiscriminator(32, n_layers_D=0), "n_layers_D"),
        (lambda: MultiscaleDiscriminator(32, num_D=0), "num_D"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()


def test_z_without_vae_is_an_error(seed: int) -> None:
    G = SPADEGenerator(N_CLASSES, ngf=8, crop_size=64)
    with pytest.raises(ValueError, match="use_vae"):
        G(_one_hot_seg(1, 64, 64), torch.randn(1, 256))
