"""Figures of notebooks 02 and 03 that ``conformer_xai.plot`` does not draw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from .measures import unit_range


def method_rows_figure(exp: Any, methods: Sequence[str], head: str,
                       blocks: Sequence[int] = (4, 8, 12),
                       branches: Sequence[str] = ("cnn", "transformer")) -> Figure:
    """One row per method, one column per (branch, block): maps of one head over the image.

    Raises:
        KeyError: A requested map is not in the explanation (the message lists what is).
    """
    from conformer_xai.plot import METHOD_LABELS, map_panel

    columns = [(b, k) for b in branches for k in blocks]
    fig = Figure(figsize=(1.6 * len(columns) + 0.8, 1.7 * len(methods) + 0.4),
                 layout="constrained")
    axes = fig.subplots(len(methods), len(columns), squeeze=False)
    for r, method in enumerate(methods):
        for c, (branch, k) in enumerate(columns):
            map_panel(exp.get(method, branch, k, head=head)[0], exp.image[0],
                      title=f"{branch} · block {k}" if r == 0 else None, colorbar=False,
                      ax=axes[r, c])
        axes[r, 0].set_ylabel(METHOD_LABELS.get(method, method), fontsize=9)
    fig.suptitle(f"{head} head · target: {exp.class_name(int(exp.target[0]))}", fontsize=10)
    return fig


def attention_heads_figure(exp: Any, block: int) -> Figure:
    """Each attention head's class-token attention at ``block``, min-max scaled per head.

    Needs an explanation computed with ``attn_heads=True`` (its
    ``raw["attention_heads/transformer/<block>"]``).

    Raises:
        KeyError: The explanation keeps no per-head attention for ``block``.
    """
    from conformer_xai.plot import map_panel

    key = f"attention_heads/transformer/{block}"
    if key not in exp.raw:
        raise KeyError(f"{key!r} not in the explanation: explain with attn_heads=True and "
                       f"methods including 'attention'")
    per_head = exp.raw[key][0]  # (A, h, w)
    fig = Figure(figsize=(2.0 * len(per_head), 2.3), layout="constrained")
    axes = fig.subplots(1, len(per_head), squeeze=False)[0]
    for a, (ax, m) in enumerate(zip(axes, per_head)):
        map_panel(unit_range(m), exp.image[0], title=f"attention head {a}", colorbar=False, ax=ax)
    fig.suptitle(f"{exp.model_name} · block {block}", fontsize=10)
    return fig


def rollout_options_figure(model: torch.nn.Module, x: torch.Tensor, image: np.ndarray,
                           fusions: Sequence[str] = ("mean", "max", "min"),
                           discards: Sequence[float] = (0.0, 0.5, 0.9)) -> Figure:
    """Attention rollout of one input for every head fusion (rows) and discard ratio (columns).

    Args:
        model: A model with a transformer branch.
        x: Its input ``(1, C, H, W)``, on the model's device.
        image: The display image under the maps.
        fusions: Head fusions (rollout's ``head_fusion``).
        discards: Discard ratios (rollout's ``discard_ratio``).
    """
    from conformer_xai import Explainer
    from conformer_xai.plot import map_panel

    fig = Figure(figsize=(2.0 * len(discards) + 0.6, 2.1 * len(fusions) + 0.3),
                 layout="constrained")
    axes = fig.subplots(len(fusions), len(discards), squeeze=False)
    with Explainer(model) as explainer:
        for r, fusion in enumerate(fusions):
            for c, discard in enumerate(discards):
                e = explainer.explain(x, methods=("rollout",), rollout_options={
                    "head_fusion": fusion, "discard_ratio": discard})
                map_panel(e.get("rollout", "transformer")[0], image, colorbar=False,
                          title=f"discard {discard:.0%}" if r == 0 else None, ax=axes[r, c])
            axes[r, 0].set_ylabel(f"{fusion} fusion", fontsize=9)
    fig.suptitle(f"{getattr(model, 'model_name', type(model).__name__)}: attention rollout "
                 "options", fontsize=10)
    return fig
