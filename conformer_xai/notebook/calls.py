"""Synthetic animal calls on log-mel-like spectrograms (notebook 05's user dataset).

Three classes: a rising **chirp** with a weaker parallel track, a **harmonic stack** of three to
five partials, and a train of broadband **clicks**, each at a random time, frequency and
loudness over a coloured noise floor. The call's mask (where it rises above the noise) comes
with each spectrogram, so that maps can be scored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write

CALL_CLASSES = ("chirp", "harmonic_stack", "clicks")


def _check_size(n_mels: int, n_frames: int) -> None:
    if n_mels < 8 or n_frames < 16:
        raise ValueError(f"spectrogram size {n_mels}x{n_frames} too small: at least 8 mel bins "
                         "and 16 frames")


def call_spectrogram(rng: np.random.Generator, label: int, n_mels: int = 64,
                     n_frames: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """One spectrogram ``(n_mels, n_frames)`` in dB-like units and its call's mask.

    Row 0 is the highest mel bin, so that the array reads like a spectrogram plot.

    Raises:
        ValueError: ``label`` is not an index of :data:`CALL_CLASSES`, or the size is too small.
    """
    if isinstance(label, bool) or not 0 <= int(label) < len(CALL_CLASSES):
        raise ValueError(f"label {label!r} not a call class; accepted: 0..{len(CALL_CLASSES) - 1} "
                         f"({', '.join(CALL_CLASSES)})")
    _check_size(n_mels, n_frames)
    f = np.arange(n_mels)[:, None]
    t = np.arange(n_frames)[None, :]
    floor = -60 + 18 * np.exp(-f / (0.4 * n_mels))  # louder at low frequencies
    floor = floor + 3 * np.sin(2 * np.pi * t / rng.uniform(30, 90) + rng.uniform(0, 6.3))
    noise = floor + rng.normal(0, 4, (n_mels, n_frames))
    length = int(rng.uniform(0.25, 0.45) * n_frames)
    start = int(rng.integers(0, n_frames - length))
    span = slice(start, start + length)
    call = np.zeros((n_mels, n_frames))
    if CALL_CLASSES[label] == "chirp":
        f0 = rng.uniform(0.1, 0.3) * n_mels
        track = f0 + rng.uniform(0.3, 0.5) * n_mels * np.arange(length) / length
        for harmonic, gain in ((1.0, 1.0), (1.35, 0.5)):
            centre = np.clip(track * harmonic, 0, n_mels - 1)[None, :]
            call[:, span] = np.maximum(call[:, span],
                                       gain * np.exp(-0.5 * ((f - centre) / 1.2) ** 2))
    elif CALL_CLASSES[label] == "harmonic_stack":
        f0 = rng.uniform(0.08, 0.16) * n_mels
        for h in range(1, int(rng.integers(4, 7))):
            row = 0.8 ** (h - 1) * np.exp(-0.5 * ((f - h * f0) / 1.0) ** 2)
            call[:, span] = np.maximum(call[:, span], row)
    else:  # clicks
        lo = int(rng.uniform(0.0, 0.3) * n_mels)
        hi = int(rng.uniform(0.7, 1.0) * n_mels)
        for c in range(start, start + length, int(rng.integers(6, 12))):
            call[lo:hi, c:c + 2] = 1.0
    frames = np.arange(n_frames)
    fade = np.clip(np.minimum(frames - start + 1, start + length - frames) / 4, 0, 1)
    call = call * fade[None, :]
    db = noise + rng.uniform(22, 32) * call
    return np.flipud(db).astype(np.float32), np.flipud(call > 0.3).copy()


def write_call_split(folder: str | os.PathLike, n: int, seed: int, n_mels: int = 64,
                     n_frames: int = 160) -> tuple[list[tuple[Path, int]], torch.Tensor]:
    """Write ``n`` spectrograms (classes in turn) as ``.npy`` files into ``folder``.

    Files are named ``<i>_<class>.npy``; the folder is created if needed.

    Returns:
        ``(path, label)`` per file, and the calls' masks ``(n, n_mels, n_frames)`` (bool).

    Raises:
        ValueError: ``n`` < 1, or the size is too small.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    _check_size(n_mels, n_frames)
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files, masks = [], []
    for i in range(n):
        label = i % len(CALL_CLASSES)
        spec, mask = call_spectrogram(rng, label, n_mels, n_frames)
        path = folder / f"{i:04d}_{CALL_CLASSES[label]}.npy"
        _save_npy(path, spec)
        files.append((path, label))
        masks.append(torch.from_numpy(mask))
    return files, torch.stack(masks)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` atomically (through a file object: numpy adds no ``.npy`` to the temporary
    name)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)
