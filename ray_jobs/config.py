"""The training config: YAML -> frozen dataclasses, validated once.

One section per concern (data, model, loss, optim, train, eval), plus one per generator family
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
from typing import Any

import yaml

from gantune.errors import GantuneError
from metrics import objectives
from ray_jobs.family_config import (
    EXEMPLAR_FAMILIES,
    FAMILY_NAMES,
    SECTION_FAMILIES,
    SR_FAMILIES,
    UNPAIRED_FAMILIES,
    Cocosnet2Config,
    CocosnetConfig,
    CycleganConfig,
    EsrganConfig,
    ExemplarConfig,
    OasisConfig,
    RdnConfig,
    SpadeConfig,
    SRConfig,
    SrresnetConfig,
    UgatitConfig,
    UniteConfig,
)


@dataclass(frozen=True)
class DataConfig:
    source: str = "scenes"  # scenes: built-in procedural set; folder: the family's layout under root (imgs/ + labels/)
    root: str = ""  # folder source: the dataset root
    size_px: int = 64  # training resolution
    num_classes: int = 29  # label channels (the landscape classes by default)
    n_train: int = 512  # scenes source: number of training scenes
    n_eval: int = 128  # fixed evaluation set for the objective
    flip: bool = True  # random horizontal flips of training pairs
    seed: int = 0  # scene generator seed
    num_workers: int = 0  # DataLoader worker processes


@dataclass(frozen=True)
class ModelConfig:
    family: str = "spade"  # the generator family (ray_jobs/families); its keys: section <family>
    ngf: int = 16  # generator base width (SPADE's default is 64)
    D: str = "patchgan"  # label-to-image D: patchgan (SPADE's multi-scale) | sesame (two-stream)
    ndf: int = 16  # discriminator base width
    num_D: int = 2  # multi-scale D: scales
    n_layers_D: int = 3  # multi-scale D: layers per scale


@dataclass(frozen=True)
class LossConfig:
    """The generator terms every family can add (its own losses are in its section)."""

    lambda_cx: float = 0.0  # contextual loss
    lambda_dists: float = 0.0  # DISTS
    lambda_ffl: float = 0.0  # focal frequency loss
    cx_h: float = 0.1  # contextual loss bandwidth
    ffl_alpha: float = 1.0  # focal frequency loss spectrum weight exponent
    random_backbones: bool = False  # VGG16/VGG19 without official weights (demo and tests)
    weights_dir: str = ""  # folder with pretrained files, before the torch hub cache


@dataclass(frozen=True)
class OptimConfig:
    lr_G: float = 1e-4  # TTUR: D learns faster than G, as in SPADE
    lr_D: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    adam_eps: float = 1e-8  # Adam's epsilon
    weight_decay: float = 0.0  # Adam's L2 weight decay, every net (U-GAT-IT: 1e-4)
    batch_size: int = 4  # global batch, split evenly among a trial's workers
    zero_stage: int = 0  # DeepSpeed ZeRO stage: 0, 1 or 2
    precision: str = "fp32"  # fp32 | bf16 (GPU)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # total G+D steps
    ema_kimg: float = 0.5  # half-life of the G_ema weights, in thousands of images
    ema_rampup: float = 0.05  # EMA half-life ramp-up ratio (StyleGAN2-ADA); 0 disables it
    diffaug: str = ""  # DiffAugment policy: comma list of color, translation, cutout
    seed: int = 0
    log_every: int = 10  # steps between scalar logs
    image_every: int = 100  # steps between image grids
    # D updates per G update: 2 runs D's phases twice a step (on the same batch), 0.5 every
    # second step. An integer or the inverse of one.
    d_ratio: float = 1.0

    @property
    def d_schedule(self) -> tuple[int, int]:
        """(every, repeats) of D's phases: d_ratio 2 -> (1, 2), 0.5 -> (2, 1)."""
        if self.d_ratio >= 1:
            return 1, round(self.d_ratio)
        return round(1 / self.d_ratio), 1


