"""The noise primitives of the procedural scenes: smooth lattice noise and fractal profiles, both
in [0, 1] and drawn from a given generator, so a seed gives the same field at every resolution."""

from __future__ import annotations

import numpy as np


def value_noise(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, cells_x: int,
                cells_y: int) -> np.ndarray:
    """Smooth lattice noise in [0, 1] at the grid xs (W,) x ys (H,) of coordinates in [0, 1]."""
    lattice = rng.random((cells_y + 1, cells_x + 1), dtype=np.float32)
    ix, tx = _cell(xs, cells_x)
    iy, ty = _cell(ys, cells_y)
    # Separable bilinear: interpolate the lattice rows along x first, then along y.
    rows = lattice[:, ix] * (1 - tx) + lattice[:, ix + 1] * tx
    return rows[iy] * (1 - ty)[:, None] + rows[iy + 1] * ty[:, None]


def _cell(coords: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    f = np.clip(coords, 0.0, 1.0).astype(np.float32) * cells
    i = np.minimum(f.astype(np.int64), cells - 1)
    t = f - i
    return i, t * t * (3 - 2 * t)  # smoothstep hides the lattice


def midpoint_profile(rng: np.random.Generator, levels: int, roughness: float) -> np.ndarray:
    """A 1D fractal profile in [0, 1] on 2**levels + 1 knots (midpoint displacement)."""
    pts = np.zeros(2**levels + 1)
    pts[[0, -1]] = rng.random(2)
    step, amp = 2**levels, 1.0
    while step > 1:
        half = step // 2
        left, right = pts[0:-1:step], pts[step::step]
        pts[half::step] = (left + right) / 2 + rng.uniform(-amp, amp, left.size)
        step, amp = half, amp * roughness
    return (pts - pts.min()) / (np.ptp(pts) + 1e-9)
