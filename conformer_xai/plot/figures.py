"""Figures of one or two explanations: block strips, the head-by-branch matrix, comparisons."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure, SubFigure

from ..names import BRANCHES
from ..registry import REGISTRY, methods_of_kinds
from .panels import (
    DEFAULT_ALPHA,
    DEFAULT_CMAP,
    METHOD_LABELS,
    as_image,
    as_map,
    draw_empty,
    draw_map,
    new_figure,
    spearman,
    to_numpy,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..explain.result import Explanation

__all__ = ["block_strip", "head_branch_matrix", "compare", "block_agreement"]

PANEL_INCHES = 1.55


# --------------------------------------------------------------------------- explanation access
def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


#: Figure wording of the transformer gradient taps (``Explanation.meta["tap"]``).
#: The gradient CAM methods, in registry order.
CAMS = methods_of_kinds("cam")


def figure_cam_method(exp: Explanation) -> str | None:
    """The gradient CAM method a figure draws: ``gradcam`` when explained, else the first CAM
    method the explanation holds (None: none)."""
    return next((m for m in CAMS if m in exp.methods), None)


TAP_LABELS = {"residual": "residual-stream tap", "attention_input": "norm1 (attention-input) tap"}
GRADIENT_METHODS = tuple(m for m, s in REGISTRY.items() if s.tap == "gradient")


def reading_label(exp: Explanation, method: str, branch: str | None) -> str | None:
    """What a map reads, for figure titles: the tap of a transformer gradient map, the channel
    reduction of a feature map; None when there is nothing to say."""
    if method in GRADIENT_METHODS and branch == "transformer" and exp.meta.get("tap"):
        return TAP_LABELS.get(exp.meta["tap"], str(exp.meta["tap"]))
    if method == "features" and exp.meta.get("reduce") is not None:
        reduce = exp.meta["reduce"]
        return f"channel {reduce}" if isinstance(reduce, int) else f"{reduce} over channels"
    return None


def branches_of(exp: Explanation, method: str | None = None) -> list[str]:
    """Branches present in the explanation's keys (for one method, or any), in model order."""
    from ..explain.result import parse_key

    found = set()
    for key in exp.maps:
        parts = parse_key(key)
        if method is None or parts["method"] == method:
            found.add(parts["branch"])
    return [b for b in BRANCHES if b in found]


def key_head(exp: Explanation, method: str, branch: str, block: int | None,
             head: str | None) -> str | None:
    """The classifier head of the key ``exp.get`` picks (None for head-free methods)."""
    from ..registry import head_for, parse_key

    head = head_for(method, head, exp.heads)
    keys = exp.find(method, branch, block, head)
    return parse_key(keys[0])["head"] if keys else head


def display_image(exp: Explanation, image: Any, index: int) -> np.ndarray | None:
    """The image to draw under maps: the one given, else the explanation's own, else None."""
    if image is not None:
        return as_image(image)
    if exp.image is not None:
        return as_image(to_numpy(exp.image)[index])
    return None


def check_index(exp: Explanation, index: int) -> None:
    if not 0 <= index < len(exp):
        raise ValueError(f"index {index} out of range for an explanation of {len(exp)} images")


def map_of(exp: Explanation, method: str, branch: str | None, block: int | None,
           head: str | None, index: int) -> np.ndarray:
    return as_map(to_numpy(exp.get(method, branch, block, head))[index])


def is_all_zero(exp: Explanation, method: str, branch: str | None, block: int | None,
                head: str | None, index: int) -> bool:
    """True when the map (its raw grid when recorded) is zero everywhere."""
    try:
        values = to_numpy(exp.get(method, branch, block, head, raw=True))[index]
    except KeyError:
        values = to_numpy(exp.get(method, branch, block, head))[index]
    return not np.any(values)


def num_blocks(exp: Explanation, branch: str) -> int:
    """Blocks of a branch: ``meta["num_blocks"][branch]`` when recorded, else the deepest key."""
    recorded = exp.meta.get("num_blocks") if isinstance(exp.meta, dict) else None
    if isinstance(recorded, dict) and branch in recorded:
        return int(recorded[branch])
    blocks = [b for m in exp.methods for b in exp.blocks(m, branch)]
    return max(blocks, default=0)


def zero_reason(exp: Explanation, method: str, branch: str, block: int | None,
                head: str | None) -> str:
    """Why a map is all zero, in words for a panel."""
    if head is None:
        return "constant map"
    both = set(branches_of(exp)) == set(BRANCHES)
    if both and head == "transformer" and branch == "cnn" and block == num_blocks(exp, "cnn"):
        return "no gradient path\n(transformer head does not\nsee this CNN block)"
    return "all-zero map\n(no positive evidence)"


