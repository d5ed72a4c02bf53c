"""A torch Dataset of procedural scenes: sample ``i`` of a (seed, split) is always the same scene."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .scenes import MEAN, NUM_CLASSES, STD, Scene, check_size, render_scene

#: The splits; each draws from its own random stream.
SPLITS: tuple[str, ...] = ("train", "val", "test")
_SALT = 0x5C3E_E5  # keeps these streams apart from other uses of the same small seeds


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random generator of sample ``index`` of ``split`` under ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([_SALT, seed, SPLITS.index(split), index]))


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(…, H, W, 3) uint8 images -> (…, 3, H, W) float32 normalised with :data:`MEAN`/:data:`STD`."""
    x = torch.as_tensor(np.asarray(images)).to(torch.float32).div_(255.0)
    x = x.movedim(-1, -3)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


class SyntheticScenes(Dataset):
    """``n`` procedural scenes of one split, generated on the fly.

    Sample ``i`` depends only on ``(seed, split, i)`` and ``size``, never on the order of
    access. Labels cycle through the classes (``label = i % NUM_CLASSES``), so any ``n`` that
    is a multiple of the class count is exactly balanced.

    Each item is a dict: ``image`` (3, H, W) float32 normalised with ImageNet's mean and std,
    ``pixels`` (H, W, 3) uint8, ``label`` (int), ``object_mask`` and ``part_mask`` (H, W) bool
    tensors, ``class_name`` (str), ``index`` (int).

    Args:
        n: Number of samples.
        seed: Seed of the stream.
        size: Image side, a multiple of 32 (at least 64).
        split: ``"train"``, ``"val"`` or ``"test"``; each split is a separate stream.
        hflip: Flip each image (and masks) horizontally with probability 0.5, decided by a
            stream of the sample's own, apart from the scene's (training augmentation; off by
            default).
    """

    def __init__(self, n: int, seed: int = 0, size: int = 128, split: str = "train",
                 hflip: bool = False) -> None:
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        scene_rng(seed, split, 0)  # validates seed and split
        self.n = int(n)
        self.seed = int(seed)
        self.size = check_size(size)
        self.split = split
        self.hflip = hflip

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        """The raw :class:`Scene` of sample ``index`` (no flip, no normalisation)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} scenes")
        rng = scene_rng(self.seed, self.split, index)
        return render_scene(rng, self.size, label=index % NUM_CLASSES)

    def _flip_rng(self, index: int) -> np.random.Generator:
        # a stream of its own: the scene's stream would tie the flip to the scene's content
        entropy = [_SALT, self.seed, SPLITS.index(self.split), index, 1]
        return np.random.default_rng(np.random.SeedSequence(entropy))

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        scene = self.scene(index)
        image, obj, part = scene.image, scene.object_mask, scene.part_mask
        if self.hflip and self._flip_rng(index).uniform() < 0.5:
            image, obj, part = image[:, ::-1], obj[:, ::-1], part[:, ::-1]
        pixels = torch.from_numpy(np.ascontiguousarray(image))
        return {
            "image": normalize(pixels),
            "pixels": pixels,
            "label": scene.label,
            "object_mask": torch.from_numpy(np.ascontiguousarray(obj)),
            "part_mask": torch.from_numpy(np.ascontiguousarray(part)),
            "class_name": scene.class_name,
            "index": index,
        }
