"""Label maps of procedural landscapes: the geometry half of the scene generator.

Everything is drawn in normalised coordinates (x right, y down, both in [0, 1]) and evaluated at
pixel centres, and every random number is drawn before any pixel is looked at, so one seed is
one scene at every resolution. Besides the class ids the layout records two hints for the
renderer: `shade` (lighting, -1 shadow .. 1 lit) and `depth` (0 at an object's top or far end,
1 at its base or near end), which also picks between parts of one class (roof and wall, canopy
and trunk).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data.classes import Landscape as C
from data.noise import midpoint_profile, value_noise

Predicate = Callable[[float, float], bool]  # (x, y) -> is the ground there dry?
Where = tuple[slice, slice]  # rows, columns of a box of pixels
Field = float | np.ndarray  # a per-pixel value, or one for all pixels


class Canvas:
    """A label map under construction, painted back to front."""

    def __init__(self, size_px: int) -> None:
        self.xs = (np.arange(size_px) + 0.5) / size_px
        self.ys = self.xs
        self.labels = np.full((size_px, size_px), C.SKY, np.uint8)
        self.shade = np.zeros((size_px, size_px), np.float32)
        self.depth = np.repeat(self.ys[:, None], size_px, axis=1).astype(np.float32)
        self.horizon = 0.5  # y where the ground plane meets the sky; set by compose()

    def region(self, x0: float, x1: float, y0: float, y1: float
               ) -> tuple[Where, np.ndarray, np.ndarray]:
        """Slices of the pixels whose centres lie in the box, and their x (1,w) and y (h,1)."""
        c0, c1 = np.searchsorted(self.xs, [x0, x1])
        r0, r1 = np.searchsorted(self.ys, [y0, y1])
        where = (slice(r0, r1), slice(c0, c1))
        return where, self.xs[c0:c1][None, :], self.ys[r0:r1][:, None]

    def paint(self, where: Where, mask: np.ndarray, cls: int, shade: Field = 0.0,
              depth: Field | None = None) -> None:
        labels = self.labels[where]
        mask = np.broadcast_to(mask, labels.shape)
        labels[mask] = cls
        self.shade[where][mask] = np.broadcast_to(shade, mask.shape)[mask]
        if depth is not None:
            self.depth[where][mask] = np.broadcast_to(depth, mask.shape)[mask]


# Shapes. Each draws its random numbers first and returns a painter, so objects can be sorted
# back to front before anything is painted.


def _blob(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float,
          cls: int, depth_scale: float = 1.0) -> Callable[[], None]:
    """An ellipse with a wobbly outline (rocks, bushes, canopies, ponds)."""
    k = np.arange(2, 6)
    amps, phases = rng.uniform(0, 0.12, k.size) / k * 2, rng.uniform(0, 2 * np.pi, k.size)

    def paint() -> None:
        where, X, Y = cv.region(cx - 1.4 * rx, cx + 1.4 * rx, cy - 1.4 * ry, cy + 1.4 * ry)
        dx, dy = (X - cx) / rx, (Y - cy) / ry
        theta = np.arctan2(dy, dx)[..., None]
        r = 1 + (amps * np.sin(k * theta + phases)).sum(-1)
        inside = dx * dx + dy * dy < r * r
        cv.paint(where, inside, cls, np.clip(-(dx + dy) * 0.6, -1, 1),
                 np.clip((dy + 1) / 2, 0, 1) * depth_scale)

    return paint


def _rect(cv: Canvas, x0: float, x1: float, y0: float, y1: float, cls: int, shade=0.0,
          depth=None) -> None:
    where, X, Y = cv.region(x0, x1, y0, y1)
    cv.paint(where, np.ones((Y.size, X.size), bool), cls, shade, depth)


def _trapezoid(cv: Canvas, cx: float, y0: float, y1: float, half0: float, half1: float,
               cls: int, shade=0.0, depth=None) -> None:
    """Half-width half0 at y0 (top) growing linearly to half1 at y1 (bottom)."""
    where, X, Y = cv.region(cx - max(half0, half1), cx + max(half0, half1), y0, y1)
    t = (Y - y0) / max(y1 - y0, 1e-9)
    cv.paint(where, np.abs(X - cx) <= half0 + (half1 - half0) * t, cls, shade, depth)


def _tree(cv: Canvas, rng: np.random.Generator, x: float, base: float, height: float):
    conifer = rng.random() < 0.45
    canopy = None if conifer else _blob(cv, rng, x, base - 0.62 * height, 0.3 * height,
                                        0.38 * height, C.TREE, depth_scale=0.7)

    def paint() -> None:
        _rect(cv, x - 0.035 * height, x + 0.035 * height, base - 0.3 * height, base, C.TREE,
              -0.6, 1.0)
        if canopy is not None:
            return canopy()
        for tier in range(3):  # three stacked cones
            top = base - height + tier * 0.22 * height
            _trapezoid(cv, x, top, top + 0.45 * height, 0.0, (0.16 + 0.05 * tier) * height,
                       C.TREE, 0.2 - 0.3 * tier, 0.3 + 0.2 * tier)

    return paint


def _house(cv: Canvas, x: float, base: float, width: float, height: float, roof: float):
    def paint() -> None:
        _rect(cv, x - width / 2, x + width / 2, base - height, base, C.HOUSE, 0.2, 1.0)
        _trapezoid(cv, x, base - height - roof, base - height, 0.0, 0.6 * width, C.HOUSE,
                   -0.4, 0.0)

    return paint


def _boat(cv: Canvas, rng: np.random.Generator, x: float, base: float, length: float,
          ship: bool):
    sail = rng.random() < 0.5
    cls = C.SHIP if ship else C.BOAT

    def paint() -> None:
        hull = length * 0.18
        _trapezoid(cv, x, base - hull, base, length / 2, length * 0.38, cls, 0.0, 1.0)
        if ship:  # superstructure and funnel
            _rect(cv, x - length * 0.25, x + length * 0.15, base - hull * 2.2, base - hull, cls,
                  0.3, 0.0)
            _rect(cv, x - length * 0.05, x + length * 0.05, base - hull * 3.2, base - hull * 2.2,
                  cls, -0.3, 0.5)
        elif sail:
            _trapezoid(cv, x, base - length * 0.9, base - hull, 0.0, length * 0.3, cls, 0.4, 0.0)

    return paint


def _person(cv: Canvas, x: float, base: float, height: float):
    def paint() -> None:
        w = height * 0.14
        _rect(cv, x - w * 0.8, x + w * 0.8, base - height * 0.45, base, C.PERSON, 0.0, 1.0)
        _rect(cv, x - w, x + w, base - height * 0.8, base - height * 0.42, C.PERSON, 0.1, 0.6)
        where, X, Y = cv.region(x - w, x + w, base - height, base - height * 0.78)
        cy, r = base - height * 0.89, height * 0.11
        cv.paint(where, (X - x) ** 2 + (Y - cy) ** 2 < r * r, C.PERSON, 0.2, 0.0)

    return paint


def _signpost(cv: Canvas, x: float, base: float, height: float):
    def paint() -> None:
        _rect(cv, x - 0.03 * height, x + 0.03 * height, base - height, base, C.OTHER, -0.2, 1.0)
        _rect(cv, x - 0.25 * height, x + 0.25 * height, base - height, base - 0.75 * height,
              C.OTHER, 0.3, 0.0)

    return paint


def _fence(cv: Canvas, x0: float, x1: float, base: float, height: float, spacing: float):
    def paint() -> None:
        where, X, Y = cv.region(x0, x1, base - height, base)
        post = ((X - x0) / spacing) % 1.0 < 0.18
        rel = (Y - (base - height)) / height
        rails = (np.abs(rel - 0.2) < 0.09) | (np.abs(rel - 0.6) < 0.09)
        cv.paint(where, post | rails, C.FENCE, 0.0, rel)

    return paint


def _railing(cv: Canvas, x0: float, x1: float, base: float, height: float) -> None:
    where, X, Y = cv.region(x0, x1, base - height, base)
    rel = (Y - (base - height)) / height
    balusters = ((X - x0) / (height * 0.8)) % 1.0 < 0.25
    cv.paint(where, balusters | (rel < 0.25), C.RAILING, 0.0, rel)


def _wall(cv: Canvas, rng: np.random.Generator, x0: float, x1: float, base: float,
          height: float):
    bumps = midpoint_profile(rng, 5, 0.5)

    def paint() -> None:
        where, X, Y = cv.region(x0, x1, base - height, base)
        top = base - height * (0.8 + 0.2 * np.interp(X, np.linspace(x0, x1, bumps.size), bumps))
        cv.paint(where, Y > top, C.WALL, 0.0, (Y - top) / height)

    return paint


def _skyline(cv: Canvas, rng: np.random.Generator, h: float, x0: float, x1: float,
             cls: int) -> None:
    """A row of buildings (or a tree line) standing on the horizon."""
    if cls == C.TREE:
        prof = midpoint_profile(rng, 7, 0.7)
        tops = h - rng.uniform(0.02, 0.06) * (0.4 + 0.6 * prof)
        where, X, Y = cv.region(x0, x1, tops.min(), h + 0.005)
        top = np.interp(X, np.linspace(x0, x1, tops.size), tops)
        cv.paint(where, Y > top, cls, -0.2, 0.7 * (Y - top) / (h + 0.005 - top))
        return
    x = x0
    while x < x1:
        w, tall = rng.uniform(0.02, 0.06), rng.uniform(0.03, 0.18)
        _rect(cv, x, min(x + w, x1), h - tall, h + 0.005, cls, rng.uniform(-0.5, 0.5), 1.0)
        x += w * rng.uniform(0.9, 1.4)


def _range(cv: Canvas, rng: np.random.Generator, h: float, cls: int, height: float,
           roughness: float) -> Callable[[float], float]:
    """A mountain or hill silhouette standing on the horizon; returns its top y at x."""
    knots = np.linspace(0, 1, 257)
    tops = h - height * (0.25 + 0.75 * midpoint_profile(rng, 8, roughness))
    slope = np.convolve(np.gradient(tops, knots), np.ones(9) / 9, mode="same")
    where, X, Y = cv.region(0, 1, tops.min(), h)
    top = np.interp(X, knots, tops)
    depth = (Y - top) / (h - top + 1e-9)
    # The sun is on the left: faces that rise to the right (dtop/dx < 0) are lit.
    shade = np.clip(-0.6 * np.interp(X, knots, slope), -1, 1) * (1 - depth)
    cv.paint(where, Y > top, cls, shade, depth)
    return lambda x: float(np.interp(x, knots, tops))


def compose(cv: Canvas, rng: np.random.Generator) -> None:
    """Draw one random landscape onto the canvas."""
    h = cv.horizon = float(rng.uniform(0.36, 0.6))
    kind = str(rng.choice(["sea", "lake", "river", "plain", "valley"], p=[.2, .2, .2, .25, .15]))
    ground = int(rng.choice([C.GRASS, C.FIELD, C.LAND, C.EARTH], p=[.45, .2, .2, .15]))
    to_y = lambda v: h + v * (1 - h)  # noqa: E731 - ground-plane depth v (0 far, 1 near) to y
    objects: list[tuple[float, Callable[[], None]]] = []  # (base y, painter)
    dry: Predicate = lambda x, y: True  # noqa: E731

    # Backdrop: mountains, then nearer hills, then the ground plane.
    mountain_top = None
    if rng.random() < (0.45 if kind == "sea" else 0.8):
        mountain_top = _range(cv, rng, h, C.MOUNTAIN, rng.uniform(0.12, 0.35), 0.58)
    if rng.random() < 0.5:
        _range(cv, rng, h, C.HILL, rng.uniform(0.04, 0.12), 0.42)
    where, X, Y = cv.region(0, 1, h, 1)
    v = (Y - h) / (1 - h)
    cv.paint(where, Y >= h, ground, 0.0, v)
    # Patches of a second ground class, smaller towards the horizon.
    alt = int(rng.choice([c for c in (C.GRASS, C.FIELD, C.LAND, C.EARTH) if c != ground]))
    patches = value_noise(rng, cv.xs, np.sqrt(np.clip((cv.ys - h) / (1 - h), 0, 1)), 4, 3)
    cv.paint(where, (patches[where[0]] > 0.62) & (Y >= h), alt, 0.0, v)
    if kind not in ("sea", "valley") and rng.random() < 0.25:
        x0 = rng.uniform(0, 0.6)
        _skyline(cv, rng, h, x0, x0 + rng.uniform(0.15, 0.4), C.BUILDING)
    if kind != "sea" and rng.random() < 0.6:
        x0 = rng.uniform(-0.2, 0.5)
        _skyline(cv, rng, h, x0, x0 + rng.uniform(0.3, 0.8), C.TREE)

    if kind in ("sea", "lake"):
        water = C.SEA if kind == "sea" else (C.LAKE if rng.random() < 0.7 else C.WATER)
        shore_v, amp = rng.uniform(0.3, 0.65), rng.uniform(0.01, 0.05)
        freq, phase = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * np.pi)
        shore = lambda x: to_y(shore_v + amp * np.sin(2 * np.pi * freq * x + phase))  # noqa
        top = shore(X)
        cv.paint(where, Y < top, water, 0.0, (Y - h) / (top - h))
        beach = C.SAND if kind == "sea" and rng.random() < 0.75 else ground
        cv.paint(where, Y >= top, beach, 0.0, (Y - top) / (1 - top))
        dry = lambda x, y: y > shore(x) + 0.02  # noqa: E731
        far = to_y(shore_v - amp) - 0.02
        for _ in range(rng.poisson(1.2)):
            y = rng.uniform(h + 0.02, far)
            ship = kind == "sea" and rng.random() < 0.35
            length = (0.05 + 0.25 * (y - h) / (1 - h)) * (2.0 if ship else 1.0)
            objects.append((y, _boat(cv, rng, rng.uniform(0.05, 0.95), y, length, ship)))
        if rng.random() < 0.3:
            px, y0 = rng.uniform(0.2, 0.8), rng.uniform(h + 0.02, far)
            objects.append((y0, lambda px=px, y0=y0: _pier(cv, px, y0, to_y)))
        if kind == "sea" and rng.random() < 0.4:
            for _ in range(rng.integers(1, 4)):
                y, r = rng.uniform(h + 0.05, far + 0.02), rng.uniform(0.02, 0.06)
                objects.append((y, _blob(cv, rng, rng.uniform(0, 1), y, r, r * 0.6, C.ROCK)))
        if kind == "lake" and mountain_top is not None and rng.random() < 0.4:
            wx = rng.uniform(0.2, 0.8)
            _waterfall(cv, wx, mountain_top(wx), h, rng.uniform(0.015, 0.04))
    elif kind == "river":
        x0, drift = rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.3)
        wiggle, freq, phase = rng.uniform(0, 0.1), rng.uniform(0.5, 2), rng.uniform(0, 2 * np.pi)
        w0, w1 = rng.uniform(0.005, 0.02), rng.uniform(0.08, 0.22)
        centre = lambda v: x0 + drift * v + wiggle * np.sin(2 * np.pi * freq * v + phase)  # noqa
        half = lambda v: w0 + (w1 - w0) * v  # noqa: E731
        cv.paint(where, np.abs(X - centre(v)) < half(v), C.RIVER, 0.0, v)
        dry = lambda x, y: abs(x - centre((y - h) / (1 - h))) > half((y - h) / (1 - h)) + 0.02
        if rng.random() < 0.45:
            vb = rng.uniform(0.15, 0.6)
            span, deck = half(vb) * 1.5 + 0.03, 0.01 + 0.05 * vb
            objects.append((to_y(vb), lambda vb=vb, span=span, deck=deck: _bridge(
                cv, centre(vb), to_y(vb), span, deck)))
        if rng.random() < 0.2:
            vb = rng.uniform(0.2, 0.8)
            objects.append((to_y(vb), _boat(cv, rng, centre(vb), to_y(vb), half(vb), False)))
        if mountain_top is not None and rng.random() < 0.35:
            _waterfall(cv, centre(0), mountain_top(centre(0)), h, w0 * 2 + 0.01)
    elif kind == "plain" and rng.random() < 0.75:
        road = C.ROAD if rng.random() < 0.55 else C.PATH
        vx, bx, bend = rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.9), rng.uniform(1, 2.5)
        w1 = rng.uniform(0.12, 0.3) if road == C.ROAD else rng.uniform(0.04, 0.1)
        centre = lambda v: vx + (bx - vx) * v**bend  # noqa: E731
        cv.paint(where, np.abs(X - centre(v)) < 0.003 + w1 * v, road, 0.0, v)
        dry = lambda x, y: abs(x - centre((y - h) / (1 - h))) > w1 * (y - h) / (1 - h) + 0.02
        if rng.random() < 0.5:  # a fence along one side, foreground only
            side = rng.choice([-1, 1])
            vf = rng.uniform(0.55, 0.9)
            xf = centre(vf) + side * (w1 * vf + 0.05)
            x0, x1 = (xf, 1.0) if side > 0 else (0.0, xf)
            fh = 0.03 + 0.08 * vf
            objects.append((to_y(vf), _fence(cv, x0, x1, to_y(vf), fh, fh * 1.2)))
    elif kind == "valley":
        px, pv = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.6)
        rx, ry = rng.uniform(0.1, 0.3), rng.uniform(0.03, 0.08)
        _blob(cv, rng, px, to_y(pv), rx, ry, C.WATER)()
        dry = lambda x, y: ((x - px) / rx) ** 2 + ((y - to_y(pv)) / ry) ** 2 > 1.6  # noqa

    # Things standing on dry ground, nearer ones bigger.
    def spot(v_lo: float, v_hi: float) -> tuple[float, float, float] | None:
        for _ in range(6):
            x, vv = rng.uniform(-0.05, 1.05), rng.uniform(v_lo, v_hi)
            if dry(x, to_y(vv)):
                return x, to_y(vv), vv
        return None

    n_trees = rng.integers(2, 9) if kind == "valley" else rng.integers(0, 6)
    for _ in range(n_trees):
        if s := spot(0.05, 1.1):
            height = (0.08 + 0.5 * s[2]) * rng.uniform(0.7, 1.3)
            objects.append((s[1], _tree(cv, rng, s[0], s[1], height)))
    for _ in range(rng.integers(0, 4)):
        if s := spot(0.55, 1.1):
            r = (0.02 + 0.06 * s[2]) * rng.uniform(0.6, 1.4)
            objects.append((s[1], _blob(cv, rng, s[0], s[1] - r * 0.5, r, r * 0.6, C.PLANT)))
    for _ in range(rng.integers(0, 3)):
        if s := spot(0.1, 1.0):
            r = (0.01 + 0.08 * s[2]) * rng.uniform(0.6, 1.4)
            objects.append((s[1], _blob(cv, rng, s[0], s[1] - r * 0.4, r, r * 0.7, C.ROCK)))
    if kind != "sea" and rng.random() < 0.45:
        for _ in range(rng.integers(1, 3)):
            if s := spot(0.03, 0.45):
                w = (0.05 + 0.2 * s[2]) * rng.uniform(0.8, 1.3)
                objects.append((s[1], _house(cv, s[0], s[1], w, w * rng.uniform(0.5, 0.8),
                                             w * rng.uniform(0.3, 0.5))))
    if rng.random() < 0.35:
        if s := spot(0.2, 0.9):
            objects.append((s[1], _person(cv, s[0], s[1], 0.03 + 0.2 * s[2])))
    if rng.random() < 0.2:
        if s := spot(0.3, 0.9):
            objects.append((s[1], _signpost(cv, s[0], s[1], 0.05 + 0.2 * s[2])))
    if rng.random() < 0.15:
        vw = rng.uniform(0.7, 0.95)
        x0 = rng.uniform(-0.1, 0.5)
        objects.append((to_y(vw), _wall(cv, rng, x0, x0 + rng.uniform(0.3, 0.7), to_y(vw),
                                        0.03 + 0.08 * vw)))
    for _, paint in sorted(objects, key=lambda o: o[0]):
        paint()


def _pier(cv: Canvas, x: float, y_far: float, to_y: Callable[[float], float]) -> None:
    """A jetty from the far end y_far to the bottom edge, wider as it comes closer."""
    h = to_y(0.0)
    v_far = (y_far - h) / (1 - h)
    _trapezoid(cv, x, y_far, 1.0, 0.01 + 0.05 * v_far, 0.07, C.PIER, 0.0, 0.5)
    _railing(cv, x - 0.01 - 0.05 * v_far, x + 0.01 + 0.05 * v_far, y_far,
             0.01 + 0.03 * v_far)


def _bridge(cv: Canvas, x: float, y: float, span: float, deck: float) -> None:
    _rect(cv, x - span, x + span, y - deck, y, C.BRIDGE, 0.0, 0.5)
    _railing(cv, x - span, x + span, y - deck, deck * 0.9)


def _waterfall(cv: Canvas, x: float, top: float, h: float, width: float) -> None:
    """A cliff of rock below the ridge with a falling band of water down to the horizon."""
    y0 = top + 0.15 * (h - top)
    _trapezoid(cv, x, y0 - 0.02, h, width * 1.5, width * 3, C.ROCK, -0.3, None)
    _trapezoid(cv, x, y0, h, width * 0.5, width, C.WATERFALL, 0.0, None)
