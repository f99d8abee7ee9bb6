"""Two of the U-GAT-IT log's tricks as ugatit switches: histogram matching of the generators' input
photos (data/histmatch.py) against skimage's algorithm written out in numpy, its ratio and probability,
hue kept in hsv and hsl; the blur adversarial term (losses/ugatit.py) against hand values; their config
keys; and the real Trainer at smoke width, where each switch changes what one step learns.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from kornia.color import rgb_to_hls, rgb_to_hsv

from data.histmatch import match_domains, match_histograms
from gantune.errors import GantuneError
from losses.ugatit import blur_images, ugatit_blur_d_loss
from net_helpers import one_thread  # noqa: F401  (autouse fixture)
from ray_jobs import config as C
from ray_jobs.families import FAMILIES


def images(n: int, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def skimage_match(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """skimage.exposure's _match_cumulative_cdf, for one channel."""
    src_values, src_index, src_counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    src_q, ref_q = np.cumsum(src_counts) / source.size, np.cumsum(ref_counts) / reference.size
    return np.interp(src_q, ref_q, ref_values)[src_index].reshape(source.shape)


# ---- Histogram matching ----------------------------------------------------------------------


def test_rgb_matching_takes_the_targets_sorted_values_in_the_sources_order() -> None:
    source, target = images(1, seed=1), images(1, seed=2)
    out = match_histograms(source, target, "rgb")
    for c in range(3):
        assert torch.equal(out[0, c].flatten().sort().values, target[0, c].flatten().sort().values)
        # Each pixel keeps its rank: the brightest source red gets the brightest target red.
        assert torch.equal(out[0, c].flatten().argsort(), source[0, c].flatten().argsort())


def test_rgb_matching_to_a_batch_with_ties_is_skimages() -> None:
    # Few levels, so both sides have runs of equal values; each source image to the pooled batch.
    g = torch.Generator().manual_seed(3)
    source = torch.randint(0, 9, (2, 3, 6, 6), generator=g).float() / 4 - 1
    target = torch.randint(0, 5, (3, 3, 5, 7), generator=g).float() / 2 - 1
    out = match_histograms(source, target, "rgb").double().numpy()
    for n in range(2):
        for c in range(3):
            expected = skimage_match(source[n, c].double().numpy(), target[:, c].double().numpy())
            np.testing.assert_allclose(out[n, c], expected, atol=1e-6)


@pytest.mark.parametrize("space, to_space, matched, saturation", [
    ("hsv", rgb_to_hsv, (1, 2), 1),
    ("hsl", rgb_to_hls, (1, 2), 2),
])
def test_hsv_and_hsl_match_saturation_and_value_and_keep_hue(space: str, to_space, matched: tuple[int, ...],
                                                            saturation: int) -> None:
    source, target = images(2, seed=4), images(2, seed=5)
    source[0, :, 0, :] = 0.2  # a grey row: achromatic, kornia's hue 0 (red)
    out = match_histograms(source, target, space)
    assert out.shape == source.shape and out.min() >= -1 and out.max() <= 1
    src, res, ref = (to_space((x + 1) / 2) for x in (source, out, target))
    for c in matched:  # exactly the target's distribution, up to the round trip through RGB
        for n in range(2):
            expected = skimage_match(src[n, c].double().numpy(), ref[:, c].double().numpy())
            grey = (src[n, saturation] == 0).numpy()
            if c == saturation:
                expected[grey] = 0.0  # greys stay grey rather than turning red
            np.testing.assert_allclose(res[n, c].double().numpy(), expected, atol=2e-5)
    chromatic = (src[:, saturation] > 0.05) & (res[:, saturation] > 0.05)
    assert chromatic.sum() > 50
    hue_gap = (res[:, 0] - src[:, 0]).abs()[chromatic]
    assert torch.minimum(hue_gap, 2 * math.pi - hue_gap).max() < 1e-3
    grey = out[0, :, 0, :]
    assert torch.allclose(grey, grey[:1].expand_as(grey), atol=1e-6)


def test_ratio_blends_and_zero_returns_the_input() -> None:
    a, b = images(2, seed=6), images(2, seed=7)
    same_a, same_b = match_domains(a, b, "rgb", prob=1.0, ratio=0.0)
    assert torch.equal(same_a, a) and torch.equal(same_b, b)
    full_a, full_b = match_domains(a, b, "rgb", prob=1.0, ratio=1.0)
    assert torch.equal(full_a, match_histograms(a, b)) and torch.equal(full_b, match_histograms(b, a))
    quarter_a, _ = match_domains(a, b, "rgb", prob=1.0, ratio=0.25)
    torch.testing.assert_close(quarter_a, 0.75 * a + 0.25 * full_a)


