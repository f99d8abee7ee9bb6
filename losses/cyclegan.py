"""CycleGAN's losses (junyanz/pytorch-CycleGAN-and-pix2pix `models/cycle_gan_model.py`) and the
history pool of generated images its discriminators read (`util/image_pool.py`): LSGAN for both
sides, D's loss halved, cycle and identity L1 terms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gantune.errors import GantuneError
from losses.adversarial import gan_loss
from models.spade import check_int


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
