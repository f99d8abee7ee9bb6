"""The built-in dataset: procedural landscape scenes, rendered in a random global style.

`render_scene` draws a seeded label map of the competition's classes (scene_layout.py) and
renders it: each class has its own colours, vertical gradient and noise textures, and a `Style`
(time of day, season) tints everything. The style never changes the labels, so one label map
admits many images, and the same index is the same scene at every size (geometry lives in
normalised coordinates). `write_scene_folder` writes the competition's folder layout;
`SceneDataset` renders on the fly. Unpaired domains (summer vs winter) and super-resolution
pairs come from the same function with a fixed `style` or two sizes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from data.classes import NUM_CLASSES
from data.classes import Landscape as C
from data.folder import make_item, write_image_atomic
from data.noise import value_noise
from data.scene_layout import Canvas, compose
from gantune.errors import GantuneError

log = logging.getLogger(__name__)

MIN_SIZE_PX, MAX_SIZE_PX = 32, 512
TIMES_OF_DAY = ("day", "sunset", "night")
SEASONS = ("summer", "winter")
# Random streams per (seed, index): the layout never shares one with the look.
_LAYOUT, _STYLE, _LOOK = 0, 1, 2


@dataclass(frozen=True)
class Style:
    """The global look of one rendering; the label map does not depend on it."""

    time_of_day: str = "day"  # day | sunset | night
    season: str = "summer"  # summer | winter

    def __post_init__(self) -> None:
        if self.time_of_day not in TIMES_OF_DAY:
            raise GantuneError(f"Style.time_of_day must be one of {', '.join(TIMES_OF_DAY)}, "
                               f"got {self.time_of_day!r}")
        if self.season not in SEASONS:
            raise GantuneError(f"Style.season must be one of {', '.join(SEASONS)}, "
                               f"got {self.season!r}")


def draw_style(index: int, seed: int = 0) -> Style:
    """The style render_scene uses for (seed, index) when none is given."""
    rng = _rng(seed, index, _STYLE)
    return Style(time_of_day=str(rng.choice(TIMES_OF_DAY, p=[0.6, 0.25, 0.15])),
                 season=str(rng.choice(SEASONS, p=[0.7, 0.3])))


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise GantuneError(f"scene seed and index must be >= 0, got seed {seed}, index {index}")
    return np.random.default_rng([stream, seed, index])


def _check_size(size_px: int) -> None:
    if not MIN_SIZE_PX <= size_px <= MAX_SIZE_PX:
        raise GantuneError(f"scene size {size_px}px is outside the allowed range "
                           f"{MIN_SIZE_PX}..{MAX_SIZE_PX}px")


def render_scene(index: int, size_px: int, seed: int = 0, style: Style | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Scene `index` of the set `seed`: (image HxWx3 uint8, labels HxW uint8 class ids)."""
    _check_size(size_px)
    canvas = Canvas(size_px)
    compose(canvas, _rng(seed, index, _LAYOUT))
    style = style if style is not None else draw_style(index, seed)
    return _render(canvas, style, _rng(seed, index, _LOOK)), canvas.labels


