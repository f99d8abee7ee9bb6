"""OASIS losses (Schönfeld, Sushko et al., ICLR 2021), following boschresearch/OASIS
`models/losses.py` and `generate_labelmix` in `models/models.py`.

The discriminator (`models.oasis.OASISDiscriminator`) classifies each pixel into N + 1 classes:
channel 0 is "fake", channel c + 1 is label class c. Its loss is a per-pixel cross-entropy, with
real pixels weighted by the inverse frequency of their class in the batch so that small classes
count as much as large ones. The generator's adversarial loss is the same real-side loss on its
fakes. LabelMix mixes a real and a fake image by a random binary map that is constant on each
label class, and asks D's output on the mix to be the same mix of its outputs on the two.

`label` is always the one-hot map (B, N, H, W) the images were made from. All losses are
unweighted: the caller applies lambda_labelmix (10 in the reference for ADE20K and COCO, 5 for
Cityscapes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_shapes(logits: torch.Tensor, label: torch.Tensor) -> None:
    b, n, h, w = label.shape
    if logits.shape != (b, n + 1, h, w):
        raise ValueError(
            f"logits: expected {(b, n + 1, h, w)} for a label map {tuple(label.shape)} "
            f"(N + 1 channels), got {tuple(logits.shape)}"
        )


def class_balance_weights(label: torch.Tensor, contain_dontcare_label: bool = True) -> torch.Tensor:
    """Per-pixel weights (B, H, W): pixels of class c get B*H*W / (K * n_c), n_c the class's pixel
    count in the whole batch and K the number of classes present. Each present class thus gets
    the same total weight.

    With `contain_dontcare_label`, class 0 is "don't care": it gets weight 0 and is not counted
    in K (its pixels still count in B*H*W, as in the reference).
    """
    b, n, h, w = label.shape
    # float32: counts up to B*H*W lose precision in half types.
    counts = label.detach().float().sum(dim=(0, 2, 3))
    if contain_dontcare_label:
        counts[0] = 0
    present = (counts > 0).sum()
    # Absent classes get inf, but no pixel looks them up.
    coefficients = (b * h * w) / (present * counts)
    if contain_dontcare_label:
        coefficients[0] = 0
    return coefficients[label.detach().argmax(dim=1)]


def n1_target(label: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Class indices (B, H, W) for the N + 1 cross-entropy: label class + 1 when real, 0 when
    fake."""
    classes = label.detach().argmax(dim=1)
    return classes + 1 if target_is_real else torch.zeros_like(classes)


def n1_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    target_is_real: bool,
    class_balancing: bool = True,
    contain_dontcare_label: bool = True,
) -> torch.Tensor:
    """Mean per-pixel cross-entropy of logits (B, N + 1, H, W) against `n1_target`. Only the real
    target is class-balanced, as in the paper's Eq. 1 and the reference."""
    _check_shapes(logits, label)
    ce = F.cross_entropy(logits, n1_target(label, target_is_real), reduction="none")
    if target_is_real and class_balancing:
        ce = ce * class_balance_weights(label, contain_dontcare_label).to(ce.dtype)
    return ce.mean()


def oasis_d_loss(
    logits_real: torch.Tensor,
    logits_fake: torch.Tensor,
    label: torch.Tensor,
    class_balancing: bool = True,
    contain_dontcare_label: bool = True,
) -> torch.Tensor:
    """D's adversarial loss: real pixels to their label's class, fake pixels to "fake" (0)."""
    real = n1_loss(logits_real, label, True, class_balancing, contain_dontcare_label)
    fake = n1_loss(logits_fake, label, False, class_balancing, contain_dontcare_label)
    return real + fake


def oasis_g_loss(
    logits_fake: torch.Tensor,
    label: torch.Tensor,
    class_balancing: bool = True,
    contain_dontcare_label: bool = True,
) -> torch.Tensor:
    """G's adversarial loss: its fakes should be classified as their label's class."""
    return n1_loss(logits_fake, label, True, class_balancing, contain_dontcare_label)


def labelmix(
    label: torch.Tensor,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix `real` and `fake` images by a binary map (B, 1, H, W) that is 1 (take real) or 0
    (take fake) on all pixels of a label class, one fair coin per class for the whole batch.
    Returns (mixed image, map)."""
    classes = label.detach().argmax(dim=1, keepdim=True)
    device = generator.device if generator is not None else label.device
    coins = torch.randint(0, 2, (label.shape[1],), generator=generator, device=device)
    mask = coins.to(device=label.device, dtype=real.dtype)[classes]
    return mask * real + (1 - mask) * fake, mask


def labelmix_loss(
    mask: torch.Tensor,
    logits_mixed: torch.Tensor,
    logits_fake: torch.Tensor,
    logits_real: torch.Tensor,
) -> torch.Tensor:
    """LabelMix consistency: mean squared error between D(mix) and the same mix of D(real) and
    D(fake). Gradients flow into all three outputs, as in the reference."""
    return F.mse_loss(logits_mixed, mask * logits_real + (1 - mask) * logits_fake)
