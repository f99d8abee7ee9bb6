"""FID Inception, Frechet distance, KID, the random stand-in and official weights.

The statistics cache, folders and `gantune fid` have their own files (test_fid_cache.py,
test_fid_folders.py); pytorch-fid's other feature layers are in test_fid_dims.py.

References: pytorch-fid 0.3.0 (network and Frechet distance) and piq (KID), fed the same random
weights or features. The Inception runs at 299 px (~25 images/s on 2 CPU cores), so image
counts stay small.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import pretrained
from backbones.inception import (
    FEATURE_DIM,
    FIDInception,
    build_fid_inception,
    recalibrate_batch_norm,
)
from gantune.errors import GantuneError
from metrics.fid import (
    FidEvaluator,
    feature_statistics,
    fid_between_folders,
    frechet_distance,
    metric_name,
)
from metrics.image_folder import ImageFolderBatches, list_images
from metrics.kid import kernel_inception_distance, polynomial_mmd2
from scene_images import box_blur, scenes, write_scenes

CPU = torch.device("cpu")
WEIGHTS_FILE = pretrained.WEIGHT_FILES["inception"].filename


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The statistics cache of the CLI and of default evaluators goes to this test's folder."""
    monkeypatch.delenv("GANTUNE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))


def reference_inception(
    state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (pool3 block) holding `state` instead of the downloaded file."""
    import pytorch_fid.inception as pfi

    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)
    return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def calibrated_random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights whose batch norms were recalibrated on scenes, so features are O(1)."""
    net = build_fid_inception(random_weights=True, seed=seed)
    recalibrate_batch_norm(net, [scenes(100, 6, 64)], device=CPU)
    return net.state_dict()


# ---- Network ---------------------------------------------------------------------------------


def test_state_dict_keys_and_shapes_match_pytorch_fid(monkeypatch: pytest.MonkeyPatch) -> None:
    ours = build_fid_inception(random_weights=True, seed=0).state_dict()
    import pytorch_fid.inception as pfi

    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: ours)
    theirs = pfi.fid_inception_v3().state_dict()  # strict load inside pytorch-fid
    assert sorted(theirs) == sorted(ours)
    assert {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in ours.items()}


@pytest.mark.parametrize("size_px", [64, 80])
def test_features_match_pytorch_fid(size_px: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Raw random features are ~1e-9 and would match any tiny output; recalibrated ones are O(1).
    state = calibrated_random_state()
    ours = FIDInception()
    ours.load_state_dict(state)
    ours.eval()
    ref = reference_inception(state, monkeypatch)
    x = torch.rand(4, 3, size_px, size_px, generator=torch.Generator().manual_seed(size_px))
    with torch.no_grad():
        a = ours(x)
        b = ref(x)[0].flatten(1)
    assert a.shape == (4, FEATURE_DIM)
    assert a.std() > 0.1
    assert (a - b).abs().max() < 1e-5


def test_random_weights_are_seeded_and_leave_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_fid_inception(random_weights=True, seed=5).state_dict()
    after = torch.rand(1)
    b = build_fid_inception(random_weights=True, seed=5).state_dict()
    c = build_fid_inception(random_weights=True, seed=6).state_dict()
    assert torch.equal(before, after)
    key = "Mixed_6b.branch7x7_2.conv.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


# ---- Frechet distance, statistics --------------------------------------------------------------


def _features(n: int, d: int, seed: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return rng.standard_normal((n, d)) @ (np.eye(d) + 0.5 * mix) + shift


def test_feature_statistics_match_numpy() -> None:
    f = _features(300, 64, 0, 0.3)
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu, f.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-10, atol=1e-12)


def test_frechet_distance_matches_pytorch_fid_64d() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    s1 = feature_statistics(_features(500, 64, 1, 0.0))
    s2 = feature_statistics(_features(500, 64, 2, 0.2))
    ours = frechet_distance(*s1, *s2)
    ref = calculate_frechet_distance(*s1, *s2)
    assert ours > 1.0
    assert ours == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(*s2, *s1) == pytest.approx(ours, rel=1e-9)
    assert abs(frechet_distance(*s1, *s1)) < 1e-8 * np.trace(s1[1])


@pytest.mark.slow
def test_frechet_distance_matches_pytorch_fid_2048d() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    s1 = feature_statistics(_features(2500, 2048, 3, 0.0))
    s2 = feature_statistics(_features(2500, 2048, 4, 0.05))
    ours = frechet_distance(*s1, *s2)
    assert ours == pytest.approx(calculate_frechet_distance(*s1, *s2), rel=1e-6)


def test_frechet_distance_rank_deficient_matches_nuclear_norm() -> None:
    # With fewer samples than dimensions (as in every small evaluation), Tr sqrt(s1 s2) equals
    # the nuclear norm of A B^T / sqrt((n1-1)(n2-1)) for the centred features A, B: an exact
    # reference where scipy's sqrtm of a singular product is unreliable.
    a, b = _features(40, 2048, 5, 0.0), _features(50, 2048, 6, 0.1)
    ac, bc = a - a.mean(0), b - b.mean(0)
    tr_sqrt = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt(39 * 49)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(a.mean(0), s1, b.mean(0), s2) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(GantuneError, match="shapes do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---- KID --------------------------------------------------------------------------------------


def _numpy_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Direct transcription of the paper's unbiased estimator, pair by pair over i != j."""
    m, d = x.shape
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_piq() -> None:
    import piq

    x = torch.from_numpy(_features(120, 64, 7, 0.0))
    y = torch.from_numpy(_features(100, 64, 8, 0.3))
    mean, std = kernel_inception_distance(x, y, num_subsets=5, subset_size=50, seed=3)
    torch.manual_seed(3)  # piq draws its subsets from the global generator, in the same order
    ref = piq.KID(average=True, n_subsets=5, subset_size=50)(x, y)
    assert mean > 0.05
    assert mean == pytest.approx(float(ref), rel=1e-10)
    assert std > 0


def test_kid_matches_direct_numpy_and_is_near_zero_for_one_distribution() -> None:
    x, y = _features(30, 16, 9, 0.0), _features(30, 16, 10, 0.5)
    assert polynomial_mmd2(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(
        _numpy_mmd2(x, y), rel=1e-10
    )
    # Subsets as large as the sets are permutations of them: every estimate is the full one.
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=1000)
    assert mean == pytest.approx(_numpy_mmd2(x, y), rel=1e-10) and std < 1e-12
    f = _features(800, 16, 11, 0.0)  # two halves of one sample: one distribution
    same, same_std = kernel_inception_distance(f[:400], f[400:], num_subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(f[:400], f[400:] + 0.5, num_subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3 and shifted > 10 * abs(same)


# ---- The random stand-in -----------------------------------------------------------------------


def test_metric_names() -> None:
    assert metric_name(random_weights=False) == "fid"
    assert metric_name(random_weights=True) == "fd_random_inception"


def test_random_inception_collapses_until_batch_norm_is_recalibrated() -> None:
    net = build_fid_inception(random_weights=True, seed=0)
    x = scenes(0, 4, 64)
    with torch.no_grad():
        raw = net(x)
    assert raw.std() < 1e-6
    assert recalibrate_batch_norm(net, [scenes(10, 8, 64)], device=CPU) == 8
    assert not net.training
    with torch.no_grad():
        assert net(x).std() > 0.1


@pytest.mark.slow
def test_stand_in_ranks_corruptions_of_scenes() -> None:
    # 512 px scenes: the net's resize to 299 turns the box blurs into ~1.75 and ~4 px. Random
    # features respond to texture at a pixel or two; blurring scenes of 299 px or less removes
    # it all, and both blurs then sit at about Tr(sigma_real) (measured: 131 vs 129 at 128 px).
    n, size = 40, 512
    evaluator = FidEvaluator(
        scenes(0, n, size),
        dataset_key=None,
        random_weights=True,
        batch_size=20,
        device="cpu",
        progress=False,
    )
    other = scenes(1000, n, size)
    noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(0))
    corrupted = [other, box_blur(other, 3), box_blur(other, 7), (other + 0.2 * noise).clamp(0, 1)]
    values = [evaluator(x)[evaluator.metric_key] for x in corrupted]
    assert values == sorted(values), values
    assert values[1] > 1.5 * values[0] and values[2] > 1.1 * values[1], values


# ---- Official weights: lookup, checksum, strict load ------------------------------------------


def _install_weights(
    state: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch, *, trust: bool = True
) -> Path:
    """Save `state` under the official file name in the hub cache; `trust` makes it the checksum."""
    path = pretrained.hub_checkpoint_dir() / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    if trust:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        wf = dataclasses.replace(pretrained.WEIGHT_FILES["inception"], sha256=sha)
        monkeypatch.setitem(pretrained.WEIGHT_FILES, "inception", wf)
    return path


def test_official_path_loads_strictly_and_matches_the_stand_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = write_scenes(tmp_path / "a", 0, 6, 48), write_scenes(tmp_path / "b", 50, 6, 48)
    kw = dict(batch_size=3, device="cpu", cache_dir=tmp_path / "cache", progress=False)
    stand_in = fid_between_folders(a, b, random_weights=True, **kw)
    # Install the stand-in's recalibrated weights as the "official" file: the official path must
    # load every tensor and not recalibrate, so it reproduces the stand-in's value as `fid`.
    calibrated = FidEvaluator(
        ImageFolderBatches(list_images(a), 3),
        dataset_key=None,
        random_weights=True,
        batch_size=3,
        device="cpu",
        progress=False,
    )
    _install_weights(calibrated.net.state_dict(), monkeypatch)
    net = build_fid_inception()
    assert net.official and not net.training
    official = fid_between_folders(a, b, random_weights=False, **kw)
    assert (official.metric, official.note, official.n_a, official.n_b) == ("fid", "", 6, 6)
    assert stand_in.metric == "fd_random_inception"
    assert official.value == pytest.approx(stand_in.value, rel=1e-9)


def test_missing_weights_name_the_file() -> None:
    with pytest.raises(GantuneError, match=WEIGHTS_FILE):
        build_fid_inception()


def test_weights_with_wrong_checksum_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _install_weights(
        build_fid_inception(random_weights=True).state_dict(), monkeypatch, trust=False
    )
    with pytest.raises(GantuneError, match="sha256"):
        build_fid_inception()


def test_state_dict_with_missing_key_fails_strict_load(monkeypatch: pytest.MonkeyPatch) -> None:
    state = build_fid_inception(random_weights=True).state_dict()
    del state["Mixed_7c.branch_pool.bn.running_var"]
    _install_weights(state, monkeypatch)
    with pytest.raises(
        GantuneError, match=r"1 missing keys \['Mixed_7c.branch_pool.bn.running_var'\]"
    ) as e:
        build_fid_inception()
    assert WEIGHTS_FILE in str(e.value) and "\n" not in str(e.value)


# ---- Evaluator input checks, injected extractor ------------------------------------------------


class TinyFeatures(torch.nn.Module):
    """A cheap injected extractor: 8 channel means of a fixed random conv."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_injected_extractor_and_input_checks() -> None:
    real, fake = scenes(0, 12, 32), box_blur(scenes(40, 10, 32), 5)
    net = TinyFeatures()
    evaluator = FidEvaluator(
        list(real.split(5)),
        dataset_key=None,
        feature_net=net,
        batch_size=4,
        device="cpu",
        progress=False,
    )
    with torch.no_grad():
        expected = frechet_distance(*feature_statistics(net(real)), *feature_statistics(net(fake)))
    result = evaluator(fake)
    assert expected > 0.01
    assert result["metric/fd_injected_features"] == pytest.approx(
        expected, rel=1e-6
    )  # float32 features
    assert result["metric/official_inception"] is False
    with pytest.raises(GantuneError, match=r"\(x \+ 1\) / 2"):
        evaluator(fake * 2 - 1)
    with pytest.raises(GantuneError, match="shape"):
        evaluator(fake[:, :1])
    with pytest.raises(GantuneError, match="not an iterator"):
        FidEvaluator(iter([real]), dataset_key=None, feature_net=net)
