"""Single panels: heat-map overlays, a map with its colour bar, and the shared helpers.

Figures are :class:`matplotlib.figure.Figure` objects not registered with pyplot: they display
when returned in Jupyter (with or without pyplot), save with ``fig.savefig(...)``, and need no
``plt.close``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from ..names import METHOD_LABELS as _LABELS

__all__ = ["overlay", "map_panel", "as_image", "as_map", "spearman", "METHOD_LABELS",
           "NotebookFigure"]

#: Display names of the explanation methods (their specs' labels).
METHOD_LABELS = dict(_LABELS)
#: The paper's heat colour map.
DEFAULT_CMAP = "jet"
DEFAULT_ALPHA = 0.5


class NotebookFigure(Figure):
    """A Figure that renders itself as PNG in Jupyter, also when pyplot was never imported."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def new_figure(**kwargs: Any) -> NotebookFigure:
    """A new figure outside pyplot's figure manager (no global state, no ``plt.close``)."""
    return NotebookFigure(**kwargs)


def to_numpy(value: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array (detached, on the CPU)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


def as_image(image: Any) -> np.ndarray:
    """A display image as float ``(H, W, 3)`` or ``(H, W)`` in [0, 1].

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped) arrays or
    tensors, float in [0, 1] or integer (uint8 scaled by 255, uint16 by 65535), and a leading
    batch axis of one.

    Raises:
        ValueError: Any other shape.
    """
    arr = to_numpy(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        raise ValueError(f"image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
                         f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    elif arr.dtype == np.uint16:
        arr = arr / 65535.0
    return np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)


def as_map(heat: Any) -> np.ndarray:
    """A heat map as float ``(H, W)`` in [0, 1] (a leading axis of one is dropped).

    Raises:
        ValueError: Not two-dimensional.
    """
    arr = to_numpy(heat).astype(np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"map must be (H, W) (or (1, H, W)); got shape {arr.shape}")
    return np.clip(np.nan_to_num(arr), 0.0, 1.0)


def clean_axes(ax: Axes) -> None:
    """No ticks and no frame, but labels stay visible (unlike ``axis('off')``)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def draw_map(ax: Axes, heat: Any, image: Any = None, cmap: str = DEFAULT_CMAP,
             alpha: float = DEFAULT_ALPHA, title: str | None = None):
    """Draw ``heat`` on ``ax``, over ``image`` when given; the map is stretched to the image.

    Returns:
        The map's ``AxesImage`` (for a colour bar).
    """
    heat = as_map(heat)
    height, width = heat.shape
    if image is not None:
        img = as_image(image)
        height, width = img.shape[:2]
        extent = (-0.5, width - 0.5, height - 0.5, -0.5)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0,
                  extent=extent, interpolation="bilinear")
        shown = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, extent=extent,
                          interpolation="bilinear")
    else:
        shown = ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="bilinear")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    clean_axes(ax)
    if title:
        ax.set_title(title, fontsize=9)
    return shown


def draw_empty(ax: Axes, text: str, image: Any = None, title: str | None = None) -> None:
    """A grey panel saying why there is no map (e.g. "no gradient path")."""
    if image is not None:
        img = as_image(image)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0.0, vmax=1.0, alpha=0.25)
    ax.set_facecolor("0.85")
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9,
            color="0.15", wrap=True,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.4", "alpha": 0.9})
    clean_axes(ax)
    if title:
        ax.set_title(title, fontsize=9)


def root_figure(ax: Axes) -> Figure:
    """The top-level Figure of an Axes (also inside subfigures)."""
    fig = ax.figure
    return fig.figure if isinstance(fig, SubFigure) else fig


def overlay(image: Any, map: Any, cmap: str = DEFAULT_CMAP, alpha: float = DEFAULT_ALPHA,
            ax: Axes | None = None) -> Figure:
    """The map as a heat colour layer over the image, without axes or text.

    Args:
        image: ``(H, W, 3)`` float in [0, 1] or uint8, or a grayscale ``(H, W)`` image.
        map: ``(H, W)`` map in [0, 1]; another size is stretched over the image.
        cmap: Matplotlib colour map (the paper's ``"jet"`` by default).
        alpha: Opacity of the map layer.
        ax: Draw into these axes instead of a new figure.

    Returns:
        The figure (the axes' figure when ``ax`` is given); a new figure fills it edge to edge.
    """
    if ax is None:
        height, width = as_image(image).shape[:2]
        fig = new_figure(figsize=(3.0, 3.0 * height / width))
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    draw_map(ax, map, image, cmap=cmap, alpha=alpha)
    ax.set_axis_off()
    return root_figure(ax)


def map_panel(map: Any, image: Any = None, title: str | None = None, cmap: str = DEFAULT_CMAP,
              colorbar: bool = True, alpha: float = DEFAULT_ALPHA, ax: Axes | None = None
              ) -> Figure:
    """One map (over ``image`` when given) with an optional title and colour bar.

    Args:
        map: ``(H, W)`` map in [0, 1].
        image: Optional display image under the map.
        title: Panel title.
        cmap: Matplotlib colour map.
        colorbar: Add a colour bar for the [0, 1] scale.
        alpha: Opacity of the map over the image.
        ax: Draw into these axes instead of a new figure.
    """
    if ax is None:
        fig = new_figure(figsize=(4.0, 3.4), layout="constrained")
        ax = fig.add_subplot()
    shown = draw_map(ax, map, image, cmap=cmap, alpha=alpha, title=title)
    if colorbar:
        add_colorbar(ax, shown)
    return root_figure(ax)


def add_colorbar(ax: Axes, shown) -> None:
    """A slim, opaque colour bar for the [0, 1] scale of a drawn map."""
    cbar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    cbar.ax.tick_params(labelsize=7)
    if cbar.solids is not None:
        cbar.solids.set_alpha(1.0)


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation of two maps of equal size, as a float (NaN when one is
    constant): :func:`conformer_xai.metrics.spearman` of a single pair."""
    import torch

    from ..metrics.agreement import spearman as rank_correlation

    return float(rank_correlation(to_numpy(a), to_numpy(b), dtype=torch.float64))
