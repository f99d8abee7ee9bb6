"""VGG16 and VGG19 feature stacks with torchvision's layout, and frozen feature extractors.

The `features` Sequential matches `torchvision.models.vgg16/vgg19(...).features` index by index,
so its state-dict keys (`features.0.weight`, ...) are those of the official files, which load
with strict key checking. torchvision itself is not imported: it is not a runtime dependency.

Layers are named after the papers: `conv{block}_{i}`, `relu{block}_{i}`, `pool{block}`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from backbones import pretrained
from gantune.errors import GantuneError

# torchvision's configurations "D" (VGG16) and "E" (VGG19); "M" is a 2x2 max pooling.
VGG_CFGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}  # fmt: skip

POOLINGS = ("max", "l2")


def _check_arch(arch: str) -> list[int | str]:
    if arch not in VGG_CFGS:
        raise GantuneError(f"arch={arch!r}: expected one of {sorted(VGG_CFGS)}")
    return VGG_CFGS[arch]


def layer_names(arch: str) -> list[str]:
    """The name of each module of `features`, in order: conv1_1, relu1_1, ..., pool5."""
    names: list[str] = []
    block, conv = 1, 1
    for v in _check_arch(arch):
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


def _make_features(arch: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _check_arch(arch):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            # Not in place (torchvision's are): a caller may ask for a conv output, which an
            # in-place ReLU would overwrite. Autograd keeps the ReLU output either way.
            layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = v
    return nn.Sequential(*layers)


def _init_like_torchvision(features: nn.Sequential, seed: int) -> None:
    """torchvision's VGG init (Kaiming normal, fan_out, ReLU gain; zero bias) from its own RNG."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
                assert m.bias is not None
                m.bias.zero_()


def vgg_features(
    arch: str,
    *,
    random_weights: bool = False,
    seed: int = 0,
    weights_dir: str | os.PathLike[str] | None = None,
) -> nn.Sequential:
    """torchvision's `vgg16/vgg19().features` with the official ImageNet weights.

    random_weights=True gives torchvision's default init seeded by `seed` instead; only for
    demos and tests, which must say so.
    """
    _check_arch(arch)
    # Built on the meta device: no wasted default init, and the global RNG is left alone.
    with torch.device("meta"):
        features = _make_features(arch)
    features = features.to_empty(device="cpu")
    if random_weights:
        _init_like_torchvision(features, seed)
        return features
    state = pretrained.load_state_dict(arch, weights_dir)
    found = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    what = f"{arch} weights: not torchvision's {arch} features.*"
    pretrained.load_strict(features, found, what, prefix="features.")
    return features


class L2Pooling(nn.Module):
    """DISTS's replacement for max pooling: sqrt of a Hanning-weighted average of x^2, stride 2.

    The 5-tap Hanning window without its zero end points, i.e. [1/2, 1, 1/2] outer itself,
    normalised to sum to 1; padding 1, one filter per channel (Ding et al. 2020, dists-pytorch).
    """

    def __init__(self, channels: int, filter_size: int = 5, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.padding = (filter_size - 2) // 2
        a = torch.hann_window(filter_size, periodic=False, dtype=torch.float64)[1:-1]
        g = (a[:, None] * a[None, :]).float()
        g = g / g.sum()
        # Not persistent: a fixed constant, not part of the official weight files.
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(
            x**2, self.filter, stride=self.stride, padding=self.padding, groups=x.shape[1]
        )
        return (out + 1e-12).sqrt()


class VGGFeatures(nn.Module):
    """A frozen VGG that returns the activations at the named layers, as a dict.

    The network stops after the deepest requested layer. Parameters never require grad and
    the module stays in eval mode; gradients still flow to the input. The input is passed as
    is: each loss does its own preprocessing. pooling="l2" swaps every max pooling for
    L2Pooling (DISTS).
    """

    def __init__(
        self,
        arch: str,
        layers: Sequence[str],
        *,
        pooling: str = "max",
        random_weights: bool = False,
        seed: int = 0,
        weights_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        names = layer_names(arch)
        if isinstance(layers, str) or not layers:
            raise GantuneError(
                f"layers={layers!r}: expected a non-empty list of {arch} layer names"
            )
        unknown = [layer for layer in layers if layer not in names]
        if unknown:
            raise GantuneError(
                f"layers: unknown {arch} layer(s) {unknown}; expected names from {names}"
            )
        if pooling not in POOLINGS:
            raise GantuneError(f"pooling={pooling!r}: expected one of {list(POOLINGS)}")
        features = vgg_features(
            arch, random_weights=random_weights, seed=seed, weights_dir=weights_dir
        )
        last = max(names.index(layer) for layer in layers)
        modules = list(features)[: last + 1]
        if pooling == "l2":
            channels = 3
            for i, m in enumerate(modules):
                if isinstance(m, nn.Conv2d):
                    channels = m.out_channels
                elif isinstance(m, nn.MaxPool2d):
                    modules[i] = L2Pooling(channels)
        self.arch = arch
        self.layers = list(layers)
        self.features = nn.Sequential(*modules)  # keys stay features.<torchvision index>.*
        self._wanted = {names.index(layer): layer for layer in layers}
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        # A fixed feature extractor: a parent's .train() must not switch it.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self._wanted:
                out[self._wanted[i]] = x
        return out


def layer_weights_for(layers: Sequence[str], layer_weights: Sequence[float]) -> list[float]:
    """One float weight per feature layer, or a one-line error."""
    if len(layer_weights) != len(layers):
        raise GantuneError(
            f"layer_weights: expected one weight per layer ({len(layers)}), "
            f"got {len(layer_weights)}"
        )
    return [float(w) for w in layer_weights]


def check_image_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    """x: RGB images (N, 3, H, W); y: the same shape (a full-reference loss compares them)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise GantuneError(f"x: expected RGB images of shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise GantuneError(f"y: expected the shape of x {tuple(x.shape)}, got {tuple(y.shape)}")
