"""Entropic optimal transport with KL-relaxed (unbalanced) marginals, as UNITE (Zhan et al., CVPR
2021) solves it in `models.unite`: the Sinkhorn solver of fnzhan/UNITE's copy of geomloss
(`models/networks/geomloss/`, `SamplesLoss("sinkhorn", ..., debias=False, potentials=True)` with
the tensorized backend), its epsilon-scaling schedule, cost and the reference's warp matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from gantune.errors import GantuneError
from models.exemplar_blocks import check_positive


def uot_cost(x: torch.Tensor, y: torch.Tensor, p: int = 1) -> torch.Tensor:
    """Cost (B, N, M) between unit feature vectors x (B, N, D) and y (B, M, D): sqrt(1 - <x, y>)
    for p = 1 (0 where 1 - <x, y> <= 0, with zero gradient there), (1 - <x, y>) / 2 for p = 2."""
    d = 1 - torch.bmm(x, y.transpose(1, 2))
    if p == 2:
        return d / 2
    pos = d > 0
    return torch.where(pos, torch.where(pos, d, torch.ones_like(d)).sqrt(), torch.zeros_like(d))


def epsilon_schedule(diameter: float, blur: float, p: int = 1, scaling: float = 0.5) -> list[float]:
    """The reference's epsilon-scaling list: diameter**p, blur**p, then diameter**p shrinking by
    scaling**p per step while above blur**p. (Its blur**p comes second, not last: the last
    iterations run at the smallest scaled value, which can be up to 1/scaling**p times blur**p.)"""
    start, stop, step = p * math.log(diameter), p * math.log(blur), p * math.log(scaling)
    count = max(0, math.ceil((stop - start) / step))  # numpy.arange's length; 0 if diameter <= blur
    return [diameter**p, blur**p] + [math.exp(start + i * step) for i in range(count)]


def softmin(eps: float, cost: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """-eps * log sum_j exp(h_j - C_ij / eps): cost (B, N, M), h (B, M) -> (B, N)."""
    return -eps * torch.logsumexp(h[:, None, :] - cost / eps, dim=2)


def _log_weights(w: torch.Tensor) -> torch.Tensor:
    # As geomloss: empty positions get a log-mass of -1e5 instead of -inf.
    return torch.where(w > 0, w.clamp_min(torch.finfo(w.dtype).tiny).log(), torch.full_like(w, -1e5))


def sinkhorn_uot(
    a: torch.Tensor,
    b: torch.Tensor,
    cost_xy: torch.Tensor,
    cost_yx: torch.Tensor,
    eps_list: Sequence[float],
    rho: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual potentials (f on x, g on y) of entropic OT with KL-relaxed marginals:

        min_T <T, C> + eps KL(T | a x b) + rho KL(T 1 | a) + rho KL(T^T 1 | b),

    a (B, N) and b (B, M) masses, cost_xy (B, N, M) and cost_yx = its transpose (B, M, N).
    Each step updates both potentials at once from the other's previous value and averages with
    the old value (geomloss' symmetrised updates), for each eps in `eps_list` in turn:

        f <- (f + lam * softmin(eps, C_xy, log b + g / eps)) / 2,  lam = 1 / (1 + eps / rho)

    (lam = 1 for rho None: balanced OT). The plan is T_ij = a_i b_j exp((f_i + g_j - C_ij) / eps).
    The loop runs without autograd; one last update at the final eps, with the potentials
    detached, carries the gradient, to the cost matrices only (geomloss' "last extrapolation").
    Pass cost_xy = cost(x, y.detach()) and cost_yx = cost(y, x.detach()) as the reference does.
    """
    if not eps_list:
        raise ValueError("sinkhorn_uot: empty eps_list")
    if rho is not None and not rho > 0:
        raise ValueError(f"sinkhorn_uot: rho must be > 0 or None, got {rho!r}")

    def damping(eps: float) -> float:
        return 1.0 if rho is None else 1.0 / (1.0 + eps / rho)

    log_a, log_b = _log_weights(a), _log_weights(b)
    with torch.no_grad():
        eps = eps_list[0]
        g = damping(eps) * softmin(eps, cost_yx, log_a)
        f = damping(eps) * softmin(eps, cost_xy, log_b)
        for eps in eps_list:
            lam = damping(eps)
            g_new = lam * softmin(eps, cost_yx, log_a + f / eps)
            f_new = lam * softmin(eps, cost_xy, log_b + g / eps)
            f, g = 0.5 * (f + f_new), 0.5 * (g + g_new)
    lam = damping(eps)
    f_out = lam * softmin(eps, cost_xy, (log_b + g / eps).detach())
    g_out = lam * softmin(eps, cost_yx, (log_a + f / eps).detach())
    return f_out, g_out


def transport_plan(
    f: torch.Tensor, g: torch.Tensor, cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float
) -> torch.Tensor:
    """T_ij = a_i b_j exp((f_i + g_j - C_ij) / eps), (B, N, M)."""
    return torch.exp((f[:, :, None] + g[:, None, :] - cost) / eps) * a[:, :, None] * b[:, None, :]


def warp_matrix(g: torch.Tensor, cost: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference's `f_div_C` (B, N, M): exp((f_i + g_j - C_ij) / eps) * a_i * b_i, normalised
    over each row, = softmax_j((g_j - C_ij) / eps).

    The reference views both masses as (B, N, 1), so it scales row i by a_i * b_i rather than
    column j by b_j: a per-row factor, which the normalisation cancels with f_i. The exemplar's
    mass reaches the warp only through g. Computed in the log domain: the reference's exp
    overflows float32 once the exponent passes ~88, which eps = 0.025 allows.
    """
    return torch.softmax((g[:, None, :] - cost) / eps, dim=2)


class SinkhornUOT(nn.Module):
    """The reference's `SamplesLoss("sinkhorn", p, blur, reach, debias=False, potentials=True)`:
    potentials (f, g) for masses a (B, N) on points x (B, N, D) and b (B, M) on y (B, M, D)."""

    def __init__(self, p: int = 1, blur: float = 0.025, reach: float | None = None, scaling: float = 0.5) -> None:
        super().__init__()
        if p not in (1, 2) or isinstance(p, bool):
            raise GantuneError(f"p: expected 1 or 2, got {p!r}")
        check_positive("blur", blur)
        if reach is not None:
            check_positive("reach", reach)
        check_positive("scaling", scaling)
        if not scaling < 1:
            raise GantuneError(f"scaling: expected a number in (0, 1), got {scaling!r}")
        self.p, self.blur, self.reach, self.scaling = p, blur, reach, scaling

    def forward(
        self, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():  # the bounding box of all points, whole batch pooled, as geomloss
            pts = torch.cat((x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])))
            diameter = float(torch.linalg.vector_norm(pts.max(dim=0).values - pts.min(dim=0).values))
        # A zero diameter (all points equal) would make log(diameter) -inf.
        eps_list = epsilon_schedule(diameter if diameter > 0 else self.blur, self.blur, self.p, self.scaling)
        rho = None if self.reach is None else self.reach**self.p
        cost_xy = uot_cost(x, y.detach(), self.p)
        cost_yx = uot_cost(y, x.detach(), self.p)
        return sinkhorn_uot(a, b, cost_xy, cost_yx, eps_list, rho)

