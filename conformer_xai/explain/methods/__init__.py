"""Explanation methods: pure functions of recorded tensors, one small module per method.

Each method declares what it needs from the single forward pass (activations, gradients,
attention probabilities) and computes a raw map at grid resolution. Methods never register hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attention import class_token_attention
from .cam import eigencam, gradcam, gradcam_plus_plus, hirescam, layercam
from .features import reduce_channels
from .rollout import attention_rollout, gradient_rollout
from .transcam import transcam

__all__ = [
    "MethodSpec", "METHODS", "DEFAULT_METHODS", "CAM_METHODS", "reduce_channels",
    "class_token_attention", "gradcam", "gradcam_plus_plus", "layercam", "hirescam", "eigencam",
    "attention_rollout", "gradient_rollout", "transcam", "SIGNED_METHODS", "INPUT_METHODS",
]


@dataclass(frozen=True)
class MethodSpec:
    """What a method reads from the forward pass.

    Attributes:
        name: The method's key prefix.
        per_block: One map per block (True) or one map per model (rollout).
        needs_gradients: Reads the gradient of a head's target score (one map per head).
        needs_attention: Reads attention probabilities (transformer branch only).
        transformer_only: Applies only to the transformer branch.
        own_pass: Computed in passes of its own after the main pass (a modified backward, or
            many forward passes), not from the main pass's recordings.
        families: Model families it applies to (empty: all).
    """

    name: str
    per_block: bool
    needs_gradients: bool
    needs_attention: bool
    transformer_only: bool = False
    own_pass: bool = False
    families: tuple[str, ...] = ()


#: Gradient-weighted CAM methods: ``(activation, gradient) -> raw map``.
CAM_METHODS = {
    "gradcam": gradcam,
    "gradcam++": gradcam_plus_plus,
    "layercam": layercam,
    "hirescam": hirescam,
}

METHODS: dict[str, MethodSpec] = {
    "features": MethodSpec("features", True, False, False),
    "attention": MethodSpec("attention", True, False, True, transformer_only=True),
    **{name: MethodSpec(name, True, True, False) for name in CAM_METHODS},
    "eigencam": MethodSpec("eigencam", True, False, False),
    "rollout": MethodSpec("rollout", False, False, True, transformer_only=True),
    "grad_rollout": MethodSpec("grad_rollout", False, True, True, transformer_only=True),
    "lrp": MethodSpec("lrp", True, False, False, own_pass=True),
    "attnlrp": MethodSpec("attnlrp", True, False, False, own_pass=True),
    "transcam": MethodSpec("transcam", False, False, True, families=("conformer",)),
    "integrated_gradients": MethodSpec("integrated_gradients", False, False, False, own_pass=True),
    "smoothgrad": MethodSpec("smoothgrad", False, False, False, own_pass=True),
}

#: Methods whose raw maps keep their sign; their ``maps`` show the positive part.
SIGNED_METHODS = ("lrp", "attnlrp", "integrated_gradients")

#: Methods with a map at input resolution per head (``<method>/<head>``).
INPUT_METHODS = ("lrp", "attnlrp", "integrated_gradients", "smoothgrad")

#: The full set: feature maps, Grad-CAM on every tap, attention, rollout and gradient rollout.
DEFAULT_METHODS = ("features", "attention", "gradcam", "rollout", "grad_rollout")
