"""Shared fixtures: small real models with deterministic, non-degenerate weights."""

from __future__ import annotations

import math
import os
import zlib

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


def recipe_state_dict(shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Deterministic weights by the reference recipe (shared/reference/conformer_architecture.md):
    float64 draws seeded by crc32 of each key, cast to float32.

    Unlike a fresh initialisation, these give every head a strong gradient path, so that maps
    computed two ways can be compared meaningfully.
    """
    out = {}
    for key, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        t = torch.randn(shape, generator=g, dtype=torch.float64)
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
            continue
        if key.endswith("running_var"):
            v = t.abs() * 0.5 + 0.75
        elif key.endswith("running_mean"):
            v = 0.1 * t
        elif key.endswith("weight") and len(shape) == 1:
            v = 1 + 0.1 * t
        elif key.endswith("bias"):
            v = 0.02 * t
        else:
            v = t / math.sqrt(math.prod(shape[1:]))
        out[key] = v.float()
    return out


def make_tiny_conformer(num_classes: int = 5, in_chans: int = 3, depth: int = 12,
                        patch_size: int = 16) -> torch.nn.Module:
    """A small real Conformer (same 12-block two-branch structure) with deterministic weights."""
    from conformer_xai.models import Conformer

    model = Conformer(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                      channel_ratio=0.25, embed_dim=48, num_heads=3, depth=depth)
    model.load_state_dict(recipe_state_dict({k: list(v.shape) for k, v in model.state_dict().items()}))
    return model.eval()


@pytest.fixture
def tiny_conformer() -> torch.nn.Module:
    return make_tiny_conformer()


@pytest.fixture
def images() -> torch.Tensor:
    """Two different normalised 64x64 images."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=g)
