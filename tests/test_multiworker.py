"""Multi-worker trials on a real Ray cluster: Ray Train segments of real DeepSpeed engines over
gloo, compared step for step with the one-process trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from gantune.errors import GantuneError
from ray_jobs import config as C
from ray_jobs.distributed import ShardedBatchSampler
from ray_jobs.segment import TrialResources, run_segment
from ray_jobs.checkpoint import read_meta
from ray_jobs.trainer import Trainer


def tiny(tmp_path: Path, **values: object) -> C.Config:
    # Batch-norm SPADE (synchronised at 2 workers), no flips, no augmentation: both runs see
    # exactly the same images, so only the order of float sums differs. Two choices keep that
    # from deciding the result: 64 px (at 32 px the head is 1x1, four samples of one class have
    # zero batch variance, and batch norm's 1/sqrt(eps) gain turns rounding into gradient), and
    # Adam's eps at 1e-3 (at 1e-8 Adam turns the rounding noise of gradients that are zero in
    # exact arithmetic, a bias right before a batch norm, into steps of +-lr; real gradients
    # here are 1e-3 and up). Measured at ZeRO 0: with both, every weight, buffer and G_ema entry
    # agrees to 4e-6; without batch-norm sync, 128 entries differ by more than 1e-5, up to 0.1.
    base = {
        "data.size_px": 64, "data.n_train": 8, "data.n_eval": 8, "data.flip": False,
        "model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2,
        "spade.param_free_norm": "batch",
        "spade.lambda_vgg": 0.0, "loss.lambda_cx": 1.0, "loss.lambda_ffl": 1.0, "loss.random_backbones": True,
        "optim.batch_size": 4, "optim.adam_eps": 1e-3, "train.steps": 2, "train.log_every": 1, "train.image_every": 100,
        "eval.every": 1, "eval.batch_size": 8, "eval.random_weights": True, "eval.dims": 192,
        "eval.cache_dir": str(tmp_path / "fid_cache"),
    }
    return C.with_values(C.Config(), {**base, **values})


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def weights(tr: Trainer) -> dict[str, torch.Tensor]:
    out = {f"G.{k}": v.float() for k, v in tr.engines["G"].module.state_dict().items()}
    out |= {f"D.{k}": v.float() for k, v in tr.engines["D"].module.state_dict().items()}
    out |= {f"G_ema.{k}": v.float() for k, v in tr.ema["G"].state_dict().items()}
    return out


def optimizer_tensors(engine: object) -> list[torch.Tensor]:
    """Every tensor in an engine's optimizer state, in a fixed order (moments, steps, fp32
    partitions under ZeRO)."""
    out: list[torch.Tensor] = []

    def walk(x: object) -> None:
        if isinstance(x, torch.Tensor):
            out.append(x.reshape(-1).float())
        elif isinstance(x, dict):
            for key in sorted(x, key=str):
                walk(x[key])
        elif isinstance(x, (list, tuple)):
            for item in x:
                walk(item)
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out.append(torch.tensor([float(x)]))

    walk(engine.optimizer.state_dict())  # type: ignore[attr-defined]
    return out


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


def test_global_batches_do_not_depend_on_world_size() -> None:
    one = list(ShardedBatchSampler(20, 4, rank=0, world=1, seed=3, epoch=1))
    two = [list(ShardedBatchSampler(20, 4, rank=r, world=2, seed=3, epoch=1)) for r in range(2)]
    assert len(one) == 5 and all(len(b) == 2 for b in two[0])
    assert one == [a + b for a, b in zip(*two)]
    assert sorted(i for b in one for i in b) == list(range(20))
    # Resuming at global batch 3 of the epoch continues the same stream.
    assert list(ShardedBatchSampler(20, 4, rank=0, world=1, seed=3, epoch=1, start=3)) == one[3:]
    with pytest.raises(GantuneError, match="optim.batch_size=4 is the global batch .* 3 workers"):
        ShardedBatchSampler(20, 4, rank=0, world=3, seed=3, epoch=1)


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_two_workers_step_like_one_and_checkpoints_cross_world_sizes(
    tmp_path: Path, ray_cluster: None, zero_stage: int
) -> None:
    cfg = tiny(tmp_path, **{"optim.zero_stage": zero_stage})
    # One worker, global batch 4: step 1, checkpoint, step 2.
    ref = Trainer(cfg, tmp_path / "ref", trial_id="t")
    ref.train(1)
    ckpt1 = ref.save(tmp_path / "ckpt1")
    ref.train(1)

    # Two workers, 2 images each, from the same weights and optimizer state (a checkpoint
    # written at 1 worker): step 2, saved by both ranks into one folder.
    report, ckpt2 = run_segment(C.to_dict(cfg), TrialResources(workers_per_trial=2), tmp_path / "trial", "t",
                                str(ckpt1))
    assert report["step"] == 2 and report["metric/fd_random_inception_dims192"] > 0
    assert read_meta(Path(ckpt2.path))["world"] == 2

    # Read back at 1 worker: the same weights, and the same next step (optimizer state too).
    back = Trainer(cfg, tmp_path / "back", trial_id="t")
    back.load(Path(ckpt2.path))
    assert back.step == 2
    assert max_difference(weights(back), weights(ref)) < 1e-5
    # A real update, not two copies of the starting point.
    start = Trainer(cfg, tmp_path / "start", trial_id="t")
    start.load(ckpt1)
    assert max_difference(weights(start), weights(ref)) > 1e-5
    # The optimizer state crossed world sizes too: Adam's moments and step counts of both
    # engines, after the 2-worker step, match the 1-worker run's. With beta1 = 0 the first
    # moment is the raw last gradient, rounding noise of the zero-gradient biases included, so
    # the bound is relative to the state's scale: a state not restored, or from another step,
    # is off by the order of that scale.
    for engine in ("G", "D"):
        ours, theirs = optimizer_tensors(back.engines[engine]), optimizer_tensors(ref.engines[engine])
        assert len(ours) == len(theirs) > 0
        scale = max(b.abs().max().item() for b in theirs)
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < 1e-3 * scale


@pytest.mark.slow
def test_an_exemplar_family_trains_at_two_workers(tmp_path: Path, ray_cluster: None) -> None:
    """CoCosNet at 2 workers of 1 image each: every rank retrieves the same exemplars (the
    cached ranking), both ranks save into one checkpoint, and it reads back at 1 worker."""
    from ray_jobs.families import FAMILIES

    cfg = C.with_values(C.Config(), {
        **FAMILIES["cocosnet"].smoke_overrides, "model.family": "cocosnet", "data.n_train": 4, "data.n_eval": 4,
        "loss.random_backbones": True, "optim.batch_size": 2, "train.steps": 1, "eval.every": 1, "eval.batch_size": 4,
        "eval.random_weights": True, "eval.dims": 192, "eval.cache_dir": str(tmp_path / "fid_cache"),
    })
    report, ckpt = run_segment(C.to_dict(cfg), TrialResources(workers_per_trial=2), tmp_path / "trial", "t", None)
    assert report["step"] == 1 and report["metric/fd_random_inception_dims192"] > 0
    assert {"loss/G/ctx", "loss/G/mask", "loss/D/real"} <= set(report)
    assert read_meta(Path(ckpt.path))["world"] == 2
    back = Trainer(cfg, tmp_path / "back", trial_id="t")
    back.load(Path(ckpt.path))
    assert back.step == 1


def test_a_global_batch_that_does_not_divide_is_refused(tmp_path: Path) -> None:
    from ray_jobs.space import load_spec, parse_resources

    with pytest.raises(GantuneError, match="resources.workers_per_trial must be an integer >= 1"):
        parse_resources("s.yaml", {"workers_per_trial": 0})
    with pytest.raises(GantuneError, match=r"unknown key resources.cpus_per_wrker; did you mean 'cpus_per_worker'"):
        parse_resources("s.yaml", {"cpus_per_wrker": 1})
    with pytest.raises(GantuneError, match="resources.placement must be one of"):
        parse_resources("s.yaml", {"placement": "scatter"})
    (tmp_path / "base.yaml").write_text("optim: {batch_size: 6}\n")
    (tmp_path / "s.yaml").write_text(
        "base: base.yaml\nresources: {workers_per_trial: 4}\nspace:\n  loss.lambda_cx: uniform(0.1, 2)\n"
    )
    from ray_jobs.tune_driver import run_search

    with pytest.raises(GantuneError, match=r"s.yaml: optim.batch_size=6 is the global batch and must divide among 4 workers") as e:
        run_search(tmp_path / "s.yaml")
    assert "\n" not in str(e.value)
    assert load_spec(tmp_path / "s.yaml").resources.workers_per_trial == 4


def test_a_restarted_trial_frees_the_workers_its_dead_process_left_placed(tmp_path: Path, ray_cluster: None) -> None:
    """A trial's process dies mid-segment (killed, out of memory, its node lost): the Train
    controller it owns dies with it, and the workers' placement group outlives both (this Ray
    has no state API for Train's own cleaner). The trial's next run removes it before its first
    segment, so the CPUs the restart needs are free again. Here the group holds the whole
    cluster, as one trial's workers do on a full cluster."""
    import os
    import signal
    import time

    import ray

    from ray_jobs.segment import PLACEMENT_RECORD, _record_placement_group, release_placement_group

    def worker(loop_config: dict) -> None:  # a segment's worker: rank 0 records, as segment_worker does
        if ray.train.get_context().get_world_rank() == 0:
            _record_placement_group(Path(loop_config["trial_dir"]))
        time.sleep(600)

    @ray.remote(num_cpus=0)
    class TrialProcess:  # Tune's trial actor: it runs the segment's TorchTrainer
        def pid(self) -> int:
            return os.getpid()

        def segment(self, trial_dir: str) -> None:
            from ray.train import RunConfig, ScalingConfig
            from ray.train.torch import TorchTrainer

            TorchTrainer(worker, train_loop_config={"trial_dir": trial_dir},
                         scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                         run_config=RunConfig(name="segment", storage_path=f"{trial_dir}/segments")).fit()

    def free_cpus() -> float:
        return ray.available_resources().get("CPU", 0.0)

    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    trial = TrialProcess.remote()
    pid = ray.get(trial.pid.remote())
    trial.segment.remote(str(trial_dir))
    deadline = time.monotonic() + 180
    while not ((trial_dir / PLACEMENT_RECORD).exists() and free_cpus() == 0):
        assert time.monotonic() < deadline, "the segment's workers were not placed in time"
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    time.sleep(5)  # the controller and the workers go with their owner
    held = 2 - free_cpus()

    release_placement_group(trial_dir)
    while free_cpus() < 2:
        assert time.monotonic() < deadline, f"CPUs still held after the release: {ray.available_resources()}"
        time.sleep(0.2)
    assert not (trial_dir / PLACEMENT_RECORD).exists()
    release_placement_group(trial_dir)  # nothing recorded: nothing to do
    print(f"\nCPUs held 5 s after the trial's process died: {held:g} of 2; all free after the release")
