"""KL divergence of the VAE encoder's Gaussian from N(0, I), as SPADE's `KLDLoss`."""

from __future__ import annotations

import torch


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-0.5 * sum(1 + logvar - mu^2 - exp(logvar)), summed over batch and latent dimensions
    (not averaged, as the reference). Unweighted: lambda_kld is the caller's."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
