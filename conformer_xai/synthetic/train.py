"""Training and held-out evaluation of the small models on the synthetic scenes.

The console command ``conformer-xai train-synthetic`` calls :func:`train_model`. A run is a
pure function of its arguments on a given machine: the model's initialisation comes from
``torch.manual_seed(seed)`` and every training image from ``(seed, "train", index)``. The
held-out accuracy is measured on the ``"test"`` split under :data:`EVAL_SEED`, a stream that
training never sees, with the weights exactly as saved (float16, read back as float32).
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

from .dataset import SyntheticScenes
from .scenes import CLASS_NAMES, MEAN, NUM_CLASSES, PART_CLASSES, STD, check_size

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


def output_paths(name: str, out: str | Path) -> tuple[Path, Path]:
    """The weights file and metadata file that :func:`train_model` writes for ``name``."""
    out = Path(out)
    return out / f"{name}.safetensors", out / f"{name}.json"


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
    data = SyntheticScenes(n, seed=seed, size=size, split=split)
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    total = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    try:
        for batch in loader:
            pred = model(batch["image"].to(device)).argmax(dim=1).cpu()
            label = batch["label"]
            total += torch.bincount(label, minlength=NUM_CLASSES)
            correct += torch.bincount(label[pred == label], minlength=NUM_CLASSES)
    finally:
        model.train(was_training)
    accuracy = correct.sum().item() / total.sum().item()
    if return_per_class:
        per_class = [c / t if t > 0 else math.nan for c, t in zip(correct.tolist(), total.tolist())]
        return accuracy, per_class
    return accuracy


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _schedule(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01 (multiplier of the peak rate)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in model.state_dict().items()}


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
    import timm

    import conformer_xai  # noqa: F401  (registers the model names with timm)

    _check_name(name)
    size = check_size(size)
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps}, {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if eval_n < 0:
        raise ValueError(f"eval_n must be non-negative, got {eval_n}")
    lr = DEFAULT_LR[name] if lr is None else float(lr)
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
    model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _schedule(s, steps, warmup))
    data = SyntheticScenes(steps * batch_size, seed=seed, size=size, split="train", hflip=True)
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
        recent_loss = (recent_loss + [loss.item()])[-100:]
        acc = (logits.argmax(1) == batch["label"]).float().mean().item()
        recent_acc = (recent_acc + [acc])[-100:]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            say(f"step {step + 1}/{steps}  loss {sum(recent_loss) / len(recent_loss):.4f}  "
                f"train acc {sum(recent_acc) / len(recent_acc):.3f}  "
                f"lr {scheduler.get_last_lr()[0]:.2e}  {elapsed:.0f} s")
    train_time = time.perf_counter() - start

    # evaluate the weights exactly as they are saved: float16, read back as float32
    state = _half_state(model)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in state.items()})
    model.eval()
    meta: dict = {
        "name": name,
        "classes": list(CLASS_NAMES),
        "part_classes": list(PART_CLASSES),
        "num_classes": NUM_CLASSES,
        "parameters": n_params,
        "input_size": [3, size, size],
        "mean": list(MEAN),
        "std": list(STD),
        "dtype": "float16",
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "train_images": steps * batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_steps": warmup,
        "schedule": "linear warm-up, cosine decay to 1% of the peak",
        "optimizer": "AdamW",
        "label_smoothing": label_smoothing,
        "augmentation": "horizontal flip (p=0.5)",
        "train_loss_last100": sum(recent_loss) / len(recent_loss),
        "train_accuracy_last100": sum(recent_acc) / len(recent_acc),
        "train_time_s": round(train_time, 1),
        "command": reproduce_command(name, steps, seed, out, batch_size, lr, size),
        "torch_version": torch.__version__,
        "timm_version": timm.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores ({platform.system()})",
    }
    if eval_n:
        t0 = time.perf_counter()
        subset_n = min(EVAL_SUBSET_N, eval_n)
        accuracy, per_class = evaluate_accuracy(model, n=eval_n, seed=EVAL_SEED, split="test",
                                                size=size, return_per_class=True)
        subset = evaluate_accuracy(model, n=subset_n, seed=EVAL_SEED, split="test", size=size)
        meta["test"] = {"split": "test", "seed": EVAL_SEED, "n": eval_n, "accuracy": accuracy,
                        "per_class": dict(zip(CLASS_NAMES, per_class))}
        meta["test_subset"] = {"split": "test", "seed": EVAL_SEED, "n": subset_n,
                               "accuracy": subset}
        meta["eval_time_s"] = round(time.perf_counter() - t0, 1)
        say(f"held-out accuracy {accuracy:.4f} on {eval_n} test scenes "
            f"({subset:.4f} on the first {subset_n})")

    if out is not None:
        from safetensors.torch import save_file

        _write_atomic(weights_path, lambda p: save_file(
            state, str(p), metadata={"name": name, "classes": json.dumps(list(CLASS_NAMES))}))
        meta["sha256"] = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        _write_atomic(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
        say(f"wrote {weights_path} and {meta_path}")
    return meta
