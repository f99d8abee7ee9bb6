"""CycleGAN (Zhu et al., ICCV 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent
Adversarial Networks"): the ResNet generator, the 70x70 PatchGAN discriminator, the history pool of
generated images and the loss terms, following junyanz/pytorch-CycleGAN-and-pix2pix
`models/networks.py` (ResnetGenerator, ResnetBlock, NLayerDiscriminator, init_weights),
`util/image_pool.py` and `models/cycle_gan_model.py`.

Parameter counts match the reference at its default config (resnet_9blocks, ngf 64, instance norm,
no dropout; basic D, ndf 64): 11,378,179 per generator and 2,764,737 per discriminator. The
module layout and names are the reference's (`model.<index>...`), so its checkpoints load with
`load_state_dict`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gantune.errors import GantuneError
from losses.adversarial import gan_loss
from models.spade import check_choice, check_int

NORMS = ("instance", "batch")
PADDINGS = ("reflect", "replicate", "zero")


def _norm(norm: str, channels: int) -> nn.Module:
    # The reference's instance norm has no affine parameters and keeps no running statistics.
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.BatchNorm2d(channels, affine=True)


@torch.no_grad()
def init_normal(net: nn.Module, gain: float = 0.02) -> None:
    """The reference's `init_weights('normal', 0.02)`: conv, deconv and linear weights N(0, gain),
    their biases zero, batch-norm scales N(1, gain) and shifts zero."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


