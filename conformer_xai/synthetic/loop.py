"""The one training loop and the one accuracy count behind every small model we train.

:func:`train_model <conformer_xai.synthetic.train.train_model>` (image scenes) and
:func:`train_audio_model <conformer_xai.synthetic.sound_train.train_audio_model>` (sound scenes)
differ only in their data, defaults and metadata, which they pass in a :class:`Recipe`. A run is a
pure function of its arguments on a given machine: ``torch.manual_seed(seed)`` fixes the
initialisation and the recipe's dataset fixes every training input. The held-out accuracy is
measured with the weights exactly as saved (float16, read back as float32).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ..errors import Setting, SettingExistsError
from ..files import atomic_write

__all__ = ["Recipe", "train", "count_accuracy", "output_paths"]


@dataclass(frozen=True)
class Recipe:
    """What one kind of training run needs beyond the shared settings.

    Attributes:
        name: timm name of the model to build and of the files written.
        classes: Class names (the model gets ``len(classes)`` outputs).
        part_classes: Class names of the parts of a scene (recorded in the metadata).
        train_data: ``n -> dataset`` of the ``n`` training inputs under the run's seed.
        evaluate: ``(model, n, return_per_class) -> accuracy [, per class]`` on the held-out
            test stream.
        command: ``(steps, seed, out, batch_size, lr) -> command line`` reproducing the run.
        unit: What one input is, in the metadata and log lines ("images", "clips").
        test_unit: What one held-out input is in the log line ("test scenes", "test clips").
        window: Steps averaged in the reported train loss and accuracy (``..._last<window>``).
        inputs: Metadata describing the inputs (``input_size`` and the like), recorded after
            the parameter count.
        augmentation: Metadata line describing the augmentation.
        eval_subset_n: Size of the smaller held-out subset also reported.
        eval_seed: Seed of the held-out test stream.
    """

    name: str
    classes: Sequence[str]
    part_classes: Sequence[str]
    train_data: Callable[[int], Dataset]
    evaluate: Callable[..., Any]
    command: Callable[[int, int, Any, int, float], str]
    unit: str
    test_unit: str
    window: int
    inputs: dict[str, Any] = field(default_factory=dict)
    augmentation: str = ""
    eval_subset_n: int = 300
    eval_seed: int = 0


def output_paths(name: str, out: str | Path) -> tuple[Path, Path]:
    """The weights file and metadata file that a training run writes for ``name``."""
    out = Path(out)
    return out / f"{name}.safetensors", out / f"{name}.json"


@torch.no_grad()
def count_accuracy(model: torch.nn.Module, data: Dataset, num_classes: int, batch_size: int,
                   num_workers: int = 0, return_per_class: bool = False
                   ) -> float | tuple[float, list[float]]:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on a dataset of ``image``/``label``
    items; the model is put in eval mode for the call and restored afterwards.

    With ``return_per_class`` also the accuracy of each class (NaN when absent).
    """
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros(num_classes, dtype=torch.float64)
    total = torch.zeros(num_classes, dtype=torch.float64)
    try:
        for batch in loader:
            pred = model(batch["image"].to(device)).argmax(dim=1).cpu()
            label = batch["label"]
            total += torch.bincount(label, minlength=num_classes)
            correct += torch.bincount(label[pred == label], minlength=num_classes)
    finally:
        model.train(was_training)
    accuracy = correct.sum().item() / total.sum().item()
    if return_per_class:
        per_class = [c / t if t > 0 else math.nan for c, t in zip(correct.tolist(), total.tolist())]
        return accuracy, per_class
    return accuracy


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weights, none on norms, biases, tokens and embeddings."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def schedule(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.01 (multiplier of the peak rate)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with floating-point tensors in float16 (as saved)."""
    return {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
            for k, v in model.state_dict().items()}


def _check(steps: int, batch_size: int, seed: int, eval_n: int, lr: float) -> None:
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be at least 1, got {steps}, {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if eval_n < 0:
        raise ValueError(f"eval_n must be non-negative, got {eval_n}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be positive and finite, got {lr}")


def _fit(model: torch.nn.Module, loader: DataLoader, steps: int, lr: float, weight_decay: float,
         warmup: int, label_smoothing: float, window: int, say: Callable[[str], None],
         log_every: int) -> tuple[list[float], list[float], float]:
    """The training loop; returns the last ``window`` losses and accuracies and the time."""
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: schedule(s, steps, warmup))
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
        recent_loss = (recent_loss + [loss.item()])[-window:]
        acc = (logits.argmax(1) == batch["label"]).float().mean().item()
        recent_acc = (recent_acc + [acc])[-window:]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - start
            say(f"step {step + 1}/{steps}  loss {sum(recent_loss) / len(recent_loss):.4f}  "
                f"train acc {sum(recent_acc) / len(recent_acc):.3f}  "
                f"lr {scheduler.get_last_lr()[0]:.2e}  {elapsed:.0f} s")
    return recent_loss, recent_acc, time.perf_counter() - start


