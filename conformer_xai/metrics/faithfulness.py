"""Faithfulness: deletion and insertion curves and their areas (RISE)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ._tensors import as_maps, as_tensor

ModelFn = Callable[[torch.Tensor], torch.Tensor]


def deletion_auc(model_fn: ModelFn, x: Any, saliency: Any, target: int | Sequence[int] | Any,
                 steps: int = 50, batch_size: int = 64, baseline: float | torch.Tensor = 0.0,
                 return_curves: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Deletion metric: area under the score curve as the most relevant pixels are removed.

    Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models"
    (BMVC), section 4.1. Pixels are removed in order of decreasing saliency (ties in raster
    order), ``H*W/steps`` at a time, by replacing them with ``baseline``: 0 in normalised input
    space, which is the dataset's mean colour. The score is the softmax probability of the target
    class. Lower is better (a faithful map destroys the prediction quickly).

    The ``B * (steps + 1)`` perturbed inputs are built as tensors (no per-pixel loops) and run
    through ``model_fn`` in chunks of ``batch_size`` under ``torch.no_grad``.

    Args:
        model_fn: Callable from an input batch to logits (N, K), e.g. a model or
            ``Explainer.head_fn(head)``.
        x: Normalised inputs (B, C, H, W) (or one (C, H, W) image).
        saliency: Maps (B, H, W) (or (H, W)) at input resolution; higher means more relevant.
        target: Class index per image: an int for all, or a sequence/tensor of B.
        steps: Number of removal steps; the curve has ``steps + 1`` points on [0, 1].
        batch_size: Perturbed inputs per forward pass.
        baseline: Replacement value (a number, or a tensor broadcastable to (B, C, H, W)).
        return_curves: Also return the curves.

    Returns:
        AUC per image (B,) in [0, 1] by the trapezoid rule on the normalised x axis; with
        ``return_curves`` the tuple ``(auc, curves)`` with curves (B, steps + 1).
    """
    xs, maps, targets = _check(x, saliency, target, steps, batch_size)
    base = as_tensor(baseline, "baseline").to(xs.device, xs.dtype).expand_as(xs)
    curves = _curves(model_fn, start=xs, finish=base, maps=maps, targets=targets, steps=steps,
                     batch_size=batch_size)
    return _result(curves, return_curves)


def insertion_auc(model_fn: ModelFn, x: Any, saliency: Any, target: int | Sequence[int] | Any,
                  steps: int = 50, batch_size: int = 64, blur_kernel: int = 11,
                  blur_sigma: float = 5.0,
                  return_curves: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Insertion metric: area under the score curve as the most relevant pixels are restored.

    Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models"
    (BMVC), section 4.1: start from a blurred copy of the image (Gaussian, kernel 11, sigma 5 as
    in the RISE code; reflect padding at the border) and insert the original pixels in order of
    decreasing saliency (ties in raster order), ``H*W/steps`` at a time. The score is the softmax
    probability of the target class. Higher is better.

    Args:
        model_fn: Callable from an input batch to logits (N, K).
        x: Normalised inputs (B, C, H, W) (or one (C, H, W) image).
        saliency: Maps (B, H, W) (or (H, W)) at input resolution; higher means more relevant.
        target: Class index per image: an int for all, or a sequence/tensor of B.
        steps: Number of insertion steps; the curve has ``steps + 1`` points on [0, 1].
        batch_size: Perturbed inputs per forward pass.
        blur_kernel: Odd Gaussian kernel size in pixels.
        blur_sigma: Gaussian standard deviation in pixels.
        return_curves: Also return the curves.

    Returns:
        AUC per image (B,) in [0, 1]; with ``return_curves`` the tuple ``(auc, curves)``.
    """
    xs, maps, targets = _check(x, saliency, target, steps, batch_size)
    blurred = gaussian_blur(xs, blur_kernel, blur_sigma)
    curves = _curves(model_fn, start=blurred, finish=xs, maps=maps, targets=targets, steps=steps,
                     batch_size=batch_size)
    return _result(curves, return_curves)


def auc(curves: Any) -> torch.Tensor:
    """Area under curves sampled at equal steps on [0, 1] (trapezoid rule), per row.

    Args:
        curves: Values (B, S + 1) (or (S + 1,)) at x = 0, 1/S, ..., 1.

    Returns:
        Tensor (B,) (or a scalar).
    """
    c = as_tensor(curves, "curves").double()
    if c.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got shape {tuple(c.shape)}")
    s = c.shape[-1] - 1
    return ((c.sum(dim=-1) - (c[..., 0] + c[..., -1]) / 2) / s).float()


def gaussian_blur(x: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) batch with reflect padding."""
    if kernel < 1 or kernel % 2 == 0 or sigma <= 0:
        raise ValueError(f"blur needs an odd kernel >= 1 and sigma > 0, got {kernel} and {sigma}")
    radius = kernel // 2
    if radius >= min(x.shape[-2:]):
        raise ValueError(f"blur kernel {kernel} is too large for {tuple(x.shape[-2:])} inputs")
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, g.view(1, 1, 1, -1).expand(c, 1, 1, kernel), groups=c)
    return F.conv2d(out, g.view(1, 1, -1, 1).expand(c, 1, kernel, 1), groups=c)


