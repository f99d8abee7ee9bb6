"""Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs").

The unbiased MMD^2 estimate with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets of equal size drawn without replacement from each feature set, as
in NVlabs/stylegan3's `kernel_inception_distance`, torch-fidelity and piq. It works on any
features; on FID Inception features from random weights it is no more KID than that is FID.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gantune.errors import GantuneError


def polynomial_mmd2(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD^2 between two equal-size samples (m, d) with k = (x.y / d + 1)^3.

    The within-set sums drop the diagonal (k(x, x) is not an independent pair); the cross sum
    keeps all m^2 pairs, which is the estimator of the paper and the references.
    """
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (
        m * (m - 1)
    )
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    features_a: Tensor | np.ndarray,
    features_b: Tensor | np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean and standard deviation (ddof=0, as torch-fidelity) of the subset MMD^2 estimates.

    Each subset takes min(subset_size, n_a, n_b) rows of each set. The subsets are drawn with a
    torch.Generator seeded by `seed`: a permutation of set a, then of set b, per subset.
    """
    a = torch.as_tensor(np.asarray(features_a), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(features_b), dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise GantuneError(
            f"kernel_inception_distance: expected features (N, D) of equal D, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2 or num_subsets < 1:
        raise GantuneError(
            f"kernel_inception_distance: need subsets of 2 or more rows and num_subsets >= 1, "
            f"got {m} rows (subset_size {subset_size}, sets of {a.shape[0]} and {b.shape[0]}) "
            f"and num_subsets {num_subsets}"
        )
    gen = torch.Generator().manual_seed(seed)
    estimates = []
    for _ in range(num_subsets):
        ia = torch.randperm(a.shape[0], generator=gen)[:m]
        ib = torch.randperm(b.shape[0], generator=gen)[:m]
        estimates.append(polynomial_mmd2(a[ia], b[ib]))
    values = np.asarray(estimates)
    return float(values.mean()), float(values.std())
