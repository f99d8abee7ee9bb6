"""The family interface: every family in the one dict is well formed, and the trainer drives
whatever nets and phases a family declares."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ray_jobs import config as C
from ray_jobs.families import FAMILIES
from ray_jobs.family_config import FAMILY_IGNORES


def test_the_dict_names_every_family_the_config_accepts() -> None:
    assert set(FAMILIES) == set(C._CHOICES["model.family"]) == set(C.FAMILY_NAMES) == set(FAMILY_IGNORES)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_declares_its_nets_and_phases(name: str) -> None:
    family = FAMILIES[name]
    nets = [net.name for net in family.nets]
    assert len(set(nets)) == len(nets), "net names are engine names and checkpoint tags: unique"
    # Every learning rate is a key of the config: optim's, or the family's own section's.
    lr_keys = {f"optim.{f.name}" for f in dataclasses.fields(C.OptimConfig)} | {
        f"{name}.{f.name}" for f in dataclasses.fields(getattr(C.Config(), name))}
    assert all(net.lr_key in lr_keys or f"optim.{net.lr_key}" in lr_keys for net in family.nets)
    # Its smoke config is a valid config of this family; its phases may depend on the config.
    cfg = C.with_values(C.Config(), {"model.family": name, "loss.random_backbones": True, **family.smoke_overrides})
    assert cfg.model.family == name
    phases = family(cfg).phases
    assert phases and all(phase.net in nets and phase.every >= 1 for phase in phases)
    assert {phase.net for phase in phases} == set(nets), "every net steps in some phase"


# Every row of the families table: (family, its config values) at the smallest width, 32 px.
ROWS = {
    "spade": {"model.family": "spade"},
    "spade+vae": {"model.family": "spade", "spade.use_vae": True, "spade.z_dim": 8, "spade.lambda_vgg": 0.0},
    "spade+sesame": {"model.family": "spade", "model.D": "sesame", "spade.lambda_vgg": 0.0},
    "oasis": {"model.family": "oasis"},
    "cocosnet": {"model.family": "cocosnet", "exemplar.train_retrieval": "vgg"},
    "cocosnet2": {"model.family": "cocosnet2", "exemplar.eval_retrieval": "random"},
    "unite": {"model.family": "unite", "model.D": "sesame", "exemplar.train_retrieval": "random"},
    # Super-resolution: ESRGAN's PSNR-oriented stage for one step, then G and D.
    "esrgan": {"model.family": "esrgan", "esrgan.pretrain_steps": 1, "sr.degradation": "realistic"},
    "rdn": {"model.family": "rdn", "sr.blurpool": True},
    "cyclegan": {"model.family": "cyclegan", "cyclegan.pool_size": 1},
    "ugatit": {"model.family": "ugatit", "ugatit.scse": True, "ugatit.upsample": "deconv", "optim.weight_decay": 1e-4},
    # Inpainting at 128 px (G's six 2x stages): the coarse net's stage for one step, then D and G;
    # the log's SimAM, GroupNorm and MS-SSIM+L1.
    "pdgan": {"model.family": "pdgan", "pdgan.attention": "simam", "pdgan.norm": "group", "pdgan.groups": 2,
              "pdgan.lambda_msssim_l1": 1.0},
    "srresnet": {"model.family": "srresnet", "sr.scale": 2, "sr.lambda_edge": 1.0, "eval.objective": "psnr",
                 "eval.y_channel": True, "eval.crop_border": 2, "eval.random_weights": False, "eval.dims": 2048,
                 "eval.cache_dir": ""},
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_two_training_steps_through_the_real_trainer(tmp_path: Path, row: str) -> None:
    import math

    from ray_jobs.trainer import Trainer

    values = ROWS[row]
    family = FAMILIES[str(values["model.family"])]
    cfg = C.with_values(C.Config(), {
        "data.size_px": 32, "data.n_train": 4, "data.n_eval": 4,
        "loss.random_backbones": True, "optim.batch_size": 2, "train.steps": 2, "train.log_every": 1,
        "train.image_every": 1, "eval.batch_size": 4, "eval.random_weights": True, "eval.dims": 192,
        "eval.cache_dir": str(tmp_path / "fid_cache"),
        **family.smoke_overrides, **values,
    })
    tr = Trainer(cfg, tmp_path / "run", trial_id=row)
    assert set(tr.engines) == {net.name for net in family.nets}
    logs = tr.train(1) | tr.train(1)  # both steps' terms: a stage may end after the first
    assert tr.step == 2 and "diverged" not in logs
    assert all(math.isfinite(v) for v in logs.values())
    stepped = {phase.name for phase in tr.family.phases if phase.active(0) or phase.active(1)}
    assert {f"loss/{name}/total" for name in stepped} <= set(logs)
    inputs = {k: v.float() for k, v in tr.family.eval_inputs(next(tr._batches)).items()}
    size = cfg.data.size_px
    assert tr.family.generate(tr._eval_nets(), inputs, None).shape == (2, 3, size, size)
    assert math.isfinite(tr.evaluate()[tr.objective_name])


@pytest.mark.parametrize("space", sorted(p.name for p in (Path(__file__).parents[1] / "tune_spaces").glob("*_pbt.yaml")))
def test_each_family_space_loads_and_shrinks_for_smoke(space: str) -> None:
    from ray_jobs.space import load_spec
    from ray_jobs.tune_driver import _smoke

    spec = load_spec(Path(__file__).parents[1] / "tune_spaces" / space)
    assert spec.scheduler == "pbt" and spec.space
    smoke = _smoke(spec)
    cfg = smoke.base
    family = FAMILIES[cfg.model.family](cfg)
    assert (cfg.data.size_px, smoke.num_samples) == (family.smoke_overrides.get("data.size_px", 32), 2)
    assert cfg.loss.random_backbones and cfg.eval.random_weights == (cfg.eval.objective in ("fid", "kid"))
    for net in family.nets:  # the smallest width still builds
        assert sum(p.numel() for p in family.build(net.name).parameters()) > 0
