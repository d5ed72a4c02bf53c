"""Attention probabilities and their gradients without leaving the fused attention kernel.

The fused path (``F.scaled_dot_product_attention``) never materialises the attention matrix, so
the attention methods used to switch every block to the explicit path, which stores ``A`` for the
backward pass and runs slower kernels. Instead the explainer records, per block,

* the output of ``attn.qkv`` (B, N, 3C), from which ``A = softmax(q k^T * scale)`` is recomputed
  outside autograd, exactly as the explicit path computes it; and
* for gradient rollout, the input of ``attn.proj``: its gradient is ``dL/dO`` with ``O = A V``
  (heads merged), so ``dL/dA = dL/dO V^T`` per head, the same tensor the explicit path's
  ``attn_drop`` output receives.

Only attention modules whose forward is exactly ``proj(merge_heads(softmax(q_norm(q)
k_norm(k)^T * scale) v))`` qualify (:func:`supports_recompute`): this package's
:class:`~conformer_xai.models.conformer.Attention` and timm's ``Attention`` without a gate or an
output norm. Anything else keeps the explicit path.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["supports_recompute", "attention_from_qkv", "attention_grad"]


def _known_classes() -> tuple[type, ...]:
    from timm.layers import Attention as TimmAttention

    from ..models.conformer import Attention

    return Attention, TimmAttention


def supports_recompute(attn: nn.Module) -> bool:
    """True when ``attn``'s probabilities can be recomputed from its ``qkv`` output."""
    if type(attn) not in _known_classes():
        return False
    if getattr(attn, "gate", None) is not None:
        return False
    return isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)


def _query_key(attn: nn.Module, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, _ = qkv.shape
    q, k, _ = qkv.float().reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    q_norm = getattr(attn, "q_norm", None)
    k_norm = getattr(attn, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    return q, k


@torch.no_grad()
def attention_from_qkv(attn: nn.Module, qkv: torch.Tensor) -> torch.Tensor:
    """Attention probabilities (B, A, N, N), float32, from the block's ``qkv`` output."""
    q, k = _query_key(attn, qkv)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@torch.no_grad()
def attention_grad(attn: nn.Module, qkv: torch.Tensor, grad_merged: torch.Tensor) -> torch.Tensor:
    """Gradient with respect to the attention probabilities (B, A, N, N), float32.

    Args:
        attn: The attention module.
        qkv: Its ``qkv`` output (B, N, 3C).
        grad_merged: Gradient with respect to the input of ``attn.proj`` (B, N, C), the heads'
            outputs ``A V`` merged.
    """
    b, n, _ = grad_merged.shape
    v = qkv.float().reshape(b, n, 3, attn.num_heads, -1)[:, :, 2].transpose(1, 2)
    grad_out = grad_merged.float().reshape(b, n, attn.num_heads, -1).transpose(1, 2)
    return grad_out @ v.transpose(-2, -1)
