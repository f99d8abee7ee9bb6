"""DiffAugment as mit-han-lab defines it, applied to D's [label, image] input."""

from __future__ import annotations

import pytest
import torch

from ray_jobs.diffaugment import diff_augment, rand_cutout, rand_translation


def test_color_touches_only_the_image_channels() -> None:
    torch.manual_seed(0)
    label, image = torch.rand(2, 5, 8, 8), torch.rand(2, 3, 8, 8)
    out = diff_augment(image, label, "color")
    assert torch.equal(out[:, :5], label)
    assert not torch.allclose(out[:, 5:], image)


def test_translation_moves_label_and_image_together() -> None:
    torch.manual_seed(1)
    x = torch.arange(2 * 4 * 16 * 16, dtype=torch.float32).view(2, 4, 16, 16) + 1
    out = rand_translation(x)
    # Each output pixel is either zero padding or the same source pixel in every channel.
    shifted = out != 0
    assert torch.equal(shifted[:, :1].expand_as(shifted), shifted)
    for b in range(2):
        nz = out[b, 0][out[b, 0] != 0]
        idx = (nz - 1 - b * 4 * 16 * 16).long()  # source position of each kept pixel
        src = x[b].flatten(1)[:, idx]
        assert torch.equal(out[b][:, out[b, 0] != 0], src)
    # Shifts stay within ratio 0.125 of the size (2 px at 16 px).
    assert (out != 0).float().mean() >= (14 * 14) / (16 * 16) - 1e-6


def test_cutout_zeroes_one_square_in_every_channel() -> None:
    torch.manual_seed(2)
    x = torch.ones(3, 4, 16, 16)
    out = rand_cutout(x)
    zero = out == 0
    assert torch.equal(zero[:, :1].expand_as(zero), zero)
    for b in range(3):
        n = int(zero[b, 0].sum())
        assert 0 < n <= 8 * 8  # ratio 0.5 of 16 px, clipped at the borders


@pytest.mark.parametrize("policy", ["", "color", "translation", "cutout", "color,translation,cutout"])
def test_shapes_and_gradients(policy: str) -> None:
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = diff_augment(image, torch.rand(2, 4, 16, 16), policy)
    assert out.shape == (2, 7, 16, 16)
    out.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_a_fake_and_its_real_share_one_draw_in_the_joint_pass() -> None:
    """SPADE's G step sends [fake; real] through D in one pass for feature matching. With a
    fake equal to its real, every augmented pair is identical and feature matching is 0;
    draws made per sample over the joint batch shift or cut them differently."""
    from ray_jobs import config as C
    from ray_jobs.families.spade import SpadeFamily

    class Copy(torch.nn.Module):  # a "generator" whose fake is exactly the real image
        def forward(self, label: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, None, None]:
            return image, None, None

    cfg = C.with_values(C.Config(), {
        "data.num_classes": 4, "model.ndf": 8, "model.num_D": 2, "model.n_layers_D": 2,
        "spade.lambda_vgg": 0.0, "loss.lambda_cx": 0.0, "loss.lambda_dists": 0.0, "loss.lambda_ffl": 0.0,
        "spade.lambda_feat": 10.0, "train.diffaug": "color,translation,cutout",
    })
    family = SpadeFamily(cfg)
    torch.manual_seed(0)
    label = torch.nn.functional.one_hot(torch.randint(0, 4, (4, 32, 32)), 4).permute(0, 3, 1, 2).float()
    batch = {"label": label, "image": torch.rand(4, 3, 32, 32) * 2 - 1}
    _, logs = family.loss("G", {"G": Copy(), "D": family.build("D")}, batch)
    assert logs["loss/G/feat"] == 0.0
    # Shared per pair, not per batch: with one group the same stacked copies come out apart.
    x = torch.rand(3, 4, 16, 16).repeat(2, 1, 1, 1)
    assert torch.equal(*diff_augment(x[:, 1:], x[:, :1], "color,translation,cutout", groups=2).chunk(2))
    assert not torch.equal(*diff_augment(x[:, 1:], x[:, :1], "color,translation,cutout").chunk(2))
