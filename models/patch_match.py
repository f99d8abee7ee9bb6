"""CoCosNet v2's GRU-assisted PatchMatch (Zhou et al., CVPR 2021), following microsoft/CoCosNet-v2
`models/networks/{patch_match,convgru,ops}.py`: the search that `models.cocosnet2`'s
correspondence runs at each of its three finer levels.

Each level starts from the coarser level's best match (16 candidates: a 4x4 window, dilation 2,
around it), then runs `iterations` rounds of PatchMatch (propagation from the left/right and
up/down neighbours, each followed by keeping the best third of the candidates) with a ConvGRU
proposing offset updates between rounds. The warped exemplar is the softmax-weighted sum of the
exemplar at the final 16 candidates; gradients reach the features only through that softmax, as
in the reference, where the search and the GRU run without a gradient path.

Randomness: the reference has no random-search step; its one random draw is a fair coin per
round choosing whether to propagate horizontally or vertically first. Here that coin comes from
the `generator` passed to forward (or the global CPU RNG).

Two consequences of the reference that we keep (checked against it): the GRU and the layer that
starts its hidden state (369,280 parameters) never receive a gradient, so they stay at their
initialisation; and their tiny offset updates still move matches, because the reference truncates
the flattened float index (`offset_rounding="reference"`; "nearest" rounds each coordinate
instead, which makes the untrained GRU a no-op).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.spade import check_choice

SEARCH_WINDOW, SEARCH_DILATION = 4, 2  # candidates around the upsampled coarse match
NUM_CANDIDATES = SEARCH_WINDOW**2
GRU_HIDDEN = 32
# How a GRU-updated (fractional) offset becomes an index: see `offsets_to_indices`.
OFFSET_ROUNDINGS = ("reference", "nearest")

# PatchMatch on offset fields. An offset field is a (rows, cols) pair of (B, K, H, W) tensors:
# K candidate matches per position p, at p + (rows, cols) in the exemplar's grid of the same size.


def _base_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
    return rows, torch.arange(w, device=device, dtype=torch.float32).view(1, w)


def offsets_to_indices(
    off_rows: torch.Tensor, off_cols: torch.Tensor, rounding: str = "reference"
) -> torch.Tensor:
    """Flat exemplar indices (B, K, H*W) of the candidates, clamped to the grid.

    Offsets are whole numbers except right after a GRU update. rounding="reference" does what
    the reference does then: it truncates the flattened float index row * W + col, so a row
    update of -1e-4 moves the match one column left. "nearest" rounds each coordinate.
    """
    h, w = off_rows.shape[-2:]
    rows, cols = _base_grid(h, w, off_rows.device)
    r = (rows + off_rows.float()).clamp(0, h - 1)
    c = (cols + off_cols.float()).clamp(0, w - 1)
    if rounding == "nearest":
        r, c = r.round(), c.round()
    return (r * w + c).long().flatten(2)


def indices_to_offsets(indices: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `offsets_to_indices`: flat indices (B, K, H*W) to an offset field."""
    idx = indices.view(indices.shape[0], indices.shape[1], h, w)
    rows, cols = _base_grid(h, w, indices.device)
    return torch.div(idx, w, rounding_mode="floor") - rows, idx % w - cols


def _gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x (B, C, N) at flat indices (B, M): (B, C, M)."""
    return torch.gather(x, 2, indices[:, None].expand(-1, x.shape[1], -1))


def match_scores(
    left: torch.Tensor, right: torch.Tensor, indices: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Similarity / temperature (B, K, HW) of left (B, C, HW) with right at each candidate.

    One candidate at a time, as the reference: memory stays O(B C HW) per candidate.
    """
    scores = [(left * _gather(right, indices[:, k])).sum(dim=1) for k in range(indices.shape[1])]
    return torch.stack(scores, dim=1) / temperature


