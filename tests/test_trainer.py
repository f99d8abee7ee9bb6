"""The DeepSpeed trainer on CPU: real engines (gloo), two ZeRO stages, EMA, checkpoints,
re-applied hyperparameters after a load, TensorBoard files read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gantune.errors import GantuneError
from ray_jobs import config as C
from ray_jobs.checkpoint import COMPLETE_MARKER
from ray_jobs.engines import ema_beta
from ray_jobs.trainer import Trainer


def tiny(tmp_path: Path, **values: object) -> C.Config:
    base = {
        "data.size_px": 32, "data.n_train": 8, "data.n_eval": 8,
        "model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2,
        "spade.lambda_vgg": 0.0, "loss.lambda_cx": 1.0, "loss.lambda_dists": 1.0,
        "loss.lambda_ffl": 1.0, "loss.random_backbones": True,
        "optim.batch_size": 2, "train.steps": 4, "train.log_every": 1, "train.image_every": 2,
        "eval.every": 2, "eval.batch_size": 8, "eval.random_weights": True,
        "eval.cache_dir": str(tmp_path / "fid_cache"),
    }
    return C.with_values(C.Config(), {**base, **values})


@pytest.mark.parametrize("zero_stage", [0, 1])
def test_steps_change_weights_and_ema_follows(tmp_path: Path, zero_stage: int) -> None:
    cfg = tiny(tmp_path, **{"optim.zero_stage": zero_stage, "train.diffaug": "color,translation,cutout"})
    tr = Trainer(cfg, tmp_path / "run")
    before = [p.detach().clone() for p in tr.engines["G"].module.parameters()]
    logs = tr.train(2)
    assert tr.step == 2 and tr.nimg == 4
    assert {"loss/G/gan", "loss/G/feat", "loss/G/cx", "loss/G/dists", "loss/G/ffl", "loss/D/real", "loss/D/fake"} <= set(logs)
    after = list(tr.engines["G"].module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    # Ramp-up makes the EMA nearly follow G early on, but it is a different tensor set.
    ema = dict(tr.ema["G"].named_parameters())
    assert all(torch.isfinite(p).all() for p in ema.values())
    tr.close()


def test_ema_beta_follows_stylegan2_ada() -> None:
    cfg = C.with_values(C.Config(), {"train.ema_kimg": 10.0, "train.ema_rampup": 0.05})
    assert ema_beta(cfg, 32, 0) == 0.0  # first step: G_ema = G
    # After the ramp-up the half-life is ema_kimg: beta ** (ema_nimg / batch) = 0.5.
    beta = ema_beta(cfg, 32, 10_000_000)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    # During it the half-life is cur_nimg * ema_rampup.
    assert ema_beta(cfg, 32, 64_000) ** (64_000 * 0.05 / 32) == pytest.approx(0.5)
    no_ramp = C.with_values(cfg, {"train.ema_rampup": 0.0})
    assert ema_beta(no_ramp, 32, 0) == pytest.approx(0.5 ** (32 / 10_000))


def test_checkpoint_round_trip_and_reapplied_hparams(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, **{"optim.zero_stage": 1})
    donor = Trainer(cfg, tmp_path / "donor", trial_id="donor")
    donor.train(2)
    metrics = donor.evaluate()
    assert set(metrics) == {"metric/fd_random_inception", "metric/official_inception"}
    assert metrics["metric/official_inception"] == 0.0
    ckpt = donor.save(tmp_path / "ckpt")
    assert (ckpt / COMPLETE_MARKER).is_file()
    # One DeepSpeed checkpoint per net of the family, tagged by its name.
    assert {p.name for p in ckpt.iterdir() if p.is_dir()} == {net.name for net in donor.family.nets} == {"G", "D"}

    # The receiving trial has its own (mutated) learning rates and loss weights.
    mutated = C.with_values(cfg, {"optim.lr_G": 3.3e-4, "optim.lr_D": 7.7e-4, "loss.lambda_cx": 5.0})
    receiver = Trainer(mutated, tmp_path / "receiver", trial_id="receiver")
    receiver.load(ckpt)
    assert receiver.step == 2 and receiver.nimg == donor.nimg
    for a, b in zip(receiver.engines["G"].module.state_dict().values(), donor.engines["G"].module.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(receiver.ema["G"].state_dict().values(), donor.ema["G"].state_dict().values()):
        assert torch.equal(a, b)
    # The donor's optimizer state came with the weights, but not its learning rates.
    assert receiver.learning_rates() == {"G": 3.3e-4, "D": 7.7e-4}
    assert receiver.cfg.loss.lambda_cx == 5.0
    assert receiver.lineage and receiver.lineage[-1]["from_trial"] == "donor"
    receiver.train(1)
    assert receiver.step == 3
    # Same trial reloading its own checkpoint is not an exploit.
    again = Trainer(cfg, tmp_path / "donor", trial_id="donor")
    again.load(ckpt)
    assert again.lineage == []


def test_torn_checkpoint_is_refused(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    tr = Trainer(cfg, tmp_path / "run")
    ckpt = tr.save(tmp_path / "ckpt")
    (ckpt / COMPLETE_MARKER).unlink()
    with pytest.raises(GantuneError, match="incomplete checkpoint"):
        tr.load(ckpt)
    with pytest.raises(GantuneError, match="incomplete checkpoint"):
        tr.load(tmp_path / "nowhere")


def test_tensorboard_scalars_and_images_read_back(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny(tmp_path)
    tr = Trainer(cfg, tmp_path / "run")
    tr.train(2)
    tr.evaluate()
    tr.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/G/gan", "loss/D/real", "lr/G", "metric/fd_random_inception"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/G/gan")] == [1, 2]
    assert "images/label_real_fake" in tags["images"]
    img = acc.Images("images/label_real_fake")[0]
    assert img.width == 3 * 32 and img.height == 2 * 32  # label | real | fake, one row per sample


@pytest.mark.parametrize("values, key, diverged", [
    ({"eval.objective": "kid", "eval.dims": 192}, "metric/kd_random_inception_dims192", 1e6),
    ({"eval.objective": "psnr", "eval.y_channel": True, "eval.crop_border": 2,
      "eval.random_weights": False, "eval.cache_dir": ""}, "metric/psnr_y", -1e6),
])
def test_evaluate_reports_the_objective_of_the_eval_config(tmp_path: Path, values: dict[str, object],
                                                            key: str, diverged: float) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tr = Trainer(tiny(tmp_path, **values), tmp_path / "run")
    tr.train(1)
    metrics = tr.evaluate()
    tr.close()
    assert tr.objective_name == key and 0 < metrics[key] < 60
    assert tr.diverged_score == diverged  # the worst value in the objective's direction
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars(key)] == [pytest.approx(metrics[key])]


@pytest.mark.gpu
def test_bf16_engines_on_gpu(tmp_path: Path) -> None:
    cfg = tiny(tmp_path, **{"optim.precision": "bf16", "optim.zero_stage": 1})
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.device.type == "cuda"
    logs = tr.train(2)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    assert next(tr.engines["G"].module.parameters()).dtype == torch.bfloat16
    assert next(tr.ema["G"].parameters()).dtype == torch.float32  # the EMA keeps full precision
    metrics = tr.evaluate()
    assert metrics["metric/fd_random_inception"] > 0


def test_gantune_train_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ray_jobs.cli import main

    cfg = tiny(tmp_path, **{"train.steps": 2, "eval.every": 2})
    C.write(cfg, tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run)]) == 0
    captured = capsys.readouterr()
    assert "step 2/2" in captured.err and "fd_random_inception" in captured.out
    assert (run / "checkpoints" / "latest" / COMPLETE_MARKER).is_file()
    assert C.load(run / "config.yaml") == cfg
    # A second run never overwrites the first; --resume continues it.
    assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "tiny.yaml"), "--run-dir", str(run), "--resume",
                 "--set", "train.steps=4"]) == 0
    assert "step 4/4" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "tiny.yaml"), "--set", "loss.lamda_cx=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'loss.lambda_cx'" in err


def test_checkpoint_of_another_model_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    ckpt = Trainer(cfg, tmp_path / "a").save(tmp_path / "ckpt")
    wider = Trainer(C.with_values(cfg, {"model.ngf": 8}), tmp_path / "b")
    with pytest.raises(GantuneError, match=r"trained with model.ngf=4 but this config has model.ngf=8") as e:
        wider.load(ckpt)
    assert "\n" not in str(e.value)


def test_folder_dataset_source(tmp_path: Path) -> None:
    from data.scenes import write_scene_folder

    write_scene_folder(tmp_path / "scenes", n=8, size_px=48, seed=3)
    # data.n_train back to its default: it sizes the built-in scenes and does nothing here.
    cfg = tiny(tmp_path, **{"data.source": "folder", "data.root": str(tmp_path / "scenes"), "data.n_train": 512})
    tr = Trainer(cfg, tmp_path / "run")
    tr.train(1)
    first = tr.evaluate()["metric/fd_random_inception"]
    assert first > 0
    # The real statistics are cached on the files: touching a photo invalidates them.
    cache = Path(cfg.eval.cache_dir)
    n_cached = len(list(cache.glob("*.npz")))
    photo = sorted((tmp_path / "scenes" / "imgs").iterdir())[0]
    photo.write_bytes(photo.read_bytes())
    import os

    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    Trainer(cfg, tmp_path / "run2").evaluate()
    assert len(list(cache.glob("*.npz"))) == n_cached + 1


@pytest.mark.parametrize("ratio, d_updates", [(2.0, 4), (0.5, 1)])
def test_d_ratio_sets_d_updates_per_g_update(tmp_path: Path, ratio: float, d_updates: int) -> None:
    tr = Trainer(tiny(tmp_path, **{"train.d_ratio": ratio, "loss.lambda_cx": 0.0, "loss.lambda_dists": 0.0}),
                 tmp_path / "run")
    tr.train(2)
    assert tr.engines["G"].global_steps == 2 and tr.engines["D"].global_steps == d_updates
    tr.close()


def test_d_ratio_must_be_an_integer_or_its_inverse() -> None:
    with pytest.raises(GantuneError, match="train.d_ratio must be a positive integer or the inverse of one"):
        C.with_values(C.Config(), {"train.d_ratio": 1.5})
    with pytest.raises(GantuneError, match="train.d_ratio=2.0 has no effect: model.family 'rdn' has no D"):
        C.with_values(C.Config(), {"model.family": "rdn", "data.size_px": 32, "train.d_ratio": 2.0})


@pytest.mark.parametrize("group", ["own", "made before"])
def test_a_cpu_engine_compiles_no_deepspeed_op(tmp_path: Path, group: str) -> None:
    """On a fresh machine DeepSpeed's CPU backend would JIT-compile its shared-memory all-reduce
    (74 s) for the first engine; training does not use it, so nothing is built. Also where the
    process group exists before the trainer (a Ray Train worker's: multi-worker segments)."""
    import os
    import subprocess
    import sys

    made_before = (  # as Ray Train's TorchConfig does in each worker, LOCAL_RANK included
        "import os; import torch.distributed as dist; os.environ['LOCAL_RANK'] = '0'\n"
        "dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)\n"
    ) if group == "made before" else ""
    script = made_before + (
        "import sys; from pathlib import Path; from ray_jobs import config as C; from ray_jobs.trainer import Trainer\n"
        "cfg = C.with_values(C.Config(), {'data.size_px': 32, 'data.n_train': 4, 'data.n_eval': 4, 'model.ngf': 4,\n"
        "    'model.ndf': 8, 'model.num_D': 1, 'optim.batch_size': 2, 'loss.random_backbones': True,\n"
        "    'eval.random_weights': True})\n"
        "tr = Trainer(cfg, Path(sys.argv[1])); tr.train(1)\n"
        "import deepspeed.comm.comm as dc; assert dc.cdb.shm_comm_op is None\n"
    )
    extensions = tmp_path / "torch_extensions"  # empty, as on a fresh machine
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not extensions.exists() or not any(extensions.rglob("*.so")), sorted(extensions.rglob("*"))
