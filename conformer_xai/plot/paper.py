"""The feature-map figure of the Conformer paper (Peng et al., ICCV 2021, Fig. 1 and Fig. 6).

Columns: the input, then a CNN model, Conformer's CNN branch, a transformer model and
Conformer's transformer branch; rows: a shallow and a deep block; maps in the jet colour map over
the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from .figures import (
    branches_of,
    check_index,
    display_image,
    draw_cell,
    method_label,
    num_blocks,
)
from .panels import DEFAULT_ALPHA, DEFAULT_CMAP, clean_axes, new_figure

if TYPE_CHECKING:  # pragma: no cover
    from ..explain.result import Explanation

__all__ = ["paper_figure", "model_role", "default_blocks"]

#: Block numbers that end each stage of the timm ResNets, by number of bottleneck/basic blocks
#: (resnet18: 8; resnet34 and resnet50: 16; resnet101: 33; resnet152: 50).
RESNET_STAGE_ENDS = {8: (2, 4, 6, 8), 16: (3, 7, 13, 16), 33: (3, 7, 30, 33),
                     50: (3, 11, 47, 50)}
BRANCH_TITLES = {"cnn": "CNN branch", "transformer": "transformer branch"}
ROLE_ORDER = (("cnn", "cnn"), ("conformer", "cnn"), ("transformer", "transformer"),
              ("conformer", "transformer"))


def model_role(exp: Explanation) -> str:
    """``"conformer"`` (maps of both branches), ``"cnn"`` or ``"transformer"`` (one branch).

    Read from the explanation's map keys, not from its model name.
    """
    branches = branches_of(exp)
    if len(branches) == 2:
        return "conformer"
    if len(branches) == 1:
        return branches[0]
    raise ValueError("the explanation holds no per-branch maps")


def default_blocks(total: int, role: str) -> tuple[int, int]:
    """Default (shallow, deep) blocks of a branch with ``total`` blocks.

    A CNN model whose block count matches a timm ResNet takes the end of its second stage as
    the shallow block (ResNet-101: block 7 of 33); every other branch takes a third of its
    depth (Conformer and DeiT-S: block 4 of 12). The deep block is always the last.
    """
    if total < 1:
        raise ValueError(f"a branch needs at least one block, got {total}")
    if role == "cnn" and total in RESNET_STAGE_ENDS:
        return RESNET_STAGE_ENDS[total][1], total
    return max(1, round(total / 3)), total


def _pick(spec: int | Mapping[str, int] | None, name: str, default: int,
          available: list[int], which: str) -> int:
    if isinstance(spec, Mapping):
        spec = spec.get(name)
    if spec is None:
        return min(available, key=lambda k: (abs(k - default), k))
    if int(spec) not in available:
        raise ValueError(f"{which} block {spec} for {name!r} is not in its explanation; "
                         f"available: {available}")
    return int(spec)


def paper_figure(image: Any, explanations: Mapping[str, Explanation],
                 shallow: int | Mapping[str, int] | None = None,
                 deep: int | Mapping[str, int] | None = None, method: str = "features",
                 head: str | None = None, index: int = 0, cmap: str = DEFAULT_CMAP,
                 alpha: float = DEFAULT_ALPHA) -> Figure:
    """The paper's feature-map figure for one image.

    Each explanation's role is read from its maps: both branches -> the Conformer, only ``cnn``
    -> the CNN model (e.g. ResNet-101), only ``transformer`` -> the transformer model (e.g.
    DeiT-S). Columns follow the paper: the input, the CNN model, Conformer's CNN branch, the
    transformer model, Conformer's transformer branch (roles that are missing are left out).

    Args:
        image: Display image (default: the first explanation's ``image``).
        explanations: ``name -> Explanation`` of the same image, e.g. ``{"resnet101": ...,
            "conformer_small_patch16": ..., "deit_small_patch16_224": ...}``; at most one per role.
        shallow, deep: Block per row: one number for every model, or ``name -> block``; defaults
            from :func:`default_blocks` (ResNet-101: 7 and 33; Conformer and DeiT-S: 4 and 12).
            For the Conformer the same block is shown for both branches.
        method: Method drawn (the paper shows feature maps).
        head: Classifier head for gradient methods (default: each explanation's first head).
        index: Image of the batch.
        cmap, alpha: Colour map (the paper's jet) and its opacity over the image.

    Raises:
        ValueError: No explanations, two of one role, missing maps or unknown blocks.
    """
    if not explanations:
        raise ValueError("paper_figure needs at least one explanation (name -> Explanation)")
    by_role: dict[str, tuple[str, Explanation]] = {}
    for name, exp in explanations.items():
        check_index(exp, index)
        role = model_role(exp)
        if role in by_role:
            raise ValueError(f"{by_role[role][0]!r} and {name!r} are both {role} models; "
                             f"give at most one CNN model, one transformer model and one "
                             f"Conformer")
        by_role[role] = (name, exp)
    columns = []
    for role, branch in ROLE_ORDER:
        if role not in by_role:
            continue
        name, exp = by_role[role]
        available = exp.blocks(method, branch, head)
        if not available:
            raise ValueError(f"{name!r} has no {method!r} maps on its {branch} branch; it has "
                             f"methods {exp.methods}")
        lo, hi = default_blocks(num_blocks(exp, branch), "cnn" if role == "cnn" else branch)
        blocks = (_pick(shallow, name, lo, available, "shallow"),
                  _pick(deep, name, hi, available, "deep"))
        title = name if role != "conformer" else f"{name}\n{BRANCH_TITLES[branch]}"
        columns.append((exp, branch, blocks, title))

    first = next(iter(explanations.values()))
    img = display_image(first, image, index)
    fig = new_figure(figsize=(1.0 + 2.1 * (len(columns) + 1), 4.6), layout="constrained")
    grid = fig.add_gridspec(2, len(columns) + 1)
    ax = fig.add_subplot(grid[:, 0])
    if img is not None:
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
    else:
        ax.set_facecolor("0.9")
    clean_axes(ax)
    ax.set_title("(a) input", fontsize=9)
    for c, (exp, branch, blocks, title) in enumerate(columns, start=1):
        for r, (row_name, k) in enumerate(zip(("shallow", "deep"), blocks)):
            ax = fig.add_subplot(grid[r, c])
            draw_cell(ax, exp, method, branch, k, head, index, img, cmap, alpha,
                      f"({chr(ord('a') + c)}) {title}" if r == 0 else None)
            ax.set_xlabel(f"block {k}", fontsize=8)
            if c == 1:
                ax.set_ylabel(row_name, fontsize=9)
    fig.suptitle(f"{method_label(method)}: shallow and deep blocks", fontsize=10)
    return fig