def _check(x: Any, saliency: Any, target: Any, steps: int,
           batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs = as_tensor(x, "x")
    if xs.ndim == 3:
        xs = xs.unsqueeze(0)
    if xs.ndim != 4:
        raise ValueError(f"x must have shape (B, C, H, W), got {tuple(xs.shape)}")
    if not xs.is_floating_point():
        raise ValueError(f"x must be a float tensor of normalised images, got {xs.dtype}")
    maps, _ = as_maps(saliency, "saliency")
    if maps.shape != (xs.shape[0], *xs.shape[-2:]):
        raise ValueError(f"saliency must have shape {(xs.shape[0], *xs.shape[-2:])} to match x, "
                         f"got {tuple(maps.shape)}")
    t = as_tensor(target, "target").to(xs.device)
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"target must hold integer class indices, got {t.dtype}")
    t = t.long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(xs.shape[0])
    if t.numel() != xs.shape[0]:
        raise ValueError(f"target must be one int or {xs.shape[0]} indices, got {t.numel()}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    return xs, maps.to(xs.device), t


def _curves(model_fn: ModelFn, start: torch.Tensor, finish: torch.Tensor, maps: torch.Tensor,
            targets: torch.Tensor, steps: int, batch_size: int) -> torch.Tensor:
    """Scores after moving the top ``round(k * HW / steps)`` pixels from ``start`` to ``finish``."""
    b, _, h, w = start.shape
    hw = h * w
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    position = torch.empty_like(order).scatter_(
        1, order, torch.arange(hw, device=order.device).expand(b, -1).contiguous())
    counts = torch.round(torch.arange(steps + 1, device=start.device, dtype=torch.float64)
                         * hw / steps).long()
    image_idx = torch.arange(b, device=start.device).repeat_interleave(steps + 1)
    step_idx = torch.arange(steps + 1, device=start.device).repeat(b)
    scores = torch.empty(b * (steps + 1), dtype=torch.float32, device=start.device)
    with torch.no_grad():
        for lo in range(0, image_idx.numel(), batch_size):
            i = image_idx[lo:lo + batch_size]
            moved = position[i] < counts[step_idx[lo:lo + batch_size]][:, None]
            moved = moved.view(-1, 1, h, w)
            batch = torch.where(moved, finish[i], start[i])
            logits = model_fn(batch)
            if logits.ndim != 2 or logits.shape[0] != batch.shape[0]:
                raise ValueError(f"model_fn must return logits (N, K), got {tuple(logits.shape)}")
            if int(targets.max()) >= logits.shape[1] or int(targets.min()) < 0:
                raise ValueError(f"target indices must lie in [0, {logits.shape[1]}), got "
                                 f"{targets.tolist()}")
            probs = logits.float().softmax(dim=1)
            scores[lo:lo + batch_size] = probs.gather(1, targets[i][:, None])[:, 0]
    return scores.view(b, steps + 1)


def _result(curves: torch.Tensor,
            return_curves: bool) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    area = auc(curves)
    return (area, curves) if return_curves else area
