"""Parity of `models.sinkhorn`, UNITE's unbalanced Sinkhorn solver, with pip geomloss 0.3.1, whose
legacy `SamplesLoss("sinkhorn", p, blur, reach, scaling=..., debias=False, potentials=True,
backend="tensorized")` runs the loop UNITE vendored: dual potentials and their gradients,
float64, small random clouds of unit vectors.

fnzhan/UNITE's vendored copy (`models/networks/geomloss/`) departs from pip geomloss in two
places, and `models.sinkhorn` follows the copy in both:

- Cost. UNITE's `utils.py` rewrites `squared_distances` as 1 - <x, y> and `distances` as its root
  (0, with zero gradient, where 1 - <x, y> <= 0): sqrt(1 - <x, y>) for p = 1, (1 - <x, y>) / 2
  for p = 2. Pip geomloss defaults to |x - y|^p / p, so these tests hand it UNITE's cost through
  `cost=` (`_unite_cost`, written out here rather than imported from `models.sinkhorn`).
- Epsilon schedule. UNITE's `epsilon_schedule` is [diameter^p, blur^p, then diameter^p times
  scaling^p per step while above blur^p]: blur^p comes second, where pip puts it last. UNITE's last
  iterations and its final, gradient-carrying update thus run at the smallest scaled value, which
  lies in [blur^p, blur^p / scaling^p), not at blur^p, and its potentials differ from pip's.

So: the solver `sinkhorn_uot` is compared with pip's loop on pip's own schedule (diameter given
to both); `epsilon_schedule` must be pip's list with its last entry moved to second place;
`SinkhornUOT` end to end (diameter, schedule, cost, loop, gradients) is compared with `SamplesLoss`
whose `epsilon_schedule` is patched to that order; and unpatched pip geomloss must give other
potentials, so that the tests notice if either side stops differing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from geomloss import SamplesLoss
from geomloss._legacy import sinkhorn_divergence as pip_sinkhorn  # holds the schedule pip's loss reads

from exemplar_helpers import one_thread  # noqa: F401  (autouse fixture)
from models.sinkhorn import SinkhornUOT, epsilon_schedule, sinkhorn_uot, uot_cost

B, N, M, D = 2, 17, 23, 8  # N != M, so that a swapped f / g or a missing transpose fails

# (p, blur, reach, scaling): balanced and KL-relaxed; UNITE's p = 1, blur = 0.025, and p = 2.
CASES = [
    (1, 0.025, None, 0.5),
    (1, 0.025, 0.5, 0.5),
    (1, 0.025, 2.0, 0.7),
    (2, 0.05, None, 0.5),
    (2, 0.05, 0.5, 0.7),
    (2, 0.05, 2.0, 0.5),
]
RTOL = 1e-9  # of the largest |potential|: the same float64 ops in the same order (bit-identical here)


def _case_id(case: tuple[int, float, float | None, float]) -> str:
    p, blur, reach, scaling = case
    return f"p{p}-blur{blur}-reach{reach}-scaling{scaling}"


def _unite_cost(p: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """UNITE's geomloss cost (B, N, M) for pip geomloss' `cost=` argument."""

    def cost(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = 1 - torch.bmm(x, y.transpose(1, 2))
        return d / 2 if p == 2 else d.clamp_min(0).sqrt()

    return cost


def _pip_loss(p: int, blur: float, reach: float | None, scaling: float, diameter: float | None = None) -> SamplesLoss:
    return SamplesLoss(
        "sinkhorn",
        p=p,
        blur=blur,
        reach=reach,
        diameter=diameter,
        scaling=scaling,
        cost=_unite_cost(p),
        debias=False,  # UNITE's call: raw OT_eps potentials, dense matrices
        potentials=True,
        backend="tensorized",
    )


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masses a (B, N), b (B, M), positive, summing to 1; unit vectors x (B, N, D), y (B, M, D)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.softmax(torch.randn(B, N, generator=gen, dtype=torch.float64), dim=1)
    b = torch.softmax(torch.randn(B, M, generator=gen, dtype=torch.float64), dim=1)
    x = F.normalize(torch.randn(B, N, D, generator=gen, dtype=torch.float64), dim=2)
    y = F.normalize(torch.randn(B, M, D, generator=gen, dtype=torch.float64), dim=2)
    return a, x, b, y


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest deviation over the largest |reference value|: potentials can cross 0."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture
def unite_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pip geomloss with UNITE's epsilon order: its own list, last entry (blur^p) moved to second."""
    pip_schedule = pip_sinkhorn.epsilon_schedule

    def reordered(p: int, diameter: float, blur: float, scaling: float) -> list[float]:
        eps = pip_schedule(p, diameter, blur, scaling)
        return [eps[0], eps[-1], *eps[1:-1]]

    monkeypatch.setattr(pip_sinkhorn, "epsilon_schedule", reordered)