def train(recipe: Recipe, steps: int, batch_size: int, lr: float, seed: int,
          out: str | Path | None, num_workers: int, weight_decay: float, warmup: int | None,
          label_smoothing: float, eval_n: int, force: bool, threads: int | None,
          log: Callable[[str], None] | None, log_every: int) -> dict:
    """Train ``recipe``'s model, measure it held out and (with ``out``) save it.

    The arguments are those of :func:`~conformer_xai.synthetic.train.train_model`, ``lr``
    already resolved to a number. Returns the metadata dict, also written to
    ``<out>/<name>.json``.

    Raises:
        ValueError: on a bad setting.
        FileExistsError: when an output file exists and ``force`` is False.
    """
    import timm

    import conformer_xai  # noqa: F401  (registers the model names with timm)

    name = recipe.name
    lr = float(lr)
    _check(steps, batch_size, seed, eval_n, lr)
    warmup = min(200, max(1, steps // 20)) if warmup is None else max(1, int(warmup))
    say = log or (lambda _: None)
    if out is not None:
        out = Path(out)
        weights_path, meta_path = output_paths(name, out)
        existing = [str(p) for p in (weights_path, meta_path) if p.exists()]
        if existing and not force:
            raise SettingExistsError(f"{', '.join(existing)} already exist(s); pass "
                                     "{force} to overwrite", force=Setting("force", True))
        out.mkdir(parents=True, exist_ok=True)
    if threads is not None:
        torch.set_num_threads(threads)

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=len(recipe.classes))
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    loader = DataLoader(recipe.train_data(steps * batch_size), batch_size=batch_size,
                        shuffle=False, num_workers=num_workers, drop_last=True)
    say(f"training {name} ({n_params / 1e6:.2f} M parameters): {steps} steps x {batch_size}, "
        f"lr {lr:g}, seed {seed}, {torch.get_num_threads()} threads")
    recent_loss, recent_acc, train_time = _fit(model, loader, steps, lr, weight_decay, warmup,
                                               label_smoothing, recipe.window, say, log_every)

    # evaluate the weights exactly as they are saved: float16, read back as float32
    state = half_state(model)
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v
                           for k, v in state.items()})
    model.eval()
    meta: dict = {
        "name": name, "classes": list(recipe.classes), "part_classes": list(recipe.part_classes),
        "num_classes": len(recipe.classes), "parameters": n_params, **recipe.inputs,
        "dtype": "float16", "seed": seed, "steps": steps, "batch_size": batch_size,
        f"train_{recipe.unit}": steps * batch_size, "lr": lr, "weight_decay": weight_decay,
        "warmup_steps": warmup, "schedule": "linear warm-up, cosine decay to 1% of the peak",
        "optimizer": "AdamW", "label_smoothing": label_smoothing,
        "augmentation": recipe.augmentation,
        f"train_loss_last{recipe.window}": sum(recent_loss) / len(recent_loss),
        f"train_accuracy_last{recipe.window}": sum(recent_acc) / len(recent_acc),
        "train_time_s": round(train_time, 1),
        "command": recipe.command(steps, seed, out, batch_size, lr),
        "torch_version": torch.__version__, "timm_version": timm.__version__,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores ({platform.system()})",
    }
    if eval_n:
        t0 = time.perf_counter()
        subset_n = min(recipe.eval_subset_n, eval_n)
        accuracy, per_class = recipe.evaluate(model, eval_n, True)
        subset = recipe.evaluate(model, subset_n, False)
        meta["test"] = {"split": "test", "seed": recipe.eval_seed, "n": eval_n,
                        "accuracy": accuracy, "per_class": dict(zip(recipe.classes, per_class))}
        meta["test_subset"] = {"split": "test", "seed": recipe.eval_seed, "n": subset_n,
                               "accuracy": subset}
        meta["eval_time_s"] = round(time.perf_counter() - t0, 1)
        say(f"held-out accuracy {accuracy:.4f} on {eval_n} {recipe.test_unit} "
            f"({subset:.4f} on the first {subset_n})")

    if out is not None:
        from safetensors.torch import save_file

        classes = json.dumps(list(recipe.classes))
        atomic_write(weights_path, lambda p: save_file(
            state, str(p), metadata={"name": name, "classes": classes}))
        meta["sha256"] = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        atomic_write(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
        say(f"wrote {weights_path} and {meta_path}")
    return meta
