"""Maps on the time-frequency plane: the figure for spectrogram (audio and raw 2-D) inputs.

For an explanation of an audio input (``exp.meta["fold"]``, written by
:func:`conformer_xai.load_audio`), every map is unfolded from the folded ``(freq_ratio * n_mels,
W)`` image back to ``(mel band, frame)`` and drawn with time in seconds and frequency in Hz
(low frequencies at the bottom). A raw 2-D array without a fold gets the same figure on its
own row and column axes.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .figures import (
    BRANCHES,
    CAMS,
    check_index,
    class_label,
    figure_cam_method,
    is_all_zero,
    method_label,
    num_blocks,
    to_numpy,
    zero_reason,
)
from .panels import DEFAULT_ALPHA, DEFAULT_CMAP, add_colorbar, as_image, new_figure
from .paper import default_blocks
from .report import WARNING_COLOUR, weights_note

if TYPE_CHECKING:  # pragma: no cover
    from ..explain.result import Explanation

__all__ = ["spectrogram_figure", "tf_map", "tf_axes", "INPUT_CMAP"]

#: Perceptual colour map of the input spectrogram (and of raw arrays).
INPUT_CMAP = "magma"


def tf_map(exp: Explanation, values: Any, index: int = 0) -> np.ndarray:
    """One ``(H, W)`` map (or a batch's ``index``-th) on the time-frequency plane.

    With ``exp.meta["fold"]`` the folded image is unfolded to ``(n_mels, frames)``; without it
    the map is returned as it is (rows by columns).
    """
    arr = to_numpy(values).astype(np.float32)
    if arr.ndim == 3:
        arr = arr[index]
    fold = (exp.meta or {}).get("fold")
    if not fold:
        return arr
    from ..audio import unfold

    return unfold(arr, fold["n_mels"], fold["freq_ratio"], fold.get("frames"))


def tf_axes(exp: Explanation, shape: tuple[int, int]) -> dict[str, Any]:
    """``imshow`` keywords and axis labels for a time-frequency map of ``shape``."""
    fold = (exp.meta or {}).get("fold")
    rows, cols = shape
    if not fold:
        return {"extent": (-0.5, cols - 0.5, rows - 0.5, -0.5), "origin": "upper",
                "xlabel": "column", "ylabel": "row", "freq_ticks": None}
    seconds = cols * fold["hop_length"] / fold["sr"]
    return {"extent": (0.0, seconds, -0.5, rows - 0.5), "origin": "lower",
            "xlabel": "time (s)", "ylabel": "frequency (Hz)", "freq_ticks": _freq_ticks(fold)}


def _freq_ticks(fold: dict[str, Any]) -> tuple[list[float], list[str]]:
    from ..audio import mel_frequencies

    n = fold["n_mels"]
    centres = mel_frequencies(n + 2, fold["fmin"], fold["fmax"])[1:-1]
    wanted = [f for f in (100, 500, 1000, 2000, 4000, 8000)
              if centres[0] <= f <= centres[-1]]
    positions = [float(np.interp(f, centres, np.arange(n))) for f in wanted]
    labels = [f"{f / 1000:g}k" if f >= 1000 else f"{f}" for f in wanted]
    return positions, labels


def _style(ax: Axes, axes: dict[str, Any], xlabel: bool = True, ylabel: bool = True) -> None:
    ax.tick_params(labelsize=7)
    if axes["freq_ticks"] is not None:
        ax.set_yticks(*axes["freq_ticks"])
    if xlabel:
        ax.set_xlabel(axes["xlabel"], fontsize=8)
    if ylabel:
        ax.set_ylabel(axes["ylabel"], fontsize=8)


def _draw_input(ax: Axes, exp: Explanation, spec: np.ndarray) -> None:
    axes = tf_axes(exp, spec.shape)
    shown = ax.imshow(spec, cmap=INPUT_CMAP, aspect="auto", extent=axes["extent"],
                      origin=axes["origin"], interpolation="nearest")
    _style(ax, axes)
    fold = (exp.meta or {}).get("fold")
    ax.set_title("input: log-mel spectrogram (unfolded)" if fold else "input array", fontsize=9)
    add_colorbar(ax, shown)


def _draw_tf_map(ax: Axes, exp: Explanation, method: str, branch: str | None,
                 block: int | None, head: str | None, index: int, spec: np.ndarray,
                 title: str, cmap: str, alpha: float, ylabel: bool = True) -> np.ndarray | None:
    """One map over the grey spectrogram on time-frequency axes; None when it is all zero."""
    axes = tf_axes(exp, spec.shape)
    ax.imshow(spec, cmap="gray", aspect="auto", extent=axes["extent"], origin=axes["origin"],
              interpolation="nearest", vmin=0.0, vmax=1.0)
    _style(ax, axes, ylabel=ylabel)
    ax.set_title(title, fontsize=8)
    if is_all_zero(exp, method, branch, block, head, index):
        ax.text(0.5, 0.5, zero_reason(exp, method, branch or "", block, head),
                transform=ax.transAxes, ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9})
        return None
    heat = np.clip(tf_map(exp, exp.get(method, branch, block, head), index), 0.0, 1.0)  # NaN kept
    ax.imshow(heat, cmap=cmap, alpha=alpha, aspect="auto", extent=axes["extent"],
              origin=axes["origin"], interpolation="bilinear", vmin=0.0, vmax=1.0)
    return heat


def _head_for(exp: Explanation, branch: str) -> str | None:
    """The branch's own head when explained (cnn head on the CNN branch), else the first."""
    if branch in exp.heads:
        return branch
    return exp.heads[0] if exp.heads else None


def spectrogram_figure(exp: Explanation, image: Any = None, index: int = 0,
                       shallow: int | None = None, deep: int | None = None,
                       cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA,
                       method: str | None = None) -> Figure:
    """The time-frequency figure of one spectrogram's explanation.

    Panels: the input spectrogram (perceptual colour map); per branch, Grad-CAM of the branch's
    own head (else the first explained head) at a shallow block (a third of the depth) and the
    deep (last) block; attention rollout; gradient rollout; the head-by-branch Grad-CAM matrix
    at the deep block; and per branch the importance over time and over frequency (the deep
    block's and the shallow block's Grad-CAM averaged over frequency, and over time). Audio inputs (``meta["fold"]``)
    are unfolded to (mel band, frame) and drawn with time in seconds and frequency in Hz; raw
    arrays on row and column axes. Nothing assumes a depth.

    Args:
        exp: An explanation with Grad-CAM maps of both branches.
        image: The display image (default ``exp.image``): the folded ``(H, W)`` spectrogram in
            [0, 1] that :func:`conformer_xai.load_audio` returns, or a raw array's.
        index: Image of the batch.
        shallow, deep: Blocks of the Grad-CAM rows (default: a third of the depth and the last,
            or the explained blocks closest to them).
        cmap, alpha: Colour map of the maps and its opacity over the spectrogram.
        method: The gradient CAM method drawn where the description says Grad-CAM (default:
            the first of :func:`figure_cam_method`'s choice: ``gradcam`` when explained).

    Raises:
        ValueError: No gradient CAM maps, or blocks that the explanation does not hold.
    """
    check_index(exp, index)
    method = method or figure_cam_method(exp)
    branches = [b for b in BRANCHES if method and exp.blocks(method, b)]
    if not branches:
        raise ValueError(f"spectrogram_figure needs gradient CAM maps ({', '.join(CAMS)}); the "
                         f"explanation has methods {exp.methods}")
    label = method_label(method)
    if image is None:
        if exp.image is None:
            raise ValueError("no display image: pass image= or explain with image=")
        image = to_numpy(exp.image)[index]
    spec = as_image(image)
    spec = tf_map(exp, spec if spec.ndim == 2 else spec[..., 0])
    blocks: dict[str, tuple[int, int]] = {}
    for b in branches:
        available = exp.blocks(method, b)
        lo, hi = default_blocks(num_blocks(exp, b), b)
        nearest = [min(available, key=lambda k, want=want: (abs(k - want), k))
                   for want in (lo, hi)]  # the blocks explained closest to the defaults
        pick = [shallow if shallow is not None else nearest[0],
                deep if deep is not None else nearest[1]]
        for k in pick:
            if k not in available:
                raise ValueError(f"block {k} has no {label} map on the {b} branch; available: "
                                 f"{available}")
        blocks[b] = (pick[0], pick[1])

    fig = new_figure(figsize=(13.0, 12.5), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=[1.2, 2.2, 1.4])
    header, spec_cell = top.subfigures(1, 2, width_ratios=[1.0, 1.6])
    _draw_header(header, exp, index)
    _draw_input(spec_cell.subplots(), exp, spec)

    left, right = middle.subfigures(1, 2, width_ratios=[1.0, 1.0])
    grid = left.subplots(len(branches), 2, squeeze=False)
    shown: dict[str, dict[int, np.ndarray | None]] = {}
    for r, b in enumerate(branches):
        head = _head_for(exp, b)
        for c, k in enumerate(blocks[b]):
            shown.setdefault(b, {})[k] = _draw_tf_map(
                grid[r, c], exp, method, b, k, head, index, spec,
                f"{label} · {b} branch · block {k}\n{head} head", cmap, alpha, ylabel=c == 0)
    left.suptitle(f"per-branch {label}: shallow and deep block", fontsize=9)
    _draw_matrix(right, exp, method, branches, {b: blocks[b][1] for b in branches}, index, spec,
                 cmap, alpha)

    rollout_cells, profiles = bottom.subfigures(1, 2, width_ratios=[1.0, 1.0])
    axes = rollout_cells.subplots(1, 2)
    _draw_rollouts(axes, exp, index, spec, cmap, alpha)
    _draw_profiles(profiles, exp, method, shown, spec.shape)
    fig.suptitle(f"{exp.model_name or 'model'} · target: {class_label(exp, index)}",
                 fontsize=11, weight="bold")
    return fig


def _draw_header(sub, exp: Explanation, index: int) -> None:
    note, warning = weights_note(exp.meta)
    lines = [f"heads explained: {', '.join(exp.heads) or 'none'}"]
    for head in exp.logits:
        top = exp.top_classes(head, k=3)[index]
        lines.append(f"{head:12s} " + ", ".join(f"{exp.class_name(c)} {p:.2f}" for c, p in top))
    fold = (exp.meta or {}).get("fold")
    if fold:
        seconds = fold["frames"] * fold["hop_length"] / fold["sr"]
        lines.append(f"clip: {fold['frames']} frames ({seconds:.2f} s), {fold['n_mels']} mel "
                     f"bands, fold x{fold['freq_ratio']}")
    mode = (exp.meta or {}).get("size_mismatch")
    if mode:
        lines.append(f"size mismatch: {mode}")
    sub.text(0.02, 0.95, note, fontsize=8.5, va="top", weight="bold" if warning else None,
             color=WARNING_COLOUR if warning else "0.2", wrap=True)
    sub.text(0.02, 0.78, "\n".join(lines), fontsize=8, va="top", family="monospace")


def _draw_matrix(sub, exp: Explanation, method: str, branches: list[str], deep: dict[str, int],
                 index: int, spec: np.ndarray, cmap: str, alpha: float) -> None:
    heads = [h for h in ("cnn", "transformer") if h in exp.heads] or list(exp.heads[:1])
    axes = sub.subplots(len(heads), len(branches), squeeze=False)
    for r, head in enumerate(heads):
        for c, b in enumerate(branches):
            _draw_tf_map(axes[r, c], exp, method, b, deep[b], head, index, spec,
                         f"{head} head · {b} branch · block {deep[b]}", cmap, alpha,
                         ylabel=c == 0)
    sub.suptitle(f"{method_label(method)}: head × branch (deep block)", fontsize=9)


def _draw_rollouts(axes, exp: Explanation, index: int, spec: np.ndarray, cmap: str,
                   alpha: float) -> None:
    grad_heads = [h for h in exp.heads if f"grad_rollout/{h}/transformer" in exp.maps]
    items = [("rollout", None, "attention rollout")] if "rollout/transformer" in exp.maps else []
    if grad_heads:
        items.append(("grad_rollout", grad_heads[0], f"gradient rollout · {grad_heads[0]} head"))
    for ax, item in zip(axes, items):
        method, head, title = item
        _draw_tf_map(ax, exp, method, "transformer", None, head, index, spec, title, cmap, alpha)
    for ax in axes[len(items):]:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "not computed", ha="center", va="center", transform=ax.transAxes)


