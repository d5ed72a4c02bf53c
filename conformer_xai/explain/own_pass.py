"""Methods computed in passes of their own after the main pass: LRP variants, IG, SmoothGrad.

Their backward is modified (LRP) or they need many passes (Integrated Gradients, SmoothGrad), so
they cannot share the main pass. Raw maps keep their sign; ``maps`` show the positive part
(SmoothGrad's map is non-negative already). Each method is one function ``f(run, **options) ->
OwnPassOutput`` named by its spec (kind ``own-pass``). When a run asks only for such methods,
there is no main pass: the logits and the target come from the first of these passes (LRP's
forward), or from one plain forward pass when that method has none of its own to share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..registry import LRP_COMPOSITES, MethodSpec
from .input_attribution import NOISE_FRACTION, SAMPLES, STEPS, input_attributions
from .lrp import LRPResult, branch_share, run_lrp
from .result import normalise_per_image

if TYPE_CHECKING:  # pragma: no cover
    from .explainer import Explainer

__all__ = ["OwnPassRun", "OwnPassOutput", "run_own_passes", "check_composite", "lrp", "attnlrp",
           "integrated_gradients", "smoothgrad"]

Maps = dict[str, torch.Tensor]
Flows = dict[str, list[dict[str, Any]]]


def check_composite(composite: str) -> None:
    """ValueError naming the accepted LRP composites."""
    if composite not in LRP_COMPOSITES:
        raise ValueError(f"unknown lrp_composite {composite!r}; accepted: "
                         f"{', '.join(LRP_COMPOSITES)}")


@dataclass
class OwnPassRun:
    """One input batch for the own-pass methods, and its target (resolved on first need).

    Attributes:
        explainer: The explainer (its adapter, model state and target rule).
        x: Input batch (B, C, H, W).
        heads: Heads to explain.
        blocks: ``branch -> blocks`` of the per-tap maps.
        requested: The target as given to :meth:`Explainer.explain`.
        target: (B,) classes once resolved (by the main pass, or by the first own pass).
        logits: The logits of the pass that resolved the target (only without a main pass).
    """

    explainer: Explainer
    x: torch.Tensor
    heads: Sequence[str]
    blocks: Mapping[str, Sequence[int]]
    requested: Any = None
    target: torch.Tensor | None = None
    logits: dict[str, torch.Tensor] | None = None

    def resolve(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target, resolved from these logits unless already known."""
        if self.target is None:
            self.logits = {h: v.detach().float() for h, v in logits.items()}
            self.target = self.explainer._resolve_target(self.requested, logits, self.x.shape[0])
        return self.target

    def resolved_target(self) -> torch.Tensor:
        """The target; one plain forward pass resolves it when no pass has yet."""
        if self.target is None:
            with torch.no_grad():
                self.resolve(self.explainer.adapter.forward(self.x.detach()))
        return self.target

    @property
    def grid(self) -> Callable:
        return self.explainer._grid_fn(*self.x.shape[-2:])


@dataclass
class OwnPassOutput:
    """Input-resolution maps, per-tap grids, branch flows and metadata of one method."""

    pixel: Maps = field(default_factory=dict)
    taps: Maps = field(default_factory=dict)
    flows: Flows = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _lrp(run: OwnPassRun, variant: str, composite: str) -> tuple[OwnPassOutput, LRPResult]:
    res = run_lrp(run.explainer.adapter, run.x, run.target if run.target is not None
                  else run.resolve, run.heads, variant, run.blocks, run.grid,
                  composite=composite)
    out = OwnPassOutput(meta={"lrp_composite": composite,
                              f"{variant}_conservation": res.conservation})
    for key, value in res.raw.items():
        (out.pixel if key.count("/") == 1 else out.taps)[key] = value
    return out, res


def lrp(run: OwnPassRun, composite: str = "epsilon") -> OwnPassOutput:
    """``lrp``: conservative relevance, one modified backward per head; on a Conformer also the
    branch-flow table (``flows``) and each branch's share (``meta["branch_share"]``)."""
    out, res = _lrp(run, "lrp", composite)
    if res.flows:
        out.flows = res.flows
        out.meta["branch_share"] = {h: [branch_share(rows, i) for i in range(run.x.shape[0])]
                                    for h, rows in res.flows.items()}
    return out


def attnlrp(run: OwnPassRun, composite: str = "epsilon") -> OwnPassOutput:
    """``attnlrp``: AttnLRP's softmax and matmul rules, one modified backward per head."""
    return _lrp(run, "attnlrp", composite)[0]


def integrated_gradients(run: OwnPassRun, steps: int = STEPS) -> OwnPassOutput:
    """Integrated Gradients per head from the "nothing" baseline, ``steps`` passes each."""
    return OwnPassOutput(pixel=input_attributions(
        run.explainer.head_fn, run.x, run.resolved_target(), run.heads,
        ["integrated_gradients"], steps=steps))


def smoothgrad(run: OwnPassRun, samples: int = SAMPLES,
               noise: float = NOISE_FRACTION) -> OwnPassOutput:
    """SmoothGrad per head: ``samples`` noisy copies, noise ``noise`` x the value range."""
    return OwnPassOutput(pixel=input_attributions(
        run.explainer.head_fn, run.x, run.resolved_target(), run.heads, ["smoothgrad"],
        samples=samples, noise=noise))


def run_own_passes(run: OwnPassRun, specs: Sequence[MethodSpec],
                   options: Mapping[str, Mapping[str, Any]], upsample: bool
                   ) -> tuple[Maps, Maps, Flows, dict[str, Any]]:
    """Raw maps, maps, branch flows and metadata of the own-pass methods (``geometry`` of the
    per-tap maps among them); ``run.target`` is resolved afterwards."""
    height, width = run.x.shape[-2:]
    pixel: Maps = {}
    taps: Maps = {}
    flows: Flows = {}
    meta: dict[str, Any] = {}
    explainer = run.explainer
    with explainer._model_state(explicit_attention=False):
        for spec in specs:
            out = spec.compute(run, **options.get(spec.name, {}))
            pixel.update(out.pixel)
            taps.update(out.taps)
            flows.update(out.flows)
            meta.update(out.meta)
    raw, _, meta["geometry"] = explainer._finish(taps, height, width, upsample=False)
    maps: Maps = {}
    if upsample:
        _, maps, _ = explainer._finish({k: v.clamp_min(0) for k, v in taps.items()}, height,
                                       width)
        maps.update({k: normalise_per_image(v.clamp_min(0)) for k, v in pixel.items()})
    raw.update(pixel)
    return raw, maps, flows, meta
