"""Part versus whole: where a map's energy lies relative to an object's part and body."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ._tensors import as_maps, as_masks, minmax, unbatch


class PartShares(NamedTuple):
    """Fractions of map energy (each a tensor (B,)); ``part + body + off == 1``."""

    part: torch.Tensor
    body: torch.Tensor
    off: torch.Tensor


def part_body_off_shares(saliency: Any, object_mask: Any, part_mask: Any,
                         normalise: bool = True) -> PartShares:
    """Shares of a map's energy on the object's part, on the rest of its body, and off it.

    Makes the Conformer paper's qualitative claim (Peng et al. 2021, "Conformer: Local Features
    Coupling Global Representations for Visual Recognition", ICCV: a CNN activates a small
    discriminative part, Conformer's features cover the whole object) a number, using
    the energy measure of the energy-based pointing game (Wang et al. 2020, Score-CAM). The part
    region is ``part_mask``; the body is ``object_mask`` without the part; everything else is off
    the object. ``part + body`` equals :func:`energy_pointing_game` on the union of both masks.

    Args:
        saliency: Maps (B, H, W) or one map (H, W), torch or numpy.
        object_mask: Whole-object masks (boolean or 0/1), same shape.
        part_mask: Part masks (boolean or 0/1), same shape.
        normalise: Min-max scale each map to [0, 1] first (as the energy pointing game does);
            with False the maps must be non-negative.

    Returns:
        ``PartShares(part, body, off)``, each a float tensor (B,) (or a scalar). They sum to 1;
        a map without energy gives NaN for all three.
    """
    maps, single = as_maps(saliency, "saliency")
    obj = as_masks(object_mask, "object_mask", maps)
    part = as_masks(part_mask, "part_mask", maps)
    if normalise:
        maps = minmax(maps)
    elif bool((maps < 0).any()):
        raise ValueError("saliency has negative values: pass normalise=True or clip the maps")
    body = obj & ~part
    off = ~(obj | part)
    total = maps.flatten(1).sum(dim=1)
    safe = torch.where(total > 0, total, torch.full_like(total, float("nan")))
    shares = [(maps * region).flatten(1).sum(dim=1) / safe for region in (part, body, off)]
    return PartShares(*(unbatch(s, single) for s in shares))
