"""Caveats a run carries: methods applied to taps whose assumptions they do not meet."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..registry import REGISTRY

__all__ = ["SignedTapWarning", "SIGNED_TAP_METHODS", "signed_tap_note", "RANDOM_WEIGHTS",
           "weights_warnings", "warning_messages"]

#: ``meta["warnings"]`` code of a model with random weights: its maps mean nothing.
RANDOM_WEIGHTS = "random_weights"

#: Methods defined for non-negative (post-ReLU) activations (their specs' ``signed_tap_note``).
SIGNED_TAP_METHODS = tuple(m for m, s in REGISTRY.items() if s.signed_tap_note)


def weights_warnings(model_name: str | None, weights_source: str | None,
                     what: str = "maps and predictions") -> list[dict[str, str]]:
    """The structured warnings of a model's weights, as recorded in ``Explanation.meta``.

    Args:
        model_name: The model's name (in the message).
        weights_source: Its ``weights_source`` ("random", "embedded", "imagenet", ...).
        what: What carries no meaning, in the message.

    Returns:
        ``[{"code": "random_weights", "message": ...}]`` for random weights, else ``[]``.
    """
    if weights_source != "random":
        return []
    return [{"code": RANDOM_WEIGHTS,
             "message": f"{model_name or 'the model'} has random weights: its {what} carry no "
                        "meaning"}]


def warning_messages(meta: Mapping[str, Any]) -> list[str]:
    """The messages of ``meta["warnings"]`` (an explanation's structured warnings)."""
    return [str(w["message"]) for w in meta.get("warnings", ())]


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