class ResnetBlock(nn.Module):
    """x + (pad, 3x3 conv, norm, ReLU, [dropout 0.5], pad, 3x3 conv, norm)(x), at a fixed width."""

    def __init__(
        self,
        dim: int,
        padding_type: str = "reflect",
        norm: str = "instance",
        use_dropout: bool = False,
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        check_choice("padding_type", padding_type, PADDINGS)
        check_choice("norm", norm, NORMS)

        def padded_conv() -> list[nn.Module]:
            if padding_type == "zero":
                return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=use_bias)]
            pad = nn.ReflectionPad2d(1) if padding_type == "reflect" else nn.ReplicationPad2d(1)
            return [pad, nn.Conv2d(dim, dim, kernel_size=3, bias=use_bias)]

        layers = [*padded_conv(), _norm(norm, dim), nn.ReLU()]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*padded_conv(), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Image (B, input_nc, H, W) to image (B, output_nc, H, W) in [-1, 1].

    A 7x7 conv, two stride-2 3x3 convs (widths ngf, 2 ngf, 4 ngf), `n_blocks` residual blocks at
    4 ngf, two stride-2 3x3 transposed convs back to ngf, and a 7x7 conv with tanh; norm and ReLU
    after every conv but the last. H and W must be multiples of 4 to come back at the input size.
    As the reference, convs carry a bias only with instance norm (batch norm's shift replaces it).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("output_nc", output_nc)
        check_int("ngf", ngf)
        check_int("n_blocks", n_blocks, minimum=0)
        check_choice("norm", norm, NORMS)
        check_choice("padding_type", padding_type, PADDINGS)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=use_bias),
            _norm(norm, ngf),
            nn.ReLU(),
        ]
        for mult in (1, 2):
            conv = nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias)
            layers += [conv, _norm(norm, ngf * mult * 2), nn.ReLU()]
        layers += [ResnetBlock(4 * ngf, padding_type, norm, use_dropout, use_bias) for _ in range(n_blocks)]
        for mult in (4, 2):
            deconv = nn.ConvTranspose2d(
                ngf * mult, ngf * mult // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=use_bias
            )
            layers += [deconv, _norm(norm, ngf * mult // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PatchGANDiscriminator(nn.Module):
    """Image (B, input_nc, H, W) to a map of real/fake logits, the reference's NLayerDiscriminator.

    4x4 convs with padding 1: a plain stride-2 conv, `n_layers - 1` normed stride-2 convs and one
    normed stride-1 conv (widths ndf * (1, 2, 4, 8, 8, ...), capped at 8 ndf), then a 1-channel
    stride-1 conv; leaky ReLU 0.2 after all but the last. At n_layers 3 each logit sees a 70x70
    patch, and a 256 px image gives a (B, 1, 30, 30) map. With LSGAN no sigmoid follows.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        check_int("input_nc", input_nc)
        check_int("ndf", ndf)
        check_int("n_layers", n_layers)
        check_choice("norm", norm, NORMS)
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        nf = ndf
        for n in range(1, n_layers + 1):
            nf_prev, nf = nf, ndf * min(2**n, 8)
            stride = 1 if n == n_layers else 2
            conv = nn.Conv2d(nf_prev, nf, kernel_size=4, stride=stride, padding=1, bias=use_bias)
            layers += [conv, _norm(norm, nf), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(nf, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ImagePool:
    """History of generated images: the discriminator sees a mix of new and older fakes.

    Until `pool_size` images are stored, each query image is stored and returned. After that,
    with probability 0.5 a query image swaps places with a uniformly chosen stored one, which is
    returned in its stead; otherwise the query image itself is returned. pool_size 0 turns the pool
    off. Returned images are detached. Draws come from `generator` (a torch.Generator, or an int
    seed for a new one); None seeds a new generator from torch's global RNG.
    """

    def __init__(self, pool_size: int = 50, generator: torch.Generator | int | None = None) -> None:
        check_int("pool_size", pool_size, minimum=0)
        if isinstance(generator, bool) or not isinstance(generator, (torch.Generator, int, type(None))):
            raise GantuneError(f"generator: expected a torch.Generator, an int seed or None, got {generator!r}")
        if not isinstance(generator, torch.Generator):
            seed = int(torch.randint(2**62, ())) if generator is None else generator
            generator = torch.Generator().manual_seed(seed)
        self.pool_size = pool_size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, C, H, W) new fakes. Returns (B, C, H, W), detached, on the same device."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator) > 0.5:
                i = int(torch.randint(self.pool_size, (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the pool where it was: images and RNG state."""
        return {"pool_size": self.pool_size, "images": list(self.images), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["pool_size"] != self.pool_size:
            raise GantuneError(f"pool_size: checkpoint has {state['pool_size']}, this pool {self.pool_size}")
        self.images = list(state["images"])
        self.generator.set_state(state["rng"])


def cyclegan_d_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    """One discriminator's LSGAN loss, halved as the reference's `backward_D_basic` (it slows D
    relative to G): 0.5 * (mean((D(real) - 1)^2) + mean(D(fake)^2)). Give it D of a pooled,
    detached fake."""
    return 0.5 * (gan_loss(pred_real, True, True, "ls") + gan_loss(pred_fake, False, True, "ls"))


def cyclegan_g_losses(
    pred_fake_B: torch.Tensor,
    pred_fake_A: torch.Tensor,
    real_A: torch.Tensor,
    real_B: torch.Tensor,
    rec_A: torch.Tensor,
    rec_B: torch.Tensor,
    idt_A: torch.Tensor | None = None,
    idt_B: torch.Tensor | None = None,
    lambda_A: float = 10.0,
    lambda_B: float = 10.0,
    lambda_identity: float = 0.5,
) -> dict[str, torch.Tensor]:
    """The generators' weighted loss terms, as the reference's `backward_G`; their sum is the loss.

    pred_fake_B = D_A(G_A(real_A)), pred_fake_A = D_B(G_B(real_B)) (no pool), rec_A = G_B(G_A(A)),
    rec_B = G_A(G_B(B)), idt_A = G_A(real_B), idt_B = G_B(real_A). Keys: G_A, G_B (LSGAN to real),
    cycle_A = lambda_A L1(rec_A, A), cycle_B = lambda_B L1(rec_B, B), and with lambda_identity > 0
    idt_A = lambda_B lambda_identity L1(idt_A, B), idt_B = lambda_A lambda_identity L1(idt_B, A).
    """
    terms = {
        "G_A": gan_loss(pred_fake_B, True, False, "ls"),
        "G_B": gan_loss(pred_fake_A, True, False, "ls"),
        "cycle_A": lambda_A * F.l1_loss(rec_A, real_A),
        "cycle_B": lambda_B * F.l1_loss(rec_B, real_B),
    }
    if lambda_identity > 0:
        if idt_A is None or idt_B is None:
            raise ValueError("cyclegan_g_losses: lambda_identity > 0 needs idt_A and idt_B")
        terms["idt_A"] = lambda_B * lambda_identity * F.l1_loss(idt_A, real_B)
        terms["idt_B"] = lambda_A * lambda_identity * F.l1_loss(idt_B, real_A)
    return terms
