"""Names the CLI and the library share: heads, branches, families, models, weights, methods.

Torch-free, so that the CLI answers ``--help`` and usage errors before torch loads. The library
(:mod:`conformer_xai.explain`, :mod:`conformer_xai.models.weights`, the plots) and the CLI import
these names from here; method names and labels come from the method registry
(:mod:`conformer_xai.registry`), in its order.
"""

from __future__ import annotations

from .registry import BRANCHES, LRP_COMPOSITES, REGISTRY

__all__ = ["HEADS", "BRANCHES", "FAMILIES", "CONFORMER_MODELS", "EMBEDDED_MODELS",
           "EMBEDDED_IMAGE_MODELS", "DEFAULT_AUDIO_MODEL", "OUR_MODELS", "FAITHFULNESS", "WEIGHTS",
           "METHODS",
           "DEFAULT_METHODS", "METHOD_LABELS", "TAPS", "REDUCTIONS", "DEFAULT_REDUCE",
           "LRP_COMPOSITES"]

#: Classifier heads of a Conformer (ResNet and ViT models have one of them).
HEADS = ("fused", "cnn", "transformer")
FAMILIES = ("conformer", "resnet", "vit")
#: Which maps ``evaluate`` gives the (expensive) deletion and insertion curves.
FAITHFULNESS = ("last", "all", "none")

#: The published Conformer sizes (ImageNet-1k weights).
CONFORMER_MODELS = ("conformer_tiny_patch16", "conformer_small_patch16", "conformer_small_patch32",
                    "conformer_base_patch16")
#: Models whose weights ship inside the package (trained on the synthetic scenes / sounds).
EMBEDDED_MODELS = ("resnet_micro", "deit_micro_patch16", "conformer_micro_patch16",
                   "conformer_micro_audio")
#: The embedded models of the image scenes (``compare --weights embedded``, ``evaluate``).
EMBEDDED_IMAGE_MODELS = ("resnet_micro", "deit_micro_patch16", "conformer_micro_patch16")
#: The embedded spectrogram model: the default for audio inputs without a model.
DEFAULT_AUDIO_MODEL = "conformer_micro_audio"
#: Model names this package registers with timm.
OUR_MODELS = CONFORMER_MODELS + EMBEDDED_MODELS
#: ``weights=`` choices of :func:`conformer_xai.load_model`.
WEIGHTS = ("imagenet", "embedded", "random")

#: Method names, in registry order.
METHODS = tuple(REGISTRY)
#: The default set of :meth:`Explainer.explain` (those that apply to the model).
DEFAULT_METHODS = tuple(m for m, s in REGISTRY.items() if s.default)
#: Display names of the methods.
METHOD_LABELS = {m: s.label for m, s in REGISTRY.items()}

#: Where the gradient methods read a transformer block (``explain(tap=...)``).
TAPS = ("residual", "attention_input")
#: Channel reductions of ``features`` by name (an int picks one channel).
REDUCTIONS = ("mean", "abs_mean", "l2", "max", "pca")
#: The default reduction (README, "Channel reductions": how it is measured on the scenes).
DEFAULT_REDUCE = "pca"
