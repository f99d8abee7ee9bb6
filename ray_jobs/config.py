"""The training config: YAML -> frozen dataclasses, validated once.

One section per concern (data, model, loss, optim, train, eval: config_sections.py), plus one per family
(`spade`) for the keys only that family reads. An unknown key is an error that suggests the
closest known key; a value of the wrong type or out of range, a section of another family than
`model.family`, and a key set to a value that does nothing in this config (`data.root` while
`data.source` is scenes) are errors that name the key. The resolved config (with the active
family's section only) is what every run folder records (`config.yaml`). Search spaces and
`--set` address fields by dotted keys: `loss.lambda_cx`, `optim.lr_G`, `spade.use_vae`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from gantune.errors import GantuneError
from metrics import objectives
from ray_jobs.config_sections import DataConfig, EvalConfig, LossConfig, ModelConfig, OptimConfig, TrainConfig
from ray_jobs.family_config import (
    FAMILY_CHOICES,
    FAMILY_NAMES,
    FAMILY_POSITIVE,
    SECTION_FAMILIES,
    Cocosnet2Config,
    CocosnetConfig,
    CycleganConfig,
    EsrganConfig,
    ExemplarConfig,
    OasisConfig,
    PdganConfig,
    RdnConfig,
    SpadeConfig,
    SRConfig,
    SrresnetConfig,
    UgatitConfig,
    UniteConfig,
    family_no_effect,
    validate_family,
)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Family sections: only the one of model.family may be given, and only it is recorded.
    spade: SpadeConfig = field(default_factory=SpadeConfig)
    oasis: OasisConfig = field(default_factory=OasisConfig)
    exemplar: ExemplarConfig = field(default_factory=ExemplarConfig)
    cocosnet: CocosnetConfig = field(default_factory=CocosnetConfig)
    cocosnet2: Cocosnet2Config = field(default_factory=Cocosnet2Config)
    unite: UniteConfig = field(default_factory=UniteConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    esrgan: EsrganConfig = field(default_factory=EsrganConfig)
    rdn: RdnConfig = field(default_factory=RdnConfig)
    srresnet: SrresnetConfig = field(default_factory=SrresnetConfig)
    cyclegan: CycleganConfig = field(default_factory=CycleganConfig)
    ugatit: UgatitConfig = field(default_factory=UgatitConfig)
    pdgan: PdganConfig = field(default_factory=PdganConfig)


FAMILY_SECTIONS = tuple(SECTION_FAMILIES)


def _active(section: str, family: str) -> bool:
    """Whether model.family reads this section (every family reads the shared ones)."""
    return section not in SECTION_FAMILIES or family in SECTION_FAMILIES[section]

FID_DIMS = (64, 192, 768, 2048)  # pytorch-fid's --dims (backbones.inception.DIMS), torch-free
_CHOICES: dict[str, tuple[object, ...]] = {
    "data.source": ("scenes", "folder"),
    "model.family": FAMILY_NAMES,
    "model.D": ("patchgan", "sesame"),
    "optim.precision": ("fp32", "bf16"),
    "eval.dims": FID_DIMS,
    "eval.objective": tuple(objectives.MODES),
    "eval.mode": ("", "min", "max"),
    **FAMILY_CHOICES,
}
# Measured at 2 workers (tests/test_multiworker.py): ZeRO 0, 1 and 2 train two-engine GANs and
# match one worker to 1e-5, with G's step through D's raw module (so DeepSpeed #4923, D's loss
# backpropagating through G's engine under ZeRO-2, does not arise). ZeRO-3 partitions the
# weights themselves and is broken in DeepSpeed's own GAN example (DeepSpeedExamples #193).
_ZERO_STAGES = (0, 1, 2)
_DIFFAUG = ("color", "translation", "cutout")
_NONNEGATIVE_PREFIXES = ("loss.lambda_", *(f"{family}.lambda_" for family in FAMILY_NAMES))


def no_effect(cfg: Config, key: str) -> str | None:
    """Why a dotted key does nothing in this config, or None when it does something."""
    d = cfg.data
    if key == "data.root" and d.source == "scenes":
        return "data.source is 'scenes' (the built-in set); set data.source: folder to read data.root"
    if key in ("data.n_train", "data.seed") and d.source == "folder":
        return "data.source is 'folder' (these size and seed the built-in scenes)"
    if key.startswith("eval."):
        return objectives.no_effect(cfg.eval.objective, key.removeprefix("eval."))
    section = key.partition(".")[0]
    if not _active(section, cfg.model.family):
        return f"model.family is {cfg.model.family!r}"
    return family_no_effect(cfg, key)


def shape_keys(flat: Mapping[str, Any]) -> list[str]:
    """The keys of a flat config that shape the nets and the data they take: the model section,
    the image size, the labels, the SR scale and the family's whole-number, boolean and named
    choices. The family's floats are loss weights and thresholds, which PBT may move and an
    exploit may bring from another trial."""
    family = flat["model.family"]
    return [k for k, v in flat.items()
            if k.startswith("model.") or k in ("data.size_px", "data.num_classes", "sr.scale")
            or (k.startswith(f"{family}.") and not isinstance(v, float))]


def _defaults() -> dict[str, Any]:
    return {f"{sec}.{k}": v for sec, values in dataclasses.asdict(Config()).items() for k, v in values.items()}


def _section_types() -> dict[str, type]:
    return {f.name: typing.get_type_hints(Config)[f.name] for f in dataclasses.fields(Config)}


def _suggest(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"


def _coerce(where: str, key: str, value: Any, typ: Any) -> Any:
    """Check one value against its field type; ints are accepted for floats."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the scalar types above are used
        raise TypeError(f"unsupported config type {typ}")
    raise GantuneError(
        f"{where}: {key} must be {typ.__name__}, got {type(value).__name__} {value!r}"
    )


