"""Torn checkpoints (issue 10, item 4): a save killed at random points always leaves a complete
checkpoint that loads; a partial or corrupt one is skipped with a warning for the one before."""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from gantune.errors import GantuneError
from net_helpers import one_thread  # noqa: F401  (autouse fixture)
from ray_jobs import checkpoint
from ray_jobs import config as C
from ray_jobs.trainer import Trainer

KILLS = 24


@pytest.fixture
def trainer(tmp_path: Path) -> Trainer:
    cfg = C.with_values(C.Config(), {
        "data.size_px": 32, "data.n_train": 4, "data.n_eval": 2, "model.ngf": 4, "model.ndf": 8, "model.num_D": 1,
        "model.n_layers_D": 2, "spade.lambda_vgg": 0.0, "optim.batch_size": 2, "train.steps": 10,
        "train.log_every": 1, "train.image_every": 100, "eval.random_weights": True,
    })
    tr = Trainer(cfg, tmp_path / "run")
    tr.train(1)
    yield tr
    tr.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_saves_killed_at_random_points_always_leave_a_complete_checkpoint(tmp_path: Path, trainer: Trainer) -> None:
    latest = tmp_path / "checkpoints" / "latest"
    t0 = time.perf_counter()
    trainer.save(latest)
    duration = time.perf_counter() - t0
    rng = random.Random(0)
    cut_short, loaded, advanced, last = 0, 0, 0, 1
    for kill in range(KILLS):
        trainer.step = 100 + kill  # each save says which one it is
        pid = os.fork()
        if pid == 0:  # a saver, back to back, so the kill lands inside a save
            try:
                # gloo's threads do not survive fork: this one-process group's collectives are
                # identities, so the saver skips them and runs the rest of the save as it is.
                for name in ("barrier", "all_reduce", "broadcast"):
                    setattr(torch.distributed, name, lambda *args, **kwargs: None)
                while True:
                    trainer.save(latest)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(1.0, 4.0) * duration)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # What the kill left: a temp folder being written, or the old one set aside.
        cut_short += any(latest.parent.glob(".latest.*"))
        found = checkpoint.usable(latest)
        trainer.load(found)  # every time: no exception
        loaded += 1
        # The newest save that completed: of this saver, or of one before.
        assert trainer.step >= last and (trainer.step == 1 or 100 <= trainer.step <= 100 + kill)
        advanced += trainer.step > last
        last = trainer.step
    print(f"{KILLS} kills: {cut_short} inside a save, {advanced} after a save completed, {loaded} loads")
    assert loaded == KILLS, "every kill left a complete checkpoint that loads"
    assert cut_short >= KILLS // 4, f"only {cut_short} of {KILLS} kills landed inside a save"
    assert advanced >= KILLS // 4, f"only {advanced} of {KILLS} savers completed a save before the kill"
    trainer.save(latest)  # the next save clears what the kills left
    assert not any(latest.parent.glob(".latest.*"))
    # The narrowest moment of a replacing save: the old one set aside, the new one not yet in.
    aside = latest.parent / ".latest.old-1"
    os.replace(latest, aside)
    assert checkpoint.usable(latest) == aside


def test_a_torn_or_corrupt_checkpoint_is_skipped_for_the_one_before(tmp_path: Path, trainer: Trainer,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    trial = tmp_path / "trial_x"
    first = trainer.save(trial / "checkpoint_000001")
    trainer.train(1)
    second = trainer.save(trial / "checkpoint_000002")
    assert checkpoint.usable(second) == second
    # A copy cut short: one file shorter than the marker says.
    state = second / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="ray_jobs.checkpoint"):
        assert checkpoint.usable(second) == first
    assert f"{second}: torn checkpoint ({checkpoint.STATE_FILE} is 100 bytes" in caplog.text
    with pytest.raises(GantuneError, match="torn checkpoint"):
        trainer.load(second)
    trainer.load(checkpoint.usable(second))
    assert trainer.step == 1
    # No marker at all, and nothing before it: refused in one line.
    (first / checkpoint.COMPLETE_MARKER).unlink()
    with pytest.raises(GantuneError, match=r"incomplete checkpoint \(no COMPLETE marker\), and no earlier complete"):
        checkpoint.usable(first)
    assert torch.isfinite(next(iter(trainer.engines["G"].module.parameters()))).all()
