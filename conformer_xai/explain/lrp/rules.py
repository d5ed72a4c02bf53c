"""LRP rules in the gradient x input form: each keeps the forward value and modifies the backward.

Relevance at any tensor ``t`` is ``t * dscore/dt`` computed with these modified backwards (the
form used by ``lxt``'s efficient rules; Ali et al. 2022, Achtibat et al. 2024). Every rule below
returns exactly the forward value of the unmodified operation; only its gradient changes:

* :func:`epsilon_rule`: epsilon rule of a linear or convolutional output ``z``:
  ``R_i = sum_j x_i w_ij R_j / (z_j + eps sign(z_j))``; the bias keeps its share (absorbed).
* :func:`gate_rule`: an element-wise gate ``y = x * g(x)`` (GELU) held constant: ``R_x = R_y``
  (AttnLRP's identity rule).
* :func:`layer_norm_rule`: LayerNorm with the normalising ``1/sigma`` held constant
  (conservative propagation, Ali et al. 2022); the centring stays linear.
* :func:`uniform_rule`: the uniform rule of a bilinear product (matmul): each factor receives
  half of the product's relevance (AttnLRP eq. 7).
* Attention weights held constant (CP-LRP): ``attention.detach() @ v``.
* Softmax (AttnLRP): the plain gradient x input of softmax is AttnLRP's softmax rule
  ``R_i = x_i (R_i - s_i sum_j R_j)``; the second term is the share its bias absorbs.
"""

from __future__ import annotations

import torch

__all__ = ["epsilon_rule", "gate_rule", "layer_norm_rule", "uniform_rule", "with_gradient"]


def with_gradient(value: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``linear`` in the backward pass.

    Exact in the forward pass (``linear - linear.detach()`` is zero), so the logits do not move.
    """
    return value.detach() + (linear - linear.detach())


def epsilon_rule(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Epsilon rule at a linear/conv output ``z``: scale its gradient by ``z / (z + eps sign z)``."""
    if eps == 0:
        return z
    zd = z.detach()
    sign = torch.where(zd >= 0, torch.ones_like(zd), -torch.ones_like(zd))
    scale = zd / (zd + eps * sign)
    return with_gradient(z, z * scale)


def gate_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Element-wise gate ``y = x * g(x)`` with ``g`` held constant (identity rule: ``R_x = R_y``)."""
    xd, yd = x.detach(), y.detach()
    safe = torch.where(xd == 0, torch.ones_like(xd), xd)
    gate = torch.where(xd == 0, torch.full_like(xd, 0.5), yd / safe)
    return with_gradient(y, x * gate)


def layer_norm_rule(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """LayerNorm over the last dim with ``1/sigma`` held constant (its gradient is linear)."""
    xf = x.float()
    centred = xf - xf.mean(dim=-1, keepdim=True)
    inv_sigma = torch.rsqrt(centred.detach().pow(2).mean(dim=-1, keepdim=True) + eps)
    linear = centred * inv_sigma
    if weight is not None:
        linear = linear * weight.detach()
    return with_gradient(y, linear.to(y.dtype))


def uniform_rule(product: torch.Tensor, factors: int = 2) -> torch.Tensor:
    """Uniform rule of a product of ``factors`` tensors: each receives ``1/factors`` of it."""
    return with_gradient(product, product / factors)
