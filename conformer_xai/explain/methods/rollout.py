"""Attention rollout (Abnar and Zuidema 2020) and gradient rollout (Chefer et al. 2021).

Token counts may change between blocks (a Conformer in ``size_mismatch="resize"`` mode resizes
its tokens along the token axis, nearest, at the start of a stage). Relevance is then carried
through the resize's selection: the 0/1 matrix S (N_k x N_{k-1}) with S[j, i] = 1 when token j of
block k copies token i of block k-1, applied before block k's attention. Both methods return the
class token's relevance over the patch tokens of the first block's grid.
"""

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
    result = torch.eye(n, dtype=torch.float32, device=first.device).expand(b, n, n)
    for k, attn in enumerate(attentions, start=1):
        result = carry_through_resize(result, attn.shape[-1])
        if k < options.start_block:
            continue
        fused = fuse_heads(attn.float(), options.head_fusion)
        if options.discard_ratio > 0:
            fused = _discard_lowest(fused, options.discard_ratio)
        eye = torch.eye(fused.shape[-1], dtype=torch.float32, device=fused.device)
        a = 0.5 * fused + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[:, 0, num_prefix_tokens:]


def token_selection(n_in: int, n_out: int, device: torch.device | str | None = None
                    ) -> torch.Tensor:
    """The 0/1 matrix (n_out, n_in) of a nearest resize along the token axis.

    Row j has its single 1 at the token that output token j copies (the model's own
    ``F.interpolate`` selection, see :func:`conformer_xai.models.conformer.token_resize_index`).
    """
    from ...models.conformer import token_resize_index

    index = token_resize_index(n_in, n_out).to(device)
    return torch.nn.functional.one_hot(index, n_in).float()


def carry_through_resize(relevance: torch.Tensor, n: int) -> torch.Tensor:
    """Relevance (B, N_prev, N_0) carried to a block of ``n`` tokens: S @ relevance."""
    n_prev = relevance.shape[-2]
    if n_prev == n:
        return relevance
    return token_selection(n_prev, n, relevance.device) @ relevance


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

    R = I; for each block R = S R (a token resize's selection, if any), then
    R = R + mean_heads(ReLU(dA * A)) R, with dA the gradient of the target score with respect to
    the attention probabilities A; returns R's class-token row over the first block's patches.
    """
    first = attentions[0]
    b, _, n, _ = first.shape
    relevance = torch.eye(n, dtype=torch.float32, device=first.device).expand(b, n, n)
    for attn, grad in zip(attentions, gradients):
        relevance = carry_through_resize(relevance, attn.shape[-1])
        if grad is None:
            continue
        cam = (grad.float() * attn.float()).clamp_min(0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return relevance[:, 0, num_prefix_tokens:]