# The summer-day look of each class: top colour (at depth 0), bottom colour (at depth 1), the
# exponent of that gradient, then the amplitudes of coarse and fine texture, horizontal and
# vertical streaks, and the layout's shading.
# fmt: off
_LOOKS = np.array([
    # top rgb            bottom rgb      gamma coarse fine hstrk vstrk shade
    (118, 112, 122,     82,  92,  76,   1.0, .25, .15, .00, .05, .35),  # mountain
    (110, 160, 220,    190, 215, 240,   1.0, .00, .00, .00, .00, .00),  # sky (drawn apart)
    ( 40,  90, 110,     30,  70,  90,   1.0, .10, .05, .25, .00, .00),  # water
    ( 30,  80, 130,     20,  60, 100,   1.0, .10, .05, .30, .00, .00),  # sea
    (140, 135, 125,     90,  85,  80,   1.0, .30, .25, .00, .00, .40),  # rock
    ( 50, 100,  40,     90,  60,  35,   4.0, .30, .35, .00, .00, .35),  # tree
    (125,  95,  65,    100,  75,  50,   1.0, .30, .25, .00, .00, .00),  # earth
    (105, 135,  70,     80, 110,  55,   1.0, .25, .15, .00, .00, .20),  # hill
    ( 50, 100, 120,     40,  85, 105,   1.0, .10, .05, .30, .00, .00),  # river
    (220, 200, 160,    200, 180, 140,   1.0, .12, .15, .00, .00, .00),  # sand
    (150, 130,  90,    125, 110,  75,   1.0, .25, .20, .00, .00, .00),  # land
    (170, 165, 160,    130, 125, 120,   1.0, .10, .10, .00, .10, .30),  # building
    (100, 150,  60,     70, 125,  45,   1.0, .30, .30, .00, .00, .00),  # grass
    ( 60, 120,  50,     40,  90,  35,   1.0, .30, .40, .00, .00, .30),  # plant
    (210, 170, 140,     40,  50,  90,   1.0, .05, .05, .00, .00, .10),  # person
    (235, 235, 230,    150,  60,  40,   1.0, .05, .05, .00, .00, .20),  # boat
    (235, 245, 250,    200, 225, 240,   1.0, .10, .10, .00, .35, .00),  # waterfall
    (150, 140, 125,    120, 110, 100,   1.0, .20, .35, .00, .00, .20),  # wall
    (140, 110,  80,    110,  85,  60,   1.0, .15, .20, .20, .00, .20),  # pier
    (185, 160, 120,    165, 140, 100,   1.0, .20, .20, .00, .00, .00),  # path
    ( 45,  95, 120,     35,  75, 100,   1.0, .10, .05, .25, .00, .00),  # lake
    (150, 140, 130,    110, 100,  95,   1.0, .15, .20, .00, .00, .30),  # bridge
    (200, 180,  90,    170, 150,  70,   1.0, .25, .20, .15, .00, .00),  # field
    ( 90,  90,  95,     70,  70,  75,   1.0, .08, .15, .00, .00, .00),  # road
    ( 80,  70,  60,     60,  50,  45,   1.0, .05, .05, .00, .00, .00),  # railing
    (130, 100,  70,    100,  75,  50,   1.0, .10, .15, .00, .00, .00),  # fence
    (230, 230, 235,     60,  70,  90,   1.0, .05, .05, .00, .00, .30),  # ship
    (150,  60,  45,    215, 200, 175,   1.0, .10, .15, .00, .00, .30),  # house: roof, wall
    (200, 200,  60,     90,  90,  90,   1.0, .05, .05, .00, .00, .20),  # other
], dtype=np.float32)
# fmt: on
_WATERS = [C.WATER, C.SEA, C.RIVER, C.LAKE]
_SNOWED = [C.GRASS, C.FIELD, C.LAND, C.EARTH, C.HILL, C.PLANT, C.PATH, C.SAND]
_SNOW = np.array([0.93, 0.95, 0.98], np.float32)
# Sky at the zenith and at the horizon, and the light on everything below it.
_SKIES = {
    "day": ((0.27, 0.5, 0.82), (0.73, 0.82, 0.92), (1.0, 1.0, 1.0)),
    "sunset": ((0.23, 0.23, 0.47), (0.98, 0.6, 0.32), (0.9, 0.68, 0.52)),
    "night": ((0.03, 0.04, 0.12), (0.12, 0.16, 0.28), (0.2, 0.24, 0.4)),
}


def _fbm(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, cells_x: int, cells_y: int,
         octaves: int) -> np.ndarray:
    """Fractal value noise in about [-1, 1]; octaves finer than a pixel are left out."""
    own = np.random.default_rng(rng.integers(2**63))  # leaving octaves out shifts no other field
    total, norm, amp = np.zeros((ys.size, xs.size), np.float32), 0.0, 1.0
    for octave in range(octaves):
        cx, cy = cells_x << octave, cells_y << octave
        if max(cx, cy) <= xs.size:
            total += amp * (value_noise(own, xs, ys, cx, cy) - 0.5)
        norm, amp = norm + amp, amp * 0.5
    return total * (2.0 / norm)


