"""Frechet Inception Distance: pool3 features, cached real statistics, the Frechet distance.

`FidEvaluator` is built once per run with the real evaluation set and then scores batches of
generated images; `fid_between_folders` backs `gantune fid DIR_A DIR_B`. Real statistics are
cached under a hash of their inputs (the files or an explicit dataset key, the weights, the
resize, the count) and written atomically, as in NVlabs/stylegan3's metrics.

With official weights the metric is `fid`. With randomly initialised weights (tests, offline
demo) the batch norms are first recalibrated on the real images, and the metric is named
`fd_random_inception`: a Frechet distance on those features, not FID, and not comparable to it.
A feature layer other than pool3 (`dims`, as pytorch-fid's `--dims`) adds `_dims<N>` to the name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from backbones.inception import (
    FEATURE_DIM,
    INPUT_SIZE_PX,
    batch_norms,
    build_fid_inception,
    recalibrate_batch_norm,
)
from gantune.errors import GantuneError
from metrics.image_folder import ImageFolderBatches, files_key, list_images
from metrics.kid import kernel_inception_distance
from metrics.objectives import inception_metric_name
from metrics.stats_cache import cache_path, default_cache_dir, load_cached, save_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when anything that changes the statistics changes
RANGE_TOLERANCE = 1e-3  # images must lie in [0, 1]; this absorbs rounding, not a [-1, 1] mix-up

Images = Tensor | Iterable[Tensor]  # (N, 3, H, W) in [0, 1], or batches of that


def metric_name(random_weights: bool, dims: int = FEATURE_DIM) -> str:
    """`fid` for the official Inception's pool3; `fd_random_inception` for the random stand-in;
    `_dims<N>` appended for another feature layer (not comparable to pool3 values)."""
    return inception_metric_name("fid", random_weights, dims)


def random_weights_note(real_set: str, dims: int = FEATURE_DIM, statistic: str = "fid") -> str:
    distance, official = {"fid": ("a Frechet", "FID"), "kid": ("a kernel (KID's MMD)", "KID")}[statistic]
    return (
        f"{inception_metric_name(statistic, True, dims)} is {distance} distance on randomly initialised "
        f"Inception features ({dims}-d), batch norm recalibrated on {real_set}; it is NOT {official} and not "
        f"comparable to {official} values."
    )


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' is CUDA when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise GantuneError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GantuneError(f"device {device!r}: CUDA is not available here; use --device cpu")
    return dev


def _batches(images: Images, batch_size: int, what: str) -> Iterator[Tensor]:
    """Chunks of at most `batch_size` images, checked for shape and the [0, 1] range."""
    for batch in [images] if isinstance(images, Tensor) else images:
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise GantuneError(
                f"{what}: expected images of shape (N, 3, H, W), got {tuple(batch.shape)}"
            )
        lo, hi = float(batch.min()), float(batch.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise GantuneError(
                f"{what}: expected pixel values in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                "map a generator's [-1, 1] output with (x + 1) / 2"
            )
        yield from batch.split(batch_size)


def _count(images: Images) -> int | None:
    if isinstance(images, Tensor):
        return images.shape[0]
    return len(images) if isinstance(images, ImageFolderBatches) else None


@torch.no_grad()
def extract_features(
    net: nn.Module,
    images: Images,
    *,
    batch_size: int = 50,
    device: str | torch.device = "auto",
    desc: str = "features",
    progress: bool = True,
) -> Tensor:
    """Features (N, D) in float64 on the CPU, the net in eval mode, with a progress bar."""
    dev = resolve_device(device)
    net.eval().to(dev)
    chunks: list[Tensor] = []
    with tqdm(
        total=_count(images), desc=desc, unit="img", leave=False, disable=not progress
    ) as bar:
        for batch in _batches(images, batch_size, desc):
            chunks.append(net(batch.to(dev, torch.float32)).to("cpu", torch.float64))
            bar.update(batch.shape[0])
    if not chunks:
        raise GantuneError(f"{desc}: no images")
    return torch.cat(chunks)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (as np.cov(rowvar=False)) in float64."""
    f = torch.as_tensor(features, dtype=torch.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise GantuneError(f"features: expected (N >= 2, D), got {tuple(f.shape)}")
    mu = f.mean(dim=0)
    centred = f - mu
    sigma = centred.T @ centred / (f.shape[0] - 1)
    return mu.numpy(), sigma.numpy()


def _sqrt_psd(sigma: Tensor) -> Tensor:
    """Symmetric square root of a covariance; tiny negative eigenvalues are rounding, so 0."""
    w, v = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def _trace_sqrt_product(sqrt_sigma1: Tensor, sigma2: Tensor) -> float:
    # Tr sqrt(s1 s2) = Tr sqrt(sqrt(s1) s2 sqrt(s1)): similar matrices, and the right one is
    # symmetric PSD, so eigh applies where scipy's sqrtm needs a general Schur decomposition.
    m = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    return float(torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum())


def _as64(x: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def frechet_distance(
    mu1: np.ndarray | Tensor,
    sigma1: np.ndarray | Tensor,
    mu2: np.ndarray | Tensor,
    sigma2: np.ndarray | Tensor,
) -> float:
    """||mu1 - mu2||^2 + Tr(s1) + Tr(s2) - 2 Tr((sqrt(s1) s2 sqrt(s1))^(1/2)), in float64."""
    m1, s1, m2, s2 = _as64(mu1), _as64(sigma1), _as64(mu2), _as64(sigma2)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.shape[0],) * 2:
        raise GantuneError(
            f"frechet_distance: shapes do not match: mu {tuple(m1.shape)} vs {tuple(m2.shape)}, "
            f"sigma {tuple(s1.shape)} vs {tuple(s2.shape)}"
        )
    return _frechet(m1, s1, _sqrt_psd(s1), m2, s2)


def _frechet(
    mu1: Tensor, sigma1: Tensor, sqrt_sigma1: Tensor, mu2: Tensor, sigma2: Tensor
) -> float:
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace()) - 2 * _trace_sqrt_product(
        sqrt_sigma1, sigma2
    )


