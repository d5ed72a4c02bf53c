"""Localisation against a ground-truth mask: pointing game and energy-based pointing game."""

from __future__ import annotations

from typing import Any

import torch

from ._tensors import as_maps, as_masks, minmax, unbatch


def pointing_game(saliency: Any, mask: Any, tolerance: float = 0.0) -> torch.Tensor:
    """Pointing game: does the map's maximum fall on the object?

    Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (ECCV): a hit when the
    map's maximum lies on the annotated object, or within ``tolerance`` pixels of it (the paper
    uses 15 pixels for bounding boxes on full-size images). The default 0 asks for a hit on the
    mask itself, which suits exact pixel masks on small images. Ties resolve to the first maximum
    in raster order (``torch.argmax``). A constant map points nowhere and counts as a miss.

    Args:
        saliency: Maps (B, H, W) or one map (H, W), torch or numpy.
        mask: Object masks of the same shape (boolean or 0/1); an (H, W) mask is shared.
        tolerance: Hit distance in pixels (Euclidean) from the nearest mask pixel.

    Returns:
        Float tensor (B,) (or a scalar for one map): 1.0 hit, 0.0 miss, NaN where the mask is
        empty (no ground truth: leave it out of means with ``nanmean``).
    """
    maps, single = as_maps(saliency, "saliency")
    masks = as_masks(mask, "mask", maps)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    b, h, w = maps.shape
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    py, px = peak // w, peak % w
    if tolerance == 0:
        hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    else:
        ys = torch.arange(h, device=maps.device)[None, :, None]
        xs = torch.arange(w, device=maps.device)[None, None, :]
        dist2 = (ys - py[:, None, None]).float() ** 2 + (xs - px[:, None, None]).float() ** 2
        dist2 = dist2.masked_fill(~masks, float("inf"))
        hit = dist2.flatten(1).min(dim=1).values <= float(tolerance) ** 2
    constant = flat.max(dim=1).values == flat.min(dim=1).values
    score = (hit & ~constant).float()
    score = score.masked_fill(~masks.flatten(1).any(dim=1), float("nan"))
    return unbatch(score, single)


def energy_pointing_game(saliency: Any, mask: Any, normalise: bool = True) -> torch.Tensor:
    """Energy-based pointing game: the share of the map's energy that falls on the object.

    Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks" (CVPR workshops), section 4.2: ``sum(map * mask) / sum(map)`` on the normalised map.

    Args:
        saliency: Maps (B, H, W) or one map (H, W), torch or numpy.
        mask: Object masks of the same shape (boolean or 0/1); an (H, W) mask is shared.
        normalise: Min-max scale each map to [0, 1] first, as Score-CAM does. With False the maps
            must be non-negative.

    Returns:
        Float tensor (B,) in [0, 1] (or a scalar). A map without energy (all zeros, or constant
        before normalisation) scores 0; an empty mask gives NaN.
    """
    maps, single = as_maps(saliency, "saliency")
    masks = as_masks(mask, "mask", maps)
    maps = _energy(maps, normalise)
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * masks).flatten(1).sum(dim=1)
    score = torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny),
                        torch.zeros_like(total))
    score = score.masked_fill(~masks.flatten(1).any(dim=1), float("nan"))
    return unbatch(score, single)


def _energy(maps: torch.Tensor, normalise: bool) -> torch.Tensor:
    if normalise:
        return minmax(maps)
    if bool((maps < 0).any()):
        raise ValueError("saliency has negative values: pass normalise=True or clip the maps")
    return maps
