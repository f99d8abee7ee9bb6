"""Bad datasets through the `gantune` command line (issue 10, item 7): each gets exit status 2 and
one line on stderr naming the file or folder and what was expected, and nothing is scored: a set
too small for the batch or for the evaluation's sample count is refused, never scored on fewer.

`main()` runs in this process, as in test_bad_input.py. Images are 32 px PNGs written into
tmp_path; the dataset folder is `ds` beside the config, so messages name it by a relative path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.folder import FolderDataset, check_image, validate_folder
from gantune.errors import GantuneError
from ray_jobs.cli import main
from test_bad_input import CONFIG

from net_helpers import one_thread  # noqa: F401  (autouse fixture)


def _edit(text: str, edits: dict[str, str]) -> str:
    for old, new in edits.items():
        assert old in text, f"the edit {old!r} does not apply"
        text = text.replace(old, new)
    return text


# Label families (spade): test_bad_input's tiny config on the folder `ds`, a small Inception stand-in.
LABELS = _edit(CONFIG, {"n_train: 8, ": "source: folder, root: ds, ",
                        "random_weights: true": "random_weights: true, dims: 64"})
EXEMPLAR = """\
data: {size_px: 64, n_eval: 2, source: folder, root: ds}
model: {family: cocosnet, ngf: 4, ndf: 8, num_D: 1, n_layers_D: 2}
loss: {random_backbones: true}
optim: {batch_size: 1}
train: {steps: 2}
eval: {every: 2, random_weights: true, dims: 64}
"""
SR = """\
data: {size_px: 32, n_eval: 2, source: folder, root: ds}
model: {family: rdn}
rdn: {num_feat: 4, num_block: 1, num_conv: 2, num_grow_ch: 4}
optim: {batch_size: 2}
train: {steps: 2}
eval: {every: 2, objective: psnr}
"""
UNPAIRED = """\
data: {size_px: 32, n_eval: 4, source: folder, root: ds}
model: {family: cyclegan, ngf: 4, ndf: 4}
optim: {batch_size: 2}
train: {steps: 2}
eval: {every: 2, random_weights: true, dims: 64}
"""
INPAINT = """\
data: {size_px: 128, n_eval: 2, source: folder, root: ds}
model: {family: pdgan, ngf: 4, ndf: 4, num_D: 1, n_layers_D: 2}
pdgan: {z_dim: 8, nhidden: 8, prior_ngf: 4, prior_res_num: 1, prior_steps: 1, masks: files, mask_root: masks}
loss: {random_backbones: true}
optim: {batch_size: 2}
train: {steps: 2}
eval: {every: 2, objective: l1}
"""


# ---- writing datasets ----------------------------------------------------------------------


def photo(path: Path, size: tuple[int, int] = (32, 32), mode: str = "RGB", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16)).save(path)
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def label(path: Path, size: tuple[int, int] = (32, 32), high: int = 5, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.random.default_rng(seed).integers(0, high, size[::-1], dtype=np.uint8)
    Image.fromarray(ids, "L").save(path)
    return path


def pairs(root: Path, n: int = 4) -> Path:
    for i in range(n):
        photo(root / "imgs" / f"{i}.png", seed=i)
        label(root / "labels" / f"{i}.png", seed=i)
    return root


def cut(path: Path) -> None:
    """Keep the first half of the file: a copy or download cut short."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flat(root: Path, n: int = 4, size: tuple[int, int] = (40, 40)) -> Path:
    for i in range(n):
        photo(root / f"{i}.png", size, seed=i)
    return root


def cyclegan(root: Path, counts: dict[str, int]) -> Path:
    for split, n in counts.items():
        (root / split).mkdir(parents=True)
        for i in range(n):
            photo(root / split / f"{i}.png", seed=i)
    return root


def masks(root: Path, n: int = 2) -> Path:
    for i in range(n):
        hole = np.zeros((32, 32), np.uint8)
        hole[4:12, 2 + i : 20] = 255
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(hole).save(root / f"{i}.png")
    return root


