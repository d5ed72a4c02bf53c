"""Raw attention: the class token's attention to the patch tokens."""

from __future__ import annotations

import torch


def class_token_attention(attn: torch.Tensor, num_prefix_tokens: int = 1,
                          fusion: str = "mean") -> torch.Tensor:
    """Class token's attention row to the patches, (B, A, N, N) -> (B, N - prefix).

    Args:
        attn: Attention probabilities of one block.
        num_prefix_tokens: Tokens before the patch tokens (class, distillation).
        fusion: How attention heads are combined: "mean", "max", "min", or "none" to keep them
            (returns (B, A, N - prefix)).
    """
    row = attn[:, :, 0, num_prefix_tokens:]
    if fusion == "none":
        return row
    return fuse_heads(row, fusion)


def fuse_heads(attn: torch.Tensor, fusion: str) -> torch.Tensor:
    """Combine attention heads (dim 1) by "mean", "max" or "min"."""
    if fusion == "mean":
        return attn.mean(dim=1)
    if fusion == "max":
        return attn.amax(dim=1)
    if fusion == "min":
        return attn.amin(dim=1)
    raise ValueError(f"head fusion must be 'mean', 'max' or 'min', got {fusion!r}")
