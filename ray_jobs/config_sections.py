"""The shared sections of the training config (config.py builds and checks the whole): data,
model, loss, optim, train and eval. The families' own sections are in family_config.py."""

from __future__ import annotations

from dataclasses import dataclass

from metrics import objectives


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
    # Non-finite steps: one whose loss or gradient is NaN or inf is skipped; after skip_limit
    # in a row the trial rolls back to its last checkpoint with halved learning rates; after
    # rollback_limit rollbacks it gives up and reports the worst score (PBT replaces it).
    skip_limit: int = 10
    rollback_limit: int = 3

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
