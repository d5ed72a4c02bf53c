"""The one-figure summary of an explanation (what ``conformer-xai explain`` writes per image)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure, SubFigure

from ..registry import REGISTRY
from .figures import (
    PANEL_INCHES,
    branches_of,
    check_index,
    class_label,
    display_image,
    draw_cell,
    draw_matrix,
    draw_strip,
    key_head,
    matrix_layout,
    method_label,
)
from .panels import DEFAULT_ALPHA, DEFAULT_CMAP, add_colorbar, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from ..explain.result import Explanation

__all__ = ["explanation_figure", "weights_note", "top_predictions_text"]

WARNING_COLOUR = "#b00020"
NAME_WIDTH = 22
#: Methods with one input-resolution map per head, drawn in the bottom row.
INPUT_MAP_METHODS = tuple(m for m, s in REGISTRY.items() if s.input_map)


def weights_note(meta: Mapping[str, Any] | None) -> tuple[str, bool]:
    """The figure's line about the weights, and whether it is a warning.

    Reads ``meta["weights_source"]`` ("imagenet", "embedded", "random", "checkpoint:<path>")
    and ``meta["input_kind"]`` ("photo" for natural images).
    """
    meta = meta or {}
    source = meta.get("weights_source")
    if source is None:
        return "weights: source not recorded", False
    source = str(source)
    if source == "random":
        return ("weights: RANDOM (untrained model): these maps and predictions show no learned "
                "evidence", True)
    if source == "embedded":
        if meta.get("input_kind") == "photo":
            return ("weights: embedded. This model was trained on synthetic scenes, not on "
                    "photos: its predictions and maps for a photo mean little", True)
        return "weights: embedded (small model trained on synthetic scenes)", False
    if source == "imagenet":
        return "weights: ImageNet-1k (published checkpoint)", False
    if source.startswith("checkpoint:"):
        return f"weights: checkpoint {source.split(':', 1)[1]}", False
    return f"weights: {source}", False


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def top_predictions_text(exp: Explanation, index: int = 0, k: int = 5) -> str:
    """Top-``k`` classes and probabilities of every classifier head, as monospace text."""
    lines = [f"target: {class_label(exp, index)}", ""]
    for head, top in exp.predictions(k, index).items():
        lines.append(f"{head} head")
        for rank, p in enumerate(top, start=1):
            lines.append(f" {rank}. {_short(p['name']):<{NAME_WIDTH}} {p['prob']:6.3f}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _draw_text(target: Figure | SubFigure, text: str, title: str) -> None:
    ax = target.subplots()
    ax.set_axis_off()
    ax.set_title(title, fontsize=9, loc="left")
    ax.text(0.0, 1.0, text, transform=ax.transAxes, va="top", ha="left", family="monospace",
            fontsize=8)


def explanation_figure(exp: Explanation, image: Any = None, index: int = 0,
                       methods: Sequence[str] = ("features", "gradcam", "lrp"),
                       max_cols: int = 12,
                       cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA) -> Figure:
    """Everything about one image in one figure.

    From top to bottom: the model, target and weights line (a warning for random weights, and
    for the embedded synthetic-scene models on a photo); one strip per branch and method
    (features, Grad-CAM and LRP of the first explained head, wrapped at ``max_cols`` blocks);
    then attention rollout, gradient rollout, TransCAM, the input-resolution maps (LRP,
    AttnLRP, Integrated Gradients, SmoothGrad), the head-by-branch Grad-CAM matrix (when the
    ``cnn``/``transformer`` heads were explained on a two-branch model) and the top-5
    predictions of every head.

    Args:
        exp: The explanation.
        image: Display image (default: ``exp.image``).
        index: Image of the batch.
        methods: Per-block methods drawn as strips (those present in ``exp``).
        max_cols: Panels per strip row.
        cmap, alpha: Colour map and its opacity over the image.
    """
    check_index(exp, index)
    img = display_image(exp, image, index)
    strips = []
    for branch in branches_of(exp):
        for method in methods:
            blocks = exp.blocks(method, branch)
            if blocks:
                head = key_head(exp, method, branch, blocks[0], None)
                strips.append((branch, method, head, blocks))
    bottom: list[tuple[str, Any]] = []
    if "rollout/transformer" in exp.maps:
        bottom.append(("map", ("rollout", None, "transformer")))
    grad_rollout = [h for h in exp.heads if f"grad_rollout/{h}/transformer" in exp.maps]
    if grad_rollout:
        bottom.append(("map", ("grad_rollout", grad_rollout[0], "transformer")))
    if "transcam/cnn" in exp.maps:
        bottom.append(("map", ("transcam", None, "cnn")))
    for method in INPUT_MAP_METHODS:  # one input-resolution map per method, first head
        heads = [h for h in exp.heads if f"{method}/{h}" in exp.maps]
        if heads:
            bottom.append(("map", (method, heads[0], None)))
    if (len(branches_of(exp, "gradcam")) == 2
            and any(h in exp.heads for h in ("cnn", "transformer"))):
        bottom.append(("matrix", matrix_layout(exp, "gradcam", None, None, index)))
    bottom.append(("text", top_predictions_text(exp, index)))

    widths = [2.6 if kind == "map" else 3.6 if kind == "text"
              else 1.3 + 2.2 * len(info[1]) for kind, info in bottom]
    bottom_height = max(3.0, max((0.7 + 2.2 * len(info[0]) for kind, info in bottom
                                  if kind == "matrix"), default=3.0))
    strip_rows = [math.ceil(len(blocks) / max_cols) for *_, blocks in strips]
    ncols = max([min(len(blocks), max_cols) for *_, blocks in strips], default=1)
    heights = [0.75] + [0.5 + PANEL_INCHES * r for r in strip_rows] + [bottom_height]
    fig = new_figure(figsize=(max(PANEL_INCHES * ncols, sum(widths)), sum(heights)),
                 layout="constrained")
    sections = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]

    note, warning = weights_note(exp.meta)
    header = sections[0]
    header.text(0.01, 0.68, f"{exp.model_name or 'model'} · target: {class_label(exp, index)} "
                f"· heads explained: {', '.join(exp.heads) or 'none'}", fontsize=11,
                weight="bold", va="center")
    header.text(0.01, 0.22, note, fontsize=9.5, va="center",
                color=WARNING_COLOUR if warning else "0.2", weight="bold" if warning else None)

    for sub, (branch, method, head, blocks) in zip(sections[1:], strips):
        title = f"{branch} branch · {method_label(method)}"
        if head is not None:
            title += f" · {head} head"
        draw_strip(sub, exp, method, branch, head, blocks, index, img, max_cols, cmap, alpha,
                   title)

    cells = sections[-1].subfigures(1, len(bottom), width_ratios=widths, squeeze=False)[0]
    for sub, (kind, info) in zip(cells, bottom):
        if kind == "map":
            method, head, branch = info
            ax = sub.subplots()
            title = method_label(method) + (f"\n{head} head" if head else "")
            shown = draw_cell(ax, exp, method, branch, None, head, index, img, cmap, alpha,
                              title)
            if shown is not None:
                add_colorbar(ax, shown)
        elif kind == "matrix":
            heads, branches, block = info
            draw_matrix(sub, exp, "gradcam", heads, branches, block, index, img, cmap, alpha)
        else:
            _draw_text(sub, info, "top-5 predictions per head")
    return fig
