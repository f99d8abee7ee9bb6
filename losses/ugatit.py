"""U-GAT-IT's losses (znxlwm/UGATIT-pytorch `UGATIT.py`): LSGAN on the patch and CAM logits of
the global and local discriminators, cycle and identity L1, and the generators' CAM BCE.

Also the U-GAT-IT log's blur adversarial term, CartoonGAN's edge-smoothed adversarial loss (Chen et al.
CVPR 2018): each domain's Ds also see Gaussian-blurred copies of that domain's real photos as fakes
(`blur_images`, `ugatit_blur_d_loss`), so soft edges read as fake and G is pushed to sharp ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from losses.adversarial import gan_loss


def ugatit_d_loss(
    real_outputs: Sequence[Sequence[torch.Tensor]],
    fake_outputs: Sequence[Sequence[torch.Tensor]],
    adv_weight: float = 1.0,
) -> torch.Tensor:
    """The discriminators' loss for one domain, as the reference's D_loss_A (or _B).

    real_outputs / fake_outputs: the (logits, cam_logits, ...) outputs of each of the domain's
    discriminators (global, local) on real images and on that domain's fakes. LSGAN, summed, not
    halved: adv_weight * sum over D of [mse(logits_real, 1) + mse(logits_fake, 0) +
    mse(cam_real, 1) + mse(cam_fake, 0)].
    """
    if len(real_outputs) != len(fake_outputs) or not real_outputs:
        raise ValueError("ugatit_d_loss: expected as many real as fake outputs, at least one")
    terms = [
        gan_loss(real[i], True, True, "ls") + gan_loss(fake[i], False, True, "ls")
        for real, fake in zip(real_outputs, fake_outputs)
        for i in (0, 1)  # the patch logits, then the CAM logits
    ]
    return adv_weight * torch.stack(terms).sum()


def blur_images(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) images Gaussian-blurred with std `sigma` px (kornia, reflected borders). The
    kernel spans +-3 sigma (2 * ceil(3 sigma) + 1 taps), cut to what a reflected border can pad.
    """
    radius = min(math.ceil(3 * sigma), min(images.shape[-2:]) - 1)
    size = 2 * radius + 1
    return gaussian_blur2d(images, (size, size), (sigma, sigma), border_type="reflect")


def ugatit_blur_d_loss(blur_outputs: Sequence[Sequence[torch.Tensor]], blur_weight: float = 1.0) -> torch.Tensor:
    """The blur adversarial term of one domain's discriminators: blur_outputs are the (logits,
    cam_logits, ...) of each of the domain's Ds (global, local) on blurred real photos of the domain,
    labelled fake as ugatit_d_loss's fake half: blur_weight * sum over D of [mse(logits, 0) +
    mse(cam, 0)]. CartoonGAN weighs it as the fakes' half (blur_weight = adv_weight).
    """
    if not blur_outputs:
        raise ValueError("ugatit_blur_d_loss: expected the outputs of at least one discriminator")
    terms = [gan_loss(out[i], False, True, "ls") for out in blur_outputs for i in (0, 1)]
    return blur_weight * torch.stack(terms).sum()


def ugatit_g_losses(
    fake_outputs: Sequence[Sequence[torch.Tensor]],
    cam_translated: torch.Tensor,
    cam_identity: torch.Tensor,
    real: torch.Tensor,
    rec: torch.Tensor,
    idt: torch.Tensor,
    adv_weight: float = 1.0,
    cycle_weight: float = 10.0,
    identity_weight: float = 10.0,
    cam_weight: float = 1000.0,
    *,
    cycle_real: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The generators' weighted loss terms for one domain X (the reference's G_loss_A for X = A);
    their sum is that domain's loss, and the generators' loss adds both domains'.

    fake_outputs: each of X's discriminators (global, local) on the fakes translated into X;
    cam_translated / cam_identity: the CAM logits of the generator into X on the other domain's
    real images and on X's own; rec: X -> other -> X; idt: the generator into X on X's real images.
    cycle_real: where the cycle started when that is not `real` (X's photos histogram-matched to the
    other domain before translation); None: real.
    Keys: adv = adv_weight * sum over D of [mse(logits, 1) + mse(cam, 1)], cycle = cycle_weight *
    L1(rec, cycle_real or real), identity = identity_weight * L1(idt, real), cam = cam_weight *
    [BCE(cam_translated, 1) + BCE(cam_identity, 0)] with logits.
    """
    if not fake_outputs:
        raise ValueError("ugatit_g_losses: expected the outputs of at least one discriminator")
    adv = torch.stack([gan_loss(out[i], True, False, "ls") for out in fake_outputs for i in (0, 1)]).sum()
    cam = F.binary_cross_entropy_with_logits(
        cam_translated, torch.ones_like(cam_translated)
    ) + F.binary_cross_entropy_with_logits(cam_identity, torch.zeros_like(cam_identity))
    return {
        "adv": adv_weight * adv,
        "cycle": cycle_weight * F.l1_loss(rec, real if cycle_real is None else cycle_real),
        "identity": identity_weight * F.l1_loss(idt, real),
        "cam": cam_weight * cam,
    }
