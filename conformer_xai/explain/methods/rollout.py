"""Attention rollout (Abnar and Zuidema 2020) and gradient rollout (Chefer et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .attention import fuse_heads


@dataclass(frozen=True)
class RolloutOptions:
    """Options of attention rollout.

    Attributes:
        head_fusion: "mean" (default, as Abnar and Zuidema), "max" or "min" over attention heads.
        discard_ratio: Fraction of the lowest attention weights of each fused matrix set to zero
            before the identity is added (the class token's attention to itself is kept).
        start_block: First block (1-based) included in the product.
    """

    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    start_block: int = 1

    def __post_init__(self) -> None:
        if self.head_fusion not in ("mean", "max", "min"):
            raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {self.head_fusion!r}")
        if not 0.0 <= self.discard_ratio < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {self.discard_ratio!r}")
        if not isinstance(self.start_block, int) or self.start_block < 1:
            raise ValueError(f"start_block must be an int >= 1, got {self.start_block!r}")


def attention_rollout(attentions: Sequence[torch.Tensor], num_prefix_tokens: int = 1,
                      options: RolloutOptions | None = None) -> torch.Tensor:
    """Rollout of per-block attention (B, A, N, N) into the class token's relevance (B, N - prefix).

    Per block: fuse the attention heads, optionally discard the weakest weights, A' = 0.5 A + 0.5 I,
    renormalise the rows; multiply through the blocks (later blocks on the left); read the class
    token's row over the patch tokens.
    """
    options = options or RolloutOptions()
    if options.start_block > len(attentions):
        raise ValueError(f"start_block {options.start_block} beyond the {len(attentions)} blocks")
    first = attentions[0]
    b, _, n, _ = first.shape
    eye = torch.eye(n, dtype=torch.float32, device=first.device)
    result = eye.expand(b, n, n)
    for attn in attentions[options.start_block - 1:]:
        fused = fuse_heads(attn.float(), options.head_fusion)
        if options.discard_ratio > 0:
            fused = _discard_lowest(fused, options.discard_ratio)
        a = 0.5 * fused + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[:, 0, num_prefix_tokens:]


def _discard_lowest(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    b, n, _ = fused.shape
    flat = fused.reshape(b, n * n)
    k = int(n * n * ratio)
    if k == 0:
        return fused
    _, idx = flat.topk(k, dim=-1, largest=False)
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep.scatter_(1, idx, False)
    keep[:, 0] = True  # the class token's attention to itself
    return (flat * keep).reshape(b, n, n)


def gradient_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor | None],
                     num_prefix_tokens: int = 1) -> torch.Tensor:
    """Chefer et al. 2021 (generic attention-model explainability), class token's relevance.

    R = I; for each block R = R + mean_heads(ReLU(dA * A)) R, with dA the gradient of the target
    score with respect to the attention probabilities A; returns R's class-token row over the
    patches (B, N - prefix).
    """
    first = attentions[0]
    b, _, n, _ = first.shape
    relevance = torch.eye(n, dtype=torch.float32, device=first.device).expand(b, n, n)
    for attn, grad in zip(attentions, gradients):
        if grad is None:
            continue
        cam = (grad.float() * attn.float()).clamp_min(0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return relevance[:, 0, num_prefix_tokens:]
