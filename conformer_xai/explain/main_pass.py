"""The main pass: what the requested methods read, one forward pass recording it, one
``autograd.grad`` per head, and each method computed by its kind from the recordings.

Nothing here tests a method's name: what to record follows from each spec's ``reads``, ``tap``
and ``kind``; each kind calls its specs' functions with the kind's uniform signature
(:data:`conformer_xai.registry.KINDS`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import Setting, SettingError
from ..registry import MethodSpec, key_of
from .attention_capture import attention_from_qkv, attention_grad, supports_recompute
from .methods.features import top_channels
from .methods.rollout import RolloutOptions
from .taps import Tap

if TYPE_CHECKING:  # pragma: no cover
    from .explainer import Explainer

__all__ = ["MainPass", "plan_main_pass"]


@dataclass
class MainPass:
    """What the main pass records for a set of specs, and, after :meth:`run`, the recordings.

    Attributes:
        specs: The main-pass methods of the run.
        blocks: ``branch -> blocks`` of the run.
        wanted: Modules whose output is recorded, by key.
        wanted_inputs: Modules whose first input is recorded, by key.
        grad_keys: ``(branch, k) -> key`` of the tensor the gradient methods read at a tap.
        attn_modules: Attention modules whose probabilities are read.
        recompute: Attention recomputed from ``qkv`` (the fused kernel kept).
    """

    specs: list[MethodSpec]
    blocks: Mapping[str, Sequence[int]]
    wanted: dict[Any, nn.Module] = field(default_factory=dict)
    wanted_inputs: dict[Any, nn.Module] = field(default_factory=dict)
    grad_keys: dict[tuple[str, int], Any] = field(default_factory=dict)
    attn_modules: list[nn.Module] = field(default_factory=list)
    recompute: bool = False
    last_cnn: nn.Module | None = None
    recorded: dict[Any, torch.Tensor] = field(default_factory=dict)
    grads: dict[str, dict[Any, torch.Tensor | None]] = field(default_factory=dict)

    @property
    def need_grads(self) -> bool:
        return any(s.needs_gradients for s in self.specs)

    @property
    def need_attention(self) -> bool:
        return any(s.needs_attention for s in self.specs)

    def _reads(self, what: str) -> bool:
        return any(what in s.reads for s in self.specs)

    @property
    def attention_path(self) -> str | None:
        if not self.need_attention:
            return None
        return "fused, recomputed from qkv" if self.recompute else "explicit"

    def grad_ids(self) -> list[Any]:
        ids = list(self.grad_keys.values())
        if self._reads("attention_gradients"):
            ids += [id(m) for m in self.attn_grad_modules]
        return list(dict.fromkeys(ids))

    @property
    def attn_grad_modules(self) -> list[nn.Module]:
        return [a.proj if self.recompute else a.attn_drop for a in self.attn_modules]

    def run(self, explainer: Explainer, x: torch.Tensor, target: Any, heads: Sequence[str],
            autocast_dtype: torch.dtype | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The forward pass and one ``autograd.grad`` per head; returns logits and targets."""
        need_grads = self.need_grads
        recorded: dict[Any, torch.Tensor] = {}
        with explainer._model_state(explicit_attention=self.need_attention
                                    and not self.recompute), \
                _recording(self.wanted, recorded, self.wanted_inputs):
            x_in = x.detach().requires_grad_(need_grads)
            amp = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype
                   else contextlib.nullcontext())
            with torch.set_grad_enabled(need_grads), amp:
                logits = explainer.adapter.forward(x_in)
            target_t = explainer._resolve_target(target, logits, x.shape[0])
            if need_grads:
                grad_ids = self.grad_ids()
                tensors = [recorded[i] for i in grad_ids]
                for n, h in enumerate(heads):
                    score = logits[h].float().gather(1, target_t[:, None]).sum()
                    with amp:
                        g = torch.autograd.grad(score, tensors, retain_graph=n < len(heads) - 1,
                                                allow_unused=True)
                    self.grads[h] = {i: (None if gi is None else gi.detach())
                                     for i, gi in zip(grad_ids, g)}
            self.recorded = {i: t.detach() for i, t in recorded.items()}
        return {h: v.detach().float() for h, v in logits.items()}, target_t


