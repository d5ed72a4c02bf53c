"""Image files of a folder as a torch Dataset, preprocessed exactly as :func:`load_image` does."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["list_images", "ImageFiles"]


def list_images(root: str | os.PathLike) -> list[str]:
    """Image files under the folder ``root`` (recursively; hidden ones skipped), as sorted POSIX
    paths relative to ``root``. The extensions are :data:`conformer_xai.data.IMAGE_EXTENSIONS`,
    raw arrays (``.npy``, ``.pt``) and audio (``.wav``, ``.flac``, ``.ogg``).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: The folder holds no image file (the message lists the extensions).
    """
    from ..data import find_images

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    return sorted(path.relative_to(root).as_posix() for path, _ in find_images(root))


class ImageFiles(Dataset):
    """Images ``root/<path>``; item = (normalised (C, H, W) tensor, position, error message).

    Each file goes through :func:`conformer_xai.load_image` with one resolved data config. An
    unreadable file gives a zero tensor and its error message (the message is empty when the
    image loaded), so that one bad file is recorded rather than stopping a dataset run.
    """

    def __init__(self, root: str | os.PathLike, paths: Sequence[str],
                 data_config: Mapping[str, Any], crop: bool = True, spectrograms: bool = False,
                 audio_config: Mapping[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.data_config = dict(data_config)
        self.crop = crop
        self.spectrograms = spectrograms  # raw arrays and audio, fed at their own size
        self.audio_config = audio_config
        self.input_shape = tuple(int(s) for s in self.data_config["input_size"])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        from ..data import load_image

        try:
            if self.spectrograms:
                x = self._spectrogram(self.root / self.paths[i])[None]
            else:
                x, _ = load_image(self.root / self.paths[i], None, crop=self.crop,
                                  data_config=self.data_config)
        except (OSError, ValueError, ImportError) as err:
            return torch.zeros(self.input_shape), i, str(err)[:500] or type(err).__name__
        return x[0], i, ""

    def _spectrogram(self, path: Path) -> torch.Tensor:
        from .spectrograms import load_spectrogram

        x = load_spectrogram(path, self.input_shape[0], self.audio_config)
        if tuple(x.shape) != self.input_shape:
            raise ValueError(f"{path}: input size {x.shape[1]}x{x.shape[2]} differs from the "
                             f"run's {self.input_shape[1]}x{self.input_shape[2]}")
        return x
