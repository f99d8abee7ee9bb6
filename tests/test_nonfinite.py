"""Non-finite training (issue 10, item 1), with the fault injected into the real trainer: a step
whose loss or gradient is NaN or inf is skipped and leaves weights, optimizer states and G_ema
bit-identical; K skips in a row roll back to the last good checkpoint with halved learning
rates; past R rollbacks the trial gives up and reports a finite sentinel with its reason;
nothing non-finite is saved or reported."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gantune.errors import GantuneError
from net_helpers import one_thread  # noqa: F401  (autouse fixture)
from ray_jobs import config as C
from ray_jobs.families.spade import SpadeFamily
from ray_jobs.segment import interval_report
from ray_jobs.trainer import Trainer


def tiny(tmp_path: Path, **values: object) -> C.Config:
    return C.with_values(C.Config(), {
        "data.size_px": 32, "data.n_train": 8, "data.n_eval": 4,
        "model.ngf": 4, "model.ndf": 8, "model.num_D": 1, "model.n_layers_D": 2, "spade.lambda_vgg": 0.0,
        "optim.batch_size": 2, "train.steps": 20, "train.log_every": 1, "train.image_every": 100,
        "train.skip_limit": 2, "train.rollback_limit": 1, "eval.batch_size": 4, "eval.random_weights": True,
        "eval.dims": 192, "eval.cache_dir": str(tmp_path / "fid_cache"), **values,
    })


class Faults:
    """Makes the D phase's loss inf (or, with `grad`, finite with a NaN gradient) for its next
    `count` computations, or from now on with `forever`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, grad: bool = False) -> None:
        self.count, self.forever = 0, False
        original = SpadeFamily.loss

        def loss(family: SpadeFamily, phase: str, nets: Any, batch: Any) -> Any:
            total, logs = original(family, phase, nets, batch)
            if phase == "D" and (self.count > 0 or self.forever):
                self.count -= 1
                if grad:  # sqrt'(0) is inf: the loss stays finite, the gradient is NaN
                    zero = sum(p.sum() for p in nets["D"].parameters()) * 0
                    return total + torch.sqrt(zero.clamp_min(0)), logs
                return total * math.inf, logs
            return total, logs

        monkeypatch.setattr(SpadeFamily, "loss", loss)


def snapshot(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: snapshot(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [snapshot(v) for v in x]
    return copy.deepcopy(x)


def state(tr: Trainer) -> dict[str, Any]:
    """Every tensor a step may touch: weights and buffers, optimizer states, EMA copies."""
    return snapshot({
        "modules": {n: e.module.state_dict() for n, e in tr.engines.items()},
        "optim": {n: e.optimizer.state_dict() for n, e in tr.engines.items()},
        "ema": {n: m.state_dict() for n, m in tr.ema.items()},
    })


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    if path.endswith("/overflow"):  # ZeRO's flag of its last step: the skipped net's is set
        assert b in (a, True), path
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_identical(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    elif hasattr(a, "__dict__"):  # DeepSpeed's loss scaler: compared by its fields
        assert type(a) is type(b) and vars(a) == vars(b)
    else:
        assert a == b, path


@pytest.mark.parametrize("zero_stage, grad", [(0, False), (0, True), (1, True)])
def test_a_non_finite_step_is_skipped_and_counted_leaving_every_state_bit_identical(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zero_stage: int, grad: bool) -> None:
    tr = Trainer(tiny(tmp_path, **{"optim.zero_stage": zero_stage}), tmp_path / "run")
    faults = Faults(monkeypatch, grad=grad)
    tr.train(1)  # Adam's state exists
    before = state(tr)
    faults.count = 1
    logs = tr.train(1)
    assert logs == {"skipped": 1.0, "train/skipped_steps": 1.0}
    assert (tr.step, tr.skipped_steps, tr.rollbacks) == (2, 1, 0)
    assert_identical(before, state(tr))  # D's phase came first: nothing of the step ran
    logs = tr.train(1)  # the next step trains
    assert "loss/D/total" in logs and all(math.isfinite(v) for v in logs.values())
    now = tr.engines["G"].module.state_dict()
    assert any(not torch.equal(v, now[k]) for k, v in before["modules"]["G"].items())
    assert tr._skip_run == 0 and tr.skipped_steps == 1
    tr.close()


def test_k_skips_in_a_row_roll_back_with_halved_rates_then_r_rollbacks_give_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny(tmp_path)  # skip_limit 2, rollback_limit 1
    tr = Trainer(cfg, tmp_path / "run")
    faults = Faults(monkeypatch)
    tr.train(2)
    tr.rollback_to = tr.save(tmp_path / "good")
    good = state(tr)
    # Two skips in a row (steps 2 and 3): back to step 2, rates halved, other batches; then it
    # trains on to 6.
    faults.count = 2
    logs = tr.train(4)
    assert tr.step == 6 and "loss/G/total" in logs
    assert (tr.skipped_steps, tr.rollbacks, tr.lr_scale) == (2, 1, 0.5)
    assert tr.learning_rates() == {"G": cfg.optim.lr_G / 2, "D": cfg.optim.lr_D / 2}
    # The replayed steps drew other batches: the same ones might fail the same way.
    replayed = next(tr._batch_iterator())["image"]
    tr.rollbacks = 0
    original = next(tr._batch_iterator())["image"]
    tr.rollbacks = 1
    assert not torch.equal(replayed, original)
    assert any(not torch.equal(v, tr.engines["D"].module.state_dict()[k]) for k, v in good["modules"]["D"].items())

    # From step 6 on every D loss is inf: two skips, and with rollback_limit 1 it gives up.
    faults.forever = True
    tr.rollback_to = tr.save(tmp_path / "good2")
    kept = state(tr)
    logs = tr.train(4)
    assert logs == {"diverged": 1.0, "train/skipped_steps": 4.0}
    assert tr.gave_up is not None and "after 1 rollback(s) (train.rollback_limit=1)" in tr.gave_up
    assert tr.step == 10  # the steps it will not train still run out
    assert_identical(kept, state(tr))
    # What the trial reports from here on: the worst finite score, the reason, nothing non-finite.
    report = interval_report(tr, 2)
    assert report[tr.objective_name] == tr.diverged_score == 1e6 and report["diverged"] == 1
    assert report["diverged_reason"] == tr.gave_up and report["step"] == 12
    assert all(math.isfinite(v) for v in report.values() if isinstance(v, float))
    tr.close()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/skipped_steps")][-1] == 4.0


def test_nothing_non_finite_is_saved_or_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tr = Trainer(tiny(tmp_path), tmp_path / "run")
    # A non-finite score is reported as the sentinel, with its reason; the trial trains on.
    monkeypatch.setattr(tr, "evaluate", lambda: {tr.objective_name: math.nan, "metric/other": math.inf})
    report = interval_report(tr, 1)
    assert report[tr.objective_name] == 1e6 and report["metric/other"] == 1e6 and report["diverged"] == 0
    assert report["diverged_reason"].startswith(f"non-finite {tr.objective_name}")
    # Weights that went non-finite are never written.
    with torch.no_grad():
        next(iter(tr.engines["G"].module.parameters())).view(-1)[0] = math.nan
    with pytest.raises(GantuneError, match=r"not saved: the weights at step 1 are not finite"):
        tr.save(tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    tr.close()


@pytest.mark.parametrize("values, message", [
    ({"train.skip_limit": 0}, "train.skip_limit must be > 0"),
    ({"train.rollback_limit": -1}, "train.rollback_limit must be >= 0"),
])
def test_bad_limits_are_refused(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(GantuneError, match=message):
        tiny(tmp_path, **values)
