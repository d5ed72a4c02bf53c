"""conformer-xai: explain both branches of the Conformer vision model.

The public API in one screen::

    import conformer_xai as cx

    model = cx.load_model("conformer_micro_patch16", weights="embedded")
    x, image = cx.load_image("examples/scenes/scene_000.png", model)
    with cx.Explainer(model) as explainer:
        exp = explainer.explain(x, head=("cnn", "transformer"))
    fig = cx.plot.head_branch_matrix(exp)

Importing ``conformer_xai`` is cheap: torch loads on first use. Our model names are registered
with timm's registry as soon as both ``conformer_xai`` and ``timm`` are imported, in either
order, so that ``timm.create_model("conformer_small_patch16")`` works.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__", "load_model", "load_image", "load_array", "load_audio", "Explainer",
    "Explanation", "plot", "metrics", "models",
]

_LAZY = {
    "load_model": ("conformer_xai.models.weights", "load_model"),
    "load_image": ("conformer_xai.data", "load_image"),
    "load_array": ("conformer_xai.data", "load_array"),
    "load_audio": ("conformer_xai.audio", "load_audio"),
    "Explainer": ("conformer_xai.explain", "Explainer"),
    "Explanation": ("conformer_xai.explain", "Explanation"),
    "plot": ("conformer_xai.plot", None),
    "metrics": ("conformer_xai.metrics", None),
    "models": ("conformer_xai.models", None),
    "audio": ("conformer_xai.audio", None),
}

if TYPE_CHECKING:  # pragma: no cover
    from . import metrics, models, plot
    from .audio import load_audio
    from .data import load_array, load_image
    from .explain import Explainer, Explanation
    from .models.weights import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'conformer_xai' has no attribute {name!r}")


def _register_models() -> None:
    importlib.import_module("conformer_xai.models")


class _RegisterAfterTimmImport(importlib.abc.MetaPathFinder):
    """Registers our models with timm right after timm itself is imported."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register_models()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    _register_models()
elif not any(isinstance(f, _RegisterAfterTimmImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimmImport())
