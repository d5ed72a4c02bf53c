"""The branch-flow strip: relevance on the CNN and transformer lanes, and the FCU crossings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from .figures import check_index, class_label
from .panels import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from ..explain.result import Explanation

__all__ = ["branch_flow"]

CNN_COLOUR = "#1f77b4"
TRANSFORMER_COLOUR = "#ff7f0e"
UP_COLOUR = "#2ca02c"
DOWN_COLOUR = "#9467bd"
LANE_HEIGHT = 0.8  # the largest lane value's bar height, in lane units


def branch_flow(exp: Explanation, head: str | None = None, index: int = 0) -> Figure:
    """Draw ``exp.flows[head]`` as two lanes with the crossings of every block (Sankey-like).

    The head is on the right, the input on the left; relevance is read flowing right to left.
    Each lane segment's thickness is the relevance it carries between two blocks (its share of
    the target logit is printed); arrows at block ``k`` are the FCU crossings (FCU up: CNN lane
    to tokens; FCU down: tokens to CNN lane), with their share of the logit; the share absorbed
    by biases is printed under each block. Negative relevance is drawn hatched.

    Args:
        exp: An explanation computed with ``lrp`` on a Conformer.
        head: Classifier head (default: the first explained head).
        index: Image of the batch.

    Raises:
        ValueError: No flow table for the head (``lrp`` not requested, or not a Conformer).
    """
    check_index(exp, index)
    head = head or (exp.heads[0] if exp.heads else None)
    if head not in exp.flows:
        raise ValueError(f"no branch flow for head {head!r}: flows exist for "
                         f"{sorted(exp.flows) or 'no head'} (explain a Conformer with "
                         f"methods including 'lrp')")
    rows = sorted(exp.flows[head], key=lambda r: r["block"])
    first, last = rows[0], rows[-1]
    total = last["cnn_in"][index] + last["transformer_in"][index]
    scale = total if abs(total) > 1e-12 else 1.0
    depth = len(rows)
    # lane values on the segment right of block k (k = 0: the stem side of block 1)
    cnn = {0: first["cnn_stays"][index]}
    trans = {0: first["transformer_stays"][index]}
    for r in rows:
        cnn[r["block"]] = r["cnn_in"][index]
        trans[r["block"]] = r["transformer_in"][index]
    peak = max(abs(v) for v in (*cnn.values(), *trans.values())) or 1.0

    fig = new_figure(figsize=(1.0 * depth + 2.5, 4.2), layout="constrained")
    ax = fig.subplots()
    lanes = ((1.0, cnn, CNN_COLOUR, "CNN"), (0.0, trans, TRANSFORMER_COLOUR, "transformer"))
    for y, values, colour, name in lanes:
        for k, v in values.items():
            h = LANE_HEIGHT * 0.5 * abs(v) / peak
            ax.add_patch(Rectangle((k + 0.12, y - h / 2), 0.76, h, color=colour,
                                   alpha=0.85 if v >= 0 else 0.35, hatch=None if v >= 0 else "//",
                                   linewidth=0))
            ax.text(k + 0.5, y + 0.3, f"{v / scale:.0%}", ha="center", fontsize=7, color=colour)
        ax.text(-0.15, y, name, ha="right", va="center", fontsize=9, color=colour, weight="bold")
    for r in rows:
        k = r["block"]
        for field, colour, start, end, dx in (("fcu_up", UP_COLOUR, 0.85, 0.15, -0.12),
                                              ("fcu_down", DOWN_COLOUR, 0.15, 0.85, 0.12)):
            v = r[field][index]
            if abs(v) < 1e-12:
                continue
            width = 0.5 + 6.0 * abs(v) / peak
            ax.add_patch(FancyArrowPatch((k + dx, start), (k + dx, end), arrowstyle="-|>",
                                         mutation_scale=8, linewidth=width, color=colour,
                                         alpha=0.8 if v >= 0 else 0.35))
            ax.text(k + dx * 2.2, 0.5, f"{v / scale:.0%}", rotation=90, ha="center",
                    va="center", fontsize=6.5, color=colour)
        ax.text(k, -0.55, f"{k}", ha="center", fontsize=8)
        ax.text(k, -0.72, f"{r['absorbed'][index] / scale:.0%}", ha="center", fontsize=6.5,
                color="0.4")
    ax.text(0.5, -0.55, "stem", ha="center", fontsize=8)
    ax.text(-0.15, -0.55, "block", ha="right", fontsize=8)
    ax.text(-0.15, -0.72, "absorbed", ha="right", fontsize=6.5, color="0.4")
    ax.text(depth + 1.0, 0.5, f"{head}\nhead", ha="left", va="center", fontsize=9)
    ax.plot([], [], color=UP_COLOUR, linewidth=3, label="FCU up (CNN block reads tokens)")
    ax.plot([], [], color=DOWN_COLOUR, linewidth=3,
            label="FCU down (transformer block reads CNN map)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=8, frameon=False)
    ax.set_xlim(-1.6, depth + 1.8)
    ax.set_ylim(-0.85, 1.55)
    ax.set_axis_off()
    ax.set_title(f"{exp.model_name or 'model'} · branch flow of LRP relevance · {head} head · "
                 f"target: {class_label(exp, index)}  (shares of the target logit, read from "
                 f"the head on the right to the input on the left)", fontsize=9)
    return fig
