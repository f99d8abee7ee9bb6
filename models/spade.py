"""SPADE (Park et al., CVPR 2019): the SPADE norm, its residual block, the generator and the VAE
style encoder, following NVlabs/SPADE's `models/networks/{normalization,architecture,generator,
encoder}.py` layer for layer, so that parameter counts match the reference.

Also here: `conv_norm`, the reference's `get_nonspade_norm_layer` (spectral norm and/or a
parameter-free norm around a conv), shared with the discriminator, and `init_weights`, the
reference's `init_weights('xavier', 0.02)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from gantune.errors import GantuneError

PARAM_FREE_NORMS = ("batch", "instance")
# Number of 2x upsamplings from the latent grid to the output, per reference option.
NUM_UP_LAYERS = {"normal": 5, "more": 6, "most": 7}
# "spectral" then an optional parameter-free norm, as the reference's norm_D / norm_E strings.
CONV_NORMS = ("spectralinstance", "spectralbatch", "spectral", "instance", "batch", "none")


def check_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GantuneError(f"{name}: expected an integer >= {minimum}, got {value!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise GantuneError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def conv_norm(conv: nn.Conv2d, norm: str) -> nn.Module:
    """Wrap `conv` in spectral norm and/or a parameter-free norm, as `get_nonspade_norm_layer`.

    With a norm after it, the conv's bias is dropped: the norm removes any per-channel constant.
    """
    check_choice("norm", norm, CONV_NORMS)
    sub = norm.removeprefix("spectral")
    layer: nn.Module | None = None
    if sub == "instance":
        layer = nn.InstanceNorm2d(conv.out_channels, affine=False)
    elif sub == "batch":  # the reference's affine batch norm here
        layer = nn.BatchNorm2d(conv.out_channels, affine=True)
    if layer is not None and conv.bias is not None:
        del conv.bias
        conv.register_parameter("bias", None)
    wrapped = spectral_norm(conv) if norm.startswith("spectral") else conv
    return wrapped if layer is None else nn.Sequential(wrapped, layer)


@torch.no_grad()
def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's `init_weights('xavier', gain)`: xavier-normal conv and linear weights, zero
    biases, batch-norm scales N(1, gain).

    Spectrally normed weights keep PyTorch's default init: in the reference the xavier init of
    those lands on the derived `weight`, which spectral norm recomputes from `weight_orig` on the
    next forward, so it never takes effect there either.
    """
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            if not parametrize.is_parametrized(m, "weight"):
                nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Sample z = mu + eps * exp(logvar / 2), eps ~ N(0, 1): differentiable in mu and logvar."""
    std = torch.exp(0.5 * logvar)
    return mu + torch.randn_like(std) * std


class SPADE(nn.Module):
    """Parameter-free norm, then a per-pixel scale and shift predicted from the label map."""

    def __init__(
        self,
        norm_nc: int,
        label_nc: int,
        param_free_norm: str = "batch",
        kernel_size: int = 3,
        nhidden: int = 128,
    ) -> None:
        super().__init__()
        check_int("norm_nc", norm_nc)
        check_int("label_nc", label_nc)
        check_choice("param_free_norm", param_free_norm, PARAM_FREE_NORMS)
        check_int("nhidden", nhidden)
        check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:  # even kernels would shift the map by half a pixel
            raise GantuneError(f"kernel_size: expected an odd integer >= 1, got {kernel_size!r}")
        # "batch" is the reference's syncbatch; the trainer converts it with
        # models.sync_batchnorm.convert_sync_batchnorm when a trial has several workers.
        if param_free_norm == "batch":
            self.param_free_norm: nn.Module = nn.BatchNorm2d(norm_nc, affine=False)
        else:
            self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        pw = kernel_size // 2
        self.mlp_shared = nn.Sequential(
            nn.Conv2d(label_nc, nhidden, kernel_size=kernel_size, padding=pw), nn.ReLU()
        )
        self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, kernel_size=kernel_size, padding=pw)
        self.mlp_beta = nn.Conv2d(nhidden, norm_nc, kernel_size=kernel_size, padding=pw)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(seg)
        # 1 + gamma: a zero-initialised gamma leaves the normalised activations unscaled.
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Pre-activation residual block (SPADE, leaky ReLU, conv) x 2, with a learned 1x1 shortcut
    when the channel count changes."""

    def __init__(
        self,
        fin: int,
        fout: int,
        label_nc: int,
        spectral: bool = True,
        param_free_norm: str = "batch",
    ) -> None:
        super().__init__()
        check_int("fin", fin)
        check_int("fout", fout)
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        wrap = spectral_norm if spectral else (lambda m: m)
        self.conv_0 = wrap(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = wrap(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, param_free_norm)
        self.norm_1 = SPADE(fmiddle, label_nc, param_free_norm)
        if self.learned_shortcut:
            self.conv_s = wrap(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
            self.norm_s = SPADE(fin, label_nc, param_free_norm)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEGenerator(nn.Module):
    """Label map (one-hot, `semantic_nc` channels) to an RGB image in [-1, 1].

    Starts from a (sh, sw) grid, either a conv of the downsampled label map or, with `use_vae`,
    a linear map of z, then upsamples 2x five (normal), six (more) or seven (most) times. The
    output is `crop_size` wide and `round(crop_size / aspect_ratio)`-ish high (sh * 2**n).
    """

    def __init__(
        self,
        semantic_nc: int,
        ngf: int = 64,
        crop_size: int = 256,
        aspect_ratio: float = 1.0,
        num_upsampling_layers: str = "normal",
        use_vae: bool = False,
        z_dim: int = 256,
        param_free_norm: str = "batch",
        spectral: bool = True,
    ) -> None:
        super().__init__()
        check_int("semantic_nc", semantic_nc)
        check_int("ngf", ngf, minimum=2 if num_upsampling_layers == "most" else 1)
        check_int("crop_size", crop_size)
        check_int("z_dim", z_dim)
        check_choice("num_upsampling_layers", num_upsampling_layers, tuple(NUM_UP_LAYERS))
        check_choice("param_free_norm", param_free_norm, PARAM_FREE_NORMS)
        is_number = isinstance(aspect_ratio, (int, float)) and not isinstance(aspect_ratio, bool)
        if not is_number or not aspect_ratio > 0:
            raise GantuneError(f"aspect_ratio: expected a number > 0, got {aspect_ratio!r}")
        n_up = NUM_UP_LAYERS[num_upsampling_layers]
        if crop_size % 2**n_up:
            raise GantuneError(
                f"crop_size: expected a multiple of {2**n_up} with num_upsampling_layers="
                f"{num_upsampling_layers!r}, got {crop_size}"
            )
        self.semantic_nc, self.ngf, self.z_dim, self.use_vae = semantic_nc, ngf, z_dim, use_vae
        self.num_upsampling_layers = num_upsampling_layers
        self.sw = crop_size // 2**n_up
        self.sh = round(self.sw / aspect_ratio)
        if self.sh < 1:
            raise GantuneError(f"aspect_ratio: {aspect_ratio} leaves a latent grid of height 0")

        nf = ngf
        if use_vae:
            self.fc: nn.Module = nn.Linear(z_dim, 16 * nf * self.sw * self.sh)
        else:
            # Deterministic start: a conv over the downsampled label map instead of z.
            self.fc = nn.Conv2d(semantic_nc, 16 * nf, kernel_size=3, padding=1)

        def block(fin: int, fout: int) -> SPADEResnetBlock:
            return SPADEResnetBlock(fin, fout, semantic_nc, spectral, param_free_norm)

        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, nf)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = block(nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, kernel_size=3, padding=1)
        init_weights(self)

    @staticmethod
    def _up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_vae:
            if z is None:
                z = torch.randn(seg.shape[0], self.z_dim, dtype=seg.dtype, device=seg.device)
            x = self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        else:
            if z is not None:
                raise ValueError("z given to a SPADEGenerator built with use_vae=False")
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sw), mode="nearest"))

        x = self.head_0(x, seg)
        x = self.G_middle_0(self._up(x), seg)
        if self.num_upsampling_layers in ("more", "most"):
            x = self._up(x)
        x = self.G_middle_1(x, seg)
        x = self.up_0(self._up(x), seg)
        x = self.up_1(self._up(x), seg)
        x = self.up_2(self._up(x), seg)
        x = self.up_3(self._up(x), seg)
        if self.num_upsampling_layers == "most":
            x = self.up_4(self._up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class ConvEncoder(nn.Module):
    """VAE style encoder: image to (mu, logvar) of a `z_dim` Gaussian.

    As the reference: the image is resized to 256x256 (bilinear), then 3x3 stride-2
    conv_norm layers (`norm`, spectral-instance by default) with leaky ReLU, a sixth layer when
    crop_size >= 256, and linear heads fc_mu / fc_var. Where the reference fixes the final grid
    at 4x4, which breaks (a shape error) for crop_size < 256, the grid here is what the five
    layers leave, 8x8.
    """

    def __init__(
        self,
        ngf: int = 64,
        crop_size: int = 256,
        z_dim: int = 256,
        norm: str = "spectralinstance",
    ) -> None:
        super().__init__()
        check_int("ngf", ngf)
        check_int("crop_size", crop_size)
        check_int("z_dim", z_dim)
        check_choice("norm", norm, CONV_NORMS)

        def layer(fin: int, fout: int) -> nn.Module:
            return conv_norm(nn.Conv2d(fin, fout, kernel_size=3, stride=2, padding=1), norm)

        chans = [3, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf]
        if crop_size >= 256:
            chans.append(8 * ngf)
        self.layers = nn.ModuleList(layer(a, b) for a, b in zip(chans[:-1], chans[1:]))
        s0 = 256 // 2 ** len(self.layers)
        self.fc_mu = nn.Linear(8 * ngf * s0 * s0, z_dim)
        self.fc_var = nn.Linear(8 * ngf * s0 * s0, z_dim)
        init_weights(self)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image
        if x.shape[2:] != (256, 256):
            x = F.interpolate(x, size=(256, 256), mode="bilinear")
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)
