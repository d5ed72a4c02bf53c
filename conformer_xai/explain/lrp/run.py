"""One LRP pass: rules swapped in, probes on the taps, one ``autograd.grad`` per head."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..taps import ModelAdapter, Tap
from .flows import FlowProbes
from .patch import conv_bn_pairs, first_layer, lrp_rules
from .rules import box_rule

__all__ = ["LRPResult", "run_lrp", "DEFAULT_EPSILON"]

#: Stabiliser of the epsilon rule on linear and convolutional layers.
DEFAULT_EPSILON = 1e-6


@dataclass
class LRPResult:
    """Raw maps, flow tables and conservation numbers of one LRP variant.

    Attributes:
        raw: ``<variant>/<head>`` (B, H, W) pixel relevance summed over channels (signed) and
            ``<variant>/<head>/<branch>/<k>`` (B, h, w) relevance at every tap.
        logits: The pass's logits per head (detached, float32; the rules leave the forward
            values unchanged).
        target: The target classes used.
        flows: ``head -> rows`` of the branch-flow table (Conformer only).
        conservation: ``head -> {"logit", "relevance", "ratio", "absorbed_share"}``, each a list
            of per-image floats: the target logit, the input relevance's sum, their ratio, and
            ``1 - ratio`` (what biases, the epsilon stabiliser, the class token and, for
            ``attnlrp``, the softmax and matmul rules absorbed).
    """

    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    target: torch.Tensor | None = None
    flows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    conservation: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@contextlib.contextmanager
def _tap_probes(taps: Sequence[Tap], store: dict[str, torch.Tensor]) -> Iterator[None]:
    """Probe every tap: CNN taps at the block output, transformer taps at the block input."""
    handles = []

    def out_hook(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            first = output[0] if isinstance(output, tuple) else output
            p = first.view_as(first)
            store[name] = p
            return (p, *output[1:]) if isinstance(output, tuple) else p

        return hook

    def in_hook(name: str):
        def pre_hook(module: nn.Module, args: Any) -> Any:
            p = args[0].view_as(args[0])
            store[name] = p
            return (p, *args[1:])

        return pre_hook

    try:
        for tap in taps:
            name = f"{tap.branch}/{tap.block}"
            if tap.tokens:
                handles.append(tap.feature_module.register_forward_pre_hook(in_hook(name)))
            else:
                handles.append(tap.feature_module.register_forward_hook(out_hook(name)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _output_probe(module: nn.Module, store: dict[str, torch.Tensor], name: str) -> Iterator[None]:
    def hook(m: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        p = output.view_as(output)
        store[name] = p
        return p

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _bounds(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds of the normalised input: images of 0 and 1, else the batch's range."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is not None and std is not None and len(mean) == x.shape[1] == len(std):
        m = torch.tensor(mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        s = torch.tensor(std, dtype=x.dtype, device=x.device)[None, :, None, None]
        return (0 - m) / s, (1 - m) / s
    return x.amin(dim=(0, 2, 3), keepdim=True), x.amax(dim=(0, 2, 3), keepdim=True)


def run_lrp(
    adapter: ModelAdapter,
    x: torch.Tensor,
    target: torch.Tensor | Callable[[dict[str, torch.Tensor]], torch.Tensor],
    heads: Sequence[str],
    variant: str,
    blocks: Mapping[str, Sequence[int]],
    grid: Callable[[Tap, torch.Tensor], torch.Tensor],
    epsilon: float = DEFAULT_EPSILON,
    composite: str = "epsilon",
) -> LRPResult:
    """Relevance of ``variant`` ("lrp" or "attnlrp") for every head, in a pass of its own.

    The model must already be in eval mode with frozen parameters (the explainer's model state).

    Args:
        adapter: The explainer's model adapter.
        x: Input batch (B, C, H, W).
        target: (B,) target classes, or a function of the pass's logits that returns them (the
            explainer's top-1 rule when no other pass ran).
        heads: Heads to explain (one modified backward each).
        variant: "lrp" or "attnlrp".
        blocks: ``branch -> blocks`` whose taps get a relevance map.
        grid: ``(tap, value) -> (B, D, h, w)`` (tokens to the token grid; maps unchanged).
        epsilon: Stabiliser of the epsilon rule.
        composite: "epsilon" (default) or "epsilon_gamma_box" (:data:`.patch.COMPOSITES`); the
            latter's input-layer bounds are the normalised images of 0 and 1 under the model's
            ``pretrained_cfg`` mean and std, else each channel's minimum and maximum in ``x``.
    """
    taps = [adapter.tap(b, k) for b, ks in blocks.items() for k in ks]
    tap_store: dict[str, torch.Tensor] = {}
    flows = FlowProbes(adapter.model) if adapter.family == "conformer" else None
    result = LRPResult()
    box = composite == "epsilon_gamma_box"
    stem = first_layer(adapter.model) if box else None
    stem_bn = conv_bn_pairs(adapter.model).get(id(stem)) if box else None
    with lrp_rules(adapter.model, variant, epsilon, composite), _tap_probes(taps, tap_store), \
            (flows.installed() if flows else contextlib.nullcontext()), \
            (_output_probe(stem_bn or stem, tap_store, "stem_output") if box
             else contextlib.nullcontext()):
        x_in = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = adapter.forward(x_in)
        if callable(target):
            target = target(logits)
        result.logits = {h: v.detach().float() for h, v in logits.items()}
        result.target = target
        tap_names = [n for n in tap_store if n != "stem_output"]
        flow_names = flows.names() if flows else []
        inputs = [x_in] + [tap_store[n] for n in tap_names]
        inputs += [flows.tensors[n] for n in flow_names] if flows else []
        inputs += [tap_store["stem_output"]] if box else []
        for n, h in enumerate(heads):
            score = logits[h].float().gather(1, target[:, None])
            grads = torch.autograd.grad(score.sum(), inputs, retain_graph=n < len(heads) - 1,
                                        allow_unused=True)
            if box:
                z, g = tap_store["stem_output"].detach(), grads[-1]
                low, high = _bounds(adapter.model, x)
                pixel = box_rule(stem, x.detach(), z * g, low, high, bn=stem_bn).float()
            else:
                pixel = (x_in.detach() * grads[0]).float()
            result.raw[f"{variant}/{h}"] = pixel.sum(dim=1)
            for name, g in zip(tap_names, grads[1:1 + len(tap_names)]):
                branch, k = name.split("/")
                tap = adapter.tap(branch, int(k))
                t = tap_store[name].detach()
                r = torch.zeros_like(t) if g is None else t * g
                result.raw[f"{variant}/{h}/{name}"] = grid(tap, r).float().sum(dim=1)
            if flows:
                fg = dict(zip(flow_names, grads[1 + len(tap_names):]))
                result.flows[h] = flows.rows(fg)
            logit = score.detach()[:, 0]
            total = pixel.flatten(1).sum(1)
            ratio = torch.where(logit != 0, total / logit, torch.zeros_like(total))
            result.conservation[h] = {
                "logit": logit.tolist(), "relevance": total.tolist(), "ratio": ratio.tolist(),
                "absorbed_share": (1 - ratio).tolist()}
    return result
