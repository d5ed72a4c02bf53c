"""Raw arrays and audio clips in a dataset run: one common input size, or a clear refusal.

A batch of spectrograms must share one size. Raw arrays (``.npy``, ``.pt``) are fed as they
are, so their sizes are read from the files; audio clips get the size the front end gives them
(fixed by ``frames``, else from their length). Different sizes are refused with one line naming
them, unless ``frames`` gives audio one size (padding or cropping as the fork's
``apply_padding`` does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["spectrogram_size", "common_spectrogram_size", "load_spectrogram"]


def _array_shape(path: Path) -> tuple[int, ...]:
    import numpy as np

    if path.suffix.lower() == ".npy":
        try:
            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        except (OSError, ValueError, EOFError):
            return ()
    from ..data import _read_raw

    try:
        return tuple(_read_raw(path).shape)
    except (OSError, ValueError):
        return ()


def spectrogram_size(path: str | os.PathLike, audio_config: Mapping[str, Any]
                     ) -> tuple[int, int] | None:
    """The ``(H, W)`` model input of a raw array or an audio clip, or None when the file cannot
    be read (its error is reported when it is loaded)."""
    from ..audio import read_audio
    from ..data import input_kind_of

    path = Path(path)
    if input_kind_of(path) == "array":
        shape = _array_shape(path)
        if len(shape) == 4 and shape[0] == 1:
            shape = shape[1:]
        return (int(shape[-2]), int(shape[-1])) if len(shape) in (2, 3) else None
    cfg = audio_config
    rows = cfg["n_mels"] * cfg["freq_ratio"]
    if cfg["frames"] is not None:
        return rows, math.ceil(cfg["frames"] / cfg["freq_ratio"])
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes come when the clip is loaded
            samples = read_audio(path, cfg["sr"]).shape[0]
    except (OSError, ValueError, ImportError):
        return None
    frames = (1 + samples // cfg["hop_length"] if cfg["center"]
              else 1 + (samples - cfg["n_fft"]) // cfg["hop_length"])
    return rows, math.ceil(frames / cfg["freq_ratio"])


def common_spectrogram_size(root: str | os.PathLike, paths: Sequence[str],
                            audio_config: Mapping[str, Any] | None = None
                            ) -> tuple[int, int] | None:
    """The one input size of the raw arrays and audio clips among ``paths`` (relative to
    ``root``), or None when there are none.

    Raises:
        ValueError: Spectrogram inputs mixed with images, or of different sizes (the message
            names the sizes found and, for audio, ``frames``).
    """
    from ..audio import resolve_audio_config
    from ..data import input_kind_of

    kinds = {p: input_kind_of(p) for p in paths}
    spectro = [p for p, k in kinds.items() if k != "image"]
    if not spectro:
        return None
    if len(spectro) != len(paths):
        image = next(p for p, k in kinds.items() if k == "image")
        raise ValueError(f"{root} mixes images ({image}) with raw arrays or audio "
                         f"({spectro[0]}); explain them in separate runs")
    cfg = resolve_audio_config(audio_config)
    sizes: dict[tuple[int, int], list[str]] = {}
    for p in spectro:
        size = spectrogram_size(Path(root) / p, cfg)
        if size is not None:
            sizes.setdefault(size, []).append(p)
    if not sizes:
        return None
    if len(sizes) > 1:
        found = ", ".join(f"{h}x{w} ({len(files)} file(s), e.g. {files[0]})"
                          for (h, w), files in sorted(sizes.items(), key=lambda kv: kv[0]))
        audio = any(kinds[p] == "audio" for p in spectro)
        fix = ("pass --frames N to pad or crop every clip to N frames" if audio
               else "save the arrays at one size")
        raise ValueError(f"the inputs under {root} differ in size ({found}); a batch needs one "
                         f"size: {fix}")
    return next(iter(sizes))


def load_spectrogram(path: str | os.PathLike, chans: int,
                     audio_config: Mapping[str, Any] | None = None):
    """The ``(chans, H, W)`` model input of a raw array or an audio clip."""
    from ..audio import load_audio
    from ..data import input_kind_of, load_array

    if input_kind_of(path) == "audio":
        x, _ = load_audio(path, None, dict(audio_config) if audio_config else None)
    else:
        x, _ = load_array(path)
        if x.shape[1] not in (1, chans):
            raise ValueError(f"{path}: the array has {x.shape[1]} channels but the model takes "
                             f"{chans} (or 1)")
    return x[0].expand(chans, -1, -1)
