"""The search end to end on a real one-node Ray cluster on loopback: PBT exploits with weights,
summary.json, TensorBoard per trial, bad space files, and --resume after an interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gantune.errors import GantuneError

BASE = """
data: {size_px: 32, n_train: 8, n_eval: 8}
model: {ngf: 4, ndf: 8, num_D: 1, n_layers_D: 2}
loss: {lambda_cx: 1.0, lambda_dists: 0.0, lambda_ffl: 1.0, random_backbones: true}
spade: {lambda_vgg: 0.0}
optim: {batch_size: 2}
train: {steps: 6, log_every: 1, image_every: 2}
eval: {every: 2, batch_size: 8, random_weights: true, dims: 192, cache_dir: CACHE}
"""

SPACE = """
name: NAME
base: base.yaml
storage_path: STORAGE
num_samples: 2
resources: {cpus_per_worker: 1}
scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5}
space:
  loss.lambda_cx: loguniform(0.1, 20)
  optim.lr_G: loguniform(1e-5, 1e-3)
"""


def make_space(tmp_path: Path, name: str = "t", base_edits: dict[str, str] | None = None, **extra: str) -> Path:
    base = BASE
    for key, value in (base_edits or {}).items():
        base = base.replace(key, value)
    base = base.replace("CACHE", str(tmp_path / "cache"))
    (tmp_path / "base.yaml").write_text(base)
    text = SPACE.replace("NAME", name).replace("STORAGE", str(tmp_path / "runs"))
    for key, value in extra.items():
        text = text.replace(key, value)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def same_config(a: dict, b: dict) -> bool:
    """Sampled configs alike: numbers to rounding (progress.csv's text), strings exactly."""
    return a.keys() == b.keys() and all(
        a[k] == pytest.approx(b[k]) if isinstance(b[k], float) else a[k] == b[k] for k in a)


def gantune(*args: str, cwd: Path, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout_s)


@pytest.mark.slow
def test_pbt_search_exploits_with_weights_and_writes_summary(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Three trials, four reports each: the worse trial is in the bottom quantile at some report
    # however the two CPUs interleave them, so an exploit always happens.
    # Retention at its tightest: PBT must still find every checkpoint it clones.
    space = make_space(tmp_path, base_edits={"steps: 6": "steps: 8"},
                       **{"num_samples: 2": "num_samples: 3\ncheckpoints: {keep_last: 1, keep_best: 1}",
                          "{cpus_per_worker: 1}": "{cpus_per_worker: 0.5}"})
    proc = gantune("tune", str(space), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tensorboard --logdir" in proc.stdout and "not FID" in proc.stdout
    exp = tmp_path / "runs" / "t"
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["objective"] == "metric/fd_random_inception_dims192" and not summary["objective_is_fid"]
    trials = summary["trials"]
    assert len(trials) == 3
    for t in trials:
        assert t["history"][-1]["step"] == 8
        assert t["best"] == min(h["value"] for h in t["history"])
        assert Path(t["best_checkpoint"], "COMPLETE").is_file()
        acc = EventAccumulator(str(Path(t["path"]) / "tb"), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        assert "metric/fd_random_inception_dims192" in acc.Tags()["scalars"]
        assert acc.Tags()["images"]

    # An exploited trial must continue from the donor's weights and step (asynchronous PBT clones the donor's
    # latest checkpoint, which may be behind), with PBT's mutated values, not the donor's.
    exploited = [t for t in trials if t["exploits"]]
    assert exploited, "no PBT exploit happened"
    t = exploited[0]
    # Exploits are followed by a report, even a clone of the donor's final checkpoint (two
    # exploits in a row before the trial restarts make one report).
    assert 1 <= sum("restored_from" in h for h in t["history"]) <= len(t["exploits"])
    first_after = next(h for h in t["history"] if "restored_from" in h)
    donor = next(d for d in trials if d["trial_id"] == first_after["restored_from"])
    assert donor is not t
    # The donor's step, continued (or, from its final checkpoint, scored again at that step).
    assert first_after["step"] == min(first_after["restored_step"] + 2, 8)
    donor_report = next(h for h in donor["history"] if h["step"] == first_after["restored_step"])
    assert any(same_config(first_after["config"], e["new_config"]) for e in t["exploits"]), (
        first_after["config"], [e["new_config"] for e in t["exploits"]])
    assert not same_config(first_after["config"], donor_report["config"])
    # The lineage of the final weights ends with the donor of the trial's last exploit.
    last_restore = [h for h in t["history"] if "restored_from" in h][-1]
    assert t["lineage"][-1]["from_trial"] == last_restore["restored_from"]
    assert t["lineage"][-1]["step"] == last_restore["restored_step"]

    # 12 checkpoints reported; each trial keeps its last and its best, and at most one more that
    # PBT still held as a clone source when the trial last reported.
    kept = {t["trial_id"]: sorted(Path(t["path"]).glob("checkpoint_*")) for t in trials}
    assert all(1 <= len(k) <= 3 for k in kept.values()), kept
    assert sum(map(len, kept.values())) < 12, kept
    for k in kept.values():  # the last one is whole, at the final step
        assert json.loads((k[-1] / "COMPLETE").read_text())["step"] == 8


@pytest.mark.slow
def test_resume_continues_an_interrupted_search(tmp_path: Path) -> None:
    space = make_space(tmp_path, "r")
    exp = tmp_path / "runs" / "r"
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs.cli", "tune", str(space)], cwd=tmp_path,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list(exp.glob("trial_*/checkpoint_000000")):
        time.sleep(0.5)
    assert list(exp.glob("trial_*/checkpoint_000000")), "the search never checkpointed"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves the experiment state and stops
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-2000:]
    assert "--resume" in out
    interrupted = json.loads((exp / "summary.json").read_text())
    assert interrupted["complete"] is False

    again = gantune("tune", str(space), cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites a search

    resumed = gantune("tune", str(space), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((exp / "summary.json").read_text())
    assert summary["complete"] is True and len(summary["trials"]) == 2
    for t in summary["trials"]:
        steps = [h["step"] for h in t["history"]]
        assert steps[-1] == 6
        # Continued from its checkpoint: a trial restarted from scratch would report step 2 again
        # (a PBT exploit clones a checkpoint at step >= 2, so its next report is >= 4).
        assert steps.count(2) == 1, steps


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"loss.lambda_cx: loguniform(0.1, 20)": "loss.lamda_cx: loguniform(0.1, 20)"}, "did you mean 'loss.lambda_cx'"),
        ({"loguniform(0.1, 20)": "loguniform(20, 0.1)"}, "low < high"),
        ({"loguniform(0.1, 20)": "lognormal(0.1, 20)"}, "unknown domain 'lognormal'"),
        ({"name: pbt": "name: hyperband"}, "scheduler.name must be one of"),
        ({"num_samples: 2": "num_sample: 2"}, "did you mean 'num_samples'"),
        ({"base: base.yaml": "base: nowhere.yaml"}, "nowhere.yaml: no such file"),
        ({"perturbation_interval: 1": "perturbation_interval: often"}, "perturbation_interval must be an integer"),
        ({"quantile_fraction: 0.5": "quantile_fraction: 0.9"}, r"quantile_fraction must be a number in \[0, 0.5\]"),
        ({"optim.lr_G: loguniform(1e-5, 1e-3)": "spade.lambda_kld: uniform(0.01, 0.1)"},
         "space key 'spade.lambda_kld' has no effect: spade.use_vae is false"),
        ({"resample_probability: 0.5}": "resample_probability: 0.5, synch: yes please}"},
         "scheduler.synch must be true or false, got 'yes please'"),
        ({"name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5}": "name: none, synch: true}"},
         "scheduler.synch applies to pbt only"),
        ({"loguniform(0.1, 20)": "grid([0.5, 2.0])"},
         r"space.loss.lambda_cx: grid is for scheduler none \(every value once\); PBT perturbs sampled values"),
        ({"optim.lr_G: loguniform(1e-5, 1e-3)": "model.ngf: choice([4, 8])"},
         "space.model.ngf shapes the nets, so PBT cannot copy weights across its values"),
    ],
)
def test_bad_space_files_fail_in_one_line(tmp_path: Path, edit: dict[str, str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from ray_jobs.cli import main
    from ray_jobs.space import load_spec

    path = make_space(tmp_path, **edit)
    with pytest.raises(GantuneError, match=message) as e:
        load_spec(path)
    assert "\n" not in str(e.value)
    assert main(["tune", str(path)]) == 2  # the command's own parser, handler and error line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gantune: error:") and str(e.value) in err


def test_a_bad_space_file_exits_2_from_the_installed_command(tmp_path: Path) -> None:
    path = make_space(tmp_path, **{"num_samples: 2": "num_sample: 2"})
    proc = gantune("tune", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gantune: error:") and "num_samples" in proc.stderr


def test_pbt_perturbs_a_choice_of_strings_as_a_list(tmp_path: Path) -> None:
    """Tune multiplies a value of any domain but a list by 0.8 or 1.2: a choice of strings would
    crash PBT at its first exploit. The scheduler gets choices as lists, which Tune shifts to a
    neighbouring value or resamples."""
    from ray.tune.schedulers.pbt import _explore

    from ray_jobs.space import load_spec
    from ray_jobs.tune_driver import _scheduler

    spec = load_spec(make_space(tmp_path, **{"  optim.lr_G:": '  train.diffaug: choice(["", "color", "translation"])\n  optim.lr_G:'}))
    mutations = _scheduler(spec)._hyperparam_mutations
    assert mutations["train.diffaug"] == ["", "color", "translation"]
    config = {"loss.lambda_cx": 1.0, "train.diffaug": "color", "optim.lr_G": 1e-4}
    seen = set()
    for _ in range(50):
        new, _ = _explore(config, mutations, 0.25, (1.2, 0.8), None)
        seen.add(new["train.diffaug"])
        assert new["loss.lambda_cx"] != 1.0
    assert seen <= {"", "color", "translation"} and len(seen) >= 2


def test_resume_without_a_search_is_an_error(tmp_path: Path) -> None:
    proc = gantune("tune", str(make_space(tmp_path)), "--resume", cwd=tmp_path)
    assert proc.returncode == 2 and "no search to resume" in proc.stderr


def test_demo_space_is_the_promised_search() -> None:
    from ray_jobs.space import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "tune_spaces" / "demo.yaml")
    assert spec.scheduler == "pbt" and spec.num_samples >= 4
    assert set(spec.space) == {"loss.lambda_cx", "loss.lambda_dists", "loss.lambda_ffl", "optim.lr_G", "optim.lr_D"}
    base = spec.base
    assert base.model.family == "spade" and base.data.source == "scenes" and base.data.size_px == 64
    assert base.train.steps // base.eval.every >= 3  # at least three evaluations per trial
    # Random backbones are named for what they are.
    assert base.eval.random_weights and spec.objective == "metric/fd_random_inception_dims192"


@pytest.mark.slow
def test_grid_search_without_scheduler_maximises_ssim(tmp_path: Path) -> None:
    """A grid without PBT, on an objective that is maximised: eval.objective ssim gives the
    search its mode, and the summary's best values, best trial and best checkpoints follow it."""
    space = make_space(tmp_path, "g", base_edits={
        "random_weights: true, dims: 192, cache_dir: CACHE": "objective: ssim",
    }, **{
        "scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5}": "scheduler: none\neval_every: 3",
        "loss.lambda_cx: loguniform(0.1, 20)": "loss.lambda_cx: grid([0.5, 2.0])",
        "  optim.lr_G: loguniform(1e-5, 1e-3)\n": "",
        "num_samples: 2": "num_samples: 1",
    })
    proc = gantune("tune", str(space), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "g" / "summary.json").read_text())
    assert sorted(t["config"]["loss.lambda_cx"] for t in summary["trials"]) == [0.5, 2.0]
    assert (summary["objective"], summary["mode"]) == ("metric/ssim", "max")
    for t in summary["trials"]:
        assert [h["step"] for h in t["history"]] == [3, 6] and not t["exploits"]
        values = [h["value"] for h in t["history"]]
        assert all(-1 < v < 1 for v in values) and t["best"] == max(values)
        assert t["best_checkpoint"].endswith(f"checkpoint_{values.index(max(values)):06d}")
    assert summary["best_value"] == max(t["best"] for t in summary["trials"])


def test_smoke_shrinks_any_search_to_two_short_trials(tmp_path: Path) -> None:
    from ray_jobs.space import load_spec
    from ray_jobs.tune_driver import _smoke

    spec = _smoke(load_spec(make_space(tmp_path, **{
        "num_samples: 2": "num_samples: 8",
        "name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, resample_probability: 0.5": "name: none",
        "optim.lr_G: loguniform(1e-5, 1e-3)": "optim.lr_G: grid([1e-5, 1e-4, 1e-3])",
    })))
    assert spec.num_samples == 2
    # A grid would make 2 x 3 trials: its values are drawn instead.
    assert spec.space["optim.lr_G"].categories == [1e-5, 1e-4, 1e-3]
    assert (spec.base.train.steps, spec.base.eval.every, spec.base.data.size_px) == (4, 2, 32)
    # An objective without Inception features keeps its config: no stand-in weights to set.
    (tmp_path / "psnr").mkdir()
    spec = _smoke(load_spec(make_space(tmp_path / "psnr", base_edits={
        "random_weights: true, dims: 192, cache_dir: CACHE": "objective: psnr"})))
    assert (spec.objective, spec.mode, spec.base.eval.random_weights) == ("metric/psnr", "max", False)
