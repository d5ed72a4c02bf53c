"""Methods computed in passes of their own after the main pass: LRP variants, IG, SmoothGrad.

Their backward is modified (LRP) or they need many passes (Integrated Gradients, SmoothGrad), so
they cannot share the main pass. Raw maps keep their sign; ``maps`` show the positive part
(SmoothGrad's map is non-negative already).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .input_attribution import input_attributions
from .lrp import VARIANTS, branch_share, run_lrp
from .lrp.patch import COMPOSITES
from .result import normalise_per_image

if TYPE_CHECKING:  # pragma: no cover
    from .explainer import Explainer

__all__ = ["OWN_PASS_METHODS", "run_own_passes", "check_composite"]

OWN_PASS_METHODS = (*VARIANTS, "integrated_gradients", "smoothgrad")


def check_composite(composite: str) -> None:
    """ValueError naming the accepted LRP composites."""
    if composite not in COMPOSITES:
        raise ValueError(f"unknown lrp_composite {composite!r}; accepted: {', '.join(COMPOSITES)}")


Maps = dict[str, torch.Tensor]
Flows = dict[str, list[dict[str, Any]]]


def run_own_passes(explainer: Explainer, x: torch.Tensor, target: torch.Tensor,
                   heads: Sequence[str], methods: Sequence[str],
                   blocks: Mapping[str, Sequence[int]], upsample: bool,
                   lrp_composite: str = "epsilon") -> tuple[Maps, Maps, Flows, dict[str, Any]]:
    """Raw maps, maps, branch flows (``lrp`` on a Conformer) and metadata of those methods
    (``geometry`` of the per-tap maps among them)."""
    height, width = x.shape[-2:]
    pixel: dict[str, torch.Tensor] = {}
    taps: dict[str, torch.Tensor] = {}
    flows: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    with explainer._model_state(explicit_attention=False):
        for variant in (m for m in methods if m in VARIANTS):
            res = run_lrp(explainer.adapter, x, target, heads, variant, blocks,
                          explainer._grid_fn(height, width), composite=lrp_composite)
            meta["lrp_composite"] = lrp_composite
            for key, value in res.raw.items():
                (pixel if key.count("/") == 1 else taps)[key] = value
            meta[f"{variant}_conservation"] = res.conservation
            if variant == "lrp" and res.flows:
                flows = res.flows
                meta["branch_share"] = {h: [branch_share(rows, i) for i in range(x.shape[0])]
                                        for h, rows in res.flows.items()}
        wanted = [m for m in methods if m in ("integrated_gradients", "smoothgrad")]
        if wanted:
            pixel.update(input_attributions(explainer.head_fn, x, target, heads, wanted))
    raw, _, meta["geometry"] = explainer._finish(taps, height, width, upsample=False)
    maps: dict[str, torch.Tensor] = {}
    if upsample:
        _, maps, _ = explainer._finish({k: v.clamp_min(0) for k, v in taps.items()}, height,
                                       width)
        maps.update({k: normalise_per_image(v.clamp_min(0)) for k, v in pixel.items()})
    raw.update(pixel)
    return raw, maps, flows, meta

