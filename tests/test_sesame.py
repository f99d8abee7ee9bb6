"""SESAME two-stream discriminator: reference parameter count, feature shapes, the streams kept
apart until the fusion, the fusion itself, and gradients. Tiny nets (ndf 8, 64 px) on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from gantune.errors import GantuneError
from models.sesame import MultiscaleSesameDiscriminator, SesameDiscriminator

N_CLASSES = 29


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _input(batch: int = 2, size: int = 64) -> torch.Tensor:
    labels = torch.randint(0, N_CLASSES, (batch, size, size))
    seg = F.one_hot(labels, N_CLASSES).permute(0, 3, 1, 2).float()
    return torch.cat([seg, torch.rand(batch, 3, size, size) * 2 - 1], dim=1)


def test_parameter_count_matches_reference() -> None:
    # 11,342,082: vglsd/OpenSESAME's SesameMultiscaleDiscriminator built and counted, with
    # ndf 64, n_layers_D 4, num_D 2, norm_D spectralinstance, and 151 label channels plus the
    # image (ADE20K: 150 labels + dontcare). 11,344,130 with its inpainting mask channel too.
    with torch.device("meta"):
        D = MultiscaleSesameDiscriminator(151 + 3, num_D=2, ndf=64, n_layers_D=4)
    assert abs(_n_params(D) - 11_342_082) / 11_342_082 < 0.01


def test_stream_structure() -> None:
    """As the reference: plain first conv, then spectral-normed bias-free convs + instance norm,
    the semantic stream as wide as the image stream, and a plain 1-channel head on the image's."""
    D = SesameDiscriminator(151 + 3, ndf=64, n_layers_D=4)
    for stream, in_nc in ((D.semantic, 151), (D.image, 3)):
        first = stream[0][0]
        assert first.in_channels == in_nc and not parametrize.is_parametrized(first)
        for block in stream[1:]:
            conv, norm = block[0][0], block[0][1]
            assert parametrize.is_parametrized(conv) and conv.bias is None
            assert isinstance(norm, torch.nn.InstanceNorm2d) and not norm.affine
        assert [b[0][0].out_channels for b in stream[1:]] == [128, 256, 512]
    assert not parametrize.is_parametrized(D.head) and D.head.in_channels == 512


# Spatial sizes per layer, 4x4 convs with padding 2: stride 2 gives s // 2 + 1, stride 1 s + 1.
_D_SIZES = {64: [33, 17, 9, 10, 11], 32: [17, 9, 5, 6, 7]}


def test_multiscale_features(seed: int) -> None:
    # eval: in training each forward's spectral-norm power iteration moves the weights.
    D = MultiscaleSesameDiscriminator(N_CLASSES + 3, num_D=2, ndf=8, n_layers_D=4).eval()
    x = _input()
    out = D(x)
    assert len(out) == 2
    for scale, feats in enumerate(out):
        sizes = _D_SIZES[64 >> scale]
        assert [f.shape for f in feats] == [
            (2, c, s, s) for c, s in zip([8, 16, 32, 64, 1], sizes)
        ]
    pooled = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
    torch.testing.assert_close(out[1][-1], D.discriminators[1](pooled)[-1])


def test_streams_separate_until_fusion(seed: int) -> None:
    D = SesameDiscriminator(N_CLASSES + 3, ndf=8, n_layers_D=4).eval()  # fixed spectral norms
    x = _input()
    other_label = _input()[:, :N_CLASSES]
    other_image = _input()[:, N_CLASSES:]
    out = D(x)
    new_label = D(torch.cat([other_label, x[:, N_CLASSES:]], dim=1))
    new_image = D(torch.cat([x[:, :N_CLASSES], other_image], dim=1))
    # The features are the image stream's: the label map cannot reach them...
    for a, b in zip(out[:-1], new_label[:-1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # ...but the prediction sees both inputs.
    assert (out[-1] - new_label[-1]).abs().max() > 1e-4
    assert (out[-1] - new_image[-1]).abs().max() > 1e-4


def test_fusion_is_the_reference_gate(seed: int) -> None:
    """head(x + x * sum_c(s)): image features gated per pixel by the summed semantic features."""
    D = SesameDiscriminator(N_CLASSES + 3, ndf=8, n_layers_D=3).eval()  # fixed spectral norms
    x = _input()
    s = x[:, :N_CLASSES]
    for layer in D.semantic:
        s = layer(s)
    feats = D(x)
    img = feats[-2]
    expected = D.head(img * (1 + s.sum(dim=1, keepdim=True)))
    torch.testing.assert_close(feats[-1], expected)


def test_gradients_finite(seed: int) -> None:
    D = MultiscaleSesameDiscriminator(N_CLASSES + 3, num_D=2, ndf=8, n_layers_D=4)
    x = _input().requires_grad_(True)
    out = D(x)
    loss = sum(feats[-1].mean() for feats in out) + sum(f.square().mean() for f in out[0][:-1])
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[:, :N_CLASSES].abs().sum() > 0 and x.grad[:, N_CLASSES:].abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: SesameDiscriminator(3), "input_nc"),
        (lambda: SesameDiscriminator(4, image_nc=0), "image_nc"),
        (lambda: SesameDiscriminator(32, n_layers_D=1, norm="group"), "norm"),
        (lambda: MultiscaleSesameDiscriminator(32, num_D=0), "num_D"),
    ],
)
def test_bad_arguments_raise_gantune_error(build, name: str) -> None:
    with torch.device("meta"), pytest.raises(GantuneError, match=rf"^{name}: "):
        build()
