"""The Grad-CAM family on one tap: pure functions of a (B, C, h, w) activation and its gradient.

Each follows pytorch-grad-cam's definition of the method and ends with its ReLU, so that maps are
directly comparable with that library's output on the same layer, target and head.
"""

from __future__ import annotations

import torch

from .features import first_component

#: Relative size under which a channel sum is float32 cancellation noise (see :func:`weighted_sum`).
CANCELLATION_RTOL = 1e-5


def weighted_sum(weights: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``sum_c weights_c * activation_c`` per location, with cancellation noise set to zero.

    Where the terms cancel to below ``CANCELLATION_RTOL`` of the sum of their magnitudes, the
    result is float32 rounding, not signal (e.g. HiResCAM of a transformer head on a last
    block's input: the gradient through LayerNorm is orthogonal to the centred tokens, so the
    exact sum is zero). Zeroing it is scale-free, so normalised maps stay independent of the
    logits' scale.
    """
    terms = weights * activation
    total = terms.sum(dim=1)
    magnitude = terms.abs().sum(dim=1)
    return torch.where(total.abs() > CANCELLATION_RTOL * magnitude, total,
                       torch.zeros_like(total))


def gradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_c mean_ij(dY/dA_c) * A_c)."""
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return weighted_sum(weights, activation).clamp_min(0)


def gradcam_plus_plus(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018), eq. 19 with the exponential-score simplification."""
    g2 = gradient.pow(2)
    g3 = g2 * gradient
    sum_act = activation.sum(dim=(2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_act * g3 + 1e-6)
    aij = torch.where(gradient != 0, aij, torch.zeros_like(aij))
    weights = (gradient.clamp_min(0) * aij).sum(dim=(2, 3), keepdim=True)
    return weighted_sum(weights, activation).clamp_min(0)


def layercam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_c ReLU(dY/dA_c) * A_c), weights per location."""
    return weighted_sum(gradient.clamp_min(0), activation).clamp_min(0)


def hirescam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos and Carin 2020): ReLU(sum_c dY/dA_c * A_c), element-wise."""
    return weighted_sum(gradient, activation).clamp_min(0)


def xgradcam(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): weights ``sum_ij(A_c * dY/dA_c) / (sum_ij A_c + eps)``."""
    total = activation.sum(dim=(2, 3), keepdim=True)
    weights = (gradient * activation / (total + 1e-7)).sum(dim=(2, 3), keepdim=True)
    return weighted_sum(weights, activation).clamp_min(0)


def gradcam_elementwise(activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise (pytorch-grad-cam): ReLU(sum_c ReLU(dY/dA_c * A_c))."""
    return (gradient * activation).clamp_min(0).sum(dim=1).clamp_min(0)


def eigencam(activation: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM (Muhammad and Yeasin 2020): projection on the first principal component.

    Gradient-free. The SVD leaves the component's sign arbitrary; it is chosen so that the
    projection correlates positively with the channel-mean activation, then ReLU is applied.
    """
    return first_component(activation, sign_by="mean").clamp_min(0)
