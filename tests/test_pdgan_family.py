"""The `pdgan` family around the networks: the coarse net's own stage, then D and G over its
frozen prior; a loaded prior checked by SHA-256; composites that keep every known pixel; the
config's checks. (tests/test_families.py runs its row through the trainer; test_pdgan.py pins
the networks.)"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from gantune.errors import GantuneError
from ray_jobs import config as C
from ray_jobs.families import FAMILIES
from ray_jobs.families.inpaint import PdganFamily

from net_helpers import one_thread  # noqa: F401  (autouse fixture)


def smoke_cfg(tmp_path: Path, **values: object) -> C.Config:
    return C.with_values(C.Config(), {
        "model.family": "pdgan", "data.n_train": 4, "data.n_eval": 2, "loss.random_backbones": True,
        "optim.batch_size": 2, "train.log_every": 1, "train.image_every": 100, "eval.batch_size": 2,
        "eval.random_weights": True, "eval.dims": 192, "eval.cache_dir": str(tmp_path / "fid_cache"),
        **PdganFamily.smoke_overrides, **values,
    })


def test_the_coarse_net_trains_first_then_stays_frozen_under_d_and_g(tmp_path: Path) -> None:
    from ray_jobs.trainer import Trainer

    tr = Trainer(smoke_cfg(tmp_path, **{"pdgan.prior_steps": 1}), tmp_path / "run", trial_id="pd")
    snapshot = lambda name: [p.detach().clone() for p in tr.engines[name].module.parameters()]  # noqa: E731
    c0, g0 = snapshot("C"), snapshot("G")
    first = tr.train(1)  # the coarse stage: C's PConv terms alone
    assert {k.split("/")[1] for k in first} == {"prior"}
    assert {"loss/prior/hole", "loss/prior/valid", "loss/prior/perc", "loss/prior/style", "loss/prior/tv"} <= set(first)
    c1 = snapshot("C")
    assert any(not torch.equal(a, b) for a, b in zip(c0, c1)), "the coarse stage steps C"
    assert all(torch.equal(a, b) for a, b in zip(g0, snapshot("G"))), "G waits for its stage"
    second = tr.train(1)
    assert {k.split("/")[1] for k in second} == {"D", "G"}
    assert {"loss/G/gan_a", "loss/G/gan_b", "loss/G/feat_a", "loss/G/perc_b", "loss/G/tv_a",
            "loss/G/diversity", "loss/D/fake", "loss/D/real"} <= set(second)
    assert all(math.isfinite(v) for v in second.values())
    assert all(torch.equal(a, b) for a, b in zip(c1, snapshot("C"))), "the prior is frozen under D and G"
    assert any(not torch.equal(a, b) for a, b in zip(g0, snapshot("G")))
    metrics = tr.evaluate()
    assert {"metric/l1", "metric/psnr", "metric/tv", "metric/tv_real", tr.objective_name} <= set(metrics)
    assert 0 < metrics["metric/l1"] < 1 and metrics["metric/tv_real"] > 0


def test_a_loaded_prior_is_checked_and_used_as_it_is_without_a_coarse_stage(tmp_path: Path) -> None:
    trained = PdganFamily(smoke_cfg(tmp_path)).build("C")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)
    path = tmp_path / "coarse.pt"
    torch.save(trained.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    family = PdganFamily(smoke_cfg(tmp_path, **{"pdgan.prior_weights": str(path), "pdgan.prior_sha256": digest,
                                                "pdgan.prior_steps": 0}))
    assert not any(phase.active(step) for phase in family.phases if phase.name == "prior" for step in range(3))
    assert all(phase.active(0) for phase in family.phases if phase.name != "prior")
    loaded = family.build("C")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))

    wrong = PdganFamily(smoke_cfg(tmp_path, **{"pdgan.prior_weights": str(path), "pdgan.prior_sha256": "0" * 64}))
    with pytest.raises(GantuneError, match=r"prior_weights=.*coarse.pt: SHA-256 [0-9a-f]{64} is not pdgan.prior_sha256"):
        wrong.build("C")
    other_width = PdganFamily(smoke_cfg(tmp_path, **{"pdgan.prior_weights": str(path), "pdgan.prior_ngf": 8}))
    with pytest.raises(GantuneError, match=r"does not fit the coarse net of pdgan.prior_ngf=8"):
        other_width.build("C")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    junk = PdganFamily(smoke_cfg(tmp_path, **{"pdgan.prior_weights": str(tmp_path / "junk.pt")}))
    with pytest.raises(GantuneError, match="not a torch state dict"):
        junk.build("C")


def test_the_composite_keeps_every_known_pixel_and_fills_the_hole(tmp_path: Path) -> None:
    family = FAMILIES["pdgan"](smoke_cfg(tmp_path))
    nets = {name: family.build(name) for name in ("G", "C")}
    train, evals = family.datasets()
    batch = {k: torch.stack([evals[i][k] for i in range(2)]) for k in ("image", "mask")}
    inputs = family.eval_inputs(batch)
    assert set(inputs) == {"masked", "mask"}, "evaluation never sees the hole's ground truth"
    out = family.generate(nets, inputs, family.eval_noise(2, seed=0))
    hole = batch["mask"].bool().expand_as(out)
    assert hole.any() and (~hole).any()
    assert torch.equal(out[~hole], batch["image"][~hole])
    assert not torch.allclose(out[hole], inputs["masked"][hole])
    # Two noises give two fills (the diversity PD-GAN trains for), the same known pixels.
    other = family.generate(nets, inputs, family.eval_noise(2, seed=1))
    assert not torch.equal(out[hole], other[hole]) and torch.equal(out[~hole], other[~hole])


@pytest.mark.parametrize("values, message", [
    ({"data.size_px": 64}, "model.family pdgan needs data.size_px a multiple of 64 and at least 128"),
    ({"pdgan.masks": "files"}, "pdgan.masks is 'files': pdgan.mask_root='' must be a folder of masks"),
    ({"pdgan.prior_weights": "/nonexistent/coarse.pt"}, "pdgan.prior_weights='/nonexistent/coarse.pt' is not a file"),
    ({"pdgan.norm": "group", "pdgan.groups": 3}, "pdgan.norm is 'group': pdgan.groups=3 must divide the width 4"),
    ({"pdgan.prior_steps": -1}, "pdgan.prior_steps must be >= 0"),
    ({"pdgan.attention": "cbam"}, "pdgan.attention must be one of"),
])
def test_bad_pdgan_values_are_refused_in_one_line(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(GantuneError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        smoke_cfg(tmp_path, **values)
    assert "\n" not in str(e.value)


def g_gradient(cfg: C.Config) -> torch.Tensor:
    """G's gradient of one G phase on a fixed batch, from fixed weights and noises."""
    torch.manual_seed(0)
    family = PdganFamily(cfg)
    nets = {name: family.build(name) for name in ("G", "D", "C")}
    _, evals = family.datasets()
    batch = {k: torch.stack([evals[i][k] for i in range(2)]) for k in ("image", "mask")}
    torch.manual_seed(1)
    loss, logs = family.loss("G", nets, batch)
    assert loss is not None and math.isfinite(loss.item())
    loss.backward()
    return torch.cat([p.grad.flatten() for p in nets["G"].parameters() if p.grad is not None])


@pytest.fixture(scope="module")
def base_gradient(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    tmp = tmp_path_factory.mktemp("base")
    base = g_gradient(smoke_cfg(tmp))
    assert torch.equal(base, g_gradient(smoke_cfg(tmp))), "the same config steps alike"
    return base


@pytest.mark.parametrize("switch", [{"pdgan.attention": "simam"}, {"pdgan.norm": "group", "pdgan.groups": 2},
                                    {"pdgan.lambda_msssim_l1": 1.0}])
def test_each_of_the_logs_switches_changes_the_generator_step(tmp_path: Path, switch: dict,
                                                              base_gradient: torch.Tensor) -> None:
    base = base_gradient
    changed = g_gradient(smoke_cfg(tmp_path, **switch))
    assert changed.shape == base.shape and torch.isfinite(changed).all()
    assert not torch.allclose(changed, base)
