"""Class names: ImageNet's (from timm), the synthetic image and sound scenes', or the user's.

Importing this module is cheap: timm loads on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["class_names_for", "imagenet_class_names", "read_labels"]


def imagenet_class_names(num_classes: int = 1000) -> list[str]:
    """ImageNet class names from timm's bundled class info (the first WordNet lemma).

    Raises:
        ValueError: ``num_classes`` is not the size of an ImageNet subset timm knows.
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        raise ValueError(f"{num_classes} classes is not an ImageNet subset timm knows "
                         f"(1000, 11221, 11821, 21841, 21842, 21843)")
    descriptions = ImageNetInfo(subset).label_descriptions()
    return [d.split(",")[0].strip() for d in descriptions]


def read_labels(labels: str | os.PathLike | Sequence[str] | dict) -> list[str]:
    """Class names from a labels file or object.

    A file is JSON (a list of names, or a dict ``{"0": "cat", ...}`` / ``{"cat": 0, ...}``) or
    plain text with one name per line (blank lines at the end ignored).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The contents are not a list of names or a complete index mapping.
    """
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such labels file")
        text = path.read_text(encoding="utf-8-sig")
        stripped = text.strip()
        if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: labels file is not valid JSON ({exc})") from None
            return _labels_from_object(data, str(path))
        names = [line.strip() for line in stripped.splitlines()]
        if not names or not all(names):
            raise ValueError(f"{path}: labels file needs one non-empty class name per line")
        return names
    return _labels_from_object(labels, "labels")


def _labels_from_object(data: Any, where: str) -> list[str]:
    if isinstance(data, dict):
        items = list(data.items())
        if all(_is_int(k) for k, _ in items):
            mapping = {int(k): str(v) for k, v in items}
        elif all(_is_int(v) for _, v in items):
            mapping = {int(v): str(k) for k, v in items}
        else:
            raise ValueError(f"{where}: a labels dict maps class index -> name (or name -> index)")
        if sorted(mapping) != list(range(len(mapping))):
            raise ValueError(f"{where}: labels dict indices must be 0..{len(mapping) - 1} "
                             f"without gaps")
        return [mapping[i] for i in range(len(mapping))]
    if isinstance(data, (list, tuple)) and data and all(isinstance(v, str) for v in data):
        return list(data)
    raise ValueError(f"{where}: labels must be a non-empty list of class names or an "
                     f"index -> name dict")


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def class_names_for(model_or_num_classes: Any, labels: Any = None) -> list[str]:
    """Class names for a model's classifier head.

    In order: the ``labels`` given (file path, list or dict; see :func:`read_labels`); the
    synthetic-scene class names for the embedded small models (``weights_source == "embedded"``
    or a ``resnet_micro``/``deit_micro_patch16``/``conformer_micro_patch16`` model whose head
    has that many classes); ImageNet names from timm's class info for 1000-class (or other
    ImageNet-sized) heads; otherwise the class indices as strings.

    Args:
        model_or_num_classes: A model (``num_classes`` attribute or ``pretrained_cfg``) or an int.
        labels: Optional user class names.

    Raises:
        ValueError: The labels disagree with the number of classes, or the model's class count
            is unknown.
    """
    model = None
    if isinstance(model_or_num_classes, int) and not isinstance(model_or_num_classes, bool):
        num_classes = int(model_or_num_classes)
    else:
        model = model_or_num_classes
        num_classes = getattr(model, "num_classes", None) or getattr(
            model, "pretrained_cfg", {}).get("num_classes")
        if not isinstance(num_classes, int):
            raise ValueError("cannot tell the number of classes of this model; pass an int")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if labels is not None:
        names = read_labels(labels)
        if len(names) != num_classes:
            where = labels if isinstance(labels, (str, os.PathLike)) else "labels"
            raise ValueError(f"{where}: {len(names)} class names for a head with "
                             f"{num_classes} classes")
        return names
    if model is not None and _is_embedded(model):
        for synthetic in (_synthetic_class_names(), _sound_class_names()):
            if synthetic is not None and len(synthetic) == num_classes:
                return synthetic
    try:
        return imagenet_class_names(num_classes)
    except ValueError:
        return [str(i) for i in range(num_classes)]


def _is_embedded(model: Any) -> bool:
    if getattr(model, "weights_source", None) == "embedded":
        return True
    from .models.weights import EMBEDDED_MODELS

    name = getattr(model, "model_name", None) or getattr(model, "pretrained_cfg", {}).get(
        "architecture")
    return name in EMBEDDED_MODELS


def _sound_class_names() -> list[str] | None:
    try:
        from .synthetic.sounds import SOUND_CLASS_NAMES
    except ImportError:
        return None
    return [str(n) for n in SOUND_CLASS_NAMES]


def _synthetic_class_names() -> list[str] | None:
    try:
        from .synthetic import CLASS_NAMES
    except ImportError:
        return None
    return [str(n) for n in CLASS_NAMES]
