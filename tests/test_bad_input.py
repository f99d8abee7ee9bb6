"""Bad configs, space files and command lines through the `gantune` command line (issue 10, item
6): each gets exit status 2 and one line on stderr that names the key or file and what was
expected; nothing starts. `main()` runs in this process: its parser, handlers and error
reporting are the command's own, without a Python start-up per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_jobs.cli import main

CONFIG = """\
data: {size_px: 32, n_train: 8, n_eval: 4}
model: {ngf: 4, ndf: 8, num_D: 1, n_layers_D: 2}
spade: {lambda_vgg: 0.0}
optim: {batch_size: 2}
train: {steps: 2}
eval: {every: 2, random_weights: true}
"""

SPACE = """\
name: s
base: base.yaml
storage_path: STORAGE
num_samples: 2
resources: {cpus_per_worker: 1}
scheduler: {name: pbt, perturbation_interval: 1}
space:
  loss.lambda_cx: loguniform(0.1, 20)
  optim.lr_G: loguniform(1e-5, 1e-3)
"""

# (case, files to write: name -> (text, {old: new} edits), argv, what the line must say)
CASES: list[tuple[str, dict[str, tuple[str, dict[str, str]]], list[str], str]] = [
    # ---- the training config, through `gantune train`
    ("unknown key", {"c.yaml": (CONFIG, {"steps: 2": "stpes: 2"})}, ["train", "c.yaml"],
     "c.yaml: unknown key train.stpes; did you mean 'steps'?"),
    ("unknown section", {"c.yaml": (CONFIG, {"optim:": "optimizer:"})}, ["train", "c.yaml"],
     "c.yaml: unknown section 'optimizer'; did you mean 'optim'?"),
    ("wrong type", {"c.yaml": (CONFIG, {"steps: 2": "steps: many"})}, ["train", "c.yaml"],
     "c.yaml: train.steps must be int, got str 'many'"),
    ("float for int", {"c.yaml": (CONFIG, {"batch_size: 2": "batch_size: 2.5"})}, ["train", "c.yaml"],
     "optim.batch_size must be int, got float 2.5"),
    ("unknown family", {"c.yaml": (CONFIG, {"model: {": "model: {family: gaugan, ", "spade: {lambda_vgg: 0.0}\n": ""})},
     ["train", "c.yaml"],
     "model.family must be one of ['spade',"),
    ("another family's section", {"c.yaml": (CONFIG + "oasis: {z_dim: 8}\n", {})}, ["train", "c.yaml"],
     "c.yaml: section 'oasis' is for model.family oasis, but model.family is 'spade'"),
    ("a key with no effect", {"c.yaml": (CONFIG, {"spade: {": "spade: {z_dim: 8, "})}, ["train", "c.yaml"],
     "spade.z_dim=8 has no effect: spade.use_vae is false"),
    ("data.root of the built-in scenes", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "data.root=/nowhere"],
     "data.root='/nowhere' has no effect: data.source is 'scenes'"),
    ("a missing data folder", {"c.yaml": (CONFIG, {"n_train: 8, ": ""})},
     ["train", "c.yaml", "--set", "data.source=folder", "--set", "data.root=/nowhere"], "/nowhere"),
    ("negative weight", {"c.yaml": (CONFIG, {"lambda_vgg: 0.0": "lambda_vgg: -1.0"})}, ["train", "c.yaml"],
     "spade.lambda_vgg must be >= 0, got -1.0"),
    ("zero learning rate", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "optim.lr_G=0"],
     "optim.lr_G must be > 0, got 0.0"),
    ("beta out of range", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "optim.beta1=1.5"], "beta"),
    ("image size off the range", {"c.yaml": (CONFIG, {"size_px: 32": "size_px: 8"})}, ["train", "c.yaml"],
     "data.size_px must be in 32..512, got 8"),
    ("unknown objective", {"c.yaml": (CONFIG, {"every: 2,": "every: 2, objective: lpips,"})}, ["train", "c.yaml"],
     "eval.objective must be one of ['fid', 'kid', 'psnr', 'ssim', 'l1'], got 'lpips'"),
    ("contrary mode", {"c.yaml": (CONFIG, {"every: 2,": "every: 2, mode: max,"})}, ["train", "c.yaml"],
     "eval.mode='max' contradicts eval.objective='fid'"),
    ("not a mapping", {"c.yaml": ("- just\n- a list\n", {})}, ["train", "c.yaml"],
     "c.yaml: expected a mapping of sections, got list"),
    ("not YAML", {"c.yaml": ("data: {size_px: [32\n", {})}, ["train", "c.yaml"], "c.yaml: not valid YAML at line"),
    ("a missing config", {}, ["train", "missing.yaml"], "missing.yaml: no such file"),
    ("a --set without =", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "optim.lr_G"],
     "--set 'optim.lr_G': expected key=value"),
    ("a --set of an unknown key", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "optim.lr=1e-4"],
     "unknown key optim.lr; did you mean 'optim.lr_G'?"),
    ("a bad non-finite limit", {"c.yaml": (CONFIG, {})}, ["train", "c.yaml", "--set", "train.skip_limit=0"],
     "train.skip_limit must be > 0, got 0"),
    # ---- the space file, through `gantune tune`
    ("a search over no key", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"optim.lr_G:": "optim.lr_g:"})},
     ["tune", "s.yaml"], "space key 'optim.lr_g' is not a config key; did you mean 'optim.lr_G'?"),
    ("an inverted range", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"(0.1, 20)": "(20, 0.1)"})},
     ["tune", "s.yaml"], "space.loss.lambda_cx: loguniform takes two numbers low < high, got 'loguniform(20, 0.1)'"),
    ("an empty range", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"(0.1, 20)": "(2, 2)"})},
     ["tune", "s.yaml"], "low < high, got 'loguniform(2, 2)'"),
    ("an unknown domain", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"loguniform(0.1": "lognormal(0.1"})},
     ["tune", "s.yaml"], "unknown domain 'lognormal'"),
    ("a grid under PBT", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"loguniform(0.1, 20)": "grid([1, 2])"})},
     ["tune", "s.yaml"], "space.loss.lambda_cx: grid is for scheduler none"),
    ("a shape key under PBT", {"base.yaml": (CONFIG, {}),
                               "s.yaml": (SPACE, {"optim.lr_G: loguniform(1e-5, 1e-3)": "model.ngf: choice([4, 8])"})},
     ["tune", "s.yaml"], "space.model.ngf shapes the nets, so PBT cannot copy weights across its values"),
    ("PBT with nothing to perturb", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE.split("space:")[0], {})},
     ["tune", "s.yaml"], "pbt needs a non-empty space to perturb"),
    ("an unknown scheduler", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"name: pbt": "name: hyperband"})},
     ["tune", "s.yaml"], "scheduler.name must be one of"),
    ("a missing base", {"s.yaml": (SPACE, {})}, ["tune", "s.yaml"], "base.yaml: no such file"),
    ("a bad sample count", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"num_samples: 2": "num_samples: 0"})},
     ["tune", "s.yaml"], "num_samples must be a positive integer, got 0"),
    ("an unknown space key", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"num_samples:": "num_sample:"})},
     ["tune", "s.yaml"], "unknown key 'num_sample'; did you mean 'num_samples'?"),
    ("a storage path that is not writable", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {"STORAGE": "/proc/runs"})},
     ["tune", "s.yaml"], "storage_path /proc/runs is not writable"),
    ("a batch the workers cannot split",
     {"base.yaml": (CONFIG, {"batch_size: 2": "batch_size: 3"}),
      "s.yaml": (SPACE, {"{cpus_per_worker: 1}": "{workers_per_trial: 2, cpus_per_worker: 1}"})},
     ["tune", "s.yaml"], "optim.batch_size=3"),
    ("resume of no search", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {})}, ["tune", "s.yaml", "--resume"],
     "no search to resume there"),
    # (ray.init retries an address nobody answers for minutes, printing a line every few seconds)
    ("a Ray cluster address nobody answers", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {})},
     ["tune", "s.yaml", "--address", "127.0.0.1:1"], "Ray cluster at 127.0.0.1:1: cannot connect (Connection refused)"),
    ("a Ray cluster address without its port", {"base.yaml": (CONFIG, {}), "s.yaml": (SPACE, {})},
     ["tune", "s.yaml", "--address", "headnode"], "Ray cluster address 'headnode': expected HOST:PORT"),
    # ---- other commands and any OSError
    ("an output folder that cannot be made", {}, ["data", "scenes", "/proc/x", "--n", "1", "--size", "32"],
     "/proc/x"),
    ("a scene size off the range", {}, ["data", "scenes", "out", "--size", "16"], "32..512"),
    ("FID of a missing folder", {}, ["fid", "nowhere_a", "nowhere_b", "--random-weights"], "nowhere_a"),
    ("unknown weights", {}, ["weights", "verify", "resnet"], "resnet"),
    ("scheduler without a metric", {"base.yaml": (CONFIG, {"random_weights: true": "random_weights: true, objective: null"}),
                                    "s.yaml": (SPACE, {})}, ["tune", "s.yaml"], "base.yaml: eval.objective must be str"),
    ("scheduler with Tune's metric key", {"base.yaml": (CONFIG, {}),
                                          "s.yaml": (SPACE, {"perturbation_interval: 1": "perturbation_interval: 1, metric: loss"})},
     ["tune", "s.yaml"], "scheduler.metric is not set here: every scheduler optimises the base config's eval.objective"),
    # ---- pretrained weights missing from the (empty) hub cache: the file and the fetch command
    ("FID Inception weights missing", {"c.yaml": (CONFIG, {"random_weights: true": "random_weights: false"})},
     ["train", "c.yaml"], "put pt_inception-2015-12-05-6726825d.pth in"),
    ("VGG19 weights missing", {"c.yaml": (CONFIG, {"spade: {lambda_vgg: 0.0}": "spade: {lambda_vgg: 10.0}"})},
     ["train", "c.yaml"], "`gantune weights fetch vgg19` downloads it"),
    ("a bad option value", {}, ["data", "scenes", "out", "--n", "-3"], "expected a positive integer, got -3"),
    ("an unknown command", {}, ["serve"], "invalid choice: 'serve'"),
]


@pytest.mark.parametrize("case, files, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(case: str, files: dict, argv: list[str], message: str,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name, (text, edits) in files.items():
        for old, new in edits.items():
            assert old in text, f"the case's edit {old!r} does not apply"
            text = text.replace(old, new)
        (tmp_path / name).write_text(text.replace("STORAGE", str(tmp_path / "runs")))
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors exit from the parser
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("gantune"), err
    assert message in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "nothing starts"


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
