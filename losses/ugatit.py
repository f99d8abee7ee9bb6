"""U-GAT-IT's losses (znxlwm/UGATIT-pytorch `UGATIT.py`): LSGAN on the patch and CAM logits of
the global and local discriminators, cycle and identity L1, and the generators' CAM BCE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
) -> dict[str, torch.Tensor]:
    """The generators' weighted loss terms for one domain X (the reference's G_loss_A for X = A);
    their sum is that domain's loss, and the generators' loss adds both domains'.

    fake_outputs: each of X's discriminators (global, local) on the fakes translated into X;
    cam_translated / cam_identity: the CAM logits of the generator into X on the other domain's
    real images and on X's own; rec: X -> other -> X; idt: the generator into X on X's real images.
    Keys: adv = adv_weight * sum over D of [mse(logits, 1) + mse(cam, 1)], cycle = cycle_weight *
    L1(rec, real), identity = identity_weight * L1(idt, real), cam = cam_weight *
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
        "cycle": cycle_weight * F.l1_loss(rec, real),
        "identity": identity_weight * F.l1_loss(idt, real),
        "cam": cam_weight * cam,
    }
