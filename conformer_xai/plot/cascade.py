"""The cascading randomisation curve (Adebayo et al. 2018) of an ``evaluate`` result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from .panels import METHOD_LABELS, new_figure

__all__ = ["cascade_figure"]


def cascade_figure(result: Mapping[str, Any], score: str = "spearman") -> Figure:
    """One curve per method: similarity to the trained model's map as layer groups are
    re-initialised cumulatively from the top (heads, last block ... first block, stem).

    Args:
        result: The dict :func:`conformer_xai.metrics.evaluate` returns (or its ``cascade``).
        score: "spearman" (rank correlation, 0 = unrelated) or "ssim".

    Raises:
        ValueError: The result holds no cascade, or ``score`` is unknown.
    """
    cascade = result.get("cascade", result) if isinstance(result, Mapping) else None
    if not isinstance(cascade, Mapping) or "methods" not in cascade:
        raise ValueError("the result holds no cascade: run evaluate with randomisation and "
                         "cascade_n > 0")
    if score not in ("spearman", "ssim"):
        raise ValueError(f"score must be 'spearman' or 'ssim', got {score!r}")
    layers = list(cascade["layers"])
    fig = new_figure(figsize=(max(5.0, 0.45 * len(layers) + 2.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(len(layers) + 1))
    for method, curves in cascade["methods"].items():
        ys = [1.0] + [float("nan") if v is None else v for v in curves[score]]
        ax.plot(xs, ys, marker="o", markersize=3, label=METHOD_LABELS.get(method, method))
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xticks(xs)
    ax.set_xticklabels(["trained", *layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("Spearman ρ to the trained map" if score == "spearman"
                  else "SSIM to the trained map", fontsize=8)
    ax.set_xlabel("re-initialised cumulatively, from the top", fontsize=8)
    ax.legend(fontsize=7)
    meta = result.get("meta", {}) if isinstance(result, Mapping) else {}
    title = "cascading randomisation"
    if meta.get("model"):
        title = f"{meta['model']}: {title}"
    ax.set_title(f"{title} (n = {cascade.get('n')})", fontsize=9)
    return fig
