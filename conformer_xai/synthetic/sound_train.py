"""Training and held-out evaluation of the small spectrogram Conformer on the sound scenes.

``conformer-xai train-synthetic --audio`` calls :func:`train_audio_model`. As for the image
models, a run is a pure function of its arguments on a given machine: the initialisation comes
from ``torch.manual_seed(seed)`` and every training clip from ``(seed, "train", index)``; the
held-out accuracy is measured on the ``"test"`` split under :data:`EVAL_SEED` with the weights
exactly as saved (float16 read back as float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..audio import DEFAULT_AUDIO_CONFIG
from .sound_dataset import SoundScenes
from .sounds import FRAMES, SAMPLES, SOUND_CLASS_NAMES, SOUND_NUM_CLASSES, SOUND_PART_CLASSES, SR
from .train import _half_state, _param_groups, _schedule, _write_atomic, output_paths

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
    loader = DataLoader(SoundScenes(n, seed=seed, split=split), batch_size=batch_size,
                        num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros(SOUND_NUM_CLASSES, dtype=torch.float64)
    total = torch.zeros(SOUND_NUM_CLASSES, dtype=torch.float64)
    try:
        for batch in loader:
            pred = model(batch["image"].to(device)).argmax(dim=1).cpu()
            label = batch["label"]
            total += torch.bincount(label, minlength=SOUND_NUM_CLASSES)
            correct += torch.bincount(label[pred == label], minlength=SOUND_NUM_CLASSES)
    finally:
        model.train(was_training)
    accuracy = correct.sum().item() / total.sum().item()
    if return_per_class:
        per_class = [c / t if t > 0 else math.nan for c, t in zip(correct.tolist(), total.tolist())]
        return accuracy, per_class
    return accuracy


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
    import timm

    import conformer_xai  # noqa: F401  (registers the model names with timm)

    name = AUDIO_MODEL
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps}, {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if eval_n < 0:
        raise ValueError(f"eval_n must be non-negative, got {eval_n}")
    lr = DEFAULT_LR if lr is None else float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr}")
    warmup = min(200, max(1, steps // 20)) if warmup is None else max(1, int(warmup))
    say = log or (lambda _: None)
    if out is not None:
        out = Path(out)
        weights_path, meta_path = output_paths(name, out)
        existing = [str(p) for p in (weights_path, meta_path) if p.exists()]
        if existing and not force:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); pass force=True "
                                  f"to overwrite")
        out.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(threads)

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=SOUND_NUM_CLASSES)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, steps, warmup))
    data = SoundScenes(steps * batch_size, seed=seed, split="train")
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        drop_last=True)
    say(f"training {name} ({n_params / 1e6:.2f} M parameters): {steps} steps x {batch_size}, "
        f"lr {lr:g}, seed {seed}, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    recent_loss: list[float] = []
    recent_acc: list[float] = []
    for step, batch in enumerate(loader):
        logits = model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"training diverged at step {step + 1} (loss {loss.item()}); "
                               f"try a smaller lr than {lr:g}")
        recent_loss = (recent_loss + [loss.item()])[-50:]
        acc = (logits.argmax(1) == batch["label"]).float().mean().item()
        recent_acc = (recent_acc + [acc])[-50:]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            say(f"step {step + 1}/{steps}  loss {sum(recent_loss) / len(recent_loss):.4f}  "
                f"train acc {sum(recent_acc) / len(recent_acc):.3f}  "
                f"lr {scheduler.get_last_lr()[0]:.2e}  {elapsed:.0f} s")
    train_time = time.perf_counter() - start

    state = _half_state(model)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in state.items()})
    model.eval()
    cfg = DEFAULT_AUDIO_CONFIG
    meta: dict = {
        "name": name,
        "classes": list(SOUND_CLASS_NAMES),
        "part_classes": list(SOUND_PART_CLASSES),
        "num_classes": SOUND_NUM_CLASSES,
        "parameters": n_params,
        "input_size": [1, 224, 224],
        "input": (f"log-mel spectrogram in dB, the fork's front end ({cfg['n_mels']} Slaney "
                  f"bands {cfg['fmin']:g}-{cfg['fmax']:g} Hz, STFT {cfg['n_fft']}/"
                  f"{cfg['hop_length']}), {FRAMES} frames folded to 224 x 224, not normalised"),
        "clip": {"sr": SR, "samples": SAMPLES, "frames": FRAMES},
        "dtype": "float16",
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "train_clips": steps * batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup,
        "schedule": "linear warm-up, cosine decay to 1% of the peak",
        "optimizer": "AdamW",
        "label_smoothing": label_smoothing,
        "augmentation": "none beyond the generator's (placement, levels, background, distractors)",
        "train_loss_last50": sum(recent_loss) / len(recent_loss),
        "train_accuracy_last50": sum(recent_acc) / len(recent_acc),
        "train_time_s": round(train_time, 1),
        "command": reproduce_audio_command(steps, seed, out, batch_size, lr),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores ({platform.system()})",
    }
    if eval_n:
        t0 = time.perf_counter()
        subset_n = min(EVAL_SUBSET_N, eval_n)
        accuracy, per_class = evaluate_audio_accuracy(model, n=eval_n, return_per_class=True)
        subset = evaluate_audio_accuracy(model, n=subset_n)
        meta["test"] = {"split": "test", "seed": EVAL_SEED, "n": eval_n, "accuracy": accuracy,
                        "per_class": dict(zip(SOUND_CLASS_NAMES, per_class))}
        meta["test_subset"] = {"split": "test", "seed": EVAL_SEED, "n": subset_n,
                               "accuracy": subset}
        meta["eval_time_s"] = round(time.perf_counter() - t0, 1)
        say(f"held-out accuracy {accuracy:.4f} on {eval_n} test clips "
            f"({subset:.4f} on the first {subset_n})")

    if out is not None:
        from safetensors.torch import save_file

        _write_atomic(weights_path, lambda p: save_file(
            state, str(p), metadata={"name": name, "classes": json.dumps(list(SOUND_CLASS_NAMES))}))
        meta["sha256"] = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
        say(f"wrote {weights_path} and {meta_path}")
    return meta
