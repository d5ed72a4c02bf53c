"""Training and held-out evaluation of the small models on the synthetic scenes.

The console command ``conformer-xai train-synthetic`` calls :func:`train_model`. A run is a
pure function of its arguments on a given machine: the model's initialisation comes from
``torch.manual_seed(seed)`` and every training image from ``(seed, "train", index)``. The
held-out accuracy is measured on the ``"test"`` split under :data:`EVAL_SEED`, a stream that
training never sees, with the weights exactly as saved (float16, read back as float32).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from .dataset import SyntheticScenes
from .loop import Recipe, count_accuracy, output_paths, train
from .scenes import CLASS_NAMES, MEAN, NUM_CLASSES, PART_CLASSES, STD, check_size

__all__ = ["train_model", "evaluate_accuracy", "reproduce_command", "output_paths", "EVAL_SEED",
           "EVAL_N", "EVAL_SUBSET_N", "DEFAULT_LR"]

#: Seed of the held-out test stream used for every reported accuracy.
EVAL_SEED = 0
#: Held-out images behind the reported accuracy, and the smaller subset also reported (for tests).
EVAL_N = 1000
EVAL_SUBSET_N = 300
#: Default peak learning rate of each model (AdamW, linear warm-up then cosine decay).
DEFAULT_LR: dict[str, float] = {
    "conformer_micro_patch16": 1e-3,
    "resnet_micro": 2e-3,
    "deit_micro_patch16": 1e-3,
}
DEFAULT_BATCH_SIZE = 32
DEFAULT_WEIGHT_DECAY = 0.05
DEFAULT_LABEL_SMOOTHING = 0.1


def _check_name(name: str) -> None:
    if name not in DEFAULT_LR:
        raise ValueError(f"unknown model {name!r}; train-synthetic trains one of "
                         f"{', '.join(DEFAULT_LR)}")


def reproduce_command(name: str, steps: int, seed: int, out: str | Path | None,
                      batch_size: int = DEFAULT_BATCH_SIZE, lr: float | None = None,
                      size: int = 128) -> str:
    """The ``conformer-xai train-synthetic`` command line that reproduces a run."""
    parts = ["conformer-xai", "train-synthetic", "--model", name, "--steps", str(steps),
             "--seed", str(seed)]
    if batch_size != DEFAULT_BATCH_SIZE:
        parts += ["--batch-size", str(batch_size)]
    if lr is not None and lr != DEFAULT_LR.get(name):
        parts += ["--lr", repr(lr)]
    if size != 128:
        parts += ["--size", str(size)]
    if out is not None:
        parts += ["--out", str(out)]
    return " ".join(parts)


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, n: int = EVAL_N, seed: int = EVAL_SEED,
                      split: str = "test", size: int | None = None, batch_size: int = 50,
                      num_workers: int = 0, return_per_class: bool = False
                      ) -> float | tuple[float, list[float]]:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``n`` generated scenes.

    Args:
        model: A classifier over :data:`CLASS_NAMES`; put in eval mode for the call and
            restored afterwards.
        n: Number of scenes (labels cycle through the classes, so a multiple of the class
            count is balanced).
        seed: Seed of the stream.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: Image side; the model's configured input size (else 128) when None.
        batch_size: Evaluation batch size.
        num_workers: DataLoader workers.
        return_per_class: Also return the accuracy of each class (NaN when absent).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        size = int(cfg.get("input_size", (3, 128, 128))[-1])
    return count_accuracy(model, SyntheticScenes(n, seed=seed, size=size, split=split),
                          NUM_CLASSES, batch_size, num_workers, return_per_class)


def train_model(name: str, steps: int, batch_size: int = DEFAULT_BATCH_SIZE,
                lr: float | None = None, seed: int = 0, out: str | Path | None = None,
                size: int = 128, num_workers: int = 0, weight_decay: float = DEFAULT_WEIGHT_DECAY,
                warmup: int | None = None, label_smoothing: float = DEFAULT_LABEL_SMOOTHING,
                eval_n: int = EVAL_N, force: bool = False, threads: int | None = None,
                log: Callable[[str], None] | None = print, log_every: int = 50) -> dict:
    """Train one small model on freshly generated scenes and measure its held-out accuracy.

    Args:
        name: ``"conformer_micro_patch16"``, ``"resnet_micro"`` or ``"deit_micro_patch16"``.
        steps: Optimiser steps; each sees ``batch_size`` new scenes (indices
            ``step * batch_size ...`` of the ``"train"`` split under ``seed``).
        batch_size: Scenes per step.
        lr: Peak AdamW learning rate; :data:`DEFAULT_LR` of the model when None.
        seed: Seed of the initialisation and of the training stream.
        out: Folder for ``<name>.safetensors`` (float16) and ``<name>.json`` (metadata);
            nothing is written when None.
        size: Image side, a multiple of 32.
        num_workers: DataLoader worker processes generating scenes.
        weight_decay: AdamW weight decay (not applied to norms, biases, tokens, embeddings).
        warmup: Linear warm-up steps; 5 % of ``steps`` (at most 200) when None.
        label_smoothing: Cross-entropy label smoothing.
        eval_n: Held-out test scenes for the reported accuracy (0 skips the evaluation).
        force: Overwrite existing output files.
        threads: ``torch.set_num_threads`` for the run (unchanged when None).
        log: Receives progress lines; None for silence.
        log_every: Steps between progress lines.

    Returns:
        The metadata dict, also written to ``<out>/<name>.json``: the settings, the command
        that reproduces the run, train loss, held-out accuracy on ``eval_n`` and on the first
        :data:`EVAL_SUBSET_N` test scenes, per-class accuracy, timings, versions, machine.

    Raises:
        ValueError: on a bad name or setting.
        FileExistsError: when an output file exists and ``force`` is False.
    """
    _check_name(name)
    size = check_size(size)
    recipe = Recipe(
        name=name, classes=CLASS_NAMES, part_classes=PART_CLASSES,
        train_data=lambda n: SyntheticScenes(n, seed=seed, size=size, split="train", hflip=True),
        evaluate=lambda model, n, per_class: evaluate_accuracy(
            model, n=n, seed=EVAL_SEED, split="test", size=size, return_per_class=per_class),
        command=lambda *args: reproduce_command(name, *args, size=size),
        unit="images", test_unit="test scenes", window=100,
        inputs={"input_size": [3, size, size], "mean": list(MEAN), "std": list(STD)},
        augmentation="horizontal flip (p=0.5)", eval_subset_n=EVAL_SUBSET_N, eval_seed=EVAL_SEED)
    return train(recipe, steps, batch_size, DEFAULT_LR[name] if lr is None else lr, seed, out,
                 num_workers, weight_decay, warmup, label_smoothing, eval_n, force, threads, log,
                 log_every)