def plan_main_pass(explainer: Explainer, specs: Sequence[MethodSpec],
                   blocks: Mapping[str, Sequence[int]], tap: str) -> MainPass:
    """What to record for these specs: feature taps, gradient taps, attention, the last CNN map."""
    adapter = explainer.adapter
    plan = MainPass(list(specs), blocks)
    per_tap = [s for s in specs if s.per_block and "activations" in s.reads]
    for branch, ks in blocks.items():
        readers = [s for s in per_tap if branch in s.branches]
        for k in ks:
            t = adapter.tap(branch, k)
            if any(s.tap == "feature" for s in readers):
                plan.wanted[id(t.feature_module)] = t.feature_module
            if any(s.tap == "gradient" for s in readers):
                module, reads_input = t.gradient_source(tap)
                if reads_input:
                    plan.grad_keys[branch, k] = ("input", id(module))
                    plan.wanted_inputs[plan.grad_keys[branch, k]] = module
                else:
                    plan.grad_keys[branch, k] = id(module)
                    plan.wanted[id(module)] = module
    if any("head_weights" in s.reads for s in specs):
        plan.last_cnn = adapter.tap("cnn", len(adapter.taps["cnn"])).feature_module
        plan.wanted[id(plan.last_cnn)] = plan.last_cnn
    plan.attn_modules = list(adapter.attention_modules) if plan.need_attention else []
    # attention from the fused kernel's qkv (and proj input for its gradient) when the module
    # allows it; otherwise the explicit path's probabilities at attn_drop
    plan.recompute = bool(plan.attn_modules) and all(supports_recompute(a)
                                                     for a in plan.attn_modules)
    for attn in plan.attn_modules:
        if plan.recompute:
            plan.wanted[id(attn.qkv)] = attn.qkv
            if plan._reads("attention_gradients"):
                plan.wanted_inputs[id(attn.proj)] = attn.proj
        else:
            plan.wanted[id(attn.attn_drop)] = attn.attn_drop
    return plan


@dataclass
class Context:
    """What the kinds compute from: the recordings and the run's arguments."""

    explainer: Explainer
    plan: MainPass
    heads: Sequence[str]
    target: torch.Tensor
    height: int
    width: int
    arguments: Mapping[str, Any]
    channels: int
    attn_heads: bool
    rollout_options: RolloutOptions
    method_options: Mapping[str, Mapping[str, Any]]
    #: Metadata of the side maps: ``side key -> {map key: chosen channels}``.
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    _attns: list[torch.Tensor] | None = None

    @property
    def grid(self) -> Callable[[Tap, torch.Tensor], torch.Tensor]:
        return self.explainer._grid_fn(self.height, self.width)

    def taps(self, spec: MethodSpec) -> Iterator[tuple[str, int, Tap]]:
        for branch, ks in self.plan.blocks.items():
            if branch in spec.branches:
                for k in ks:
                    yield branch, k, self.explainer.adapter.tap(branch, k)

    def kwargs(self, spec: MethodSpec) -> dict[str, Any]:
        return {**{a: self.arguments[a] for a in spec.arguments},
                **self.method_options.get(spec.name, {})}

    @property
    def attentions(self) -> list[torch.Tensor]:
        if self._attns is None:
            rec = self.plan.recorded
            self._attns = ([attention_from_qkv(a, rec[id(a.qkv)]) for a in self.plan.attn_modules]
                           if self.plan.recompute
                           else [rec[id(a.attn_drop)].float() for a in self.plan.attn_modules])
        return self._attns

    def token_grid(self, block: int = 1) -> tuple[int, int]:
        adapter = self.explainer.adapter
        tap = adapter.tap("transformer", block)
        return (tap.grid or adapter.token_grid)(self.height, self.width)

    def to_grid(self, v: torch.Tensor, block: int = 1) -> torch.Tensor:
        """Tokens on a block's own grid (rollouts end on the first block's grid)."""
        return v.reshape(*v.shape[:-1], *self.token_grid(block))


Maps = dict[str, torch.Tensor]


def _activation(spec: MethodSpec, ctx: Context) -> Maps:
    out: Maps = {}
    for branch, k, t in ctx.taps(spec):
        act = ctx.grid(t, ctx.plan.recorded[id(t.feature_module)]).float()
        out[key_of(spec.name, None, branch, k)] = spec.compute(act, **ctx.kwargs(spec))
        if spec.side_key and ctx.channels:
            key = key_of(spec.side_key, None, branch, k)
            out[key], ctx.meta.setdefault(spec.side_key, {})[key] = top_channels(act,
                                                                                 ctx.channels)
    return out


