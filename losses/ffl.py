"""The focal frequency loss (Jiang et al. 2021), `lambda_ffl` in configs.

As the focal-frequency-loss package (FocalFrequencyLoss, v0.3.0), without its `loss_weight`: the
trainer applies lambda_ffl. Images are cut into patch_factor x patch_factor patches and taken
to the frequency domain with an orthonormal 2D FFT. The loss is the mean over all frequencies of
W * |F_pred - F_target|^2, where the spectrum weight matrix W = |F_pred - F_target|^alpha
(optionally log(1 + .)), scaled to [0, 1] by its maximum per image, patch and channel (or over
the whole batch with batch_matrix), is detached: it weights the loss but gets no gradient.

Input range: any; the loss compares the tensors as given. Pass the generator's [-1, 1] images
and targets in the same range (the reference's VanillaAE example trains a tanh output the same
way). W is scale-free, the loss itself scales with the square of the range.
"""

from __future__ import annotations

import torch
from torch import nn

from gantune.errors import GantuneError


class FocalFrequencyLoss(nn.Module):
    """Focal frequency loss between two (N, C, H, W) tensors (unweighted)."""

    def __init__(
        self,
        alpha: float = 1.0,
        patch_factor: int = 1,
        ave_spectrum: bool = False,
        log_matrix: bool = False,
        batch_matrix: bool = False,
    ) -> None:
        super().__init__()
        if not alpha > 0:
            raise GantuneError(f"alpha={alpha!r}: expected the weight matrix exponent > 0")
        if isinstance(patch_factor, bool) or not isinstance(patch_factor, int) or patch_factor < 1:
            raise GantuneError(f"patch_factor={patch_factor!r}: expected an integer >= 1")
        self.alpha = alpha
        self.patch_factor = patch_factor
        self.ave_spectrum = ave_spectrum
        self.log_matrix = log_matrix
        self.batch_matrix = batch_matrix

    def _spectrum(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> complex (N, P, C, H/p, W/p), patches in row-major order."""
        n, c, h, w = x.shape
        p = self.patch_factor
        if h % p or w % p:
            raise GantuneError(
                f"patch_factor={p}: expected it to divide the image height and width, got {h}x{w}"
            )
        patches = x.reshape(n, c, p, h // p, p, w // p).permute(0, 2, 4, 1, 3, 5)
        return torch.fft.fft2(patches.reshape(n, p * p, c, h // p, w // p), norm="ortho")

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, matrix: torch.Tensor | None = None
    ) -> torch.Tensor:
        """pred, target: (N, C, H, W). matrix: an optional fixed spectrum weight matrix in [0, 1]
        (broadcast against (N, P, C, H/p, W/p)); by default it is computed from the current error.
        """
        if pred.ndim != 4:
            raise GantuneError(f"pred: expected (N, C, H, W), got {tuple(pred.shape)}")
        if pred.shape != target.shape:
            raise GantuneError(
                f"target: expected the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}"
            )
        pred_freq, target_freq = self._spectrum(pred), self._spectrum(target)
        if self.ave_spectrum:  # the minibatch's average spectrum
            pred_freq = pred_freq.mean(0, keepdim=True)
            target_freq = target_freq.mean(0, keepdim=True)
        diff = pred_freq - target_freq
        distance = diff.real**2 + diff.imag**2

        if matrix is not None:
            weight = matrix.detach()
            if not (weight.min() >= 0 and weight.max() <= 1):
                raise GantuneError(
                    f"matrix: expected spectrum weights in [0, 1], got "
                    f"[{weight.min().item():.4g}, {weight.max().item():.4g}]"
                )
        else:
            with torch.no_grad():
                weight = distance.sqrt() ** self.alpha
                if self.log_matrix:
                    weight = torch.log(weight + 1.0)
                if self.batch_matrix:
                    weight = weight / weight.max()
                else:
                    weight = weight / weight.amax(dim=(-2, -1), keepdim=True)
                # 0/0 where pred equals target on a whole patch: no error there, no weight.
                weight = torch.nan_to_num(weight, nan=0.0).clamp(0.0, 1.0)
        return (weight * distance).mean()
