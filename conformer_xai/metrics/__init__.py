"""Metrics for saliency maps: localisation, faithfulness, sanity, agreement, part versus whole.

Every metric takes torch tensors or numpy arrays, batched maps (B, H, W) (or one map (H, W)), and
returns one value per image as a tensor (B,). :func:`evaluate` runs them all over generated scenes
with ground-truth masks (``conformer-xai evaluate``).
"""

from __future__ import annotations

from .agreement import spearman, ssim, topk_iou
from .evaluate import evaluate, format_table
from .faithfulness import auc, deletion_auc, gaussian_blur, insertion_auc
from .localisation import energy_pointing_game, pointing_game
from .parts import PartShares, part_body_off_shares
from .sanity import (
    RandomisationStep,
    cascade_layers,
    randomisation_test,
    randomise_,
    randomised_copy,
)

__all__ = [
    "pointing_game", "energy_pointing_game",
    "deletion_auc", "insertion_auc", "auc", "gaussian_blur",
    "randomisation_test", "RandomisationStep", "cascade_layers", "randomise_", "randomised_copy",
    "spearman", "topk_iou", "ssim",
    "part_body_off_shares", "PartShares",
    "evaluate", "format_table",
]

