"""Procedural scenes with ground-truth object and part masks, and training of the small models.

Images: ``render_scene``, ``Scene``, ``SyntheticScenes``, ``train_model``. Sounds (clips with
time-frequency masks on the log-mel grid): ``render_sound_scene``, ``SoundScene``,
``SoundScenes``, ``train_audio_model``. The renderers and the class constants need only numpy;
the Datasets and the training functions load torch when first used.
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
from .sounds import (
    SOUND_CLASS_NAMES,
    SOUND_NUM_CLASSES,
    SOUND_PART_CLASSES,
    SOUND_PART_LABELS,
    SoundScene,
    pcm16,
    render_sound_scene,
)

__all__ = [
    "CLASS_NAMES", "NUM_CLASSES", "PART_CLASSES", "PART_LABELS", "MEAN", "STD", "Scene",
    "render_scene", "SyntheticScenes", "SPLITS", "normalize", "train_model", "evaluate_accuracy",
    "SOUND_CLASS_NAMES", "SOUND_NUM_CLASSES", "SOUND_PART_CLASSES", "SOUND_PART_LABELS",
    "SoundScene", "pcm16", "render_sound_scene", "SoundScenes", "train_audio_model",
    "evaluate_audio_accuracy",
]

_LAZY = {
    "SyntheticScenes": "dataset",
    "SPLITS": "dataset",
    "normalize": "dataset",
    "train_model": "train",
    "evaluate_accuracy": "train",
    "SoundScenes": "sound_dataset",
    "train_audio_model": "sound_train",
    "evaluate_audio_accuracy": "sound_train",
}

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import SPLITS, SyntheticScenes, normalize
    from .sound_dataset import SoundScenes
    from .sound_train import evaluate_audio_accuracy, train_audio_model
    from .train import evaluate_accuracy, train_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
