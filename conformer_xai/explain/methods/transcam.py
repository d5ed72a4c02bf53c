"""TransCAM (Li et al. 2023) adapted to the published Conformer: CNN CAM refined by attention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def transcam(feature_map: torch.Tensor, head_weight: torch.Tensor, target: torch.Tensor,
             attentions: Sequence[torch.Tensor], grid: tuple[int, int],
             num_prefix_tokens: int = 1) -> torch.Tensor:
    """TransCAM of the target class on the token grid, (B, gh, gw).

    1. CAM: ``ReLU(sum_c W[target, c] * F_c)`` with ``F`` the last CNN feature map and ``W`` the
       CNN head's weights (global average pooling then a linear layer makes this the CAM).
    2. Resized to the token grid (bilinear, ``align_corners=False``).
    3. Refined by ``A``, the sum over blocks of the head-averaged attention restricted to the
       patch tokens (class-token row and column dropped, not renormalised):
       ``ReLU(A @ vec(CAM))``.

    Args:
        feature_map: (B, C, h, w) last CNN map.
        head_weight: (classes, C) weight of the CNN head.
        target: (B,) classes.
        attentions: Per-block attention probabilities (B, heads, N, N).
        grid: Token grid (rows, cols).
        num_prefix_tokens: Class tokens before the patches.
    """
    w = head_weight.float()[target]  # (B, C)
    cam = torch.einsum("bc,bchw->bhw", w, feature_map.float()).clamp_min(0)
    cam = F.interpolate(cam[:, None], size=grid, mode="bilinear", align_corners=False)[:, 0]
    p = num_prefix_tokens
    a = sum(att.float().mean(dim=1)[:, p:, p:] for att in attentions)
    refined = (a @ cam.flatten(1)[..., None])[..., 0]
    return refined.clamp_min(0).reshape(cam.shape)