def from_dict(raw: dict[str, Any], where: str = "config") -> Config:
    """Build and validate a Config from nested dicts (a parsed YAML file)."""
    if not isinstance(raw, dict):
        raise GantuneError(f"{where}: expected a mapping of sections, got {type(raw).__name__}")
    sections = _section_types()
    model = raw.get("model")
    family = model.get("family", ModelConfig.family) if isinstance(model, dict) else ModelConfig.family
    built: dict[str, Any] = {}
    for name, section in raw.items():
        if name not in sections:
            raise GantuneError(f"{where}: unknown section {name!r}" + _suggest(name, list(sections)))
        if name in sections and not _active(name, family):
            raise GantuneError(f"{where}: section {name!r} is for model.family {' or '.join(SECTION_FAMILIES[name])}, "
                               f"but model.family is {family!r}")
        cls = sections[name]
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise GantuneError(f"{where}: section {name!r} must be a mapping")
        hints = typing.get_type_hints(cls)
        known = list(hints)
        values = {}
        for key, value in section.items():
            if key not in hints:
                raise GantuneError(
                    f"{where}: unknown key {name}.{key}" + _suggest(str(key), known)
                )
            values[key] = _coerce(where, f"{name}.{key}", value, hints[key])
        built[name] = cls(**values)
    cfg = Config(**built)
    validate(cfg, where)
    return cfg


