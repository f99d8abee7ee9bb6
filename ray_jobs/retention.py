"""Checkpoint retention: each trial keeps its last N and its best M reported checkpoints.

Tune keeps every checkpoint a trial reports (1.3 GB for the 4-trial demo at ngf 8). Its own
`CheckpointConfig.num_to_keep` keeps the best K and the latest, and may delete a checkpoint that
PBT still means to clone: PBT records a top trial's checkpoint at its perturbation point and
copies it into a bottom trial later, and an exploited trial restarts from its donor's folder
(Ray warns about this for num_to_keep <= 2). So Tune deletes nothing here, and this callback
prunes instead, in the driver, where it sees what is still needed:

- the last `keep_last` and the best `keep_best` checkpoints of the trial (by the objective);
- every trial's latest checkpoint, which for an exploited trial is its donor's (it restarts
  from it);
- every checkpoint PBT holds as a clone source (`ResumablePBT.clone_sources`);
- each trial's checkpoint as Tune's last two saved experiment states name it, where a resumed
  search restarts it.

A pruned checkpoint leaves Tune's list too, so the best checkpoint in summary.json and a
restored search never name a deleted folder.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from ray.tune import Callback

log = logging.getLogger(__name__)


class CheckpointRetention(Callback):
    def __init__(self, keep_last: int, keep_best: int, objective: str, mode: str, scheduler: Any = None) -> None:
        self.keep_last, self.keep_best = keep_last, keep_best
        self.objective, self.mode = objective, mode
        # The scheduler Tune runs: pickled with this callback in the tuner state, so a restored
        # search gets the restored scheduler here too.
        self.scheduler = scheduler
        # Each trial's latest checkpoint as Tune's last two saved experiment states name it: a
        # search resumed after its driver was killed restarts each trial from there (the newer
        # state may still be on its way to the storage path).
        self._saved: list[set[str]] = []
        self._trials: list[Any] = []

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self._saved:  # a fresh or restored search: the state it started from names these
            self._saved = [{t.checkpoint.path for t in trials if t.checkpoint is not None}]
        self._trials = trials

    def get_state(self) -> dict[str, Any] | None:
        # Tune calls this as it saves its experiment state.
        self._saved = [{t.checkpoint.path for t in self._trials if t.checkpoint is not None}, *self._saved[:1]]
        return None

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        # Called before Tune registers `checkpoint`, which is the trial's newest: it counts
        # towards the last N, and is never pruned.
        manager = trial.run_metadata.checkpoint_manager
        registered = getattr(manager, "_checkpoint_results", None)
        if registered is None:  # another Ray: keep everything rather than guess
            log.warning("checkpoint retention is off: this Ray's checkpoint manager has no _checkpoint_results")
            return
        newest = {"training_iteration": float("inf"), self.objective: trial.last_result.get(self.objective)}
        entries = [(r.checkpoint.path, r.metrics) for r in registered] + [(checkpoint.path, newest)]
        keep = self.protected([t for t in trials if t is not trial]) | set(self.chosen(entries))
        for result in list(registered):
            path = result.checkpoint.path
            if path in keep:
                continue
            registered.remove(result)
            shutil.rmtree(path, ignore_errors=True)
            log.debug("retention: deleted %s", path)

    def chosen(self, entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """The paths among (path, metrics) that retention keeps: the last N by reporting order
        and the best M by the objective (a missing or non-finite score ranks last)."""
        by_time = sorted(entries, key=lambda e: e[1].get("training_iteration", 0))
        sign = 1.0 if self.mode == "min" else -1.0

        def rank(entry: tuple[str, dict[str, Any]]) -> float:
            value = entry[1].get(self.objective)
            ok = isinstance(value, (int, float)) and value == value and abs(value) != float("inf")
            return sign * float(value) if ok else float("inf")

        best = sorted(entries, key=rank)[: self.keep_best]
        return [p for p, _ in by_time[-self.keep_last:]] + [p for p, _ in best]

    def protected(self, trials: list[Any]) -> set[str]:
        """Checkpoints a trial may still restore from: the latest of each of `trials` (an
        exploited trial's is its donor's; the reporting trial's own is superseded by the one it
        reports) and PBT's clone sources."""
        paths = {t.checkpoint.path for t in trials if t.checkpoint is not None}.union(*self._saved)
        sources = getattr(self.scheduler, "clone_sources", None)
        return paths | set(sources()) if sources is not None else paths
