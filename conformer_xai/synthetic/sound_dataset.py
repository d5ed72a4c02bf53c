"""A torch Dataset of sound scenes: sample ``i`` of a (seed, split) is always the same clip."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import fold, log_mel
from .dataset import SPLITS
from .sounds import SOUND_NUM_CLASSES, SoundScene, render_sound_scene

#: Keeps the sound streams apart from the image scenes' streams of the same seeds.
_SOUND_SALT = 0x50_0D_5C


def sound_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of sound sample ``index`` of ``split`` under ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng(
        np.random.SeedSequence([_SOUND_SALT, seed, SPLITS.index(split), index]))


def spectrogram_input(wave: np.ndarray) -> torch.Tensor:
    """The model input of a clip under the default front end: ``(1, 224, 224)`` float32 dB."""
    return fold(log_mel(wave))[None]


class SoundScenes(Dataset):
    """``n`` sound scenes of one split, generated on the fly.

    Sample ``i`` depends only on ``(seed, split, i)``. Labels cycle through the classes
    (``label = i % SOUND_NUM_CLASSES``), so a multiple of the class count is exactly balanced.

    Each item is a dict: ``image`` ``(1, 224, 224)`` float32, the folded log-mel spectrogram in
    dB of the default front end (the model input, not normalised), ``label`` (int),
    ``object_mask`` and ``part_mask`` ``(112, 448)`` bool tensors on the (mel band, frame) grid,
    ``class_name`` (str), ``index`` (int).

    Args:
        n: Number of clips.
        seed: Seed of the stream.
        split: ``"train"``, ``"val"`` or ``"test"``; each split is a separate stream.
    """

    def __init__(self, n: int, seed: int = 0, split: str = "train") -> None:
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        sound_rng(seed, split, 0)  # validates seed and split
        self.n = int(n)
        self.seed = int(seed)
        self.split = split

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> SoundScene:
        """The :class:`SoundScene` of sample ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} clips")
        return render_sound_scene(sound_rng(self.seed, self.split, index),
                                  label=index % SOUND_NUM_CLASSES)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        scene = self.scene(index)
        return {
            "image": spectrogram_input(scene.wave),
            "label": scene.label,
            "object_mask": torch.from_numpy(scene.object_mask),
            "part_mask": torch.from_numpy(scene.part_mask),
            "class_name": scene.class_name,
            "index": index,
        }
