"""How a store scales its maps, and how readers turn stored maps back into raw or shown maps.

Two scalings, chosen per map key when the store is written:

* ``"minmax"`` (unsigned methods): each image's map min-max normalised to [0, 1];
  ``raw = min + map * (max - min)`` with ``range/<key>`` = (min, max).
* ``"max_abs"`` (the signed methods of :data:`~conformer_xai.explain.methods.SIGNED_METHODS`:
  ``lrp``, ``attnlrp``, ``integrated_gradients``, at the input and at every tap): each image's
  map divided by its largest absolute value, in [-1, 1], so that zero relevance stays 0 and the
  sign is kept; ``raw = map * max(|min|, |max|)``. The store's attributes list these keys under
  ``signed_maps``.

Stores written before ``signed_maps`` existed hold their signed maps min-max normalised over the
signed range (zero somewhere mid-range); their raw range is stored too, so :func:`to_raw` and
:func:`shown` read them correctly (:func:`scaling_of` says ``"minmax"`` for them).

A signed map is *shown* as :attr:`conformer_xai.Explanation.maps` shows it: its positive part,
min-max normalised per image.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["SIGNED_SCALE", "SCALE_NOTE", "is_signed_key", "signed_keys", "scaling_of", "encode",
           "to_raw", "shown"]

#: The scaling of signed maps.
SIGNED_SCALE = "max_abs"
#: What the store's ``signed_maps`` attribute says about the scaling.
SCALE_NOTE = ("raw / max(|raw|) per image, in [-1, 1] (zero stays 0, the sign is kept); "
              "raw = map * max(|min|, |max|) of range/<key>")


def is_signed_key(key: str) -> bool:
    """Whether a map key belongs to a method whose raw maps keep their sign."""
    from ..explain.methods import SIGNED_METHODS

    return key.split("/", 1)[0] in SIGNED_METHODS


def signed_keys(keys: Iterable[str]) -> list[str]:
    """The keys of ``keys`` that are stored signed (in order)."""
    return [k for k in keys if is_signed_key(k)]


def scaling_of(config: Mapping[str, Any], key: str) -> str:
    """``"max_abs"`` when the store's attributes (``config``) list ``key`` as signed, else
    ``"minmax"`` (unsigned maps, and signed maps of stores written before ``signed_maps``)."""
    signed = config.get("signed_maps") or {}
    return SIGNED_SCALE if key in signed.get("keys", ()) else "minmax"


def encode(raw: torch.Tensor, scaling: str) -> torch.Tensor:
    """(B, h, w) raw maps -> stored maps (float32): min-max to [0, 1], or divided by each
    image's largest absolute value (all-zero maps stay 0; NaN pixels stay NaN)."""
    from ..explain.result import normalise_per_image

    if scaling == "minmax":
        return normalise_per_image(raw)
    if scaling != SIGNED_SCALE:
        raise ValueError(f"unknown map scaling {scaling!r}; accepted: minmax, {SIGNED_SCALE}")
    flat = raw.flatten(1).float()
    peak = torch.nan_to_num(flat.abs(), nan=0.0).amax(dim=1, keepdim=True)
    out = flat / torch.where(peak > 0, peak, torch.ones_like(peak))
    return out.view_as(raw)


def to_raw(stored: np.ndarray, ranges: np.ndarray, scaling: str) -> np.ndarray:
    """Raw maps (float32, (B, h, w)) from stored maps and their ``range`` rows (B, 2)."""
    m = np.asarray(stored, dtype=np.float32)
    r = np.asarray(ranges, dtype=np.float32).reshape(-1, 2, 1, 1)
    lo, hi = r[:, 0], r[:, 1]
    if scaling == SIGNED_SCALE:
        return m * np.maximum(np.abs(lo), np.abs(hi))
    return lo + m * (hi - lo)


def shown(stored: np.ndarray, ranges: np.ndarray, scaling: str, signed: bool) -> np.ndarray:
    """Maps as :attr:`Explanation.maps` shows them, in [0, 1] ((B, h, w) float32): unsigned
    maps as stored, signed maps as their positive part min-max normalised per image."""
    from ..explain.result import normalise_per_image

    if not signed:
        return np.asarray(stored, dtype=np.float32)
    raw = stored if scaling == SIGNED_SCALE else to_raw(stored, ranges, scaling)
    positive = torch.from_numpy(np.asarray(raw, dtype=np.float32)).clamp_min(0)
    return normalise_per_image(positive).numpy()
