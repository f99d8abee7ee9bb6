"""Tune's Population Based Training, resumable in synchronous mode.

`Tuner.restore` builds the scheduler afresh: its per-trial times start at 0 and its next sync
point at one interval, while the restored trials are already further on. In synchronous mode
the first sync after the restore then sets the next sync point to the trials' own time, and
`choose_trial_to_run` only runs trials below it: every trial stays PAUSED, for ever (measured:
`gantune slurm` with `synch: true`, stopped by USR2 and requeued, hung with both trials paused
at their last report). Here a restored trial's time comes from its last result, and the next
sync point from the population: the slowest trial's catch-up, or one interval on when all are
level.

And a synchronous search never stalls. Once in CI, a resumed search left its exploited trial
PAUSED for ever after an exploit at the last interval, the other trial finished: Tune's
`choose_trial_to_run` runs only trials below the sync point, and that trial was not. When no
trial runs and none of the waiting ones may, nothing can ever move the sync point, so it moves
here: one interval past the furthest waiting trial.
"""

from __future__ import annotations

from typing import Any

from ray.train._internal.session import _FutureTrainingResult
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining


class ResumablePBT(PopulationBasedTraining):
    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        time = (trial.last_result or {}).get(self._time_attr, 0)
        if not self._synch or not time:
            return  # a new trial, or asynchronous PBT (its first report after a restore decides)
        state = self._trial_state[trial]
        state.last_train_time = state.last_perturbation_time = time
        times = [s.last_train_time for s in self._trial_state.values()]
        # Trials behind the others run up to the leaders' time; level trials run one interval.
        self._next_perturbation_sync = max(times) + (self._perturbation_interval if min(times) == max(times) else 0)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        trial = super().choose_trial_to_run(tune_controller)
        if trial is not None or not self._synch:
            return trial
        trials = tune_controller.get_trials()
        waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED)]
        if not waiting or any(t.status == Trial.RUNNING for t in trials):
            return None  # a running trial reports and moves the sync point
        self._next_perturbation_sync = (
            max(self._trial_state[t].last_train_time for t in waiting) + self._perturbation_interval
        )
        return super().choose_trial_to_run(tune_controller)

    def clone_sources(self) -> set[str]:
        """The checkpoints PBT may still copy into a bottom trial: each top trial's, recorded at
        its last perturbation point (retention.py must keep them). A save still under way is
        the trial's newest, which retention keeps anyway."""
        paths = set()
        for state in self._trial_state.values():
            source = state.last_checkpoint
            if isinstance(source, _FutureTrainingResult):
                saved = source.resolve(block=False)
                source = saved.checkpoint if saved is not None else None
            if source is not None:
                paths.add(source.path)
        return paths
