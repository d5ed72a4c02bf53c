"""Input checks shared by the metrics: numpy or torch in, batched float tensors out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` (tensor, numpy array or nested sequence) as a detached torch tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got "
                         f"{type(value).__name__}") from err


def as_maps(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    """A (B, H, W) float map batch and whether the input was a single (H, W) map.

    NaN pixels (input that no token covers, see ``size_mismatch="resize"``) count as the least
    relevant: they take their map's lowest value (0 for a map that is all NaN).
    """
    t = as_tensor(value, name)
    single = t.ndim == 2
    if single:
        t = t.unsqueeze(0)
    if t.ndim != 3:
        raise ValueError(f"{name} must have shape (B, H, W) or (H, W), got {tuple(t.shape)}")
    t = t.float()
    nan = torch.isnan(t)
    if bool(nan.any()):
        low = t.masked_fill(nan, float("inf")).flatten(1).min(dim=1).values
        low = torch.where(torch.isinf(low), torch.zeros_like(low), low)
        t = torch.where(nan, low[:, None, None].expand_as(t), t)
    return t, single


def as_masks(value: Any, name: str, like: torch.Tensor) -> torch.Tensor:
    """A (B, H, W) boolean mask batch matching the maps ``like``; (H, W) masks broadcast."""
    m = as_tensor(value, name).to(like.device)
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or m.shape[-2:] != like.shape[-2:] or m.shape[0] not in (1, like.shape[0]):
        raise ValueError(f"{name} must have shape {tuple(like.shape)} (or {tuple(like.shape[1:])}),"
                         f" got {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"{name} must be boolean or hold only 0 and 1")
        m = m != 0
    return m.expand(like.shape[0], -1, -1)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map scaled to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny),
                       torch.zeros_like(maps))


def unbatch(result: torch.Tensor, single: bool) -> torch.Tensor:
    """Drop the batch dimension again when the caller passed one map."""
    return result[0] if single else result
