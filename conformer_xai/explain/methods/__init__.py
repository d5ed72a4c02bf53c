"""Explanation methods: pure functions of recorded tensors, one small module per method.

What each method is (its function, what it reads, its key shape, label, options) is its
:class:`~conformer_xai.registry.MethodSpec` in :data:`~conformer_xai.registry.REGISTRY`; the
names below are views of that table (a new method needs no line here). Methods never register
hooks.
"""

from __future__ import annotations

from ...registry import REGISTRY, MethodSpec, methods_of_kinds
from .attention import class_token_attention
from .cam import eigencam, gradcam, gradcam_plus_plus, hirescam, layercam
from .features import reduce_channels
from .rollout import attention_rollout, gradient_rollout
from .transcam import transcam

__all__ = [
    "MethodSpec", "METHODS", "DEFAULT_METHODS", "CAM_METHODS", "reduce_channels",
    "class_token_attention", "gradcam", "gradcam_plus_plus", "layercam", "hirescam", "eigencam",
    "attention_rollout", "gradient_rollout", "transcam", "SIGNED_METHODS", "INPUT_METHODS",
    "OWN_PASS_METHODS",
]

#: Every method's spec, by name (the registry).
METHODS = REGISTRY

#: Gradient-weighted CAM methods: ``name -> f(activation, gradient) -> raw map``.
CAM_METHODS = {m: REGISTRY[m].compute for m in methods_of_kinds("cam")}

#: Methods whose raw maps keep their sign; their ``maps`` show the positive part.
SIGNED_METHODS = tuple(m for m, s in REGISTRY.items() if s.signed)

#: Methods with a map at input resolution per head (``<method>/<head>``).
INPUT_METHODS = tuple(m for m, s in REGISTRY.items() if s.input_map)

#: Methods computed in passes of their own (a modified backward, or many passes).
OWN_PASS_METHODS = tuple(m for m, s in REGISTRY.items() if s.own_pass)

#: The default set: feature maps, Grad-CAM on every tap, attention, rollout and gradient rollout.
DEFAULT_METHODS = tuple(m for m, s in REGISTRY.items() if s.default)
