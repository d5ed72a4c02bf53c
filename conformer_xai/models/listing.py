"""``list_models``: the documented models, their weight sources, published accuracy, cache state."""

from __future__ import annotations

from typing import NamedTuple

from .catalog import (
    COMPARISON_TOP1,
    CONFORMER_MODELS,
    EMBEDDED_MODELS,
    EMBEDDED_TOP1,
    KNOWN_MODELS,
    MODEL_FAMILY,
    PublishedAccuracy,
)
from .hub import is_cached

__all__ = ["ModelRow", "published_top1", "list_models"]


class ModelRow(NamedTuple):
    """One row of :func:`list_models`."""

    name: str
    family: str
    sources: tuple[str, ...]
    top1_paper: float | None
    top1_weights: float | None
    weights_from: str
    cached: bool


def published_top1() -> dict[str, PublishedAccuracy]:
    """Top-1 accuracy in the paper and of the file that ``weights="imagenet"`` loads.

    The Conformers' numbers come from their pretrained configs, timm's comparison models' from
    :data:`conformer_xai.models.catalog.COMPARISON_TOP1`.
    """
    from timm.models import get_pretrained_cfg

    rows = {}
    for name in CONFORMER_MODELS:
        cfg = get_pretrained_cfg(name)
        rows[name] = PublishedAccuracy(cfg.top1_paper, cfg.top1_weights, cfg.weights_from)
    return {**rows, **COMPARISON_TOP1}


def list_models() -> list[ModelRow]:
    """The models this toolkit documents, their weight sources, published accuracy, cache state."""
    top1 = published_top1()
    rows = []
    for name in KNOWN_MODELS:
        if name in EMBEDDED_MODELS:
            sources, acc = ("embedded", "checkpoint", "random"), EMBEDDED_TOP1
        else:
            sources, acc = ("imagenet", "checkpoint", "random"), top1[name]
        rows.append(ModelRow(name, MODEL_FAMILY[name], sources, acc.paper, acc.weights,
                             acc.weights_from, is_cached(name)))
    return rows
