"""Feature maps: a block's output activation reduced over channels (the paper's feature maps)."""

from __future__ import annotations

import torch

from ...names import DEFAULT_REDUCE, REDUCTIONS

__all__ = ["REDUCTIONS", "DEFAULT_REDUCE", "check_reduce", "reduce_channels", "first_component",
           "top_channels"]


def check_reduce(reduce: str | int) -> None:
    """Raise ValueError unless ``reduce`` is a known reduction or a non-negative channel index."""
    if isinstance(reduce, bool) or not (reduce in REDUCTIONS or (isinstance(reduce, int)
                                                                  and reduce >= 0)):
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)} or a channel index "
                         f"(an int >= 0), got {reduce!r}")


def reduce_channels(activation: torch.Tensor, reduce: str | int = DEFAULT_REDUCE) -> torch.Tensor:
    """Reduce a (B, C, h, w) activation over channels to (B, h, w).

    Args:
        activation: Block output as a map (transformer tokens already reshaped to the grid).
        reduce: "mean", "abs_mean" (mean of absolute values), "l2" (channel L2 norm), "max",
            "pca" (see :func:`first_component`), or a channel index.
    """
    check_reduce(reduce)
    if isinstance(reduce, int):
        if not 0 <= reduce < activation.shape[1]:
            raise ValueError(f"channel index {reduce} out of range; accepted: "
                             f"0..{activation.shape[1] - 1}")
        return activation[:, reduce]
    if reduce == "mean":
        return activation.mean(dim=1)
    if reduce == "abs_mean":
        return activation.abs().mean(dim=1)
    if reduce == "l2":
        return activation.norm(dim=1)
    if reduce == "pca":
        return first_component(activation)
    return activation.amax(dim=1)


def first_component(activation: torch.Tensor, sign_by: str = "norm") -> torch.Tensor:
    """Projection of each location's channel vector on the first principal component.

    Per image, the (h*w, C) matrix of channel vectors is centred over locations and its first
    right singular vector taken. Its sign is fixed (the SVD leaves it arbitrary): the projection
    correlates positively with the channel L2-norm map (``sign_by="norm"``), so that high values
    mark locations of strong activation, or with the channel-mean map (``sign_by="mean"``,
    Eigen-CAM's choice). Signed, no ReLU (unlike Eigen-CAM).

    The component comes from the eigendecomposition (float64) of the smaller Gram matrix of the
    centred matrix, ``C x C`` or ``hw x hw``, not from a full SVD: the same projection (the
    tests check it against ``torch.linalg.svd`` and pytorch-grad-cam's Eigen-CAM) at a fraction
    of the cost on the early, large CNN maps.
    """
    b, c, h, w = activation.shape
    flat = activation.float().reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
    centred = flat - flat.mean(dim=1, keepdim=True)
    proj = _first_projection(centred)  # (B, hw)
    reference = flat.norm(dim=2) if sign_by == "norm" else flat.mean(dim=2)
    reference = reference - reference.mean(dim=1, keepdim=True)
    sign = torch.sign((proj * reference).sum(dim=1, keepdim=True))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign).reshape(b, h, w).to(activation.dtype)



def _first_projection(centred: torch.Tensor) -> torch.Tensor:
    """``centred @ v1`` for the first right singular vector ``v1`` of each (hw, C) matrix (its
    sign arbitrary), from whichever Gram matrix is smaller: ``X^T X`` gives ``v1``; ``X X^T``
    gives ``u1`` and ``X v1 = sigma1 u1``."""
    if centred.shape[1] > centred.shape[2]:  # more locations than channels
        _, vectors = torch.linalg.eigh((centred.transpose(1, 2) @ centred).double())
        return (centred @ vectors[..., -1:].to(centred.dtype))[..., 0]
    values, vectors = torch.linalg.eigh((centred @ centred.transpose(1, 2)).double())
    return (vectors[..., -1] * values[..., -1:].clamp_min(0).sqrt()).to(centred.dtype)


def top_channels(activation: torch.Tensor, count: int) -> tuple[torch.Tensor, list[list[int]]]:
    """The ``count`` single-channel maps of each image with the largest spatial standard
    deviation (ties: the lower index), in decreasing order.

    The rule picks channels with spatial structure rather than the largest values: transformer
    tokens carry a few channels with large, nearly constant offsets, which would show as flat
    maps.

    Returns:
        ``(maps (B, count, h, w), channel indices per image)``.
    """
    b, c = activation.shape[:2]
    count = min(int(count), c)
    spread = activation.float().flatten(2).std(dim=2, unbiased=False)  # (B, C)
    order = torch.sort(-spread, dim=1, stable=True).indices[:, :count]
    maps = activation.gather(1, order[:, :, None, None].expand(-1, -1, *activation.shape[2:]))
    return maps, order.tolist()
