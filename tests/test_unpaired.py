"""The unpaired family around its nets: summer/winter scenes and CycleGAN's folder layout, the
config, and CycleGAN's step: D judges the G phase's own fakes through the history pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.unpaired import DOMAIN_STYLES, UnpairedFolder, UnpairedScenes
from gantune.errors import GantuneError
from losses.cyclegan import cyclegan_d_loss
from net_helpers import one_thread  # noqa: F401  (autouse fixture)
from ray_jobs import config as C
from ray_jobs.families import FAMILIES


def test_scenes_are_summer_a_and_winter_b_of_other_layouts() -> None:
    from data.scenes import render_scene

    evals = UnpairedScenes(3, 32, seed=1, train=False)
    item = evals[2]
    assert item["A"].shape == item["B"].shape == (3, 32, 32) and item["image"] is item["B"]
    a, labels_a = render_scene(2, 32, 1, DOMAIN_STYLES["A"])
    assert torch.equal(item["A"], torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1)
    # B is another layout in winter: not A's scene restyled.
    _, labels_b = render_scene(2, 32, 1 + 7919, DOMAIN_STYLES["B"])
    assert not np.array_equal(labels_a, labels_b)
    assert torch.equal(evals[2]["B"], item["B"])  # evaluation pairs are fixed
    train = UnpairedScenes(8, 32, seed=1)
    assert len({train[0]["path"] for _ in range(8)}) > 1  # training draws B at random


def test_folder_in_cyclegan_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("trainA", 3), ("trainB", 2), ("testA", 2), ("testB", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / split / f"{i}.png")
    train, evals = UnpairedFolder(tmp_path, 16), UnpairedFolder(tmp_path, 16, train=False)
    assert (len(train), len(evals)) == (3, 2)
    assert evals[1]["A"].shape == (3, 16, 16) and evals[1]["path"].endswith("testB/0.png")
    (tmp_path / "testB" / "0.png").unlink()
    (tmp_path / "testB").rmdir()
    with pytest.raises(GantuneError, match="testB/ is missing"):
        UnpairedFolder(tmp_path, 16, train=False)


@pytest.mark.parametrize("values, message", [
    ({"data.size_px": 34}, "cyclegan needs data.size_px a multiple of 4"),
    ({"data.num_classes": 151}, "data.num_classes=151 has no effect: model.family 'cyclegan' does not use it"),
    ({"cyclegan.pool_size": -1}, "cyclegan.pool_size must be >= 0"),
])
def test_bad_cyclegan_configs_name_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(GantuneError, match=message):
        C.with_values(C.Config(), {"model.family": "cyclegan", "data.size_px": 32, **values})


def family_and_nets(**values: object) -> tuple:  # type: ignore[type-arg]
    cfg = C.with_values(C.Config(), {"model.family": "cyclegan", "data.size_px": 32,
                                     **FAMILIES["cyclegan"].smoke_overrides, **values})
    family = FAMILIES["cyclegan"](cfg)
    torch.manual_seed(0)
    return family, {"G": family.build("G"), "D": family.build("D")}


def test_d_judges_the_g_phase_fakes_through_the_pools() -> None:
    family, nets = family_and_nets(**{"cyclegan.pool_size": 0})
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    _, logs = family.loss("G", nets, batch)
    assert {"loss/G/G_A", "loss/G/cycle_A", "loss/G/idt_B"} <= set(logs)
    with torch.no_grad():
        fake_B = nets["G"](batch["A"], "B")
    assert torch.equal(family._fakes["B"], fake_B)
    # Change G: the D phase must still judge the fakes of the G phase, as the reference does.
    with torch.no_grad():
        for p in nets["G"].parameters():
            p.add_(0.1)
    total, logs = family.loss("D", nets, batch)
    D = nets["D"]
    expected = cyclegan_d_loss(D(batch["B"], "B"), D(fake_B, "B"))
    assert logs["loss/D/D_B"] == pytest.approx(expected.item())
    assert total.item() == pytest.approx(logs["loss/D/D_A"] + logs["loss/D/D_B"])


def test_the_d_phase_fills_each_domains_pool() -> None:
    family, nets = family_and_nets(**{"cyclegan.pool_size": 4})
    batches = [{"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1} for _ in range(6)]
    for batch in batches:
        family.loss("G", nets, batch)
        family.loss("D", nets, batch)
    assert len(family.pools["B"]) == 4  # full: later queries swap with stored fakes


def test_identity_weight_zero_drops_the_identity_terms() -> None:
    family, nets = family_and_nets(**{"cyclegan.lambda_identity": 0.0})
    _, logs = family.loss("G", nets, {"A": torch.zeros(1, 3, 32, 32), "B": torch.zeros(1, 3, 32, 32)})
    assert not any("idt" in k for k in logs)


# ---- U-GAT-IT -------------------------------------------------------------------------------


def test_ugatit_needs_room_for_its_deepest_d() -> None:
    with pytest.raises(GantuneError, match="ugatit needs data.size_px >= 2\\*\\*7 for its 7-layer D, got 64"):
        C.with_values(C.Config(), {"model.family": "ugatit", "data.size_px": 64})


def test_ugatit_clips_rho_after_g_steps_and_shows_its_cam(tmp_path: Path) -> None:
    from models.ugatit import AdaILN, ILN
    from ray_jobs.trainer import Trainer

    cfg = C.with_values(C.Config(), {"model.family": "ugatit", "data.size_px": 32, "data.n_train": 4, "data.n_eval": 2,
                                     **FAMILIES["ugatit"].smoke_overrides, "optim.batch_size": 2,
                                     "train.image_every": 1, "eval.random_weights": True, "eval.dims": 64,
                                     "eval.cache_dir": str(tmp_path / "cache")})
    tr = Trainer(cfg, tmp_path / "run")
    norms = [m for m in tr.engines["G"].module.modules() if isinstance(m, (AdaILN, ILN))]
    with torch.no_grad():
        for m in norms:
            m.rho.fill_(1.5)  # outside [0, 1]: the G step's clipping brings it back
    logs = tr.train(1)
    assert {"loss/D/D_A", "loss/G/cam_A", "loss/G/adv_B", "loss/G/cycle_A"} <= set(logs)
    assert all(float(m.rho.detach().max()) <= 1.0 for m in norms)
    batch = {k: v.float() for k, v in next(tr._batches).items() if isinstance(v, torch.Tensor)}
    tag, grid = tr.family.image_grid(tr._eval_nets(), batch)
    assert tag == "images/A_AtoB_AtoBtoA_cam" and grid.shape == (2 * 32, 4 * 32, 3)
    tr.close()


def test_a_pbt_exploit_may_bring_other_loss_weights_but_not_another_net(tmp_path: Path) -> None:
    from ray_jobs.trainer import Trainer

    def config(**values: object) -> C.Config:
        return C.with_values(C.Config(), {"model.family": "ugatit", "data.size_px": 32, "data.n_train": 2,
                                          "optim.batch_size": 2, "eval.random_weights": True,
                                          **FAMILIES["ugatit"].smoke_overrides, **values})

    ckpt = Trainer(config(), tmp_path / "donor").save(tmp_path / "ckpt")
    # The searched weights are floats of the family's section: another trial's checkpoint loads.
    Trainer(config(**{"ugatit.cycle_weight": 20.0, "ugatit.cam_weight": 300.0}), tmp_path / "other").load(ckpt)
    with pytest.raises(GantuneError, match="trained with ugatit.n_blocks=1 but this config has ugatit.n_blocks=2"):
        Trainer(config(**{"ugatit.n_blocks": 2}), tmp_path / "wider").load(ckpt)


def test_b_statistics_are_not_the_label_photos_statistics(tmp_path: Path) -> None:
    """The same scene settings give other reals for an unpaired family (winter B): another cache."""
    from ray_jobs.trainer import Trainer

    common = {"data.size_px": 32, "data.n_train": 2, "data.n_eval": 4, "optim.batch_size": 2, "eval.batch_size": 4,
              "loss.random_backbones": True,
              "eval.random_weights": True, "eval.dims": 64, "eval.cache_dir": str(tmp_path / "cache")}
    for family in ("spade", "cyclegan"):
        cfg = C.with_values(C.Config(), {"model.family": family, **FAMILIES[family].smoke_overrides, **common})
        Trainer(cfg, tmp_path / family).evaluate()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