# ----------------------------------------------------------------------------------------------
# The cost and the schedule.


@pytest.mark.parametrize("p", [1, 2])
def test_cost_is_unites_cosine_cost(p: int) -> None:
    """For unit vectors 1 - <x, y> = |x - y|^2 / 2: UNITE's cost is |x - y| / sqrt 2 for p = 1,
    |x - y|^2 / 4 for p = 2 (pip's default would be |x - y|^p / p)."""
    _, x, _, y = _inputs(0)
    dist = torch.cdist(x, y)
    expected = dist / 2**0.5 if p == 1 else dist**2 / 4
    torch.testing.assert_close(uot_cost(x, y, p), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(uot_cost(x, y, p), _unite_cost(p)(x, y), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize(
    "p, diameter, blur, scaling",
    [(1, 2.0, 0.025, 0.5), (1, 1.37, 0.025, 0.7), (2, 2.6, 0.05, 0.5), (2, 0.9, 0.05, 0.8), (1, 0.01, 0.025, 0.5)],
)
def test_epsilon_schedule_is_pips_with_blur_second(p: int, diameter: float, blur: float, scaling: float) -> None:
    pip_eps = pip_sinkhorn.epsilon_schedule(p, diameter, blur, scaling)
    ours = epsilon_schedule(diameter, blur, p, scaling)
    assert len(ours) == len(pip_eps)
    assert ours == pytest.approx([pip_eps[0], pip_eps[-1], *pip_eps[1:-1]], rel=1e-12)


# ----------------------------------------------------------------------------------------------
# The potentials.


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_solver_matches_geomloss_on_its_schedule(case: tuple[int, float, float | None, float]) -> None:
    """`sinkhorn_uot` on pip's own schedule: the loop, damping and last update, diameter fixed."""
    p, blur, reach, scaling = case
    a, x, b, y = _inputs(CASES.index(case))
    diameter = 2.0  # any value above blur: 2 bounds the distance between unit vectors
    F_ref, G_ref = _pip_loss(p, blur, reach, scaling, diameter)(a, x, b, y)
    eps_list = pip_sinkhorn.epsilon_schedule(p, diameter, blur, scaling)
    rho = None if reach is None else reach**p
    f, g = sinkhorn_uot(a, b, uot_cost(x, y, p), uot_cost(y, x, p), eps_list, rho)
    assert _rel_err(f, F_ref) < RTOL
    assert _rel_err(g, G_ref) < RTOL


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_module_matches_geomloss_with_unite_schedule(
    unite_schedule: None, case: tuple[int, float, float | None, float]
) -> None:
    """`SinkhornUOT` end to end, diameter from the clouds on both sides."""
    p, blur, reach, scaling = case
    a, x, b, y = _inputs(CASES.index(case))
    F_ref, G_ref = _pip_loss(p, blur, reach, scaling)(a, x, b, y)
    f, g = SinkhornUOT(p, blur, reach, scaling)(a, x, b, y)
    assert _rel_err(f, F_ref) < RTOL
    assert _rel_err(g, G_ref) < RTOL


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=_case_id)
def test_pip_schedule_gives_other_potentials(case: tuple[int, float, float | None, float]) -> None:
    """The schedule difference is real: unpatched pip geomloss ends at blur^p, UNITE does not."""
    p, blur, reach, scaling = case
    a, x, b, y = _inputs(CASES.index(case))
    F_pip, G_pip = _pip_loss(p, blur, reach, scaling)(a, x, b, y)
    f, g = SinkhornUOT(p, blur, reach, scaling)(a, x, b, y)
    assert _rel_err(f, F_pip) > 1e-3
    assert _rel_err(g, G_pip) > 1e-3


# ----------------------------------------------------------------------------------------------
# The gradients (through the last update only, to the cost's first argument).


@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=_case_id)
def test_gradients_match_geomloss(unite_schedule: None, case: tuple[int, float, float | None, float]) -> None:
    p, blur, reach, scaling = case
    a, x0, b, y0 = _inputs(10 + CASES.index(case))
    grads = []
    for solver in (SinkhornUOT(p, blur, reach, scaling), _pip_loss(p, blur, reach, scaling)):
        x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
        f, g = solver(a, x, b, y)
        # sum(f a) reaches only x (the cost's y is detached), sum(g b) only y.
        gx, gy = torch.autograd.grad((f * a).sum() + (g * b).sum(), (x, y))
        grads.append((gx, gy))
    (gx, gy), (gx_ref, gy_ref) = grads
    assert gx_ref.abs().max() > 0 and gy_ref.abs().max() > 0
    assert _rel_err(gx, gx_ref) < 1e-8
    assert _rel_err(gy, gy_ref) < 1e-8