# ---- Cached real statistics -------------------------------------------------------------------


# ---- Evaluator -------------------------------------------------------------------------------


class FidEvaluator:
    """Built once with the real set; `evaluator(fake_images)` then returns the metric.

    real: (N, 3, H, W) in [0, 1], or a re-iterable of such batches (a list, a DataLoader,
        ImageFolderBatches): the random stand-in reads it twice (recalibration, features).
    dataset_key: identifies the real images, count included (e.g. "scenes-seed0-n300-64px";
        folders use a hash of their files' names, sizes and mtimes) for the statistics cache;
        None computes the statistics without caching.
    feature_net: injected extractor (e.g. a tiny net in tests), used as is: images in [0, 1] ->
        (N, D). Its metric is `fd_injected_features`; caching needs its `weights_id` attribute.

    statistic: "fid" (Frechet distance to the cached mean and covariance) or "kid" (KID's
    polynomial MMD, metrics/kid.py, to the cached real features themselves; `kd_...` on the
    stand-in). The result is {"metric/<name>": value, "metric/official_inception": bool}.
    """

    def __init__(
        self,
        real: Images,
        *,
        dataset_key: str | None,
        random_weights: bool = False,  # random Inception + batch-norm recalibration on `real`
        dims: int = FEATURE_DIM,  # feature layer, as pytorch-fid's --dims (2048 = pool3 = FID)
        seed: int = 0,  # seed of the random weights
        weights_dir: str | os.PathLike[str] | None = None,  # folder of the official file
        batch_size: int = 50,  # images per forward pass
        device: str | torch.device = "auto",  # auto = cuda if available, else cpu
        cache_dir: str | os.PathLike[str] | None = None,  # None = default_cache_dir()
        use_cache: bool = True,
        progress: bool = True,  # tqdm bars during feature extraction
        real_set_name: str = "the real images",  # how the note names the recalibration set
        feature_net: nn.Module | None = None,
        statistic: str = "fid",
    ) -> None:
        if not isinstance(real, Tensor) and iter(real) is real:
            raise GantuneError(
                "real: expected a tensor or a re-iterable of batches, not an iterator"
            )
        if batch_size < 1:
            raise GantuneError(f"batch_size: expected a positive integer, got {batch_size}")
        if statistic not in ("fid", "kid"):
            raise GantuneError(f"statistic: expected 'fid' or 'kid', got {statistic!r}")
        self.statistic = statistic
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.progress = progress

        # Build the feature network.
        if feature_net is not None:
            self.net: nn.Module = feature_net
            self.metric, self.official, self.note = f"{statistic[0]}d_injected_features", False, ""
            weights_id = getattr(feature_net, "weights_id", None)
            recalibrate = False
        else:
            self.net = build_fid_inception(
                random_weights=random_weights, seed=seed, weights_dir=weights_dir, dims=dims
            )
            self.metric, self.official = inception_metric_name(statistic, random_weights, dims), not random_weights
            self.note = random_weights_note(real_set_name, dims, statistic) if random_weights else ""
            weights_id = self.net.weights_id
            recalibrate = random_weights
        self.metric_key = f"metric/{self.metric}"
        self.net.eval().to(self.device)

        # Real statistics: from the cache, or recalibrate (stand-in only), extract and save.
        settings: dict[str, object] = {
            "version": CACHE_VERSION,
            "metric": self.metric,
            "dataset": dataset_key,
            "count": _count(real),
            "weights": weights_id,
            "dims": getattr(self.net, "dims", None),
            "input": f"[0,1] bilinear {INPUT_SIZE_PX}px",
            "recalibration_batch": batch_size if recalibrate else None,
        }
        cacheable = use_cache and dataset_key is not None and weights_id is not None
        path = cache_path(Path(cache_dir) if cache_dir else default_cache_dir(), settings)
        cached = load_cached(path) if cacheable else None
        if cached is not None and recalibrate and not self._load_bn_buffers(cached):
            log.warning("statistics cache %s lacks the batch-norm buffers; recomputing", path)
            cached = None
        if cached is not None and statistic == "kid" and "features" not in cached:
            log.warning("statistics cache %s lacks the real features KID needs; recomputing", path)
            cached = None
        self.real_features: Tensor | None = None
        if cached is not None:
            log.info("real statistics from cache %s", path)
            mu, sigma = cached["mu"], cached["sigma"]
            self.n_real = int(cached["n"])
            if statistic == "kid":
                self.real_features = torch.from_numpy(cached["features"])
        else:
            if recalibrate:
                real_batches = _batches(real, batch_size, "real")
                recalibrate_batch_norm(self.net, real_batches, device=self.device)
            feats = self.features(real, desc="real")
            mu, sigma = feature_statistics(feats)
            self.n_real = feats.shape[0]
            if statistic == "kid":
                self.real_features = feats
            if cacheable:
                arrays = {"mu": mu, "sigma": sigma, "n": np.asarray(self.n_real)}
                if recalibrate:
                    arrays |= self._bn_buffers()
                if statistic == "kid":
                    arrays["features"] = feats.numpy()
                save_atomic(path, arrays)
                log.info("real statistics cached in %s", path)
        self.mu_real, self.sigma_real = _as64(mu), _as64(sigma)
        self._sqrt_sigma_real = _sqrt_psd(self.sigma_real)  # once per run, not per evaluation

    def features(self, images: Images, *, desc: str = "features") -> Tensor:
        return extract_features(
            self.net,
            images,
            batch_size=self.batch_size,
            device=self.device,
            desc=desc,
            progress=self.progress,
        )

    def distance(self, images: Images) -> tuple[float, int]:
        """The Frechet distance of `images` to the real statistics, and how many images."""
        feats = self.features(images, desc="fake")
        mu, sigma = feature_statistics(feats)
        value = _frechet(
            self.mu_real, self.sigma_real, self._sqrt_sigma_real, _as64(mu), _as64(sigma)
        )
        return value, feats.shape[0]

    def kernel_distance(self, images: Images) -> tuple[float, int]:
        """KID of `images` to the real features: the mean over 100 subsets of up to 1000 rows
        each, the defaults of KID's paper code and torch-fidelity."""
        if self.real_features is None:
            raise GantuneError("kernel_distance: this evaluator was built with statistic='fid'")
        feats = self.features(images, desc="fake")
        mean, _ = kernel_inception_distance(feats, self.real_features, num_subsets=100, subset_size=1000)
        return mean, feats.shape[0]

    def __call__(self, fake_images: Images) -> dict[str, float | bool]:
        score = self.kernel_distance if self.statistic == "kid" else self.distance
        value, _ = score(fake_images)
        return {self.metric_key: value, "metric/official_inception": self.official}

    def _bn_buffers(self) -> dict[str, np.ndarray]:
        return {
            f"bn/{name}": buf.detach().cpu().numpy()
            for name, buf in self.net.state_dict().items()
            if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
        }

    def _load_bn_buffers(self, cached: dict[str, np.ndarray]) -> bool:
        state = {k[3:]: torch.from_numpy(v) for k, v in cached.items() if k.startswith("bn/")}
        if len(state) != 3 * len(batch_norms(self.net)):
            return False
        self.net.load_state_dict(state, strict=False)
        return True


@dataclass(frozen=True)
class FidResult:
    metric: str  # fid, or fd_random_inception for the random stand-in
    value: float
    n_a: int
    n_b: int
    note: str  # empty for official weights; says "not FID" for random ones


def fid_between_folders(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    *,
    batch_size: int = 50,
    device: str | torch.device = "auto",
    random_weights: bool = False,
    dims: int = FEATURE_DIM,
    weights_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> FidResult:
    """FID of the images in `dir_b` against those in `dir_a` (the real set, whose statistics
    are cached). A folder without images of its own but with `imgs/` uses that."""
    files_a, files_b = list_images(dir_a), list_images(dir_b)
    evaluator = FidEvaluator(
        ImageFolderBatches(files_a, batch_size),
        dataset_key=files_key(files_a),
        random_weights=random_weights,
        dims=dims,
        seed=seed,
        weights_dir=weights_dir,
        batch_size=batch_size,
        device=device,
        cache_dir=cache_dir,
        use_cache=use_cache,
        progress=progress,
        real_set_name=str(dir_a),
    )
    value, n_b = evaluator.distance(ImageFolderBatches(files_b, batch_size))
    return FidResult(evaluator.metric, value, evaluator.n_real, n_b, evaluator.note)
