"""Checkpoints and clips as the spectrogram fork of Conformer makes them (shared by its tests).

The weights follow the deterministic recipe of ``shared/reference/conformer_architecture.md``
over the key manifest in ``tests/data/fork_tinytiny_detlogits.json``; the file is written the
way the fork's DeiT-style training script writes it: ``model``, ``model_ema``, ``optimizer``,
``lr_scheduler``, ``epoch`` and ``args`` (an ``argparse.Namespace``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from conftest import recipe_state_dict

REFERENCE = json.loads((Path(__file__).parent / "data" / "fork_tinytiny_detlogits.json")
                       .read_text())


def fork_state_dict() -> dict[str, torch.Tensor]:
    return recipe_state_dict(REFERENCE["manifest"])


def write_fork_checkpoint(path: Path, args: bool = True, ema_offset: float = 0.0) -> Path:
    """The reference Conformer_tinytiny_patch16 saved as the fork's training script saves it.

    ``model_ema`` holds the same weights plus ``ema_offset`` on the heads' biases (under the
    ``module.`` prefix that timm's ModelEma gives its keys).
    """
    sd = fork_state_dict()
    ema = {f"module.{k}": (v + ema_offset if k.endswith("cls_head.bias") else v.clone())
           for k, v in sd.items()}
    payload = {"model": sd, "model_ema": ema,
               "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
               "lr_scheduler": {"last_epoch": 3}, "epoch": 3}
    if args:
        payload["args"] = argparse.Namespace(
            model="Conformer_tinytiny_patch16", nb_classes=3, input_size=224,
            data_set="SPECTRO", apply_padding=True, lr=1e-4)
    torch.save(payload, path)
    return path


def det_input(shape: tuple[int, ...], seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 20 - 40


def chirp(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A rising chirp in a little noise, as int16 PCM samples."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    wave = 0.3 * np.sin(2 * np.pi * (300 + 1500 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return (np.clip(wave, -1, 1) * 32767).astype(np.int16)
