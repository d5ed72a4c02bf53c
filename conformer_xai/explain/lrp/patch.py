"""Swap LRP rules into a model for one pass: forward hooks and attention forwards, always restored.

Inside :func:`lrp_rules` the model computes exactly its usual logits, but its backward pass is
the modified one of :mod:`.rules`, so ``input * autograd.grad(score, input)`` is LRP relevance.
Which rule applies to which module:

| module                                | ``lrp`` (CP-LRP)        | ``attnlrp`` (AttnLRP)         |
|---------------------------------------|-------------------------|-------------------------------|
| ``Linear``, ``Conv2d``                | epsilon                 | epsilon                       |
| ``BatchNorm2d``                       | passed (affine, LRP-0)  | passed (affine, LRP-0)        |
| ``LayerNorm``                         | ``1/sigma`` constant    | ``1/sigma`` constant          |
| ``GELU``                              | gate constant           | gate constant                 |
| ``ReLU``, max/avg pooling, upsampling | gradient (passes)       | gradient (passes)             |
| attention ``softmax(q k^T) v``        | weights constant        | softmax rule, uniform matmuls |
| residual additions, concatenation     | split by contribution   | split by contribution         |
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...registry import LRP_COMPOSITES
from .rules import epsilon_rule, gamma_rule, gate_rule, layer_norm_rule, uniform_rule

__all__ = ["lrp_rules", "VARIANTS", "COMPOSITES", "check_supported", "first_layer",
           "conv_bn_pairs"]

#: The two LRP variants: conservative propagation and AttnLRP.
VARIANTS = ("lrp", "attnlrp")
#: Rule composites, in zennit's terms: "epsilon" everywhere (the default), or "epsilon_gamma_box":
#: gamma (0.25) on conv layers whose input is non-negative (a batch norm right after a conv is
#: folded into it first, as zennit's canonizers do), epsilon on the other conv and linear
#: layers, the bounded z^B rule at the input layer (computed by :func:`.rules.box_rule`).
COMPOSITES = LRP_COMPOSITES
GAMMA = 0.25

#: Leaf modules whose plain gradient is already their LRP rule (linear maps, ReLU, pooling).
_PASS = (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
         nn.AdaptiveAvgPool2d, nn.Flatten)


def _is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("qkv", "proj", "num_heads", "head_dim", "scale"))


def _pass_types() -> tuple[type, ...]:
    extra: list[type] = []
    try:
        from timm.layers import DropPath, LayerScale

        extra += [DropPath, LayerScale]
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    return _PASS + tuple(extra)


def check_supported(model: nn.Module) -> None:
    """Raise ValueError naming the first module that no LRP rule covers."""
    passing = _pass_types()
    covered = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GELU) + passing
    for name, m in model.named_modules():
        if _is_attention(m):
            for sub in ("q_norm", "k_norm", "norm"):
                if not isinstance(getattr(m, sub, nn.Identity()), nn.Identity):
                    raise ValueError(f"lrp has no rule for the attention normalisation "
                                     f"{name}.{sub} ({type(getattr(m, sub)).__name__})")
            if getattr(m, "gate", None) is not None:
                raise ValueError(f"lrp has no rule for the gated attention {name}")
            continue
        if any(True for _ in m.children()):
            continue
        if not isinstance(m, covered):
            raise ValueError(f"lrp has no rule for module {name or 'model'} "
                             f"({type(m).__name__}); supported leaves: Linear, Conv2d, "
                             f"LayerNorm, GELU, BatchNorm2d, ReLU, pooling, dropout, identity")


def first_layer(model: nn.Module) -> nn.Conv2d:
    """The input layer: the model's first ``Conv2d`` (stem conv, patch embedding)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def conv_bn_pairs(model: nn.Module) -> dict[int, nn.BatchNorm2d]:
    """``id(conv) -> bn`` for each batch norm that directly follows a conv in module order and
    normalises its output channels (zennit's sequential batch-norm merge)."""
    modules = list(model.modules())
    pairs = {}
    for a, b in zip(modules, modules[1:]):
        if (isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d)
                and b.num_features == a.out_channels and b.track_running_stats):
            pairs[id(a)] = b
    return pairs


def _attention_forward(variant: str):
    def forward(self: nn.Module, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if variant == "attnlrp":
            attn = uniform_rule(scores).softmax(dim=-1)
            out = uniform_rule(attn @ v)
        else:
            out = scores.softmax(dim=-1).detach() @ v
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(out))

    return forward


@contextlib.contextmanager
def lrp_rules(model: nn.Module, variant: str = "lrp", epsilon: float = 1e-6,
              composite: str = "epsilon") -> Iterator[None]:
    """Install the LRP rules of ``variant`` on every module of ``model``; restore on exit.

    Args:
        model: A model whose leaves :func:`check_supported` accepts.
        variant: "lrp" (conservative propagation) or "attnlrp".
        epsilon: Stabiliser of the epsilon rule (0 = LRP-0).
        composite: "epsilon" or "epsilon_gamma_box" (:data:`COMPOSITES`); with the latter the
            input layer keeps the epsilon rule here (the caller applies the bounded rule to the
            relevance at its output).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown LRP variant {variant!r}; accepted: {', '.join(VARIANTS)}")
    if composite not in COMPOSITES:
        raise ValueError(f"unknown LRP composite {composite!r}; accepted: {', '.join(COMPOSITES)}")
    check_supported(model)
    handles: list[Any] = []
    patched: list[nn.Module] = []

    gamma_on = composite == "epsilon_gamma_box"
    stem = first_layer(model) if gamma_on else None
    pairs = conv_bn_pairs(model) if gamma_on else {}
    pending: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # id(bn) -> (conv, its input)

    def linear_hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if (gamma_on and isinstance(module, nn.Conv2d) and module is not stem
                and bool(args[0].min() >= 0)):
            bn = pairs.get(id(module))
            if bn is not None:  # the rule applies to the folded conv + batch norm
                pending[id(bn)] = (module, args[0])
                return output
            return gamma_rule(module, args[0], output, GAMMA, epsilon)
        return epsilon_rule(output, epsilon)

    def bn_hook(module: nn.BatchNorm2d, args: Any, output: torch.Tensor) -> torch.Tensor:
        conv_x = pending.pop(id(module), None)
        if conv_x is None:
            return output
        return gamma_rule(conv_x[0], conv_x[1], output, GAMMA, epsilon, bn=module)

    def gelu_hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return gate_rule(args[0], output)

    def norm_hook(module: nn.LayerNorm, args: Any, output: torch.Tensor) -> torch.Tensor:
        return layer_norm_rule(args[0], output, module.weight, module.eps)

    attention_forward = _attention_forward(variant)
    try:
        for m in model.modules():
            if _is_attention(m):
                m.forward = types.MethodType(attention_forward, m)
                patched.append(m)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                handles.append(m.register_forward_hook(linear_hook))
            elif gamma_on and isinstance(m, nn.BatchNorm2d):
                handles.append(m.register_forward_hook(bn_hook))
            elif isinstance(m, nn.GELU):
                handles.append(m.register_forward_hook(gelu_hook))
            elif isinstance(m, nn.LayerNorm):
                handles.append(m.register_forward_hook(norm_hook))
        yield
    finally:
        for h in handles:
            h.remove()
        for m in patched:
            if "forward" in vars(m):
                del m.forward
