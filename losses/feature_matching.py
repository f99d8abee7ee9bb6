"""GAN feature matching of pix2pixHD / SPADE: L1 between the discriminator's intermediate
features on fake and on real images, pulling the generator's statistics towards the real ones."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def feature_matching_loss(
    pred_fake: Sequence[Sequence[torch.Tensor]],
    pred_real: Sequence[Sequence[torch.Tensor]],
) -> torch.Tensor:
    """Sum over scales and layers of mean |fake - real|, divided by the number of scales.

    Each scale's final element is the prediction, not a feature, and is skipped. The real
    features are detached: the loss trains the generator only. Unweighted (lambda_feat is the
    caller's).
    """
    if len(pred_fake) != len(pred_real) or len(pred_fake) == 0:
        raise ValueError(
            f"feature_matching_loss: {len(pred_fake)} fake vs {len(pred_real)} real scales"
        )
    num_D = len(pred_fake)
    total = pred_fake[0][-1].new_zeros(())
    for fake_feats, real_feats in zip(pred_fake, pred_real):
        if len(fake_feats) != len(real_feats):
            raise ValueError(
                f"feature_matching_loss: {len(fake_feats)} fake vs {len(real_feats)} real outputs"
            )
        for fake, real in zip(fake_feats[:-1], real_feats[:-1]):
            total = total + F.l1_loss(fake, real.detach())
    return total / num_D