def _cam(spec: MethodSpec, ctx: Context) -> Maps:
    out: Maps = {}
    fn = spec.compute
    for branch, k, t in ctx.taps(spec):
        source = ctx.plan.grad_keys[branch, k]
        act = ctx.grid(t, ctx.plan.recorded[source]).float()
        for h in ctx.heads:
            g = ctx.plan.grads[h].get(source)
            g = torch.zeros_like(act) if g is None else ctx.grid(t, g).float()
            out[key_of(spec.name, h, branch, k)] = fn(act, g, **ctx.kwargs(spec))
    return out


def _attention(spec: MethodSpec, ctx: Context) -> Maps:
    out: Maps = {}
    npt = ctx.explainer.adapter.num_prefix_tokens
    for branch, k, _ in ctx.taps(spec):
        a = ctx.attentions[k - 1]
        out[key_of(spec.name, None, branch, k)] = ctx.to_grid(spec.compute(a, npt), k)
        if spec.side_key and ctx.attn_heads:
            out[key_of(spec.side_key, None, branch, k)] = ctx.to_grid(
                spec.compute(a, npt, fusion="none"), k)
    return out


def _rollout(spec: MethodSpec, ctx: Context) -> Maps:
    npt = ctx.explainer.adapter.num_prefix_tokens
    branch = spec.branches[0]
    if not spec.per_head:
        return {key_of(spec.name, None, branch): ctx.to_grid(
            spec.compute(ctx.attentions, npt, ctx.rollout_options))}
    out: Maps = {}
    plan = ctx.plan
    for h in ctx.heads:
        g = [plan.grads[h].get(id(m)) for m in plan.attn_grad_modules]
        if plan.recompute:
            g = [None if gi is None else attention_grad(a, plan.recorded[id(a.qkv)], gi)
                 for a, gi in zip(plan.attn_modules, g)]
        out[key_of(spec.name, h, branch)] = ctx.to_grid(spec.compute(ctx.attentions, g, npt))
    return out


def _class_activation(spec: MethodSpec, ctx: Context) -> Maps:
    attns = ctx.attentions
    if len({a.shape[-1] for a in attns}) > 1:
        raise SettingError(f"{spec.name} sums attention over blocks, which needs one token "
                           "grid for every block; this input's grid changes between blocks "
                           "({resize}): use {pad} or an input whose sides are multiples of 32",
                           resize=Setting("size_mismatch", "resize"),
                           pad=Setting("size_mismatch", "pad"))
    head_weight = ctx.explainer.model.conv_cls_head.weight.detach()
    return {key_of(spec.name, None, spec.branches[0]): spec.compute(
        ctx.plan.recorded[id(ctx.plan.last_cnn)], head_weight, ctx.target, attns,
        ctx.token_grid(1), ctx.explainer.adapter.num_prefix_tokens)}


#: The main-pass kinds: ``kind -> (spec, context) -> raw maps``.
KIND_COMPUTE: dict[str, Callable[[MethodSpec, Context], Maps]] = {
    "activation": _activation, "cam": _cam, "attention-row": _attention,
    "attention-chain": _rollout, "class-activation": _class_activation,
}


def compute_maps(ctx: Context) -> Maps:
    """Raw grids of every main-pass method, in the order requested."""
    raw: Maps = {}
    for spec in ctx.plan.specs:
        raw.update(KIND_COMPUTE[spec.kind](spec, ctx))
    return raw


@contextlib.contextmanager
def _recording(wanted: dict[Any, nn.Module], store: dict[Any, torch.Tensor],
               wanted_inputs: dict[Any, nn.Module] | None = None) -> Iterator[None]:
    """Record the output of each module in ``wanted`` (the first input of each module in
    ``wanted_inputs``) into ``store`` under the given key; hooks removed on exit."""
    handles = []

    def make_hook(key: Any):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            store[key] = output[0] if isinstance(output, tuple) else output

        return hook

    def make_pre_hook(key: Any):
        def pre_hook(module: nn.Module, args: Any) -> None:
            store[key] = args[0]

        return pre_hook

    try:
        for key, module in wanted.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        for key, module in (wanted_inputs or {}).items():
            handles.append(module.register_forward_pre_hook(make_pre_hook(key)))
        yield
    finally:
        for h in handles:
            h.remove()
