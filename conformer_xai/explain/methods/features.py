"""Feature maps: a block's output activation reduced over channels (the paper's feature maps)."""

from __future__ import annotations

import torch

REDUCTIONS = ("mean", "l2", "max")


def check_reduce(reduce: str | int) -> None:
    """Raise ValueError unless ``reduce`` is a known reduction or a non-negative channel index."""
    if isinstance(reduce, bool) or not (reduce in REDUCTIONS or (isinstance(reduce, int)
                                                                  and reduce >= 0)):
        raise ValueError(f"reduce must be one of {REDUCTIONS} or a channel index, got {reduce!r}")


def reduce_channels(activation: torch.Tensor, reduce: str | int = "mean") -> torch.Tensor:
    """Reduce a (B, C, h, w) activation over channels to (B, h, w).

    Args:
        activation: Block output as a map (transformer tokens already reshaped to the grid).
        reduce: "mean", "l2" (channel L2 norm), "max", or a channel index.
    """
    check_reduce(reduce)
    if isinstance(reduce, int):
        if not 0 <= reduce < activation.shape[1]:
            raise ValueError(f"channel index {reduce} out of range; accepted: "
                             f"0..{activation.shape[1] - 1}")
        return activation[:, reduce]
    if reduce == "mean":
        return activation.mean(dim=1)
    if reduce == "l2":
        return activation.norm(dim=1)
    return activation.amax(dim=1)
