"""The model names this toolkit documents, its weight choices and the comparison models' accuracy.

Names only (no torch): the Conformers' download URLs, hashes and published accuracies live in
their pretrained configs (:data:`conformer_xai.models.conformer.default_cfgs`).
"""

from __future__ import annotations

from typing import NamedTuple

from ..names import CONFORMER_MODELS, EMBEDDED_MODELS, WEIGHTS

__all__ = ["CONFORMER_MODELS", "COMPARISON_MODELS", "EMBEDDED_MODELS", "KNOWN_MODELS",
           "WEIGHT_CHOICES", "MODEL_FAMILY", "PublishedAccuracy", "COMPARISON_TOP1", "EMBEDDED_TOP1",
           "unknown_name_message"]

COMPARISON_MODELS = ("resnet101", "deit_small_patch16_224")
KNOWN_MODELS = CONFORMER_MODELS + COMPARISON_MODELS + EMBEDDED_MODELS
WEIGHT_CHOICES = WEIGHTS
#: The family (tap table) of each documented model, by name.
MODEL_FAMILY = {**{n: "conformer" for n in CONFORMER_MODELS}, "resnet101": "resnet",
            "deit_small_patch16_224": "vit", "resnet_micro": "resnet",
            "deit_micro_patch16": "vit", "conformer_micro_patch16": "conformer",
            "conformer_micro_audio": "conformer"}


class PublishedAccuracy(NamedTuple):
    """Published ImageNet-1k top-1 accuracy (%) of a model and of its downloadable weights."""

    paper: float | None
    weights: float | None
    weights_from: str


#: timm's comparison models (their pretrained configs are timm's, so their numbers live here).
COMPARISON_TOP1 = {
    "resnet101": PublishedAccuracy(None, 82.8, "timm (resnet101.a1h_in1k)"),
    "deit_small_patch16_224": PublishedAccuracy(79.8, None, "timm (deit_small_patch16_224.fb_in1k)"),
}
EMBEDDED_TOP1 = PublishedAccuracy(None, None, "conformer-xai (trained on synthetic scenes)")


def unknown_name_message(name: str) -> str:
    """The error message for a model name that neither this toolkit nor timm knows."""
    return (f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)} "
            f"(any timm model name works too)")
