"""ResumablePBT (ray_jobs/pbt.py) in synchronous mode, on Tune's own Trial objects: the sync
point after a restore, and no stall when no trial may run."""

from __future__ import annotations

from ray.tune.experiment import Trial

from ray_jobs.pbt import ResumablePBT


class Controller:
    """What PBT's scheduling reads of Tune's controller."""

    search_alg = None

    def __init__(self, trials: list[Trial]) -> None:
        self.trials = trials

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self.trials if not t.is_finished()]


def make_trial(status: str, iteration: int | None) -> Trial:
    trial = Trial("__fake", stub=True)
    trial.set_status(status)
    if iteration is not None:
        trial.run_metadata.last_result = {"training_iteration": iteration, "metric/x": 1.0}
    return trial


def scheduler() -> ResumablePBT:
    pbt = ResumablePBT(time_attr="training_iteration", perturbation_interval=1, synch=True,
                       hyperparam_mutations={"lr": [1, 2]})
    pbt.set_search_properties("metric/x", "min")
    return pbt


def restore(pbt: ResumablePBT, trials: list[Trial]) -> Controller:
    controller = Controller(trials)
    for t in trials:
        pbt.on_trial_add(controller, t)
    return controller


def test_restored_trials_run_to_the_leader_or_one_interval_on() -> None:
    pbt = scheduler()
    behind, ahead = make_trial(Trial.PAUSED, 2), make_trial(Trial.PAUSED, 4)
    controller = restore(pbt, [behind, ahead])
    assert pbt._next_perturbation_sync == 4  # the one behind catches up first
    assert pbt.choose_trial_to_run(controller) is behind
    pbt = scheduler()
    level = [make_trial(Trial.PAUSED, 3), make_trial(Trial.PAUSED, 3)]
    controller = restore(pbt, level)
    assert pbt._next_perturbation_sync == 4 and pbt.choose_trial_to_run(controller) in level


def test_a_paused_trial_at_the_sync_point_runs_once_nothing_else_can() -> None:
    # The CI hang: the donor finished, the exploited trial waits at the sync point.
    pbt = scheduler()
    exploited, donor = make_trial(Trial.PAUSED, 4), make_trial(Trial.TERMINATED, 4)
    controller = restore(pbt, [exploited, donor])
    pbt._next_perturbation_sync = 4
    assert pbt.choose_trial_to_run(controller) is exploited
    assert pbt._next_perturbation_sync == 5
    # While another trial runs, a trial at the sync point waits for its report: that is the sync.
    pbt._next_perturbation_sync = 4
    running = make_trial(Trial.RUNNING, 3)
    controller.trials.append(running)
    pbt.on_trial_add(controller, running)
    pbt._next_perturbation_sync = 4
    assert pbt.choose_trial_to_run(controller) is None


def test_asynchronous_pbt_is_tunes_own() -> None:
    pbt = ResumablePBT(time_attr="training_iteration", perturbation_interval=1, hyperparam_mutations={"lr": [1, 2]})
    pbt.set_search_properties("metric/x", "min")
    trials = [make_trial(Trial.PAUSED, 4)]
    controller = restore(pbt, trials)
    assert pbt._trial_state[trials[0]].last_train_time == 0  # its first report decides
    assert pbt.choose_trial_to_run(controller) is trials[0]