def validate(cfg: Config, where: str = "config") -> None:
    """Cross-field and range checks, once, before anything is built."""
    flat = to_flat(cfg)
    for key, choices in _CHOICES.items():
        if key in flat and flat[key] not in choices:
            raise GantuneError(f"{where}: {key} must be one of {list(choices)}, got {flat[key]!r}")
    for key, value in flat.items():
        if key.startswith(_NONNEGATIVE_PREFIXES) and value < 0:
            raise GantuneError(f"{where}: {key} must be >= 0, got {value}")
    positive = ["data.size_px", "data.num_classes", "data.n_train", "data.n_eval",
                "model.ngf", "model.ndf", "model.num_D", "model.n_layers_D",
                "optim.lr_G", "optim.lr_D", "optim.adam_eps", "optim.batch_size", "train.steps",
                "train.log_every", "train.image_every", "train.skip_limit", "eval.every", "eval.batch_size",
                "loss.cx_h", *FAMILY_POSITIVE]
    for key in (k for k in positive if k in flat):
        if not flat[key] > 0:
            raise GantuneError(f"{where}: {key} must be > 0, got {flat[key]}")
    if cfg.train.rollback_limit < 0:
        raise GantuneError(f"{where}: train.rollback_limit must be >= 0, got {cfg.train.rollback_limit}")
    if not (0 <= cfg.optim.beta1 < 1 and 0 <= cfg.optim.beta2 < 1):
        raise GantuneError(f"{where}: optim.beta1 and optim.beta2 must be in [0, 1)")
    if cfg.optim.zero_stage not in _ZERO_STAGES:
        raise GantuneError(
            f"{where}: optim.zero_stage must be one of {list(_ZERO_STAGES)}, got "
            f"{cfg.optim.zero_stage} (ZeRO-3 breaks two-engine GAN training: DeepSpeedExamples issue #193)"
        )
    r = cfg.train.d_ratio
    if not r > 0 or (abs(r - round(r)) > 1e-9 if r >= 1 else abs(1 / r - round(1 / r)) > 1e-6):
        raise GantuneError(f"{where}: train.d_ratio must be a positive integer or the inverse of one "
                           f"(2: two D updates per G update; 0.5: one every second step), got {r}")
    if cfg.optim.weight_decay < 0:
        raise GantuneError(f"{where}: optim.weight_decay must be >= 0, got {cfg.optim.weight_decay}")
    if cfg.train.ema_kimg < 0 or cfg.train.ema_rampup < 0:
        raise GantuneError(f"{where}: train.ema_kimg and train.ema_rampup must be >= 0")
    policies = [p for p in cfg.train.diffaug.split(",") if p.strip()]
    for p in policies:
        if p.strip() not in _DIFFAUG:
            raise GantuneError(
                f"{where}: train.diffaug has unknown policy {p.strip()!r}; expected a comma "
                f"list of {', '.join(_DIFFAUG)}"
            )
    e = cfg.eval
    problem = objectives.check(e.objective, e.mode, e.crop_border, cfg.data.size_px)
    if problem:
        raise GantuneError(f"{where}: {problem}")
    if cfg.data.source == "folder" and not cfg.data.root:
        raise GantuneError(f"{where}: data.root is required when data.source is 'folder'")
    if cfg.data.source == "folder" and not Path(cfg.data.root).is_dir():
        raise GantuneError(f"{where}: data.root={cfg.data.root!r} is not a folder (data.source is 'folder')")
    if cfg.data.source == "scenes" and cfg.data.n_train < cfg.optim.batch_size:
        raise GantuneError(f"{where}: data.n_train={cfg.data.n_train} scenes are fewer than one batch "
                           f"(optim.batch_size={cfg.optim.batch_size})")
    if not 32 <= cfg.data.size_px <= 512:
        raise GantuneError(f"{where}: data.size_px must be in 32..512, got {cfg.data.size_px}")
    validate_family(cfg, where)
    # A key set away from its default where it does nothing is a mistake, never ignored.
    defaults = _defaults()
    for key, value in flat.items():
        reason = no_effect(cfg, key) if value != defaults[key] else None
        if reason is not None:
            raise GantuneError(f"{where}: {key}={value!r} has no effect: {reason}")


def to_flat(cfg: Config) -> dict[str, Any]:
    """{"loss.lambda_cx": 1.0, ...}: the dotted keys that search spaces and --set use."""
    return {f"{section}.{key}": value for section, values in to_dict(cfg).items() for key, value in values.items()}


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """The config as nested dicts, with the active family's section only."""
    return {name: values for name, values in dataclasses.asdict(cfg).items() if _active(name, cfg.model.family)}


def with_values(cfg: Config, values: dict[str, Any], where: str = "overrides") -> Config:
    """A copy of cfg with dotted keys replaced, validated like a file."""
    raw = to_dict(cfg)
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if section in FAMILY_SECTIONS and section not in raw:  # another family's key: from_dict judges
            raw[section] = dataclasses.asdict(getattr(cfg, section))
        if section not in raw or not key:
            raise GantuneError(
                f"{where}: {dotted!r} is not a dotted config key" + _suggest(dotted, list(to_flat(cfg)))
            )
        if key not in raw[section]:
            raise GantuneError(
                f"{where}: unknown key {dotted}" + _suggest(dotted, list(to_flat(cfg)))
            )
        raw[section][key] = value
    # Switching model.family leaves the old family's section behind, unless it was set here.
    for section in FAMILY_SECTIONS:
        if not _active(section, raw["model"]["family"]) and not any(k.startswith(section + ".") for k in values):
            raw.pop(section, None)
    return from_dict(raw, where)


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML scalars (1e-4, true, hinge)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise GantuneError(f"--set {item!r}: expected key=value, e.g. loss.lambda_cx=2.0")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            values[key.strip()] = text
    return values


def read_yaml(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GantuneError(f"{path}: no such file") from None
    except OSError as e:
        raise GantuneError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise GantuneError(f"{path}: not valid YAML{at}") from None


def load(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config file, apply dotted overrides, validate."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    cfg = from_dict(raw, str(path))
    return with_values(cfg, overrides, f"{path} with overrides") if overrides else cfg


def write(cfg: Config, path: str | os.PathLike[str]) -> None:
    """Write the resolved config atomically, as YAML a user can pass back to `gantune train`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
        os.replace(tmp, path)
    except OSError as e:  # a full disk fails at the flush, an error without a file name
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None