def _draw_profiles(sub, exp: Explanation, method: str,
                   maps: dict[str, dict[int, np.ndarray | None]], shape: tuple[int, int]) -> None:
    """Importance over time (mean over frequency) and over frequency (mean over time)."""
    ax_t, ax_f = sub.subplots(1, 2)
    axes = tf_axes(exp, shape)
    rows, cols = shape
    x0, x1 = axes["extent"][0], axes["extent"][1]
    times = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols
    for colour, (b, by_block) in zip(("C0", "C1"), maps.items()):
        for (k, heat), style in zip(by_block.items(), ("--", "-")):
            if heat is None:
                continue
            label = f"{b} branch · block {k}"
            with warnings.catch_warnings():  # pixels no token covers are NaN (resize mode)
                warnings.simplefilter("ignore", RuntimeWarning)
                over_time, over_freq = np.nanmean(heat, axis=0), np.nanmean(heat, axis=1)
            ax_t.plot(times, over_time, style, color=colour, label=label)
            ax_f.plot(np.arange(rows), over_freq, style, color=colour, label=label)
    ax_t.text(0.01, 0.97, f"{method_label(method)}, mean over the other axis",
              transform=ax_t.transAxes, fontsize=6, va="top")
    folded = axes["freq_ticks"] is not None
    ax_t.set_xlabel(axes["xlabel"], fontsize=8)
    ax_t.set_title("importance over time" if folded else "importance over columns", fontsize=9)
    ax_f.set_xlabel(axes["ylabel"], fontsize=8)
    ax_f.set_title("importance over frequency" if folded else "importance over rows", fontsize=9)
    if axes["freq_ticks"] is not None:
        ax_f.set_xticks(*axes["freq_ticks"])
    for ax in (ax_t, ax_f):
        ax.set_ylim(0, 1)
        ax.set_ylabel("mean map value", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
