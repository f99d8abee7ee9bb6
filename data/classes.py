"""The landscape competition's 29 classes (ids 0-28, as in its label PNGs) and a palette.

`Landscape` names the ids for code that draws label maps; `CLASS_NAMES` is the same list as
plain strings for logs and figures; `PALETTE` colourises label maps for humans to look at.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from gantune.errors import GantuneError

CLASS_NAMES: tuple[str, ...] = (
    "mountain", "sky", "water", "sea", "rock", "tree", "earth", "hill", "river", "sand",
    "land", "building", "grass", "plant", "person", "boat", "waterfall", "wall", "pier",
    "path", "lake", "bridge", "field", "road", "railing", "fence", "ship", "house", "other",
)  # fmt: skip
NUM_CLASSES = 29


class Landscape(IntEnum):
    MOUNTAIN = 0
    SKY = 1
    WATER = 2
    SEA = 3
    ROCK = 4
    TREE = 5
    EARTH = 6
    HILL = 7
    RIVER = 8
    SAND = 9
    LAND = 10
    BUILDING = 11
    GRASS = 12
    PLANT = 13
    PERSON = 14
    BOAT = 15
    WATERFALL = 16
    WALL = 17
    PIER = 18
    PATH = 19
    LAKE = 20
    BRIDGE = 21
    FIELD = 22
    ROAD = 23
    RAILING = 24
    FENCE = 25
    SHIP = 26
    HOUSE = 27
    OTHER = 28


# Loosely what each class looks like, but chosen so that every pair is at least 55 apart in RGB:
# neighbouring regions stay distinguishable in a preview.
PALETTE: np.ndarray = np.array(
    [
        (120, 120, 60),  # mountain
        (135, 206, 250),  # sky
        (0, 105, 148),  # water
        (0, 40, 140),  # sea
        (128, 128, 128),  # rock
        (34, 139, 34),  # tree
        (160, 82, 45),  # earth
        (189, 183, 107),  # hill
        (64, 164, 223),  # river
        (245, 222, 179),  # sand
        (205, 133, 63),  # land
        (128, 0, 0),  # building
        (124, 252, 0),  # grass
        (0, 90, 0),  # plant
        (255, 0, 255),  # person
        (0, 255, 255),  # boat
        (220, 240, 255),  # waterfall
        (112, 64, 128),  # wall
        (255, 140, 0),  # pier
        (240, 128, 128),  # path
        (72, 61, 200),  # lake
        (220, 20, 60),  # bridge
        (255, 255, 0),  # field
        (64, 64, 64),  # road
        (255, 105, 180),  # railing
        (90, 50, 10),  # fence
        (70, 130, 180),  # ship
        (255, 69, 0),  # house
        (0, 0, 0),  # other
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)


def colorize(labels: np.ndarray) -> np.ndarray:
    """HxW class ids -> HxWx3 uint8 palette colours."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise GantuneError(
            f"label values must be 0..{NUM_CLASSES - 1} to colourise, "
            f"got {labels.min()}..{labels.max()}"
        )
    return PALETTE[labels]
