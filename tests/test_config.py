"""Config: YAML -> frozen dataclasses, validated once; dotted overrides; one-line errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gantune.errors import GantuneError
from ray_jobs import config as C


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_defaults_are_valid_and_frozen() -> None:
    cfg = C.Config()
    C.validate(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.loss.lambda_cx = 1.0  # type: ignore[misc]


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = C.load(write(tmp_path, "loss: {lambda_cx: 2}\nspade: {gan_mode: ls}\noptim: {lr_G: 1.0e-3}\n"))
    assert cfg.loss.lambda_cx == 2.0 and isinstance(cfg.loss.lambda_cx, float)
    assert cfg.spade.gan_mode == "ls" and cfg.optim.lr_G == 1e-3
    C.write(cfg, tmp_path / "out.yaml")
    assert C.load(tmp_path / "out.yaml") == cfg


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    with pytest.raises(GantuneError, match=r"unknown key loss\.lamda_cx; did you mean 'lambda_cx'"):
        C.load(write(tmp_path, "loss: {lamda_cx: 1}\n"))
    with pytest.raises(GantuneError, match="unknown section 'los'; did you mean 'loss'"):
        C.load(write(tmp_path, "los: {lambda_cx: 1}\n"))
    with pytest.raises(GantuneError, match="did you mean 'optim.lr_G'"):
        C.with_values(C.Config(), {"optim.lr_g": 1e-3})


@pytest.mark.parametrize(
    "text, message",
    [
        ("optim: {lr_G: fast}", "optim.lr_G must be float, got str"),
        ("optim: {zero_stage: 3}", "zero_stage must be one of \\[0, 1, 2\\].*#193"),
        ("loss: {lambda_cx: -1}", "loss.lambda_cx must be >= 0"),
        ("spade: {gan_mode: wgan}", "spade.gan_mode must be one of"),
        ("data: {size_px: 16}", "data.size_px must be in 32..512"),
        ("data: {source: folder}", "data.root is required"),
        ("train: {diffaug: 'color,zoom'}", "unknown policy 'zoom'"),
        ("model: {ngf: true}", "model.ngf must be int, got bool"),
        ("loss: [1, 2]", "section 'loss' must be a mapping"),
        # A key that does nothing in this config, or belongs to another family, is an error.
        ("data: {root: /data/ade20k}", "data.root='/data/ade20k' has no effect: data.source is 'scenes'"),
        ("spade: {z_dim: 64}", "spade.z_dim=64 has no effect: spade.use_vae is false"),
        ("model: {family: oasis}\nspade: {use_vae: true}", "section 'spade' is for model.family spade, but model.family is 'oasis'"),
        ("spade: {param_free_norm: sync}", "spade.param_free_norm must be one of"),
        ("model: {family: oasis, num_D: 3}", "model.num_D=3 has no effect: model.family 'oasis' does not use it"),
        ("model: {family: oasis}\noasis: {num_res_blocks: 6}\ndata: {size_px: 32}", "oasis.num_res_blocks=6 needs data.size_px a multiple of 2\\*\\*6"),
        ("model: {family: gaugan}", "model.family must be one of \\['spade', 'oasis', 'cocosnet', .*'srresnet', 'cyclegan', 'ugatit', 'pdgan'\\], got 'gaugan'"),
        ("data: {n_train: 2}\noptim: {batch_size: 4}", "data.n_train=2 scenes are fewer than one batch"),
        # The exemplar families: their shared section, and the 64 px their G starts from.
        ("model: {family: cocosnet}\ndata: {size_px: 32}", "model.family cocosnet needs data.size_px a multiple of 32 and at least 64"),
        ("exemplar: {top_k: 3}", "section 'exemplar' is for model.family cocosnet or cocosnet2 or unite, but model.family is 'spade'"),
        ("model: {family: unite}\ndata: {size_px: 64}\nexemplar: {train_retrieval: sift}", "exemplar.train_retrieval must be one of"),
        ("model: {family: unite}\ndata: {size_px: 64}\nexemplar: {self_ref_prob: 1.5}", "exemplar.self_ref_prob must be in \\[0, 1\\]"),
        ("model: {family: cocosnet}\ndata: {size_px: 64}\nunite: {nef: 8}", "section 'unite' is for model.family unite, but model.family is 'cocosnet'"),
        # The objective and its direction.
        ("eval: {objective: lpips}", "eval.objective must be one of \\['fid', 'kid', 'psnr', 'ssim', 'l1'\\]"),
        ("eval: {objective: fid, mode: max}", "eval.mode='max' contradicts eval.objective='fid', which is better lower; leave eval.mode out or set 'min'"),
        ("eval: {objective: psnr, mode: min}", "eval.mode='min' contradicts eval.objective='psnr', which is better higher"),
        ("eval: {mode: best}", "eval.mode must be one of"),
        ("eval: {y_channel: true}", "eval.y_channel=True has no effect: eval.objective is 'fid' \\(they shape psnr, ssim and l1\\)"),
        ("eval: {objective: ssim, random_weights: true}", "eval.random_weights=True has no effect: eval.objective is 'ssim' \\(no Inception network\\)"),
        ("eval: {objective: psnr, crop_border: 16}\ndata: {size_px: 32}", "eval.crop_border must be >= 0 and leave pixels of data.size_px=32, got 16"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text + "\n")
    with pytest.raises(GantuneError, match=message) as e:
        C.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, key, mode", [
    ("", "metric/fid", "min"),
    ("eval: {random_weights: true, dims: 192}", "metric/fd_random_inception_dims192", "min"),
    ("eval: {objective: kid, mode: min}", "metric/kid", "min"),
    ("eval: {objective: kid, random_weights: true}", "metric/kd_random_inception", "min"),
    ("eval: {objective: psnr, y_channel: true, crop_border: 4}", "metric/psnr_y", "max"),
    ("eval: {objective: l1}", "metric/l1", "min"),
    ("eval: {objective: ssim, mode: max}", "metric/ssim", "max"),
])
def test_the_objective_and_its_mode_come_from_the_eval_config(tmp_path: Path, text: str, key: str, mode: str) -> None:
    e = C.load(write(tmp_path, text + "\n")).eval
    assert (e.objective_key, e.objective_mode) == (key, mode)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(GantuneError, match="no such file"):
        C.load(tmp_path / "missing.yaml")
    with pytest.raises(GantuneError, match="not valid YAML at line 3"):
        C.load(write(tmp_path, "loss:\n  lambda_cx: [1,\n"))


def test_set_overrides_parse_yaml_scalars() -> None:
    values = C.parse_set(["loss.lambda_cx=2.5", "train.diffaug=color", "spade.use_vae=true"])
    assert values == {"loss.lambda_cx": 2.5, "train.diffaug": "color", "spade.use_vae": True}
    cfg = C.with_values(C.Config(), values)
    assert cfg.loss.lambda_cx == 2.5 and cfg.spade.use_vae is True
    with pytest.raises(GantuneError, match="expected key=value"):
        C.parse_set(["loss.lambda_cx"])


def test_flat_keys_cover_every_field() -> None:
    flat = C.to_flat(C.Config())
    assert "loss.lambda_cx" in flat and "optim.lr_D" in flat and "eval.random_weights" in flat
    # Every field of every section, of the active family's section only.
    n_fields = sum(len(dataclasses.fields(f.type if isinstance(f.type, type) else getattr(C, f.type)))
                   for f in dataclasses.fields(C.Config) if f.name not in C.FAMILY_SECTIONS or f.name == "spade")
    assert len(flat) == n_fields


def test_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # YAML 1.1 reads `1e-4` as a string; researchers write it that way all the time.
    cfg = C.load(write(tmp_path, "optim: {lr_G: 1e-4}\n"), C.parse_set(["optim.lr_D=3e-4"]))
    assert cfg.optim.lr_G == 1e-4 and cfg.optim.lr_D == 3e-4


def test_family_sections_and_overrides() -> None:
    cfg = C.with_values(C.Config(), {"spade.use_vae": True, "spade.z_dim": 64})
    assert cfg.spade.z_dim == 64
    # The recorded config holds the active family's section only.
    assert set(C.to_dict(cfg)) == {"data", "model", "loss", "optim", "train", "eval", "spade"}
    with pytest.raises(GantuneError, match="data.root='/missing' has no effect"):
        C.with_values(C.Config(), {"data.root": "/missing"})
    assert C.no_effect(cfg, "spade.z_dim") is None and C.no_effect(C.Config(), "spade.z_dim") is not None