def class_label(exp: Explanation, index: int) -> str:
    target = int(to_numpy(exp.target)[index])
    name = exp.class_name(target)
    return name if name == str(target) else f"{name} ({target})"


def draw_cell(ax, exp: Explanation, method: str, branch: str | None, block: int | None,
              head: str | None, index: int, image: np.ndarray | None, cmap: str, alpha: float,
              title: str | None = None):
    """One map panel, or a grey panel saying why the map is all zero."""
    if is_all_zero(exp, method, branch, block, head, index):
        draw_empty(ax, zero_reason(exp, method, branch or "", block, head), image, title)
        return None
    return draw_map(ax, map_of(exp, method, branch, block, head, index), image, cmap=cmap,
                    alpha=alpha, title=title)


# --------------------------------------------------------------------------- block strip
def draw_strip(target: Figure | SubFigure, exp: Explanation, method: str, branch: str,
               head: str | None, blocks: Sequence[int], index: int, image: np.ndarray | None,
               ncols: int | None, cmap: str, alpha: float, title: str | None) -> None:
    """Blocks of one branch in rows of ``ncols`` panels (all in one row when None)."""
    ncols = min(ncols or len(blocks), len(blocks))
    nrows = math.ceil(len(blocks) / ncols)
    axes = np.atleast_1d(target.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, k in zip(axes, blocks):
        draw_cell(ax, exp, method, branch, k, head, index, image, cmap, alpha, f"block {k}")
    for ax in axes[len(blocks):]:
        ax.set_axis_off()
    if title:
        target.suptitle(title, fontsize=10)


def strip_title(exp: Explanation, method: str, branch: str, head: str | None,
                index: int) -> str:
    parts = [exp.model_name or "model", f"{method_label(method)}", f"{branch} branch"]
    reading = reading_label(exp, method, branch)
    if reading:
        parts.append(reading)
    if head is not None:
        parts += [f"{head} head", f"target: {class_label(exp, index)}"]
    return " · ".join(parts)


def block_strip(exp: Explanation, method: str, branch: str, head: str | None = None,
                image: Any = None, blocks: Sequence[int] | None = None, index: int = 0,
                ncols: int | None = None, cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA
                ) -> Figure:
    """One row of panels across the blocks of a branch.

    Args:
        exp: The explanation.
        method: e.g. "features", "gradcam", "attention".
        branch: "cnn" or "transformer".
        head: Classifier head for gradient methods (default: the first explained head).
        image: Display image under the maps (default: ``exp.image``, else maps alone).
        blocks: Subset of blocks (default: every block the explanation holds).
        index: Image of the batch.
        ncols: Wrap into rows of this many panels (default: one row).
        cmap, alpha: Colour map and its opacity over the image.

    Raises:
        ValueError: No map for this method and branch (the message lists what there is).
    """
    check_index(exp, index)
    available = exp.blocks(method, branch, head)
    if not available:
        raise ValueError(f"no {method!r} maps for branch {branch!r}"
                         f"{'' if head is None else f' and head {head!r}'}; the explanation "
                         f"has methods {exp.methods} on branches {branches_of(exp)}")
    blocks = list(blocks) if blocks is not None else available
    missing = [k for k in blocks if k not in available]
    if missing:
        raise ValueError(f"blocks {missing} not in the explanation; available: {available}")
    head = key_head(exp, method, branch, blocks[0], head)
    cols = min(ncols or len(blocks), len(blocks))
    rows = math.ceil(len(blocks) / cols)
    fig = new_figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.5), layout="constrained")
    draw_strip(fig, exp, method, branch, head, blocks, index, display_image(exp, image, index),
               ncols, cmap, alpha, strip_title(exp, method, branch, head, index))
    return fig


# --------------------------------------------------------------------------- head x branch
def head_label(exp: Explanation, head: str, index: int) -> str:
    """``<head> head``, the target's probability and the head's own top-1 class."""
    target = int(to_numpy(exp.target)[index])
    probs = to_numpy(exp.probs[head])[index]
    top = int(np.argmax(probs))
    line = f"{head} head\np({exp.class_name(target)}) = {probs[target]:.2f}"
    if top != target:
        line += f"\ntop-1: {exp.class_name(top)} {probs[top]:.2f}"
    return line


