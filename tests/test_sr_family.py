"""The super-resolution families around their nets: the pairs data/sr.py makes, their config,
ESRGAN's losses against BasicSR's figures, and each switch of the SR log changing training."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.sr import Degradation, SRDataset, degrade, noise_patches
from gantune.errors import GantuneError
from losses.sr import edge_loss, relativistic_d_losses, relativistic_g_loss
from ray_jobs import config as C
from ray_jobs.families import FAMILIES


# ---- Data ------------------------------------------------------------------------------------


def test_bicubic_pairs_from_scenes() -> None:
    ds = SRDataset(Degradation(scale=4), 64, n=3, seed=1, train=False)
    item = ds[0]
    assert item["image"].shape == (3, 64, 64) and item["lr"].shape == (3, 16, 16)
    hr01 = (item["image"] + 1) / 2
    expected = F.interpolate(hr01[None], size=(16, 16), mode="bicubic", antialias=True)[0].clamp(0, 1)
    assert torch.allclose((item["lr"] + 1) / 2, expected, atol=1e-6)


def test_realistic_degradation_is_random_in_training_and_fixed_in_evaluation() -> None:
    d = Degradation(scale=2, kind="realistic")
    evals = SRDataset(d, 32, n=2, seed=0, train=False)
    assert torch.equal(evals[1]["lr"], evals[1]["lr"])
    train = SRDataset(d, 32, n=2, seed=0)
    assert not torch.equal(train[1]["lr"], train[1]["lr"])
    # The same image, another degradation than plain bicubic: blur, noise and JPEG change it.
    bicubic = SRDataset(Degradation(scale=2), 32, n=2, seed=0, train=False)[1]["lr"]
    assert torch.equal(evals[1]["image"], SRDataset(Degradation(scale=2), 32, n=2, seed=0, train=False)[1]["image"])
    assert (evals[1]["lr"] - bicubic).abs().mean() > 0.01


def test_noise_patches_are_injected_without_their_mean(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray((128 + rng.normal(0, 40, (12, 12, 3))).clip(0, 255).astype(np.uint8)).save(tmp_path / "n.png")
    patches = noise_patches(tmp_path)
    hr = torch.full((3, 32, 32), 0.5)
    # Blur, resizing and a JPEG at quality 95 leave a flat grey flat; the injected noise is what remains.
    base = Degradation(scale=2, kind="realistic", noise_sigma_max=1.0, jpeg_quality_min=95.0)
    with_patches = Degradation(scale=2, kind="realistic", noise_sigma_max=1.0, jpeg_quality_min=95.0,
                               noise_patches=patches)
    spread = [degrade(hr, with_patches, torch.Generator().manual_seed(s)).std().item() for s in range(8)]
    plain = [degrade(hr, base, torch.Generator().manual_seed(s)).std().item() for s in range(8)]
    assert max(spread) > 5 * max(plain)  # some draws took a patch (40 levels of noise, not 1)
    assert abs(degrade(hr, with_patches, torch.Generator().manual_seed(0)).mean().item() - 0.5) < 0.02


def test_folder_of_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    evals = SRDataset(Degradation(scale=4), 32, root=tmp_path, train=False)
    assert len(evals) == 3 and evals[0]["lr"].shape == (3, 8, 8)
    with pytest.raises(GantuneError, match="smaller than data.size_px=64"):
        SRDataset(Degradation(scale=4), 64, root=tmp_path)[0]
    with pytest.raises(GantuneError, match="multiple of the SR scale 4"):
        SRDataset(Degradation(scale=4), 30, root=tmp_path)


@pytest.mark.parametrize("values, message", [
    ({"sr.scale": 3}, "sr.scale must be one of \\[2, 4\\]"),
    ({"data.size_px": 36, "sr.scale": 8}, "sr.scale must be one of"),
    ({"data.size_px": 34, "sr.scale": 4}, "data.size_px=34 \\(the high-resolution crop\\) must be a multiple of sr.scale=4"),
    ({"model.family": "esrgan", "data.size_px": 96}, "esrgan needs data.size_px a power of two >= 64"),
    ({"sr.noise_sigma_max": 10.0}, "sr.noise_sigma_max=10.0 has no effect: sr.degradation is 'bicubic'"),
    ({"sr.degradation": "realistic", "sr.noise_root": "/no/such/folder"}, "sr.noise_root='/no/such/folder' is not a folder"),
    ({"model.ngf": 32}, "model.ngf=32 has no effect: model.family 'rdn' does not use it"),
    ({"optim.lr_D": 1e-3}, "optim.lr_D=0.001 has no effect: model.family 'rdn' does not use it"),
])
def test_bad_sr_configs_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(GantuneError, match=message):
        C.with_values(C.Config(), {"model.family": "rdn", "data.size_px": 32, **values})


# ---- ESRGAN's losses -----------------------------------------------------------------------


def test_relativistic_losses_match_basicsr_by_hand() -> None:
    real, fake = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [2.0]])
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  BCE with logits: target 1 -> softplus(-x)
    # D: real - mean(fake) = [0, 2] against 1; fake - mean(real) = [-2, 0] against 0.
    d_real = 0.5 * (softplus(-0.0) + softplus(-2.0)) / 2
    d_fake = 0.5 * (softplus(-2.0) + softplus(0.0)) / 2
    got_real, got_fake = relativistic_d_losses(real, fake)
    assert got_real.item() == pytest.approx(d_real) == pytest.approx(0.2050188, abs=1e-7)
    assert got_fake.item() == pytest.approx(d_fake)
    # G: the same differences with the targets swapped: [0, 2] against 0, [-2, 0] against 1.
    g = ((softplus(0.0) + softplus(2.0)) / 2 + (softplus(2.0) + softplus(0.0)) / 2) / 2
    assert relativistic_g_loss(real, fake).item() == pytest.approx(g)
    assert 0.005 * relativistic_g_loss(real, fake).item() == pytest.approx(0.00705019, abs=1e-8)


def test_edge_loss_sees_edges_not_flat_offsets() -> None:
    flat = torch.full((1, 3, 16, 16), 0.3)
    assert edge_loss(flat, flat + 0.2).item() == pytest.approx(0.0, abs=1e-7)
    step = flat.clone()
    step[..., 8:] = 0.9
    assert edge_loss(step, flat).item() > 0.01


# ---- The switches change training ----------------------------------------------------------


def tiny(family: str, **values: object) -> C.Config:
    return C.with_values(C.Config(), {
        "model.family": family, **FAMILIES[family].smoke_overrides, "data.n_train": 4, "data.n_eval": 2,
        "loss.random_backbones": True, "optim.batch_size": 2, "train.log_every": 1, "train.image_every": 100,
        "eval.objective": "psnr", **values,
    })


def weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_esrgan_pretraining_stage_leaves_d_alone(tmp_path: Path) -> None:
    from ray_jobs.trainer import Trainer

    tr = Trainer(tiny("esrgan", **{"esrgan.pretrain_steps": 2}), tmp_path / "run")
    d0, g0 = weights(tr.engines["D"].module), weights(tr.engines["G"].module)
    logs = tr.train(2)
    assert set(logs) == {"loss/pretrain/l1", "loss/pretrain/total"}
    assert changed(g0, tr.engines["G"].module) and not changed(d0, tr.engines["D"].module)
    logs = tr.train(1)  # the GAN stage
    assert {"loss/G/gan", "loss/G/perc", "loss/D/real"} <= set(logs) and changed(d0, tr.engines["D"].module)


@pytest.mark.parametrize("threshold, d_moves", [(0.0, True), (100.0, False)])
def test_d_stepper_rests_d_while_its_loss_is_below_the_threshold(tmp_path: Path, threshold: float, d_moves: bool) -> None:
    from ray_jobs.trainer import Trainer

    tr = Trainer(tiny("esrgan", **{"esrgan.d_stepper": threshold}), tmp_path / "run")
    d0 = weights(tr.engines["D"].module)
    logs = tr.train(2)
    assert changed(d0, tr.engines["D"].module) == d_moves
    assert ("loss/D/total" in logs) == d_moves and logs.get("loss/D/skipped", 0.0) == (0.0 if d_moves else 1.0)


def test_edge_loss_and_blurpool_change_what_g_learns(tmp_path: Path) -> None:
    from ray_jobs.trainer import Trainer

    def g_after(**values: object) -> list[torch.Tensor]:
        tr = Trainer(tiny("srresnet", **values), tmp_path / str(len(list(tmp_path.iterdir()))))
        tr.train(2)
        return weights(tr.engines["G"].module)

    plain = g_after()
    assert any(not torch.equal(a, b) for a, b in zip(plain, g_after(**{"sr.lambda_edge": 1.0})))
    assert any(not torch.equal(a, b) for a, b in zip(plain, g_after(**{"sr.blurpool": True})))
    assert all(torch.equal(a, b) for a, b in zip(plain, g_after()))  # and nothing else does
