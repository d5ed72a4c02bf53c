"""Small encoders of the report: uint8 map grids, the colour map, agreement, images, clean text.

Everything here is a pure function of numpy arrays or plain values, so the report's data files
are reproducible and testable on their own.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import methods_of_kinds

__all__ = ["quantise", "colour_lut", "branch_agreement", "Cleaner", "clean_text", "clean_value",
           "write_js", "save_picture", "key_parts"]

#: Methods whose CNN and transformer maps the branch agreement compares, tried in order: the
#: gradient CAMs, then the activation maps.
AGREEMENT_METHODS = methods_of_kinds("cam", "activation")
#: An absolute path inside a text (the report shows paths relative to the run).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"<>|,;]+/)+([^\s/'\"<>|,;]*)")


def quantise(grid: np.ndarray) -> np.ndarray:
    """A map normalised to [0, 1] as uint8 0..255 (rounded; NaN and values outside clipped)."""
    g = np.nan_to_num(np.asarray(grid, dtype=np.float32), nan=0.0)
    return np.rint(np.clip(g, 0.0, 1.0) * 255.0).astype(np.uint8)


def normalise(grid: np.ndarray) -> np.ndarray:
    """Min-max normalise one raw grid to [0, 1] (a constant grid becomes 0), as the explainer."""
    g = np.asarray(grid, dtype=np.float64)
    lo, hi = float(np.nanmin(g)), float(np.nanmax(g))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi - lo <= 1e-12:
        return np.zeros(g.shape, dtype=np.float32)
    return ((g - lo) / (hi - lo)).astype(np.float32)


def colour_lut(cmap: str = "jet") -> bytes:
    """256 RGB triples (768 bytes) of a matplotlib colour map: value v is drawn as lut[v]."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255.0).astype(np.uint8).tobytes()


def key_parts(key: str) -> list[Any]:
    """``[method, head, branch, block]`` of a map key (head and block may be None)."""
    from ..explain.result import parse_key

    p = parse_key(key)
    return [p["method"], p["head"], p["branch"], p["block"]]


def branch_agreement(grids: Mapping[str, np.ndarray], parts: Mapping[str, Sequence[Any]]
                     ) -> tuple[str, dict[str | None, float | None]]:
    """Spearman correlation between the CNN and transformer maps of each image.

    The method is the first of Grad-CAM, its variants, feature maps and EigenCAM that both
    branches have; the block is the deepest block both branches have; for a gradient method
    one value per head. Both grids are brought to the larger one's size by bilinear upsampling
    (``align_corners=False``, as the explainer's maps) before ranking.

    Args:
        grids: key -> (B, h, w) maps of B images (uint8 or float).
        parts: key -> ``[method, head, branch, block]``.

    Returns:
        ``(label, {head or None: (B,) array or None})``; label says which maps were compared
        (empty when no method has both branches).
    """
    import torch
    import torch.nn.functional as F

    from ..metrics.agreement import spearman

    for method in AGREEMENT_METHODS:
        keys = {k: p for k, p in parts.items() if p[0] == method and p[3] is not None}
        heads = list(dict.fromkeys(p[1] for p in keys.values()))
        by = {(p[1], p[2], p[3]): k for k, p in keys.items()}
        blocks = sorted({p[3] for p in keys.values() if p[2] == "cnn"}
                        & {p[3] for p in keys.values() if p[2] == "transformer"})
        if not blocks:
            continue
        block = blocks[-1]
        out: dict[str | None, Any] = {}
        for head in heads:
            a = torch.as_tensor(np.asarray(grids[by[(head, "cnn", block)]], dtype=np.float32))
            b = torch.as_tensor(np.asarray(grids[by[(head, "transformer", block)]],
                                           dtype=np.float32))
            size = (max(a.shape[-2], b.shape[-2]), max(a.shape[-1], b.shape[-1]))
            a, b = (F.interpolate(t[:, None], size=size, mode="bilinear",
                                  align_corners=False)[:, 0] for t in (a, b))
            out[head] = spearman(a, b).numpy()
        where = f"{method}, block {block}"
        return where, out
    return "", {}


class Cleaner:
    """Removes this machine's absolute paths from text: a path under one of ``roots`` becomes
    relative to it, any other absolute path its last component after ``.../``."""

    def __init__(self, roots: Sequence[str | Path] = ()) -> None:
        resolved = {str(Path(r).resolve()) for r in roots}
        self.roots = sorted((r for r in resolved if r and r != "/"), key=len, reverse=True)

    def text(self, text: str) -> str:
        if "/" not in text:
            return text
        for root in self.roots:
            text = text.replace(root + "/", "").replace(root, ".")
        return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(1), text)

    def value(self, value: Any) -> Any:
        """:meth:`text` applied to every string of a JSON-like value (keys included);
        non-finite floats become None and numpy scalars plain numbers."""
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)):
            return float(value) if math.isfinite(float(value)) else None
        if value is None:
            return None
        return self.text(str(value))


def clean_text(text: str, roots: Sequence[str | Path] = ()) -> str:
    """``text`` without absolute paths of this machine (see :class:`Cleaner`)."""
    return Cleaner(roots).text(text)


def clean_value(value: Any, roots: Sequence[str | Path] = ()) -> Any:
    """A JSON-like value without absolute paths of this machine (see :class:`Cleaner`)."""
    return Cleaner(roots).value(value)


def write_js(path: Path, name: str, value: Any) -> None:
    """Write ``window.<name> = <json>;`` (what a ``<script src>`` can load from ``file://``)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    path.write_text(f"window.{name}={text};\n", encoding="ascii")


def b64(data: bytes) -> str:
    """Base64 text of raw bytes."""
    return base64.b64encode(data).decode("ascii")


def save_picture(image: np.ndarray, path: Path, max_side: int | None = None,
                 quality: int = 90) -> tuple[int, int]:
    """Save a float (H, W[, C]) image in [0, 1] as JPEG (or PNG by suffix); returns (H, W).

    With ``max_side`` the image is shrunk (aspect kept) so that its longer side is at most that.
    """
    from PIL import Image

    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] > 3:
        arr = arr[..., :3]
    pixels = np.rint(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255.0).astype(np.uint8)
    pil = Image.fromarray(pixels)
    if max_side is not None and max(pil.size) > max_side:
        scale = max_side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.Resampling.BILINEAR)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        pil.convert("RGB").save(path, quality=quality)
    else:
        pil.save(path)
    return pil.height, pil.width