def thin_stroke_mask(path: Path) -> None:
    """1 px strokes on a 512 px canvas: nearest-neighbour sampling down to 128 px misses them all."""
    hole = np.zeros((512, 512), np.uint8)
    hole[100, :] = hole[:, 200] = 255
    Image.fromarray(hole).save(path)


def _labels_with(change: Callable[[Path], object]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        change(pairs(tmp / "ds"))
    return write


def _sr_with(change: Callable[[Path], object]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        change(flat(tmp / "ds"))
    return write


def _inpaint_with(change: Callable[[Path], object]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        flat(tmp / "ds", size=(32, 32))
        change(masks(tmp / "masks"))
    return write


TRAIN = ["train", "c.yaml"]
BATCH_4 = [*TRAIN, "--set", "optim.batch_size=4", "--set", "data.n_eval=2"]  # enough to evaluate, not for a batch

# (case, config text, what to write under tmp_path, argv, what the line must say)
CASES: list[tuple[str, str, Callable[[Path], object], list[str], str]] = [
    # ---- image/label folders (spade, oasis and the exemplar families)
    ("empty images folder", LABELS, lambda t: [(t / "ds" / "imgs").mkdir(parents=True), (t / "ds" / "labels").mkdir()],
     TRAIN, "ds/imgs: no images (expected *.jpg, *.jpeg or *.png files)"),
    ("labels folder missing", LABELS, lambda t: photo(t / "ds" / "imgs" / "0.png"), TRAIN,
     "ds/labels: folder not found (a dataset folder holds imgs/ with photos and labels/ with class-id PNGs"),
    ("an image without its label", LABELS, _labels_with(lambda r: (r / "labels" / "1.png").unlink()), TRAIN,
     "1 image(s) without a label <stem>.png in ds/labels: ds/imgs/1.png"),
    ("a label without its image", LABELS, _labels_with(lambda r: label(r / "labels" / "9.png")), TRAIN,
     "1 label(s) without an image <stem>.jpg|.jpeg|.png in ds/imgs: ds/labels/9.png"),
    ("a JPEG label", LABELS, _labels_with(lambda r: (r / "labels" / "1.png").rename(r / "labels" / "1.jpg")), TRAIN,
     "ds/labels/1.jpg: labels are read from .png only"),
    ("two photos of one stem", LABELS, _labels_with(lambda r: photo(r / "imgs" / "1.jpg")), TRAIN,
     "ds/imgs/1.png: two files with stem '1' (1.jpg and 1.png); keep one"),
    ("a label of another size", LABELS, _labels_with(lambda r: label(r / "labels" / "2.png", (24, 32))), TRAIN,
     "ds/labels/2.png: label is 24x32 px but its image ds/imgs/2.png is 32x32 px"),
    ("a class id past num_classes", LABELS, _labels_with(lambda r: label(r / "labels" / "3.png", high=41, seed=9)),
     TRAIN, "ds/labels/3.png: label value 40 >= num_classes 29"),
    ("a colour-coded label", LABELS, _labels_with(lambda r: photo(r / "labels" / "1.png")), TRAIN,
     "ds/labels/1.png: label must be a single-channel PNG of class ids (mode L, P, I;16 or I), got mode RGB"),
    ("a truncated PNG photo", LABELS, _labels_with(lambda r: cut(r / "imgs" / "2.png")), TRAIN,
     "ds/imgs/2.png: cannot read image"),
    ("a truncated JPEG photo", LABELS,
     _labels_with(lambda r: [(r / "imgs" / "2.png").unlink(), cut(photo(r / "imgs" / "2.jpg"))]), TRAIN,
     "ds/imgs/2.jpg: cannot read image"),
    ("a text file named .png", LABELS, _labels_with(lambda r: (r / "imgs" / "3.png").write_text("not an image")),
     TRAIN, "ds/imgs/3.png: cannot read image (cannot identify image file"),
    ("a .webp photo the layout skips", LABELS, _labels_with(lambda r: photo(r / "imgs" / "4.webp")), TRAIN,
     "ds/imgs/4.webp: photos are read from .jpg, .jpeg or .png only"),
    ("a 16-bit photo", LABELS, _labels_with(lambda r: photo(r / "imgs" / "1.png", mode="I;16")), TRAIN,
     "ds/imgs/1.png: mode I;16 (more than 8 bits a channel) would be clipped to white as RGB"),
    ("fewer pairs than the batch", LABELS, lambda t: pairs(t / "ds", 3), BATCH_4,
     "the training set has 3 images, fewer than optim.batch_size=4"),
    ("fewer pairs than data.n_eval", LABELS, lambda t: pairs(t / "ds", 3), TRAIN,
     "ds: 3 evaluation image/label pairs, fewer than data.n_eval=4"),
    ("data.root is a file", LABELS, lambda t: (t / "ds").write_text("a file"), TRAIN,
     "c.yaml: data.root='ds' is not a folder"),
    ("one pair to retrieve exemplars from", EXEMPLAR, lambda t: pairs(t / "ds", 1), TRAIN,
     "ds: 1 training pair: exemplar retrieval needs at least 2 training pairs"),
    ("FID on one evaluation image", CONFIG, lambda t: None, ["train", "c.yaml", "--set", "data.n_eval=1"],
     "data.n_eval=1: eval.objective fid needs at least 2 evaluation images"),
    # ---- super-resolution folders (esrgan, rdn, srresnet)
    ("SR images folder empty", SR, lambda t: (t / "ds").mkdir(), TRAIN, "ds: no images"),
    ("an SR image smaller than the crop", SR, _sr_with(lambda r: photo(r / "2.png", (24, 40))), TRAIN,
     "ds/2.png: image is 24x40 px, smaller than data.size_px=32 (the 32x32 px crop)"),
    ("a truncated SR image", SR, _sr_with(lambda r: cut(r / "3.png")), TRAIN, "ds/3.png: cannot read image"),
    ("an empty noise-patch folder", SR, lambda t: [flat(t / "ds"), (t / "noise").mkdir()],
     ["train", "c.yaml", "--set", "sr.degradation=realistic", "--set", "sr.noise_root=noise"], "noise: no images"),
    # ---- unpaired folders (cyclegan, ugatit)
    ("an empty domain folder", UNPAIRED,
     lambda t: cyclegan(t / "ds", {"trainA": 4, "trainB": 0, "testA": 4, "testB": 4}), TRAIN, "ds/trainB: no images"),
    ("a domain folder missing", UNPAIRED, lambda t: cyclegan(t / "ds", {"trainA": 4, "trainB": 4, "testA": 4}), TRAIN,
     "ds: expected CycleGAN's layout trainA/ trainB/ testA/ testB/, testB/ is missing"),
    ("a truncated domain image", UNPAIRED,
     lambda t: cut(cyclegan(t / "ds", {"trainA": 4, "trainB": 4, "testA": 4, "testB": 4}) / "trainA" / "1.png"),
     TRAIN, "ds/trainA/1.png: cannot read image"),
    ("fewer test images than data.n_eval", UNPAIRED,
     lambda t: cyclegan(t / "ds", {"trainA": 4, "trainB": 4, "testA": 2, "testB": 4}), TRAIN,
     "ds: 2 evaluation images in testA/, fewer than data.n_eval=4"),
    # ---- inpainting (pdgan): images and a folder of masks
    ("an empty mask folder", INPAINT, lambda t: [flat(t / "ds", size=(32, 32)), (t / "masks").mkdir()], TRAIN,
     "masks: no images"),
    ("masks too large for their strokes", INPAINT, _inpaint_with(lambda m: thin_stroke_mask(m / "1.png")), TRAIN,
     "masks/1.png: mask has no hole at data.size_px=128"),
    ("a mask of nothing but hole", INPAINT,
     _inpaint_with(lambda m: Image.fromarray(np.full((32, 32), 255, np.uint8)).save(m / "0.png")), TRAIN,
     "masks/0.png: mask has nothing but hole at data.size_px=128"),
    ("a truncated mask", INPAINT, _inpaint_with(lambda m: cut(m / "1.png")), TRAIN, "masks/1.png: cannot read mask"),
    # ---- other commands
    ("FID of a folder of one image", "", lambda t: [photo(t / "a" / "0.png"), flat(t / "b", 2)],
     ["fid", "a", "b", "--random-weights", "--dims", "64"], "a: 1 image(s); at least 2 are needed"),
    ("preview of a folder with an unlabelled image", "", _labels_with(lambda r: photo(r / "imgs" / "7.png")),
     ["data", "preview", "ds", "-o", "grid.png"], "1 image(s) without a label <stem>.png in ds/labels: ds/imgs/7.png"),
]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's usage errors exit from the parser
        rc = int(e.code or 0)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case, config, write, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_dataset_exits_2_with_one_line_naming_it(case: str, config: str, write: Callable[[Path], object],
                                                     argv: list[str], message: str,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    if config:
        (tmp_path / "c.yaml").write_text(config)
    write(tmp_path)
    rc, err = _run(argv, capsys)
    assert rc == 2, err
    assert "Traceback" not in err and err.count("gantune: error: ") == 1 and err.endswith("\n"), err
    assert err.count("\n") == 1 and err.startswith("gantune: error: ") and message in err, err
    assert not (tmp_path / "runs" / "c" / "checkpoints" / "latest").exists(), "nothing was scored or saved"


# Sets too small for the batch or the evaluation: refused before the first step, naming the folder.
TOO_SMALL = [
    pytest.param(TRAIN, "gantune: error: ds: 3 evaluation image/label pairs, fewer than data.n_eval=4",
                 id="evaluation set checked before the first step"),
    pytest.param(BATCH_4, "gantune: error: ds: the training set has 3 images, fewer than optim.batch_size=4",
                 id="a batch too large names the folder"),
]


@pytest.mark.parametrize("argv, line", TOO_SMALL)
def test_too_small_sets_fail_before_training_naming_the_folder(argv: list[str], line: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(LABELS)
    pairs(tmp_path / "ds", 3)
    rc, err = _run(argv, capsys)
    assert rc == 2 and err.startswith(line) and err.count("\n") == 1, err


def test_there_are_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15
    assert len({c[4] for c in CASES}) == len(CASES), "each case has its own message"


# ---- what is not a mistake ----------------------------------------------------------------


def test_grayscale_and_rgba_photos_and_stray_files_are_read(tmp_path: Path) -> None:
    """Grayscale and RGBA photos become RGB items (as torchvision's loaders do); notes and hidden
    files beside the data are not data."""
    root = pairs(tmp_path, 3)
    photo(root / "imgs" / "1.png", mode="L", seed=1)
    photo(root / "imgs" / "2.png", mode="RGBA", seed=2)
    (root / "imgs" / "README.txt").write_text("where these came from")
    (root / "labels" / ".1.png.tmp").write_bytes(b"half a file")
    assert validate_folder(root) == 3
    items = [FolderDataset(root, 32)[i] for i in range(3)]
    assert [tuple(item["image"].shape) for item in items] == [(3, 32, 32)] * 3
    grey = items[1]["image"]
    assert np.array_equal(grey[0].numpy(), grey[1].numpy())  # one channel, repeated


def test_check_image_reads_headers_and_finds_cut_files(tmp_path: Path) -> None:
    png = photo(tmp_path / "a.png", (48, 40))
    jpg = tmp_path / "b.jpg"
    Image.open(png).convert("RGB").save(jpg, quality=90)
    assert check_image(png) == (48, 40) and check_image(jpg) == (48, 40)
    for path in (png, jpg):
        cut(path)
        with pytest.raises(GantuneError, match="cannot read image"):
            check_image(path)  # a new size: not the cached answer for the whole file

