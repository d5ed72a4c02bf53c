"""The one reader of a model's input channel count (torch loads on first use).

Its own module so that the input readers (:mod:`conformer_xai.data`, :mod:`conformer_xai.audio`)
share it without importing each other.
"""

from __future__ import annotations

from typing import Any

__all__ = ["model_in_chans"]


def model_in_chans(model: Any) -> int | None:
    """A model's input channels: ``model.in_chans``, else its first ``Conv2d``'s (None if none)."""
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int):
        return chans
    import torch.nn as nn

    for module in getattr(model, "modules", lambda: [])():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None