def propagate(
    off_rows: torch.Tensor, off_cols: torch.Tensor, direction: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """PatchMatch propagation: each position also takes the candidates of its two neighbours
    along `direction` ("horizontal" or "vertical"), K -> 3K; zero offsets past the border."""

    def spread(off: torch.Tensor) -> torch.Tensor:
        if direction == "horizontal":
            before, after = F.pad(off[..., :-1], (1, 0)), F.pad(off[..., 1:], (0, 1))
        else:
            before = F.pad(off[..., :-1, :], (0, 0, 1, 0))
            after = F.pad(off[..., 1:, :], (0, 0, 0, 1))
        return torch.cat((before, off, after), dim=1)

    return spread(off_rows), spread(off_cols)


def evaluate(
    left: torch.Tensor,
    right: torch.Tensor,
    off_rows: torch.Tensor,
    off_cols: torch.Tensor,
    temperature: float,
    rounding: str = "reference",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the best third of the candidates by softmax score. Returns their offsets and their
    softmax probabilities (B, K // 3, H, W), best first."""
    b, k, h, w = off_rows.shape
    indices = offsets_to_indices(off_rows, off_cols, rounding)
    prob = F.softmax(match_scores(left, right, indices, temperature), dim=1)
    top, order = prob.topk(k // 3, dim=1)
    rows, cols = indices_to_offsets(indices.gather(1, order), h, w)
    return rows, cols, top.view(b, k // 3, h, w)


def window_candidates(
    best: torch.Tensor, coarse_hw: tuple[int, int], fine_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 16 initial candidates of a level from the coarser level's best match (B, Hc*Wc):
    twice the coarse offset plus a 4x4 window of steps -2, 0, 2, 4 (the reference's centering 1,
    dilation 2), upsampled 2x (nearest) to the fine grid."""
    hc, wc = coarse_hw
    rows, cols = indices_to_offsets(best[:, None], hc, wc)
    steps = torch.arange(SEARCH_WINDOW, device=best.device, dtype=torch.float32)
    steps = (steps - 1) * SEARCH_DILATION
    d_rows = steps.view(1, -1, 1, 1).repeat_interleave(SEARCH_WINDOW, dim=1)
    d_cols = steps.view(1, -1, 1, 1).repeat(1, SEARCH_WINDOW, 1, 1)
    up_rows = F.interpolate(2 * rows + d_rows, size=fine_hw, mode="nearest")
    return up_rows, F.interpolate(2 * cols + d_cols, size=fine_hw, mode="nearest")


class MotionEncoder(nn.Module):
    """RAFT-style encoder of the candidates' scores and offsets (the reference's
    BasicMotionEncoder): 64 channels out, the offsets passed through as the last 32."""

    def __init__(self) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(NUM_CANDIDATES, 64, kernel_size=1)
        self.convc2 = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.convf1 = nn.Conv2d(2 * NUM_CANDIDATES, 64, kernel_size=7, padding=3)
        self.convf2 = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.conv = nn.Conv2d(128, 64 - 2 * NUM_CANDIDATES, kernel_size=3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat((F.relu(self.conv(torch.cat((cor, flo), dim=1))), flow), dim=1)


class SepConvGRU(nn.Module):
    """ConvGRU with a 1x5 then a 5x1 update (RAFT's separable GRU)."""

    def __init__(self, hidden_dim: int = GRU_HIDDEN, input_dim: int = 64) -> None:
        super().__init__()
        n = hidden_dim + input_dim
        self.convz1 = nn.Conv2d(n, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(n, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(n, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(n, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(n, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(n, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for convz, convr, convq in (
            (self.convz1, self.convr1, self.convq1),
            (self.convz2, self.convr2, self.convq2),
        ):
            hx = torch.cat((h, x), dim=1)
            z, r = torch.sigmoid(convz(hx)), torch.sigmoid(convr(hx))
            q = torch.tanh(convq(torch.cat((r * h, x), dim=1)))
            h = (1 - z) * h + z * q
        return h


class UpdateBlock(nn.Module):
    """Motion encoder, GRU and flow head: new hidden state and (rows, cols) offset updates."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = MotionEncoder()
        self.gru = SepConvGRU()
        self.flow_head = nn.Sequential(
            nn.Conv2d(GRU_HIDDEN, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 2 * NUM_CANDIDATES, kernel_size=3, padding=1),
        )

    def forward(
        self, hidden: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.gru(hidden, self.encoder(flow, corr))
        d_rows, d_cols = self.flow_head(hidden).chunk(2, dim=1)
        return hidden, d_rows, d_cols


class PatchMatchGRU(nn.Module):
    """One level of GRU-assisted PatchMatch: `iterations` rounds of (propagation + evaluation in
    random order, ConvGRU offset update), then the differentiable warp."""

    def __init__(
        self,
        nef: int = 32,
        iterations: int = 5,
        temperature: float = 0.01,
        offset_rounding: str = "reference",
    ) -> None:
        super().__init__()
        check_choice("offset_rounding", offset_rounding, OFFSET_ROUNDINGS)
        self.iterations, self.temperature, self.rounding = iterations, temperature, offset_rounding
        norm = nn.InstanceNorm2d(GRU_HIDDEN, affine=False)
        self.initial_layer = nn.Sequential(
            nn.Conv2d(2 * nef, GRU_HIDDEN, kernel_size=3, padding=1),
            norm,
            nn.ReLU(),
            nn.Conv2d(GRU_HIDDEN, GRU_HIDDEN, kernel_size=3, padding=1),
            norm,
            nn.ReLU(),
        )
        self.refine_net = UpdateBlock()

    def _step(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Propagate and evaluate along both axes, the order drawn by a fair coin."""
        device = generator.device if generator is not None else torch.device("cpu")
        first_horizontal = bool(torch.rand((), generator=generator, device=device) < 0.5)
        first, second = "horizontal", "vertical"
        if not first_horizontal:
            first, second = second, first
        t, rounding = self.temperature, self.rounding
        rows, cols, _ = evaluate(left, right, *propagate(rows, cols, first), t, rounding)
        return evaluate(left, right, *propagate(rows, cols, second), t, rounding)

    def forward(
        self,
        left: torch.Tensor,
        right: torch.Tensor,
        exemplar: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """left, right: normalised features (B, C, H, W); exemplar (B, 3, H, W); initial
        candidates (B, 16, H, W). Returns the final candidates' flat indices (B, 16, H*W), best
        of the last evaluation first, and the warped exemplar (B, 3, H, W)."""
        b, c, h, w = left.shape
        left_flat, right_flat = left.flatten(2), right.flatten(2)
        # The reference runs the search and the GRU with autograd on, but the offsets only reach
        # the loss as integer indices: no gradient ever arrives there. no_grad spares the memory.
        with torch.no_grad():
            hidden = self.initial_layer(torch.cat((left, right), dim=1))
            for _ in range(self.iterations):
                rows, cols, corr = self._step(left_flat, right_flat, rows, cols, generator)
                flow = torch.cat((rows, cols), dim=1).to(hidden.dtype)
                hidden, d_rows, d_cols = self.refine_net(hidden, corr.to(hidden.dtype), flow)
                rows, cols = rows + d_rows.float(), cols + d_cols.float()
            indices = offsets_to_indices(rows, cols, self.rounding)
        prob = F.softmax(match_scores(left_flat, right_flat, indices, self.temperature), dim=1)
        ex = exemplar.flatten(2)
        warp = _gather(ex, indices[:, 0]) * prob[:, :1]
        for k in range(1, indices.shape[1]):
            warp = warp + _gather(ex, indices[:, k]) * prob[:, k : k + 1]
        return indices, warp.view(b, exemplar.shape[1], h, w)

