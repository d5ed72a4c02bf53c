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
* :func:`gamma_rule` and :func:`box_rule`: the composite option ``epsilon_gamma_box`` (zennit's
  ``EpsilonGammaBox``): gamma on conv layers whose input is non-negative, the bounded rule at
  the input layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["epsilon_rule", "gate_rule", "layer_norm_rule", "uniform_rule", "with_gradient",
           "gamma_rule", "box_rule", "merged_weights"]


def with_gradient(value: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``linear`` in the backward pass.

    Exact in the forward pass (``linear - linear.detach()`` is zero), so the logits do not move.
    """
    return value.detach() + (linear - linear.detach())


class _EpsilonGrad(torch.autograd.Function):
    """Identity in the forward pass; the backward scales by ``z / (z + eps sign z)``.

    The scale is computed in the backward pass only, so the forward pass costs nothing.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, eps: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.eps = eps
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (z,) = ctx.saved_tensors
        stab = z + ctx.eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return grad * (z / stab), None


def epsilon_rule(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Epsilon rule at a linear/conv output ``z``: its gradient scaled by ``z / (z + eps sign z)``.
    """
    if eps == 0 or not z.requires_grad:
        return z
    return _EpsilonGrad.apply(z, eps)


def gate_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Element-wise gate ``y = x * g(x)`` with ``g`` held constant (identity rule, ``R_x = R_y``).
    """
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


def merged_weights(conv: nn.Conv2d, bn: nn.BatchNorm2d | None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of ``conv`` with the (eval-mode) batch norm that follows it folded in."""
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if bn is None:
        return weight, bias
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale[:, None, None, None], shift


def gamma_rule(module: nn.Module, x: torch.Tensor, z: torch.Tensor, gamma: float,
               eps: float, bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """Gamma rule of a conv/linear layer with non-negative input ``x`` (zennit's generalised
    ``Gamma`` for such inputs): for an output ``z_j > 0``,
    ``R_i = sum_j x_i (w_ij + gamma w_ij^+) R_j / sum_i x_i (w_ij + gamma w_ij^+)`` (+ the bias
    likewise); for ``z_j < 0`` the same with ``w^-``: contributions of the output's own sign are
    favoured by ``gamma``. With
    ``bn`` (the batch norm after a conv), the rule applies to the folded layer and ``z`` is the
    batch norm's output.
    """
    if isinstance(module, nn.Conv2d):
        weight, bias = merged_weights(module, bn)
    else:
        weight, bias = module.weight.detach(), module.bias
        bias = None if bias is None else bias.detach()

    def modified(sign: str) -> torch.Tensor:
        lo, hi = (0.0, None) if sign == "+" else (None, 0.0)
        w = weight + gamma * weight.clamp(min=lo, max=hi)
        b = None if bias is None else bias + gamma * bias.clamp(min=lo, max=hi)
        if isinstance(module, nn.Conv2d):
            return module._conv_forward(x, w, b)
        return F.linear(x, w, b)

    zd = z.detach()
    linear = torch.zeros_like(z)
    for sign, mask in (("+", zd > 0), ("-", zd < 0)):
        z_g = modified(sign)
        zg = z_g.detach()
        stab = zg + eps * torch.where(zg >= 0, torch.ones_like(zg), -torch.ones_like(zg))
        linear = linear + z_g * torch.where(mask, zd / stab, torch.zeros_like(zd))
    return with_gradient(z, linear)


def box_rule(conv: nn.Conv2d, x: torch.Tensor, relevance: torch.Tensor, low: torch.Tensor,
             high: torch.Tensor, eps: float = 1e-6, bn: nn.BatchNorm2d | None = None
             ) -> torch.Tensor:
    """Bounded (z^B) rule of the input layer: pixel relevance (B, C, H, W) from the relevance
    (B, C', h, w) at the layer's output, for inputs bounded by ``low <= x <= high``.

    ``R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) R_j / z^B_j`` (Montavon et al. 2017;
    zennit's ``ZBox``); ``low`` and ``high`` broadcast to ``x``. With ``bn`` the rule applies
    to the conv with that batch norm folded in, and ``relevance`` is at the batch norm's output.
    """
    w, b = merged_weights(conv, bn)
    with torch.enable_grad():
        xs = x.detach().requires_grad_(True)
        ls = low.expand_as(x).detach().clone().requires_grad_(True)
        hs = high.expand_as(x).detach().clone().requires_grad_(True)
        z = (conv._conv_forward(xs, w, None) - conv._conv_forward(ls, w.clamp(min=0), None)
             - conv._conv_forward(hs, w.clamp(max=0), None))
        if b is not None:
            z = z + b[None, :, None, None]
        zd = z.detach()
        stab = zd + eps * torch.where(zd >= 0, torch.ones_like(zd), -torch.ones_like(zd))
        gx, gl, gh = torch.autograd.grad(z, (xs, ls, hs), grad_outputs=relevance / stab)
    return xs.detach() * gx + ls.detach() * gl + hs.detach() * gh