@dataclass(frozen=True)
class EvalConfig:
    every: int = 100  # steps between evaluations (= checkpoints = PBT reports)
    batch_size: int = 16
    # What the search optimises (metrics/objectives.py): fid or kid on Inception features,
    # minimised; psnr or ssim of G_ema's output against the paired real photo, maximised.
    objective: str = "fid"
    mode: str = ""  # min or max; empty: the objective's own. A contrary mode is refused.
    random_weights: bool = False  # random Inception stand-in: reported as fd_random_inception
    dims: int = 2048  # Inception feature layer, as pytorch-fid's --dims; 2048 (pool3) is FID
    seed: int = 0  # fixed noise for G_ema at evaluation
    weights_dir: str = ""
    cache_dir: str = ""  # real-statistics cache (default ~/.cache/gantune/fid_stats)
    y_channel: bool = False  # psnr/ssim on BasicSR's Y channel (BT.601, 16-235) instead of RGB
    crop_border: int = 0  # psnr/ssim: pixels cut from each edge first, as BasicSR's crop_border

    @property
    def objective_key(self) -> str:
        """`metric/<name>`: the key of every report, progress.csv column and summary."""
        return "metric/" + objectives.metric_name(self.objective, random_weights=self.random_weights,
                                                  dims=self.dims, y_channel=self.y_channel)

    @property
    def objective_mode(self) -> str:
        return self.mode or objectives.MODES[self.objective]


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


FAMILY_SECTIONS = tuple(SECTION_FAMILIES)


def _active(section: str, family: str) -> bool:
    """Whether model.family reads this section (every family reads the shared ones)."""
    return section not in SECTION_FAMILIES or family in SECTION_FAMILIES[section]

FID_DIMS = (64, 192, 768, 2048)  # pytorch-fid's --dims (backbones.inception.DIMS), torch-free
_CHOICES: dict[str, tuple[object, ...]] = {
    "data.source": ("scenes", "folder"),
    "model.family": FAMILY_NAMES,
    "exemplar.train_retrieval": ("random", "iou", "vgg"),
    "exemplar.eval_retrieval": ("random", "iou", "vgg"),
    "model.D": ("patchgan", "sesame"),
    "spade.num_upsampling_layers": ("normal", "more", "most"),
    "spade.param_free_norm": ("batch", "instance"),
    "oasis.param_free_norm": ("batch", "instance"),
    "spade.gan_mode": ("hinge", "ls", "original"),
    "optim.precision": ("fp32", "bf16"),
    "eval.dims": FID_DIMS,
    "eval.objective": tuple(objectives.MODES),
    "sr.scale": (2, 4),
    "sr.degradation": ("bicubic", "realistic"),
    "ugatit.upsample": ("resize", "deconv"),
    "eval.mode": ("", "min", "max"),
}
# Measured at 2 workers (tests/test_multiworker.py): ZeRO 0, 1 and 2 train two-engine GANs and
# match one worker to 1e-5, with G's step through D's raw module (so DeepSpeed #4923, D's loss
# backpropagating through G's engine under ZeRO-2, does not arise). ZeRO-3 partitions the
# weights themselves and is broken in DeepSpeed's own GAN example (DeepSpeedExamples #193).
_ZERO_STAGES = (0, 1, 2)
_DIFFAUG = ("color", "translation", "cutout")
_NONNEGATIVE_PREFIXES = ("loss.lambda_", *(f"{family}.lambda_" for family in FAMILY_NAMES))
# Shared keys a family has no use for: its own D, its own adversarial loss.
_FAMILY_IGNORES = {
    "spade": (),
    "oasis": ("model.D", "model.num_D", "model.n_layers_D", "train.diffaug"),
    **{family: ("train.diffaug",) for family in EXEMPLAR_FAMILIES},
    # Super-resolution: widths in their own sections, no label map, no augmentation of pairs.
    **{family: ("model.ngf", "model.ndf", "model.D", "model.num_D", "model.n_layers_D", "train.diffaug",
                "data.num_classes") + (("optim.lr_D",) if family != "esrgan" else ())
       for family in SR_FAMILIES},
    # Unpaired translation: no label map; one PatchGAN per domain.
    "cyclegan": ("model.D", "model.num_D", "train.diffaug", "data.num_classes"),
    "ugatit": ("model.D", "model.num_D", "model.n_layers_D", "train.diffaug", "data.num_classes"),
}
_REALISTIC_KEYS = ("sr.blur_sigma_max", "sr.noise_sigma_max", "sr.jpeg_quality_min", "sr.noise_root")


