"""Procedural scenes with ground-truth object and part masks, and training of the small models.

``render_scene``, ``Scene`` and the class constants need only numpy; ``SyntheticScenes`` (a torch
Dataset) and the training functions load torch when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .scenes import (
    CLASS_NAMES,
    MEAN,
    NUM_CLASSES,
    PART_CLASSES,
    PART_LABELS,
    STD,
    Scene,
    render_scene,
)

__all__ = [
    "CLASS_NAMES", "NUM_CLASSES", "PART_CLASSES", "PART_LABELS", "MEAN", "STD", "Scene",
    "render_scene", "SyntheticScenes", "SPLITS", "normalize", "train_model", "evaluate_accuracy",
]

_LAZY = {
    "SyntheticScenes": "dataset",
    "SPLITS": "dataset",
    "normalize": "dataset",
    "train_model": "train",
    "evaluate_accuracy": "train",
}

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import SPLITS, SyntheticScenes, normalize
    from .train import evaluate_accuracy, train_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
