"""DiffAugment (Zhao et al. 2020), as mit-han-lab/data-efficient-gans defines it.

The same differentiable augmentation is applied to real and fake images before D. For a
conditional GAN the label map goes into D beside the image, so the geometric transforms
(translation, cutout) move the label channels with the image, while the colour transforms
touch only the image channels.

D sees a fake and its real in one pass where feature matching compares their features (SPADE's
discriminate()). Such a batch is `groups` stacked copies of one set of samples, and sample i of
every group gets the same draw: feature matching then compares a fake and a real augmented
alike, not shifted or cut out differently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in policy.split(",") if p.strip())


def _per_sample(draw: torch.Tensor, groups: int) -> torch.Tensor:
    """One draw per sample of a group, the same for sample i of every group."""
    return draw.repeat(groups, *([1] * (draw.dim() - 1)))


def _uniform(x: torch.Tensor, groups: int) -> torch.Tensor:
    return _per_sample(torch.rand(x.size(0) // groups, 1, 1, 1, dtype=x.dtype, device=x.device), groups)


def rand_brightness(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    return x + (_uniform(x, groups) - 0.5)


def rand_saturation(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    x_mean = x.mean(dim=1, keepdim=True)
    return (x - x_mean) * (_uniform(x, groups) * 2) + x_mean


def rand_contrast(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - x_mean) * (_uniform(x, groups) + 0.5) + x_mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125, groups: int = 1) -> torch.Tensor:
    """Shift by up to ratio of the size, filling with zeros (the reference's padded gather)."""
    b, _, h, w = x.shape
    shift_x, shift_y = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = _per_sample(torch.randint(-shift_x, shift_x + 1, size=[b // groups, 1, 1], device=x.device), groups)
    ty = _per_sample(torch.randint(-shift_y, shift_y + 1, size=[b // groups, 1, 1], device=x.device), groups)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(h, device=x.device),
        torch.arange(w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, ratio: float = 0.5, groups: int = 1) -> torch.Tensor:
    """Zero one square of ratio of the size, at a random centre per image."""
    b, _, h, w = x.shape
    cut_h, cut_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = _per_sample(torch.randint(0, h + (1 - cut_h % 2), size=[b // groups, 1, 1], device=x.device), groups)
    oy = _per_sample(torch.randint(0, w + (1 - cut_w % 2), size=[b // groups, 1, 1], device=x.device), groups)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device),
        torch.arange(cut_h, device=x.device),
        torch.arange(cut_w, device=x.device),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - cut_h // 2, min=0, max=h - 1)
    gy = torch.clamp(gy + oy - cut_w // 2, min=0, max=w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


def diff_augment(image: torch.Tensor, label: torch.Tensor | None, policy: str, groups: int = 1) -> torch.Tensor:
    """Augment D's input: returns cat([label, image]) (or image alone) after the policy,
    applied in the policy's order as the reference does. With groups > 1 the batch is that many
    stacked copies of one set of samples (a fake and its real) that share every draw.
    """
    if image.size(0) % groups:
        raise ValueError(f"a batch of {image.size(0)} does not split into {groups} groups")
    x = image if label is None else torch.cat([label, image], dim=1)
    n_label = 0 if label is None else label.size(1)
    for name in parse_policy(policy):
        if name == "color":
            rgb = rand_contrast(rand_saturation(rand_brightness(x[:, n_label:], groups), groups), groups)
            x = torch.cat([x[:, :n_label], rgb], dim=1)
        elif name == "translation":
            x = rand_translation(x, groups=groups)
        elif name == "cutout":
            x = rand_cutout(x, groups=groups)
        else:
            raise ValueError(f"unknown DiffAugment policy {name!r}; expected {POLICIES}")
    return x
