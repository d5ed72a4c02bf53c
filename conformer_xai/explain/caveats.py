"""Caveats a run carries: methods applied to taps whose assumptions they do not meet."""

from __future__ import annotations

from collections.abc import Iterable

from ..registry import REGISTRY

__all__ = ["SignedTapWarning", "SIGNED_TAP_METHODS", "signed_tap_note"]

#: Methods defined for non-negative (post-ReLU) activations (their specs' ``signed_tap_note``).
SIGNED_TAP_METHODS = tuple(m for m, s in REGISTRY.items() if s.signed_tap_note)


class SignedTapWarning(UserWarning):
    """A method that assumes non-negative activations ran on signed transformer tokens."""


def signed_tap_note(methods: Iterable[str], branches: Iterable[str]) -> str | None:
    """The note for Grad-CAM++, LayerCAM or Eigen-CAM on transformer (signed token) taps.

    Args:
        methods: Methods of the run.
        branches: Branches with at least one explained block.

    Returns:
        One line, or None when the run has no such combination.
    """
    found = [m for m in SIGNED_TAP_METHODS if m in set(methods)]
    if not found or "transformer" not in set(branches):
        return None
    return (f"{', '.join(found)} on transformer taps: "
            + "; ".join(REGISTRY[m].signed_tap_note for m in found)
            + "; these methods assume non-negative (post-ReLU) activations, transformer tokens "
              "are signed (compare with gradcam or hirescam)")