def matrix_layout(exp: Explanation, method: str, heads: Sequence[str] | None,
                  block: int | None, index: int) -> tuple[list[str], list[str], int]:
    """Rows (heads), columns (branches) and the block of a head-by-branch matrix."""
    if heads is None:
        heads = [h for h in ("cnn", "transformer") if h in exp.heads]
        if not heads:
            heads = list(exp.heads[:1])
    heads = list(heads)
    bad = [h for h in heads if h not in exp.heads]
    if not heads or bad:
        raise ValueError(f"heads {bad or heads} were not explained; the explanation has heads "
                         f"{list(exp.heads)} (explain with head=('cnn', 'transformer'))")
    branches = [b for b in branches_of(exp, method) if exp.blocks(method, b, heads[0])]
    if not branches:
        raise ValueError(f"no {method!r} maps in the explanation; it has methods {exp.methods}")
    common = sorted(set.intersection(*(set(exp.blocks(method, b, h))
                                       for b in branches for h in heads)))
    if block is None:
        if not common:
            raise ValueError(f"no block has {method!r} maps for every head and branch")
        nonzero = [k for k in common if any(not is_all_zero(exp, method, b, k, h, index)
                                            for b in branches for h in heads)]
        block = max(nonzero or common)
    elif block not in common:
        raise ValueError(f"block {block} has no {method!r} maps for every head and branch; "
                         f"available: {common}")
    return heads, branches, block


def draw_matrix(target: Figure | SubFigure, exp: Explanation, method: str, heads: list[str],
                branches: list[str], block: int, index: int, image: np.ndarray | None,
                cmap: str, alpha: float) -> None:
    axes = target.subplots(len(heads), len(branches), squeeze=False)
    for r, head in enumerate(heads):
        for c, branch in enumerate(branches):
            ax = axes[r, c]
            title = f"{branch} branch · block {block}" if r == 0 else None
            reading = reading_label(exp, method, branch)
            if title and reading:
                title += f"\n{reading}"
            draw_cell(ax, exp, method, branch, block, head, index, image, cmap, alpha, title)
            if c == 0:
                ax.set_ylabel(head_label(exp, head, index), fontsize=8)
    target.suptitle(f"{method_label(method)}: head × branch · target: {class_label(exp, index)}",
                    fontsize=10)


def head_branch_matrix(exp: Explanation, method: str = "gradcam", block: int | None = None,
                       heads: Sequence[str] | None = None, image: Any = None, index: int = 0,
                       cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA) -> Figure:
    """The head-by-branch grid of a gradient method at one block.

    Rows are classifier heads (default: ``cnn`` and ``transformer``, the ones explained), columns
    the branches; each row is labelled with the head's probability of the target class and its
    own top-1 class. An all-zero map is drawn as a grey panel saying why (the transformer head
    has no gradient path to the last CNN block).

    Args:
        exp: An explanation computed with ``head=("cnn", "transformer")`` (or any heads).
        method: A gradient method (a "cam" spec of the registry: "gradcam", "xgradcam", ...).
        block: Block shown (default: the deepest block where some map is not all zero).
        heads: Rows; default the explained ``cnn``/``transformer`` heads (else the first head).
        image: Display image under the maps (default: ``exp.image``).
        index: Image of the batch.
        cmap, alpha: Colour map and its opacity over the image.

    Raises:
        ValueError: Heads not explained, no such maps, or a block without maps.
    """
    check_index(exp, index)
    heads, branches, block = matrix_layout(exp, method, heads, block, index)
    fig = new_figure(figsize=(1.2 + 2.3 * len(branches), 0.6 + 2.3 * len(heads)),
                 layout="constrained")
    draw_matrix(fig, exp, method, heads, branches, block, index,
                display_image(exp, image, index), cmap, alpha)
    return fig


# --------------------------------------------------------------------------- comparison
def pair_blocks(blocks_a: Sequence[int], blocks_b: Sequence[int]) -> list[tuple[int, int]]:
    """Pair blocks of two models: equal numbers when both have them, else by relative depth.

    With different depths (ResNet-101's 33 CNN blocks against Conformer's 12) each block of the
    shallower list is paired with the block at the same relative depth in the deeper one.
    """
    if list(blocks_a) == list(blocks_b):
        return [(k, k) for k in blocks_a]
    a_short = len(blocks_a) <= len(blocks_b)
    short, long_ = (blocks_a, blocks_b) if a_short else (blocks_b, blocks_a)
    n_short, n_long = max(short), max(long_)
    pairs = []
    for k in short:
        want = k * n_long / n_short
        partner = min(long_, key=lambda j, w=want: (abs(j - w), j))
        pairs.append((k, partner) if a_short else (partner, k))
    return pairs


