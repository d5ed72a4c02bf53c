"""Training and held-out evaluation of the small spectrogram Conformer on the sound scenes.

``conformer-xai train-synthetic --audio`` calls :func:`train_audio_model`. As for the image
models, a run is a pure function of its arguments on a given machine: the initialisation comes
from ``torch.manual_seed(seed)`` and every training clip from ``(seed, "train", index)``; the
held-out accuracy is measured on the ``"test"`` split under :data:`EVAL_SEED` with the weights
exactly as saved (float16 read back as float32).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..audio import DEFAULT_AUDIO_CONFIG
from .loop import Recipe, count_accuracy, train
from .sound_dataset import SoundScenes
from .sounds import FRAMES, SAMPLES, SOUND_CLASS_NAMES, SOUND_NUM_CLASSES, SOUND_PART_CLASSES, SR

#: The model :func:`train_audio_model` trains.
AUDIO_MODEL = "conformer_micro_audio"
#: Seed of the held-out test stream used for every reported accuracy.
EVAL_SEED = 0
#: Held-out clips behind the reported accuracy, and the smaller subset also reported (for tests).
EVAL_N = 700
EVAL_SUBSET_N = 70
DEFAULT_LR = 1e-3
DEFAULT_BATCH_SIZE = 32
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_LABEL_SMOOTHING = 0.1


def reproduce_audio_command(steps: int, seed: int, out: str | Path | None,
                            batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR) -> str:
    """The ``conformer-xai train-synthetic --audio`` command line that reproduces a run."""
    parts = ["conformer-xai", "train-synthetic", "--audio", "--steps", str(steps),
             "--seed", str(seed)]
    if batch_size != DEFAULT_BATCH_SIZE:
        parts += ["--batch-size", str(batch_size)]
    if lr != DEFAULT_LR:
        parts += ["--lr", repr(lr)]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)


@torch.no_grad()
def evaluate_audio_accuracy(model: torch.nn.Module, n: int = EVAL_N, seed: int = EVAL_SEED,
                            split: str = "test", batch_size: int = 35, num_workers: int = 0,
                            return_per_class: bool = False) -> float | tuple[float, list[float]]:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``n`` generated sound scenes.

    Args:
        model: A classifier over :data:`SOUND_CLASS_NAMES` taking ``(B, 1, 224, 224)`` dB
            inputs; put in eval mode for the call and restored afterwards.
        n: Number of clips (labels cycle through the classes).
        seed: Seed of the stream.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: Evaluation batch size.
        num_workers: DataLoader workers.
        return_per_class: Also return the accuracy of each class (NaN when absent).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return count_accuracy(model, SoundScenes(n, seed=seed, split=split), SOUND_NUM_CLASSES,
                          batch_size, num_workers, return_per_class)


def train_audio_model(steps: int, batch_size: int = DEFAULT_BATCH_SIZE, lr: float | None = None,
                      seed: int = 0, out: str | Path | None = None, num_workers: int = 0,
                      weight_decay: float = DEFAULT_WEIGHT_DECAY, warmup: int | None = None,
                      label_smoothing: float = DEFAULT_LABEL_SMOOTHING, eval_n: int = EVAL_N,
                      force: bool = False, threads: int | None = None,
                      log: Callable[[str], None] | None = print, log_every: int = 25) -> dict:
    """Train ``conformer_micro_audio`` on freshly generated sound scenes; measure it held out.

    Args:
        steps: Optimiser steps; each sees ``batch_size`` new clips (indices
            ``step * batch_size ...`` of the ``"train"`` split under ``seed``).
        batch_size: Clips per step.
        lr: Peak AdamW learning rate (:data:`DEFAULT_LR` when None).
        seed: Seed of the initialisation and of the training stream.
        out: Folder for ``conformer_micro_audio.safetensors`` (float16) and ``.json``
            (metadata); nothing is written when None.
        num_workers: DataLoader worker processes generating clips.
        weight_decay: AdamW weight decay (not on norms, biases, tokens).
        warmup: Linear warm-up steps; 5 % of ``steps`` (at most 200) when None.
        label_smoothing: Cross-entropy label smoothing.
        eval_n: Held-out test clips for the reported accuracy (0 skips the evaluation).
        force: Overwrite existing output files.
        threads: ``torch.set_num_threads`` for the run (unchanged when None).
        log: Receives progress lines; None for silence.
        log_every: Steps between progress lines.

    Returns:
        The metadata dict, also written to ``<out>/conformer_micro_audio.json``.

    Raises:
        ValueError: on a bad setting.
        FileExistsError: when an output file exists and ``force`` is False.
    """
    cfg = DEFAULT_AUDIO_CONFIG
    recipe = Recipe(
        name=AUDIO_MODEL, classes=SOUND_CLASS_NAMES, part_classes=SOUND_PART_CLASSES,
        train_data=lambda n: SoundScenes(n, seed=seed, split="train"),
        evaluate=lambda model, n, per_class: evaluate_audio_accuracy(
            model, n=n, return_per_class=per_class),
        command=reproduce_audio_command, unit="clips", test_unit="test clips", window=50,
        inputs={"input_size": [1, 224, 224],
                "input": (f"log-mel spectrogram in dB, the fork's front end ({cfg['n_mels']} "
                          f"Slaney bands {cfg['fmin']:g}-{cfg['fmax']:g} Hz, STFT "
                          f"{cfg['n_fft']}/{cfg['hop_length']}), {FRAMES} frames folded to "
                          "224 x 224, not normalised"),
                "clip": {"sr": SR, "samples": SAMPLES, "frames": FRAMES}},
        augmentation="none beyond the generator's (placement, levels, background, distractors)",
        eval_subset_n=EVAL_SUBSET_N, eval_seed=EVAL_SEED)
    return train(recipe, steps, batch_size, DEFAULT_LR if lr is None else lr, seed, out,
                 num_workers, weight_decay, warmup, label_smoothing, eval_n, force, threads, log,
                 log_every)
