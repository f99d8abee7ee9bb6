"""Checkpoint retention (ray_jobs/retention.py): which checkpoints a trial keeps, and that one a
trial may still restore from, or PBT may still clone, is never deleted. The search itself runs
with retention in test_tune.py (every exploit restores from a kept checkpoint)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint

from ray_jobs.pbt import ResumablePBT
from ray_jobs.retention import CheckpointRetention
from ray_jobs.space import load_spec

OBJ = "metric/fid"


def _trial(tmp_path: Path, name: str, scores: list[float]) -> SimpleNamespace:
    """A trial as the callback sees it, with one registered checkpoint folder per score."""
    registered = []
    for i, score in enumerate(scores):
        path = tmp_path / name / f"checkpoint_{i:06d}"
        path.mkdir(parents=True)
        registered.append(_TrainingResult(Checkpoint(str(path)), {"training_iteration": i + 1, OBJ: score}))
    manager = SimpleNamespace(_checkpoint_results=registered)
    latest = registered[-1].checkpoint if registered else None
    return SimpleNamespace(run_metadata=SimpleNamespace(checkpoint_manager=manager), checkpoint=latest,
                           last_result={OBJ: None})


def _report(retention: CheckpointRetention, trials: list[Any], trial: Any, tmp_path: Path, score: float) -> Path:
    """What Tune does at a report: the callback, then the new checkpoint becomes the latest."""
    registered = trial.run_metadata.checkpoint_manager._checkpoint_results
    path = tmp_path / "new" / f"checkpoint_{len(registered) + 100:06d}"
    path.mkdir(parents=True)
    trial.last_result = {OBJ: score}
    retention.on_checkpoint(iteration=0, trials=trials, trial=trial, checkpoint=Checkpoint(str(path)))
    registered.append(_TrainingResult(Checkpoint(str(path)), {"training_iteration": 99, OBJ: score}))
    trial.checkpoint = registered[-1].checkpoint
    return path


def _left(trial: Any) -> list[str]:
    return [Path(r.checkpoint.path).name for r in trial.run_metadata.checkpoint_manager._checkpoint_results]


def test_keeps_the_last_n_and_the_best_m_and_deletes_the_rest(tmp_path: Path) -> None:
    trial = _trial(tmp_path, "a", [50.0, 10.0, 40.0, 30.0, 20.0])
    retention = CheckpointRetention(keep_last=2, keep_best=1, objective=OBJ, mode="min")
    new = _report(retention, [trial], trial, tmp_path, 60.0)
    # The last two are #4 and the new one; the best is #1 (10.0).
    assert _left(trial) == ["checkpoint_000001", "checkpoint_000004", new.name]
    on_disk = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert on_disk == ["checkpoint_000001", "checkpoint_000004"] and new.is_dir()


def test_best_follows_the_mode_and_a_non_finite_score_ranks_last(tmp_path: Path) -> None:
    trial = _trial(tmp_path, "a", [float("nan"), 0.2, 0.9, 0.5])
    retention = CheckpointRetention(keep_last=1, keep_best=2, objective=OBJ, mode="max")
    _report(retention, [trial], trial, tmp_path, float("inf"))
    assert _left(trial)[:2] == ["checkpoint_000002", "checkpoint_000003"]  # 0.9 and 0.5; not NaN nor inf


def test_never_deletes_a_donor_checkpoint_another_trial_restarts_from(tmp_path: Path) -> None:
    donor = _trial(tmp_path, "donor", [9.0, 8.0, 7.0, 6.0])
    exploited = _trial(tmp_path, "bottom", [20.0])
    # PBT pointed the exploited trial at the donor's #1: it restarts from that folder.
    exploited.checkpoint = donor.run_metadata.checkpoint_manager._checkpoint_results[1].checkpoint
    retention = CheckpointRetention(keep_last=1, keep_best=1, objective=OBJ, mode="min")
    _report(retention, [donor, exploited], donor, tmp_path, 5.0)
    assert _left(donor)[0] == "checkpoint_000001" and (tmp_path / "donor" / "checkpoint_000001").is_dir()
    assert not (tmp_path / "donor" / "checkpoint_000000").exists()


def test_never_deletes_a_checkpoint_pbt_holds_to_clone(tmp_path: Path) -> None:
    donor = _trial(tmp_path, "donor", [9.0, 8.0, 7.0, 6.0])
    pbt = ResumablePBT(time_attr="training_iteration", perturbation_interval=2, hyperparam_mutations={"x": [1, 2]},
                       metric=OBJ, mode="min")
    held = donor.run_metadata.checkpoint_manager._checkpoint_results[2].checkpoint
    # A top trial's checkpoint recorded at its perturbation point (PBT's per-trial state).
    pbt._trial_state["donor"] = SimpleNamespace(last_checkpoint=held)
    assert pbt.clone_sources() == {held.path}
    retention = CheckpointRetention(keep_last=1, keep_best=0, objective=OBJ, mode="min", scheduler=pbt)
    _report(retention, [donor], donor, tmp_path, 5.0)
    assert _left(donor)[0] == "checkpoint_000002"
    assert sorted(p.name for p in (tmp_path / "donor").iterdir()) == ["checkpoint_000002"]


@pytest.mark.parametrize("text, message", [
    ("checkpoints: {keep_last: 0}", "checkpoints.keep_last must be an integer in [1, inf], got 0"),
    ("checkpoints: {keep_best: -1}", "checkpoints.keep_best must be an integer in [0, inf], got -1"),
    ("checkpoints: {keep: 3}", "checkpoints must be 'all' or a mapping with keep_last"),
    ("checkpoints: some", "checkpoints must be 'all' or a mapping with keep_last"),
])
def test_bad_retention_keys_are_refused(tmp_path: Path, text: str, message: str) -> None:
    from gantune.errors import GantuneError
    from tests.test_tune import make_space

    space = make_space(tmp_path, **{"num_samples: 2": f"num_samples: 2\n{text}"})
    with pytest.raises(GantuneError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(space)


def test_retention_defaults_and_all(tmp_path: Path) -> None:
    from tests.test_tune import make_space

    spec = load_spec(make_space(tmp_path))
    assert (spec.keep_last, spec.keep_best) == (2, 1)
    spec = load_spec(make_space(tmp_path, **{"num_samples: 2": "num_samples: 2\ncheckpoints: all"}))
    assert spec.keep_last is None