def _render(cv: Canvas, style: Style, rng: np.random.Generator) -> np.ndarray:
    labels, xs, ys, h = cv.labels, cv.xs, cv.ys, cv.horizon
    zenith, horizon, light = (np.array(c, np.float32) for c in _SKIES[style.time_of_day])
    winter = style.season == "winter"
    top, bottom = _LOOKS[:, 0:3] / 255, _LOOKS[:, 3:6] / 255
    gamma, coarse, fine, hstreak, vstreak, shading = _LOOKS[:, 6:12].T
    # Per-scene colour jitter: one label map, many plausible colourings even in one style.
    jitter = ((1 + rng.normal(0, 0.1, (NUM_CLASSES, 1)))
              * (1 + rng.normal(0, 0.05, (NUM_CLASSES, 3))))
    top, bottom = top * jitter.astype(np.float32), bottom * jitter.astype(np.float32)
    frozen = rng.random() < 0.5 and winter  # drawn in every style, so textures match across them
    if winter:
        top[_SNOWED] = 0.15 * top[_SNOWED] + 0.85 * _SNOW
        bottom[_SNOWED] = 0.2 * bottom[_SNOWED] + 0.8 * _SNOW * 0.92
        top[C.HOUSE] = _SNOW  # snow on the roofs
        grey = np.float32(0.72)
        zenith, horizon = 0.5 * zenith + 0.5 * grey * light, 0.5 * horizon + 0.5 * grey * light
        if frozen:
            for c in (C.LAKE, C.WATER):
                top[c], bottom[c] = (0.8, 0.86, 0.9), (0.72, 0.8, 0.86)
    coarse_n = _fbm(rng, xs, ys, 4, 4, 6)
    fine_n = _fbm(rng, xs, ys, 24, 24, 3)
    hstreak_n = _fbm(rng, xs, ys, 3, 40, 2)
    vstreak_n = _fbm(rng, xs, ys, 40, 3, 2)
    cloud_n = _fbm(rng, xs, ys, 2, 6, 5)
    grain_rng = np.random.default_rng(rng.integers(2**63))
    sun_x, sun_r = rng.uniform(0.1, 0.9), rng.uniform(0.025, 0.045)
    sunset = style.time_of_day == "sunset"
    sun_y = h - rng.uniform(0.0, 0.08) if sunset else h * rng.uniform(0.1, 0.5)
    cloud_threshold = rng.uniform(-0.1, 0.5)  # high: a clear sky

    # Every class: gradient, texture and shading, all by table look-up.
    t = (cv.depth ** gamma[labels])[..., None]
    image = top[labels] * (1 - t) + bottom[labels] * t
    texture = (coarse[labels] * coarse_n + fine[labels] * fine_n + hstreak[labels] * hstreak_n
               + vstreak[labels] * vstreak_n + shading[labels] * cv.shade)
    image *= (1 + texture)[..., None]
    if winter:  # snow caps below the ridges, snow in the trees
        caps = (labels == C.MOUNTAIN) & (cv.depth < 0.35 + 0.25 * coarse_n)
        image[caps] = _SNOW * (1 + 0.3 * cv.shade[caps][:, None])
        image[(labels == C.TREE) & (fine_n > 0.3)] = _SNOW * 0.9
    # Water mirrors the sky near the horizon; the sun glints on it.
    water = np.isin(labels, _WATERS if not frozen else [C.SEA, C.RIVER])
    mirror = zenith + (horizon - zenith) * 0.85
    reflect = (0.45 * (1 - cv.depth))[..., None]
    image = np.where(water[..., None], image * (1 - reflect) + mirror * reflect, image)
    if style.time_of_day != "night":
        glint = np.exp(-((xs[None, :] - sun_x) / 0.04) ** 2) * (hstreak_n > 0.1)
        image += (water * glint * 0.5)[..., None]
    # Atmospheric haze: far things fade into the horizon colour.
    haze = 0.35 * np.exp(-np.abs(ys - h) / 0.1)[:, None] * np.ones_like(image[..., 0])
    haze += np.where(labels == C.MOUNTAIN, 0.25, 0.0) + np.where(labels == C.HILL, 0.1, 0.0)
    image = image + (horizon - image) * np.clip(haze, 0, 0.8)[..., None]
    image *= light
    # Lit windows at night, dark ones by day.
    windows = (np.isin(labels, [C.BUILDING, C.HOUSE]) & (cv.depth > 0.5)
               & ((ys[:, None] * 70) % 1 > 0.45) & ((xs[None, :] * 60) % 1 > 0.5))
    if style.time_of_day == "night":
        image[windows & (fine_n > -0.1)] = (1.0, 0.82, 0.45)
    else:
        image[windows] *= 0.55

    # The sky: gradient, sun or moon behind the clouds, stars at night.
    sky = labels == C.SKY
    yy, xx = ys[:, None], xs[None, :]
    dist = np.sqrt((xx - sun_x) ** 2 + (yy - sun_y) ** 2)
    sky_colour = zenith + (horizon - zenith) * (np.clip(ys / h, 0, 1) ** 1.5)[:, None]
    sky_image = np.broadcast_to(sky_colour[:, None, :], image.shape).copy()
    disc = {"day": (1.0, 0.98, 0.9), "sunset": (1.0, 0.7, 0.35), "night": (0.9, 0.9, 0.8)}
    glow = (np.exp(-dist / (0.15 if style.time_of_day != "night" else 0.05)) * 0.4)[..., None]
    sun_colour = np.array(disc[style.time_of_day], np.float32)
    sky_image = sky_image + (sun_colour - sky_image) * glow
    sky_image[dist < sun_r * (1.6 if sunset else 1.0)] = sun_colour
    if style.time_of_day == "night":
        stars = value_noise(grain_rng, xs, ys, xs.size, ys.size) > 0.93
        sky_image[stars & (dist > sun_r * 2)] = (0.85, 0.85, 0.9)
    clouds = np.clip((cloud_n - cloud_threshold) / 0.25, 0, 1)[..., None] * 0.85
    cloud_colour = {"day": (0.96, 0.96, 0.98), "sunset": (0.95, 0.62, 0.55),
                    "night": (0.16, 0.18, 0.24)}[style.time_of_day]
    cloud_lit = np.array(cloud_colour, np.float32) * (1 + 0.25 * fine_n)[..., None]
    sky_image = sky_image + (cloud_lit - sky_image) * clouds
    image[sky] = sky_image[sky]

    image += grain_rng.normal(0, 0.012, image.shape).astype(np.float32)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_scene_folder(out: Path, n: int, size_px: int, seed: int = 0) -> None:
    """Render scenes 0..n-1 to out/imgs/{i:05d}.jpg and out/labels/{i:05d}.png (class ids)."""
    out = Path(out)
    _check_size(size_px)
    if n < 1:
        raise GantuneError(f"number of scenes must be at least 1, got {n}")
    _rng(seed, 0, _LAYOUT)  # a bad seed fails before any folder is made
    imgs, labels = out / "imgs", out / "labels"
    for folder in (imgs, labels):
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise GantuneError(f"{folder}: already exists and is not empty; refusing to "
                               "overwrite a dataset (choose a new folder)")
    imgs.mkdir(parents=True, exist_ok=True)
    labels.mkdir(exist_ok=True)
    for i in tqdm(range(n), desc="scenes", unit="scene", disable=True if n < 100 else None):
        image, label_ids = render_scene(i, size_px, seed)
        write_image_atomic(Image.fromarray(image), imgs / f"{i:05d}.jpg", "JPEG", quality=95)
        write_image_atomic(Image.fromarray(label_ids, mode="L"), labels / f"{i:05d}.png", "PNG")
    log.info("wrote %d scenes of %dpx to %s", n, size_px, out)


class SceneDataset(Dataset):
    """Scenes 0..n-1 of the set `seed`, rendered in memory on each access.

    Items are those of FolderDataset (image, one-hot label, label_ids, path); flip mirrors
    image and label together with probability 0.5, drawn from torch's RNG.
    """

    def __init__(self, n: int, size_px: int, seed: int = 0, num_classes: int = NUM_CLASSES,
                 flip: bool = False) -> None:
        _check_size(size_px)
        if n < 1:
            raise GantuneError(f"number of scenes must be at least 1, got {n}")
        if num_classes < NUM_CLASSES:
            raise GantuneError(f"scenes use class ids 0..{NUM_CLASSES - 1}; num_classes must be "
                               f"at least {NUM_CLASSES}, got {num_classes}")
        _rng(seed, 0, _LAYOUT)
        self.n, self.size_px, self.seed = n, size_px, seed
        self.num_classes, self.flip = num_classes, flip

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n:
            raise IndexError(f"scene index {index} out of range 0..{self.n - 1}")
        image, label_ids = render_scene(index, self.size_px, self.seed)
        flip = self.flip and bool(torch.rand(()) < 0.5)
        return make_item(image, label_ids, self.num_classes,
                         f"scene:seed={self.seed}:index={index}", flip)