def test_probability_zero_never_matches_and_none_draws_nothing() -> None:
    a, b = images(2, seed=8), images(2, seed=9)
    g = torch.Generator().manual_seed(0)
    assert all(match_domains(a, b, "hsv", 0.0, 1.0, g) == (a, b) for _ in range(50))
    assert not any(match_domains(a, b, "hsv", 1.0, 1.0, g)[0] is a for _ in range(5))
    hits = sum(match_domains(a, b, "rgb", 0.5, 1.0, g)[0] is not a for _ in range(200))
    assert 70 < hits < 130
    state = torch.random.get_rng_state()
    assert match_domains(a, b, "none", 1.0, 1.0) == (a, b)
    assert torch.equal(torch.random.get_rng_state(), state)  # the official training's stream is untouched


def test_bad_space_names_the_argument() -> None:
    with pytest.raises(GantuneError, match="space must be one of"):
        match_histograms(images(1), images(1), "lab")


# ---- The blur term --------------------------------------------------------------------------


def test_blur_images_is_a_normalised_gaussian() -> None:
    impulse = torch.zeros(1, 1, 17, 17)
    impulse[0, 0, 8, 8] = 1.0
    out = blur_images(impulse, 1.0)
    taps = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)  # +-3 sigma
    taps /= taps.sum()
    torch.testing.assert_close(out[0, 0, 5:12, 5:12], torch.outer(taps, taps))
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    flat = torch.full((1, 3, 8, 8), 0.3)
    torch.testing.assert_close(blur_images(flat, 5.0), flat)  # a kernel wider than the image is cut


def test_blur_d_loss_is_lsgan_to_fake_on_patch_and_cam() -> None:
    global_out = (torch.tensor([[[[1.0, -1.0]]]]), torch.tensor([[2.0, 0.0]]), torch.zeros(1))
    local_out = (torch.tensor([[[[0.5]]]]), torch.tensor([[3.0]]), torch.zeros(1))
    # mean((1, -1)^2) = 1, mean((2, 0)^2) = 2, 0.5^2 = 0.25, 3^2 = 9: 12.25, weighted 2.
    assert ugatit_blur_d_loss([global_out, local_out], blur_weight=2.0).item() == pytest.approx(24.5)
    with pytest.raises(ValueError, match="at least one discriminator"):
        ugatit_blur_d_loss([])


# ---- Config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("hist_match: lab", "ugatit.hist_match must be one of \\['none', 'rgb', 'hsv', 'hsl'\\]"),
    ("hist_match: rgb, hist_match_prob: 1.5", "ugatit.hist_match_prob must be in \\[0, 1\\], got 1.5"),
    ("hist_match: hsv, hist_match_ratio: -0.1", "ugatit.hist_match_ratio must be in \\[0, 1\\]"),
    ("blur_weight: 1.0, blur_sigma: 0.0", "ugatit.blur_sigma must be > 0"),
    ("blur_weight: -1.0", "ugatit.blur_weight must be >= 0"),
    ("hist_match_prob: 0.3", "ugatit.hist_match_prob=0.3 has no effect: ugatit.hist_match is 'none'"),
    ("hist_match_ratio: 0.5", "ugatit.hist_match_ratio=0.5 has no effect"),
    ("blur_sigma: 2.0", "ugatit.blur_sigma=2.0 has no effect: ugatit.blur_weight is 0"),
])
def test_bad_trick_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"model: {{family: ugatit}}\ndata: {{size_px: 128}}\nugatit: {{{text}}}\n")
    with pytest.raises(GantuneError, match=message) as e:
        C.load(path)
    assert str(path) in str(e.value)


def test_tricks_are_off_by_default_and_load_when_on(tmp_path: Path) -> None:
    u = C.Config().ugatit
    assert (u.hist_match, u.blur_weight) == ("none", 0.0)
    path = tmp_path / "config.yaml"
    path.write_text("model: {family: ugatit}\ndata: {size_px: 128}\n"
                    "ugatit: {hist_match: hsl, hist_match_prob: 0.3, hist_match_ratio: 0.8, blur_weight: 0.5, "
                    "blur_sigma: 2.0}\n")
    u = C.load(path).ugatit
    assert (u.hist_match, u.hist_match_prob, u.hist_match_ratio, u.blur_weight, u.blur_sigma) == ("hsl", 0.3, 0.8,
                                                                                               0.5, 2.0)


# ---- One step of the real family -------------------------------------------------------------


