"""The method registry: one :class:`MethodSpec` per explanation method, in one table.

Everything about a method lives in its spec: the function that computes it, what it reads from
the model (activations, gradients, attention, head weights, the input), the shape of its map keys
(per block, per head, an input-resolution map per head), the branches and model families it
applies to, its label and citation, whether its raw maps keep their sign, and its options. The
engine (:mod:`conformer_xai.explain`), the CLI's choices, the plot labels and the README's list
of methods all read this table; none of them tests a method's name.

This module imports no torch (the CLI answers ``--help`` and usage errors before torch loads):
a spec names its function as ``"module:attribute"`` under :mod:`conformer_xai.explain`, imported
on first use by :attr:`MethodSpec.compute`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Option", "MethodSpec", "REGISTRY", "KINDS", "READS", "SIDE_KEYS", "LRP_COMPOSITES",
           "methods_of_kinds", "is_side_key", "BRANCHES",
           "spec_of", "key_of", "parse_key", "head_for", "check_options"]

#: How the engine computes a kind of method, and the uniform signature of its function:
#: ``activation``: ``f(activation (B, C, h, w), **options) -> (B, h, w)`` per tap;
#: ``cam``: ``f(activation, gradient) -> (B, h, w)`` per tap and head;
#: ``attention-row``: ``f(attention (B, A, N, N), num_prefix_tokens) -> (B, N - prefix)`` per
#: block;
#: ``attention-chain``: ``f(attentions, num_prefix_tokens, options)``, or with ``per_head``
#: ``f(attentions, attention_gradients, num_prefix_tokens)``, once per model;
#: ``class-activation``: ``f(feature_map, head_weight, target, attentions, grid,
#: num_prefix_tokens)``, once per model (TransCAM);
#: ``own-pass``: ``f(run, **options) -> OwnPassOutput`` in a pass of its own
#: (:mod:`conformer_xai.explain.own_pass`).
KINDS = ("activation", "cam", "attention-row", "attention-chain", "class-activation", "own-pass")
#: What a method may read from the model.
READS = ("activations", "gradients", "attention", "attention_gradients", "head_weights", "input")
#: Rules of ``lrp`` / ``attnlrp`` on conv layers, in zennit's terms.
LRP_COMPOSITES = ("epsilon", "epsilon_gamma_box")
#: The two branches of a Conformer (a ResNet has the first, a ViT the second).
BRANCHES = ("cnn", "transformer")


@dataclass(frozen=True)
class Option:
    """One option of a method: its default, accepted values and CLI flag.

    Attributes:
        default: Value used when the option is not given.
        help: One line for the docs and ``--help``.
        choices: Accepted values (strings); empty for a number.
        integer: A whole number (else a float, when ``choices`` is empty).
        minimum: Smallest accepted number (inclusive for integers, exclusive for floats).
        cli: The CLI flag (``--ig-steps``); methods sharing a flag share its value.
    """

    default: Any
    help: str
    choices: tuple[str, ...] = ()
    integer: bool = False
    minimum: float | None = None
    cli: str | None = None

    def check(self, method: str, name: str, value: Any) -> Any:
        """The value, or ValueError naming the method, the option and what is accepted."""
        where = f"{method} option {name!r}"
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if self.integer:
            ok = isinstance(value, int) and not isinstance(value, bool) and (
                self.minimum is None or value >= self.minimum)
            if not ok:
                raise ValueError(f"{where} must be an int >= {self.minimum:g}, got {value!r}")
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
            value) and (self.minimum is None or value > self.minimum)
        if not ok:
            raise ValueError(f"{where} must be a finite number > {self.minimum:g}, got {value!r}")
        return float(value)


@dataclass(frozen=True)
class MethodSpec:
    """What a method is: its function, what it reads, its key shape, label and options.

    Attributes:
        name: The method's key prefix and its name in ``explain(methods=...)``.
        kind: How the engine computes it (:data:`KINDS`).
        function: ``"module:attribute"`` under :mod:`conformer_xai.explain` (see
            :attr:`compute`).
        label: Display name in figures.
        citation: The paper it follows.
        per_block: One map per tap of each block (``.../<branch>/<k>``); False: one per model.
        per_head: One map per classifier head (reads a head's target score): keys carry
            ``<head>`` after the method.
        reads: What it reads from the model (:data:`READS`).
        branches: Branches it applies to; a model needs one of them.
        families: Model families it applies to (empty: all).
        tap: What it reads at a block: "feature" (the block's output map or tokens), "gradient"
            (``explain(tap=...)``'s gradient tap), "attention" (attention probabilities), "input".
        reduction: How channels become one map, in words (for the docs).
        signed: Raw maps keep their sign; ``maps`` show the positive part.
        input_map: Has an input-resolution map per head, ``<method>/<head>``.
        default: In the default set of :meth:`Explainer.explain`.
        side_key: Key prefix of its optional per-block side maps (``feature_channels``: the top
            channels of ``explain(channels=N)``; ``attention_heads``: every attention head with
            ``explain(attn_heads=True)``).
        signed_tap_note: Why the method is unreliable on signed (transformer token) taps; the
            engine warns when it runs there.
        arguments: Arguments of :meth:`Explainer.explain` its function receives as keywords
            of the same name (``reduce`` for ``features``).
        options: Its options (name -> :class:`Option`), passed to its function as keywords.
    """

    name: str
    kind: str
    function: str
    label: str
    citation: str
    per_block: bool = True
    per_head: bool = False
    reads: tuple[str, ...] = ("activations",)
    branches: tuple[str, ...] = BRANCHES
    families: tuple[str, ...] = ()
    tap: str = "feature"
    reduction: str = ""
    signed: bool = False
    input_map: bool = False
    default: bool = False
    side_key: str | None = None
    signed_tap_note: str | None = None
    arguments: tuple[str, ...] = ()
    options: Mapping[str, Option] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}; accepted: {KINDS}")
        unknown = set(self.reads) - set(READS)
        if unknown:
            raise ValueError(f"{self.name}: unknown reads {sorted(unknown)}; accepted: {READS}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def compute(self) -> Callable[..., Any]:
        """The method's function (imported on first use)."""
        module, _, attr = self.function.partition(":")
        return getattr(importlib.import_module(f"conformer_xai.explain.{module}"), attr)

    @property
    def own_pass(self) -> bool:
        """Computed in a pass of its own (a modified backward, or many passes)."""
        return self.kind == "own-pass"

    @property
    def needs_gradients(self) -> bool:
        """Reads gradients of a head's target score in the main pass."""
        return not self.own_pass and bool({"gradients", "attention_gradients"} & set(self.reads))

    @property
    def needs_attention(self) -> bool:
        """Reads attention probabilities in the main pass."""
        return not self.own_pass and "attention" in self.reads

    @property
    def transformer_only(self) -> bool:
        return tuple(self.branches) == ("transformer",)

    def applies_to(self, family: str, branches: Sequence[str]) -> bool:
        """Whether a model of this family with these branches supports the method."""
        return bool(set(self.branches) & set(branches)) and (
            not self.families or family in self.families)


_WEIGHTED = "gradient-weighted sum over channels, then ReLU"
_SIGNED_ACT = "these methods assume non-negative (post-ReLU) activations"
_CAM = dict(kind="cam", per_head=True, reads=("activations", "gradients"), tap="gradient",
            reduction=_WEIGHTED)
_LRP_OPTIONS = {"composite": Option(
    "epsilon", "LRP rules on conv layers, in zennit's terms: epsilon everywhere, or "
    "epsilon_gamma_box (gamma 0.25 on conv layers with non-negative input, the bounded rule at "
    "the input layer)", choices=LRP_COMPOSITES, cli="--lrp-composite")}
_OWN = dict(kind="own-pass", per_head=True, reads=("input",), tap="input",
            reduction="summed over input channels", input_map=True)

_SPECS: dict[str, MethodSpec] = {s.name: s for s in (
    MethodSpec("features", "activation", "methods.features:reduce_channels", "feature map",
               "the block's activation (the paper's feature maps)", reduction="explain(reduce=)",
               default=True, side_key="feature_channels", arguments=("reduce",)),
    MethodSpec("attention", "attention-row", "methods.attention:class_token_attention", "attention",
               "class-token attention (Dosovitskiy et al. 2021)", reads=("attention",),
               branches=("transformer",), tap="attention", reduction="mean over heads",
               default=True, side_key="attention_heads"),
    MethodSpec("gradcam", function="methods.cam:gradcam", label="Grad-CAM",
               citation="Selvaraju et al. 2017", default=True, **_CAM),
    MethodSpec("gradcam++", function="methods.cam:gradcam_plus_plus", label="Grad-CAM++",
               citation="Chattopadhay et al. 2018", signed_tap_note="Grad-CAM++'s alpha weights "
               "are unbounded on signed activations", **_CAM),
    MethodSpec("layercam", function="methods.cam:layercam", label="LayerCAM",
               citation="Jiang et al. 2021", signed_tap_note="LayerCAM's ReLU(gradient) x "
               "activation keeps negative products", **_CAM),
    MethodSpec("hirescam", function="methods.cam:hirescam", label="HiResCAM",
               citation="Draelos and Carin 2020", **_CAM),
    MethodSpec("xgradcam", function="methods.cam:xgradcam", label="XGrad-CAM",
               citation="Fu et al. 2020", signed_tap_note="XGrad-CAM's weights divide by a "
               "channel's activation sum, which can vanish on signed activations", **_CAM),
    MethodSpec("gradcam_elementwise", function="methods.cam:gradcam_elementwise",
               label="Grad-CAM element-wise", citation="pytorch-grad-cam", **_CAM),
    MethodSpec("eigencam", "activation", "methods.cam:eigencam", "EigenCAM",
               "Muhammad and Yeasin 2020", reduction="first principal component, then ReLU",
               signed_tap_note="Eigen-CAM's component sign is set by a signed channel mean"),
    MethodSpec("rollout", "attention-chain", "methods.rollout:attention_rollout",
               "attention rollout",
               "Abnar and Zuidema 2020", per_block=False, reads=("attention",),
               branches=("transformer",), tap="attention", reduction="explain(rollout_options=)",
               default=True),
    MethodSpec("grad_rollout", "attention-chain", "methods.rollout:gradient_rollout",
               "gradient rollout",
               "Chefer et al. 2021", per_block=False, per_head=True,
               reads=("attention", "attention_gradients"), branches=("transformer",),
               tap="attention", reduction="gradient-weighted attention, mean over heads",
               default=True),
    MethodSpec("transcam", "class-activation", "methods.transcam:transcam", "TransCAM",
               "Li et al. 2023", per_block=False,
               reads=("activations", "attention", "head_weights"), branches=("cnn",),
               families=("conformer",), reduction="CNN head's weights, refined by attention"),
    MethodSpec("lrp", function="own_pass:lrp", label="LRP",
               citation="Bach et al. 2015; Ali et al. 2022", signed=True, options=_LRP_OPTIONS,
               **_OWN),
    MethodSpec("attnlrp", function="own_pass:attnlrp", label="AttnLRP",
               citation="Achtibat et al. 2024", signed=True, options=_LRP_OPTIONS, **_OWN),
    MethodSpec("integrated_gradients", function="own_pass:integrated_gradients",
               label="Integrated Gradients", citation="Sundararajan et al. 2017",
               per_block=False, signed=True, options={"steps": Option(
                   50, "integration steps (forward and backward passes per head)", integer=True,
                   minimum=1, cli="--ig-steps")}, **_OWN),
    MethodSpec("smoothgrad", function="own_pass:smoothgrad", label="SmoothGrad",
               citation="Smilkov et al. 2017", per_block=False, options={
                   "samples": Option(50, "noisy samples (passes per head)", integer=True,
                                     minimum=1, cli="--smoothgrad-samples"),
                   "noise": Option(0.15, "noise standard deviation as a fraction of each "
                                   "image's value range", minimum=0, cli="--smoothgrad-noise")},
               **_OWN),
)}
#: Every method's spec, by name, in the order the CLI, the docs and the figures list them.
REGISTRY: Mapping[str, MethodSpec] = MappingProxyType(_SPECS)

#: Key prefixes of the side maps (``attention_heads``, ``feature_channels``) -> their method.
SIDE_KEYS: Mapping[str, MethodSpec] = MappingProxyType(
    {s.side_key: s for s in REGISTRY.values() if s.side_key})


def is_side_key(key: str) -> bool:
    """Whether ``key`` is a side map's (several maps per tap, kept only in ``raw``)."""
    return key.split("/", 1)[0] in SIDE_KEYS


def methods_of_kinds(*kinds: str) -> tuple[str, ...]:
    """The methods of the given kinds (:data:`KINDS`), kind by kind in the order given, each
    kind in registry order."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kind {sorted(unknown)[0]!r}; accepted: {', '.join(KINDS)}")
    return tuple(m for kind in kinds for m, s in REGISTRY.items() if s.kind == kind)


def spec_of(method: str) -> MethodSpec | None:
    """The spec of a method or of a side-map key prefix; None for an unknown name."""
    return REGISTRY.get(method) or SIDE_KEYS.get(method)


def key_of(method: str, head: str | None = None, branch: str | None = None,
           block: int | None = None) -> str:
    """The map key: ``<method>[/<head>][/<branch>[/<k>]]`` (the parts the spec has)."""
    return "/".join(str(p) for p in (method, head, branch, block) if p is not None)


def parse_key(key: str) -> dict[str, Any]:
    """Split a map key into its parts: method, head (or None), branch, block (or None).

    The parts a key has follow from its method's spec; keys of unknown methods are read as
    ``<method>/<head>/<branch>/<k>``.

    >>> parse_key("gradcam/fused/cnn/12")
    {'method': 'gradcam', 'head': 'fused', 'branch': 'cnn', 'block': 12}
    """
    parts = key.split("/")
    spec = spec_of(parts[0])
    per_head = spec.per_head if spec is not None else True
    per_block = spec.per_block if spec is not None else True
    rest = parts[1:]
    head = rest.pop(0) if per_head and rest else None
    try:
        if spec is not None and spec.input_map and head is not None and not rest:
            return {"method": parts[0], "head": head, "branch": None, "block": None}
        if per_block and len(rest) == 2:
            return {"method": parts[0], "head": head, "branch": rest[0], "block": int(rest[1])}
        if not per_block and len(rest) == 1:
            return {"method": parts[0], "head": head, "branch": rest[0], "block": None}
    except ValueError:
        pass
    raise ValueError(f"not a map key: {key!r}")


def head_for(method: str, head: str | None, heads: Sequence[str]) -> str | None:
    """The head a map of ``method`` is read for: the one given, else the first explained head
    for methods with a map per head, else None (methods whose keys carry no head)."""
    spec = spec_of(method)
    if head is None and heads and (spec is None or spec.per_head):
        return heads[0]
    return head


def check_options(options: Mapping[str, Mapping[str, Any]] | None
                  ) -> dict[str, dict[str, Any]]:
    """Every method's options, defaults filled in and each given value checked.

    Args:
        options: ``method -> {option: value}``; any method with options may be named.

    Raises:
        ValueError: Unknown method or option, or a bad value (the message names the accepted
            ones).
    """
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"method_options must be a dict method -> {{option: value}}, "
                         f"got {type(options).__name__}")
    given = dict(options or {})
    with_options = [m for m, s in REGISTRY.items() if s.options]
    for method, values in given.items():
        if method not in with_options:
            raise ValueError(f"method_options: {method!r} has no options; methods with options: "
                             f"{', '.join(with_options)}")
        if not isinstance(values, Mapping):
            raise ValueError(f"method_options[{method!r}] must be a dict, "
                             f"got {type(values).__name__}")
        unknown = sorted(set(values) - set(REGISTRY[method].options))
        if unknown:
            raise ValueError(f"unknown {method} option {unknown[0]!r}; accepted: "
                             f"{', '.join(REGISTRY[method].options)}")
    return {m: {name: opt.check(m, name, given.get(m, {}).get(name, opt.default))
                for name, opt in REGISTRY[m].options.items()} for m in with_options}


def methods_table() -> str:
    """The README's table of methods (Markdown), generated from the registry."""
    rows = ["| method | label | keys | reads | options | default | after |",
            "|---|---|---|---|---|---|---|"]
    for name, s in REGISTRY.items():
        head = "<head>" if s.per_head else None
        keys = [key_of(name, head)] if s.input_map else []
        if s.per_block or not s.input_map:
            keys.append(key_of(name, head, "<branch>" if len(s.branches) > 1 else s.branches[0],
                               "<k>" if s.per_block else None))
        options = ", ".join(f"`{o}` ({opt.cli}, {opt.default})" for o, opt in s.options.items())
        rows.append(f"| `{name}` | {s.label} | {', '.join(f'`{k}`' for k in keys)} | "
                    f"{', '.join(s.reads)}{' (own pass)' if s.own_pass else ''} | "
                    f"{options or '-'} | {'yes' if s.default else '-'} | {s.citation} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - regenerates the README's table
    print(methods_table(), end="")
