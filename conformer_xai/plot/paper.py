"""The feature-map figure of the Conformer paper (Peng et al., ICCV 2021, Fig. 1 and Fig. 6).

Two styles:

* ``style="paper"``: the paper's own layout. The input on the left, then a "Shallow Layers" and a
  "Deep Layers" group, each of 4 columns (ResNet-101, Ours-CNN, DeiT-S, Ours-Transformer) and 2
  rows: two single-channel feature maps per model and depth (the two channels with the largest
  spatial standard deviation, :func:`conformer_xai.explain.methods.features.top_channels`),
  stand-alone in a black-red-yellow colour map (matplotlib's ``hot``), each grid cell drawn as a
  block (nearest upsampling by the tap's stride), no overlay.
* ``style="overlay"`` (default): columns the input, a CNN model, Conformer's CNN branch, a
  transformer model and Conformer's transformer branch; rows a shallow and a deep block; one map
  per cell (any method) in the jet colour map over the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
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

__all__ = ["paper_figure", "model_role", "default_blocks", "PAPER_LABELS", "STYLES"]

#: Figure styles of :func:`paper_figure`.
STYLES = ("overlay", "paper")
#: The paper's column labels, by (role, branch).
PAPER_LABELS = {("cnn", "cnn"): "ResNet-101", ("conformer", "cnn"): "Ours-CNN",
                ("transformer", "transformer"): "DeiT-S",
                ("conformer", "transformer"): "Ours-Transformer"}
#: The paper's black-red-yellow colour map.
PAPER_CMAP = "hot"

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
                 head: str | None = None, index: int = 0, cmap: str | None = None,
                 alpha: float = DEFAULT_ALPHA, style: str = "overlay",
                 labels: Mapping[tuple[str, str], str] | None = None) -> Figure:
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
        cmap, alpha: Colour map (default: jet for "overlay", hot for "paper") and its opacity
            over the image ("overlay" only).
        style: "overlay" or "paper" (see the module docstring). "paper" draws feature maps of
            single channels: explain with ``methods`` including "features" and ``channels=2``.
        labels: Column labels by ``(role, branch)`` for "paper" (default :data:`PAPER_LABELS`).

    Raises:
        ValueError: No explanations, two of one role, missing maps or unknown blocks.
    """
    if not explanations:
        raise ValueError("paper_figure needs at least one explanation (name -> Explanation)")
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; accepted: {', '.join(STYLES)}")
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
        available = (_channel_blocks(exp, branch) if style == "paper"
                     else exp.blocks(method, branch, head))
        if not available:
            if style == "paper":
                raise ValueError(f"{name!r} has no single-channel feature maps on its {branch} "
                                 "branch: explain with methods including 'features' and "
                                 "channels=2 for style='paper'")
            raise ValueError(f"{name!r} has no {method!r} maps on its {branch} branch; it has "
                             f"methods {exp.methods}")
        lo, hi = default_blocks(num_blocks(exp, branch), "cnn" if role == "cnn" else branch)
        blocks = (_pick(shallow, name, lo, available, "shallow"),
                  _pick(deep, name, hi, available, "deep"))
        if style == "paper":
            title = dict(PAPER_LABELS, **(labels or {}))[(role, branch)]
        else:
            title = name if role != "conformer" else f"{name}\n{BRANCH_TITLES[branch]}"
        columns.append((exp, branch, blocks, title))

    first = next(iter(explanations.values()))
    img = display_image(first, image, index)
    if style == "paper":
        return _paper_style(img, columns, index, cmap or PAPER_CMAP)
    cmap = cmap or DEFAULT_CMAP
    fig = new_figure(figsize=(1.0 + 2.1 * (len(columns) + 1), 4.6), layout="constrained")
    grid = fig.add_gridspec(2, len(columns) + 1)
    _input_panel(fig.add_subplot(grid[:, 0]), img, "(a) input")
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


def _input_panel(ax: Axes, img: np.ndarray | None, title: str) -> None:
    """The input image (grey where there is none) in ``ax``, titled."""
    if img is not None:
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0)
    else:
        ax.set_facecolor("0.9")
    clean_axes(ax)
    ax.set_title(title, fontsize=9)


def _channel_blocks(exp: Explanation, branch: str) -> list[int]:
    prefix = f"feature_channels/{branch}/"
    return sorted(int(k[len(prefix):]) for k in exp.raw if k.startswith(prefix))


def blocky(exp: Explanation, key: str, index: int, channel: int) -> np.ndarray:
    """One single-channel grid at input resolution, each cell a block of its tap's stride
    (nearest upsampling, cropped to the input), min-max scaled to [0, 1]."""
    grid = np.asarray(exp.raw[key][index, channel].detach().cpu().float().numpy(), dtype=float)
    height, width = exp.input_size
    stride = (exp.meta.get("geometry") or {}).get(key, {}).get("stride")
    if stride:
        up = np.repeat(np.repeat(grid, stride[0], axis=0), stride[1], axis=1)
        up = np.pad(up, ((0, max(0, height - up.shape[0])), (0, max(0, width - up.shape[1]))),
                    mode="edge")[:height, :width]
    else:
        rows = (np.arange(height) * grid.shape[0] // height).clip(0, grid.shape[0] - 1)
        cols = (np.arange(width) * grid.shape[1] // width).clip(0, grid.shape[1] - 1)
        up = grid[rows][:, cols]
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def _paper_style(img: np.ndarray | None, columns: list, index: int, cmap: str) -> Figure:
    n = len(columns)
    fig = new_figure(figsize=(1.6 + 1.45 * 2 * n, 3.4), layout="constrained")
    left, *groups = fig.subfigures(1, 3, width_ratios=[1.1, n, n], wspace=0.02)
    _input_panel(left.add_subplot(), img, "Input")
    for g, (group, depth) in enumerate(zip(groups, ("Shallow Layers", "Deep Layers"))):
        axes = group.subplots(2, n, squeeze=False)
        for c, (exp, branch, blocks, title) in enumerate(columns):
            key = f"feature_channels/{branch}/{blocks[g]}"
            chosen = (exp.meta.get("feature_channels") or {}).get(key)
            for r in range(2):
                ax = axes[r, c]
                if r < exp.raw[key].shape[1]:
                    ax.imshow(blocky(exp, key, index, r), cmap=cmap, vmin=0.0, vmax=1.0,
                              interpolation="nearest")
                    if chosen is not None:
                        ax.set_xlabel(f"block {blocks[g]} · ch {chosen[index][r]}", fontsize=6)
                else:
                    ax.set_facecolor("0.9")
                clean_axes(ax)
                if r == 0:
                    ax.set_title(title, fontsize=8)
        group.suptitle(depth, fontsize=10)
    return fig