def train_two_steps(tmp_path: Path, name: str, **values: object) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Both nets' parameters after two steps of the real Trainer at smoke width, same seed."""
    from ray_jobs.trainer import Trainer

    cfg = C.with_values(C.Config(), {"model.family": "ugatit", "data.size_px": 32, "data.n_train": 2,
                                     "optim.batch_size": 2, "eval.random_weights": True,
                                     **FAMILIES["ugatit"].smoke_overrides, **values})
    tr = Trainer(cfg, tmp_path / name)
    logs = tr.train(2)
    params = {net: torch.cat([p.detach().flatten() for p in tr.engines[net].module.parameters()]) for net in ("G", "D")}
    assert tr.family.hparams()["blur_weight"] == cfg.ugatit.blur_weight
    tr.close()
    return params, logs


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    return train_two_steps(tmp_path_factory.mktemp("official"), "off")


def test_the_blur_term_changes_training_and_is_logged(official, tmp_path: Path) -> None:
    params_off, logs_off = official
    params, logs = train_two_steps(tmp_path, "blur", **{"ugatit.blur_weight": 1.0, "ugatit.blur_sigma": 1.5})
    assert not any("blur" in k for k in logs_off)
    assert all(math.isfinite(logs[f"loss/D/blur_{d}"]) and logs[f"loss/D/blur_{d}"] > 0 for d in "AB")
    assert logs["loss/D/total"] == pytest.approx(logs["loss/D/D_A"] + logs["loss/D/D_B"] + logs["loss/D/blur_A"]
                                                 + logs["loss/D/blur_B"], rel=1e-5)
    assert (params["D"] - params_off["D"]).abs().max() > 1e-6
    assert (params["G"] - params_off["G"]).abs().max() > 1e-6  # G then meets the changed D


def test_histogram_matching_changes_training_and_probability_zero_does_not(official, tmp_path: Path) -> None:
    params_off, logs_off = official
    params, logs = train_two_steps(tmp_path, "hsv", **{"ugatit.hist_match": "hsv", "ugatit.hist_match_prob": 1.0})
    assert (params["D"] - params_off["D"]).abs().max() > 1e-6
    assert (params["G"] - params_off["G"]).abs().max() > 1e-6
    assert logs["loss/G/cycle_A"] != logs_off["loss/G/cycle_A"]
    params_never, _ = train_two_steps(tmp_path, "never", **{"ugatit.hist_match": "rgb", "ugatit.hist_match_prob": 0.0})
    assert all(torch.equal(params_never[net], params_off[net]) for net in ("G", "D"))


def test_one_draw_serves_both_phases_and_the_cycle_returns_to_what_was_fed() -> None:
    from losses.ugatit import ugatit_d_loss, ugatit_g_losses

    cfg = C.with_values(C.Config(), {"model.family": "ugatit", "data.size_px": 32, **FAMILIES["ugatit"].smoke_overrides,
                                     "ugatit.hist_match": "rgb", "ugatit.hist_match_prob": 1.0})
    family = FAMILIES["ugatit"](cfg)
    torch.manual_seed(0)
    nets = {"G": family.build("G"), "D": family.build("D").eval()}  # eval: no power iteration per call
    batch = {"A": images(2, 32, seed=10), "B": images(2, 32, seed=11)}
    src_A, src_B = family._generator_inputs(batch)
    assert torch.equal(src_A, match_histograms(batch["A"], batch["B"])) and family._generator_inputs(batch)[0] is src_A
    _, logs = family.loss("G", nets, batch)
    G, D = nets["G"], nets["D"]
    with torch.no_grad():
        fake_A2B = G(src_A, "B")[0]
        fake_B2A, cam_B2A, _ = G(src_B, "A")
        idt_A, cam_A2A, _ = G(batch["A"], "A")
        terms = ugatit_g_losses(D(fake_B2A, "A"), cam_B2A, cam_A2A, batch["A"], G(fake_A2B, "A")[0], idt_A,
                                cycle_weight=1.0, identity_weight=1.0, cycle_real=src_A)
    assert logs["loss/G/cycle_A"] == pytest.approx(terms["cycle"].item(), rel=1e-5)
    assert logs["loss/G/identity_A"] == pytest.approx(terms["identity"].item(), rel=1e-5)
    _, logs = family.loss("D", nets, batch)  # D judges the translations of what G was fed
    with torch.no_grad():
        expected = ugatit_d_loss(D(batch["B"], "B"), D(fake_A2B, "B"))
    assert logs["loss/D/D_B"] == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.equal(src_A, batch["A"])