def _same_size(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` resampled bilinearly to ``a``'s size when they differ."""
    if a.shape == b.shape:
        return b
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))[None, None]
    return F.interpolate(t, size=a.shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def block_agreement(exp_a: Explanation, exp_b: Explanation, method: str = "features",
                    branch: str | None = None, head: str | None = None, index: int = 0
                    ) -> list[tuple[int, int, float]]:
    """Spearman rank correlation of two explanations' maps, block by block.

    Args:
        exp_a, exp_b: Explanations of the same image (models may differ in depth).
        method: Method compared.
        branch: Branch compared in both (default: the only branch they share).
        head: Classifier head for gradient methods (default: each explanation's first head).
        index: Image of the batch.

    Returns:
        ``[(block_a, block_b, rho), ...]`` (rho is NaN where a map is constant).
    """
    branch = _compare_branches(exp_a, exp_b, method, branch)[0]
    out = []
    for ka, kb in pair_blocks(exp_a.blocks(method, branch, head),
                              exp_b.blocks(method, branch, head)):
        a = map_of(exp_a, method, branch, ka, head, index)
        b = map_of(exp_b, method, branch, kb, head, index)
        out.append((ka, kb, spearman(a, _same_size(a, b))))
    return out


def _compare_branches(exp_a: Explanation, exp_b: Explanation, method: str,
                      branch: str | None) -> list[str]:
    shared = [b for b in branches_of(exp_a, method) if b in branches_of(exp_b, method)]
    if branch is not None:
        if branch not in shared:
            raise ValueError(f"branch {branch!r} has no {method!r} maps in both explanations; "
                             f"shared branches: {shared}")
        return [branch]
    if not shared:
        raise ValueError(f"the explanations share no branch with {method!r} maps "
                         f"({branches_of(exp_a, method)} and {branches_of(exp_b, method)})")
    return shared


def compare(exp_a: Explanation, exp_b: Explanation, method: str = "features",
            branch: str | None = None, head: str | None = None,
            labels: Sequence[str] | None = None, image: Any = None, image_b: Any = None,
            index: int = 0, cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA) -> Figure:
    """Two explanations side by side, block by block, with the Spearman agreement per block.

    For each compared branch, two rows (``exp_a`` above ``exp_b``); each column is titled with
    its block(s) and the rank correlation rho of the two maps. Models of different depth are
    paired by relative depth (see :func:`pair_blocks`).

    Args:
        exp_a, exp_b: Explanations of the same image.
        method: Method compared (default: feature maps).
        branch: "cnn" or "transformer"; default every branch both explanations have.
        head: Classifier head for gradient methods (default: each one's first head).
        labels: Row labels (default: the model names).
        image, image_b: Display images (default: each explanation's own ``image``).
        index: Image of the batch.
        cmap, alpha: Colour map and its opacity over the image.

    Raises:
        ValueError: No shared branch with maps of this method.
    """
    check_index(exp_a, index)
    check_index(exp_b, index)
    branches = _compare_branches(exp_a, exp_b, method, branch)
    names = list(labels) if labels is not None else [exp_a.model_name or "A",
                                                     exp_b.model_name or "B"]
    if len(names) != 2:
        raise ValueError(f"labels must be two names, got {len(names)}")
    if names[0] == names[1]:
        names = [f"{names[0]} (A)", f"{names[1]} (B)"]
    img_a = display_image(exp_a, image, index)
    img_b = display_image(exp_b, image_b if image_b is not None else image, index)
    scores = {b: block_agreement(exp_a, exp_b, method, b, head, index) for b in branches}
    ncols = max(len(s) for s in scores.values())
    fig = new_figure(figsize=(0.8 + PANEL_INCHES * ncols, 0.7 + 2 * PANEL_INCHES * len(branches)),
                 layout="constrained")
    axes = fig.subplots(2 * len(branches), ncols, squeeze=False)
    for r, b in enumerate(branches):
        for c, (ka, kb, rho) in enumerate(scores[b]):
            blocks = f"block {ka}" if ka == kb else f"blocks {ka} | {kb}"
            score = "ρ = n/a" if math.isnan(rho) else f"ρ = {rho:.2f}"
            for row, (exp, k, img) in enumerate(((exp_a, ka, img_a), (exp_b, kb, img_b))):
                ax = axes[2 * r + row, c]
                draw_cell(ax, exp, method, b, k, head, index, img, cmap, alpha,
                          f"{blocks}\n{score}" if row == 0 else None)
                if c == 0:
                    ax.set_ylabel(f"{names[row]}\n{b} branch", fontsize=8)
        for c in range(len(scores[b]), ncols):
            axes[2 * r, c].set_axis_off()
            axes[2 * r + 1, c].set_axis_off()
    fig.suptitle(f"{method_label(method)}: {names[0]} vs {names[1]} · Spearman ρ per block",
                 fontsize=10)
    return fig