def no_effect(cfg: Config, key: str) -> str | None:
    """Why a dotted key does nothing in this config, or None when it does something."""
    d = cfg.data
    if key == "data.root" and d.source == "scenes":
        return "data.source is 'scenes' (the built-in set); set data.source: folder to read data.root"
    if key in ("data.n_train", "data.seed") and d.source == "folder":
        return "data.source is 'folder' (these size and seed the built-in scenes)"
    if key == "train.d_ratio" and cfg.model.family in ("rdn", "srresnet"):
        return f"model.family {cfg.model.family!r} has no D"
    if key in _REALISTIC_KEYS and cfg.sr.degradation != "realistic":
        return "sr.degradation is 'bicubic' (these shape the realistic degradation)"
    if key in ("spade.z_dim", "spade.lambda_kld") and not cfg.spade.use_vae:
        return "spade.use_vae is false (no style encoder)"
    objective = cfg.eval.objective
    if key in ("eval.y_channel", "eval.crop_border") and objective not in objectives.PAIRED_OBJECTIVES:
        return f"eval.objective is {objective!r} (they shape psnr and ssim)"
    if key in ("eval.random_weights", "eval.dims", "eval.weights_dir", "eval.cache_dir") and objective not in objectives.INCEPTION_OBJECTIVES:
        return f"eval.objective is {objective!r} (no Inception network)"
    section = key.partition(".")[0]
    if not _active(section, cfg.model.family):
        return f"model.family is {cfg.model.family!r}"
    if key in _FAMILY_IGNORES[cfg.model.family]:
        return f"model.family {cfg.model.family!r} does not use it"
    return None


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
                "model.ngf", "model.ndf", "model.num_D", "model.n_layers_D", "spade.z_dim",
                "oasis.num_res_blocks", "oasis.z_dim", "oasis.spade_ks", "exemplar.top_k",
                "cocosnet.warp_stride", "cocosnet2.nef", "cocosnet2.iteration_count", "unite.nef",
                "esrgan.num_feat", "esrgan.num_block", "esrgan.num_grow_ch", "esrgan.num_feat_d",
                "rdn.num_feat", "rdn.num_block", "rdn.num_conv", "rdn.num_grow_ch",
                "srresnet.num_feat", "srresnet.num_block", "sr.blur_sigma_max", "sr.noise_sigma_max",
                "cyclegan.n_blocks", "ugatit.n_layers_global", "ugatit.n_layers_local",
                "optim.lr_G", "optim.lr_D", "optim.adam_eps", "optim.batch_size", "train.steps",
                "train.log_every", "train.image_every", "eval.every", "eval.batch_size",
                "loss.cx_h"]
    for key in (k for k in positive if k in flat):
        if not flat[key] > 0:
            raise GantuneError(f"{where}: {key} must be > 0, got {flat[key]}")
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
    if e.mode and e.mode != objectives.MODES[e.objective]:
        raise GantuneError(f"{where}: eval.mode={e.mode!r} contradicts eval.objective={e.objective!r}, which is "
                           f"better {'lower' if objectives.MODES[e.objective] == 'min' else 'higher'}; "
                           f"leave eval.mode out or set {objectives.MODES[e.objective]!r}")
    if not 0 <= 2 * e.crop_border < cfg.data.size_px:
        raise GantuneError(f"{where}: eval.crop_border must be >= 0 and leave pixels of data.size_px="
                           f"{cfg.data.size_px}, got {e.crop_border}")
    if cfg.data.source == "folder" and not cfg.data.root:
        raise GantuneError(f"{where}: data.root is required when data.source is 'folder'")
    if cfg.data.source == "scenes" and cfg.data.n_train < cfg.optim.batch_size:
        raise GantuneError(f"{where}: data.n_train={cfg.data.n_train} scenes are fewer than one batch "
                           f"(optim.batch_size={cfg.optim.batch_size})")
    if not 32 <= cfg.data.size_px <= 512:
        raise GantuneError(f"{where}: data.size_px must be in 32..512, got {cfg.data.size_px}")
    if cfg.model.family in EXEMPLAR_FAMILIES:
        if cfg.data.size_px % 32 or cfg.data.size_px < 64:
            raise GantuneError(f"{where}: model.family {cfg.model.family} needs data.size_px a multiple of 32 and at "
                               f"least 64 (its G starts from a 2x2 grid), got {cfg.data.size_px}")
        if not 0 <= cfg.exemplar.self_ref_prob <= 1:
            raise GantuneError(f"{where}: exemplar.self_ref_prob must be in [0, 1], got {cfg.exemplar.self_ref_prob}")
        if cfg.unite.reach < 0:
            raise GantuneError(f"{where}: unite.reach must be >= 0 (0: balanced OT), got {cfg.unite.reach}")
    if cfg.model.family in SR_FAMILIES:
        sr = cfg.sr
        if cfg.data.size_px % sr.scale:
            raise GantuneError(f"{where}: data.size_px={cfg.data.size_px} (the high-resolution crop) must be a "
                               f"multiple of sr.scale={sr.scale}")
        size = cfg.data.size_px
        if cfg.model.family == "esrgan" and (size < 64 or size & (size - 1)):
            raise GantuneError(f"{where}: model.family esrgan needs data.size_px a power of two >= 64 (its VGG-style "
                               f"D reads the whole crop), got {size}")
        if not 0 < sr.jpeg_quality_min <= 95:
            raise GantuneError(f"{where}: sr.jpeg_quality_min must be in (0, 95], got {sr.jpeg_quality_min}")
        if sr.noise_root and not Path(sr.noise_root).is_dir():
            raise GantuneError(f"{where}: sr.noise_root={sr.noise_root!r} is not a folder")
        if cfg.esrgan.pretrain_steps < 0 or cfg.esrgan.d_stepper < 0:
            raise GantuneError(f"{where}: esrgan.pretrain_steps and esrgan.d_stepper must be >= 0")
    if cfg.model.family in UNPAIRED_FAMILIES:
        if cfg.data.size_px % 4:
            raise GantuneError(f"{where}: model.family {cfg.model.family} needs data.size_px a multiple of 4 "
                               f"(its G downsamples twice), got {cfg.data.size_px}")
        if cfg.cyclegan.pool_size < 0:
            raise GantuneError(f"{where}: cyclegan.pool_size must be >= 0, got {cfg.cyclegan.pool_size}")
        if cfg.ugatit.n_blocks < 0:
            raise GantuneError(f"{where}: ugatit.n_blocks must be >= 0, got {cfg.ugatit.n_blocks}")
        deepest = max(cfg.ugatit.n_layers_global, cfg.ugatit.n_layers_local)
        if cfg.model.family == "ugatit" and cfg.data.size_px < 2**deepest:
            raise GantuneError(f"{where}: model.family ugatit needs data.size_px >= 2**{deepest} for its "
                               f"{deepest}-layer D, got {cfg.data.size_px}")
    if cfg.model.family == "oasis":
        blocks = cfg.oasis.num_res_blocks
        if blocks < 2 or cfg.data.size_px % 2**blocks:
            raise GantuneError(f"{where}: oasis.num_res_blocks={blocks} needs data.size_px a multiple of "
                               f"2**{blocks} and at least 2 blocks, got data.size_px={cfg.data.size_px}")
        if cfg.oasis.spade_ks % 2 == 0:
            raise GantuneError(f"{where}: oasis.spade_ks must be odd (an even kernel shifts the map), got {cfg.oasis.spade_ks}")
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
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)

