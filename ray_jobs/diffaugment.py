"""DiffAugment (Zhao et al. 2020), as mit-han-lab/data-efficient-gans defines it.

The same differentiable augmentation is applied to real and fake images before D. For a
conditional GAN the label map goes into D beside the image, so the geometric transforms
(translation, cutout) move the label channels with the image, while the colour transforms
touch only the image channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in policy.split(",") if p.strip())


def rand_brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def rand_saturation(x: torch.Tensor) -> torch.Tensor:
    x_mean = x.mean(dim=1, keepdim=True)
    scale = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2
    return (x - x_mean) * scale + x_mean


def rand_contrast(x: torch.Tensor) -> torch.Tensor:
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    scale = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5
    return (x - x_mean) * scale + x_mean


def rand_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ratio of the size, filling with zeros (the reference's padded gather)."""
    b, _, h, w = x.shape
    shift_x, shift_y = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-shift_x, shift_x + 1, size=[b, 1, 1], device=x.device)
    ty = torch.randint(-shift_y, shift_y + 1, size=[b, 1, 1], device=x.device)
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


def rand_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ratio of the size, at a random centre per image."""
    b, _, h, w = x.shape
    cut_h, cut_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - cut_h % 2), size=[b, 1, 1], device=x.device)
    oy = torch.randint(0, w + (1 - cut_w % 2), size=[b, 1, 1], device=x.device)
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


def diff_augment(image: torch.Tensor, label: torch.Tensor | None, policy: str) -> torch.Tensor:
    """Augment D's input: returns cat([label, image]) (or image alone) after the policy,
    applied in the policy's order as the reference does.
    """
    x = image if label is None else torch.cat([label, image], dim=1)
    n_label = 0 if label is None else label.size(1)
    for name in parse_policy(policy):
        if name == "color":
            rgb = rand_contrast(rand_saturation(rand_brightness(x[:, n_label:])))
            x = torch.cat([x[:, :n_label], rgb], dim=1)
        elif name == "translation":
            x = rand_translation(x)
        elif name == "cutout":
            x = rand_cutout(x)
        else:
            raise ValueError(f"unknown DiffAugment policy {name!r}; expected {POLICIES}")
    return x
