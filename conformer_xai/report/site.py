"""Build the static report site: an index of every image and one viewer page per image.

The site needs no server and no network: pages are plain HTML (Jinja2 templates), the data is
JavaScript files loaded by ``<script>`` tags (browsers refuse ``fetch`` on ``file://``), and the
maps ship as uint8 grids that the page colours and upsamples on a canvas. Layout::

    index.html              sortable, filterable, paged table of every image
    report.json             what was built (marks the folder as a report for --force)
    assets/                 report.css, index.js, viewer.js
    data/site.js            colour map, key layouts (keys, grid sizes, parts)
    data/index.js           one row per image (all rows load at once; the table pages)
    data/maps/<id>.js       one image's maps: base64 of its uint8 grids, in layout order
    images/<id>.html        the image's page; images/<id>.jpg the image the model saw
    thumbs/<id>.jpg         thumbnails
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Setting, SettingExistsError
from ..registry import methods_of_kinds
from .audio import axes as audio_axes
from .encode import (
    Cleaner,
    b64,
    branch_agreement,
    colour_lut,
    save_picture,
    write_js,
)
from .sources import Layout, Record, Source, open_source

__all__ = ["build_report", "check_out", "REPORT_FORMAT"]

REPORT_FORMAT = "conformer-xai report v1"
MARKER = "report.json"
THUMB_SIDE = 64
ASSETS = ("report.css", "index.js", "viewer.js")
#: Methods tried in order for the view a page opens with: the gradient CAMs, the activation
#: maps, then the attention maps (registry order within each kind).
DEFAULT_METHODS = methods_of_kinds("cam", "activation", "attention-row", "attention-chain")
#: Metadata shown first on an image page: (label, meta keys tried in order).
HIGHLIGHTS = (
    ("model", ("model", "model_name")),
    ("weights", ("weights_source", "weights", "checkpoint")),
    ("tap", ("tap", "taps")),
    ("reduction", ("reduce", "reduction")),
    ("size mode", ("size_mismatch", "size_mode")),
    ("input size", ("input_size",)),
    ("crop", ("crop",)),
    ("front end", ("audio", "front_end", "audio_config", "frontend")),
    ("input kind", ("input_kind",)),
)


def build_report(path: str | os.PathLike, out: str | os.PathLike, *,
                 images: str | os.PathLike | None = None, labels: Sequence[str] | None = None,
                 force: bool = False, title: str | None = None, progress: bool = False,
                 files: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """Build the report site of an explain output folder or an explain-dataset store.

    Args:
        path: A folder written by ``explain --save-arrays`` or a store written by
            ``explain-dataset``.
        out: The site folder to write (created; an existing report is replaced only with
            ``force``; a non-empty folder that is not a report is never replaced).
        images: For a store, the folder of images the run read (the store holds only maps);
            default the input folder the store records, if any.
        labels: Class names overriding the recorded ones.
        force: Replace an existing report at ``out``.
        title: Page title (default: the source folder's name).
        progress: Show a progress bar on stderr.
        files: For an explain folder, only these ``<name>.maps.npz`` files (default: every
            one under ``path``).

    Returns:
        ``{"out", "images", "with_maps", "layouts", "files", "bytes", "seconds", "notes"}``.

    Raises:
        FileNotFoundError: ``path`` or ``images`` does not exist.
        FileExistsError: ``out`` exists and may not be replaced.
        ValueError: ``path`` is neither kind of run output, or ``out`` is ``path`` itself.
    """
    t0 = time.perf_counter()
    path, out = Path(path), Path(out)
    if path.exists() and out.resolve() == path.resolve():
        raise ValueError(f"the report folder {out} is the run's own folder; choose another")
    source = open_source(path, images, labels, skip=out, files=files)
    _prepare(out, force)
    builder = _SiteBuilder(source, out, title or path.resolve().name, progress)
    builder.build()
    files = [p for p in out.rglob("*") if p.is_file()]
    return {"out": str(out), "images": len(source.records), "with_maps": builder.with_maps,
            "layouts": len(source.layouts), "files": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "seconds": time.perf_counter() - t0, "notes": list(source.notes)}


def check_out(out: str | os.PathLike, force: bool) -> None:
    """Raise unless a report may be written at ``out`` (see :func:`build_report`).

    Raises:
        FileExistsError: ``out`` is a file, a non-empty folder that is not a report, or a
            report while ``force`` is False.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder; choose another report folder")
    if out.is_dir() and any(out.iterdir()):
        if not _is_report(out):
            raise FileExistsError(f"{out} exists, is not empty and is not a conformer-xai "
                                  "report; refusing to replace it; choose another folder")
        if not force:
            raise SettingExistsError(f"{out} exists; pass " "{force} to replace it",
                                     force=Setting("force", True))


def _prepare(out: Path, force: bool) -> None:
    check_out(out, force)
    if out.is_dir():
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    # the marker first: a build that stops half-way can be replaced with force
    (out / MARKER).write_text(json.dumps({"format": REPORT_FORMAT, "complete": False}) + "\n")
    for sub in ("assets", "data/maps", "images", "thumbs"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def _is_report(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == REPORT_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("conformer_xai.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             auto_reload=False,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = format_value
    env.globals["columns_of"] = columns_of
    env.globals["is_table"] = is_table
    return env


def format_value(value: Any) -> str:
    """A metadata value as short text: floats to 4 significant digits, None as 'none'."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def is_table(value: Any) -> bool:
    """Whether a metadata value is a non-empty list of dicts (drawn as a table, e.g. flows)."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys, in first-seen order."""
    return list(dict.fromkeys(k for row in rows for k in row))


class _SiteBuilder:
    def __init__(self, source: Source, out: Path, title: str, progress: bool) -> None:
        self.source = source
        self.out = out
        self.clean = Cleaner([*source.roots, out])
        self.title = self.clean.text(title)
        self.env = _environment()
        n = len(source.records)
        width = max(4, len(str(max(n - 1, 0))))
        self.ids = [f"{i:0{width}d}" for i in range(n)]
        self.lut = colour_lut()
        self.with_maps = 0
        self.agreement_label = ""
        self.agreement: dict[int, dict[str | None, float | None]] = {}
        self.picture_size: dict[int, tuple[int, int]] = {}
        self.has_picture: set[int] = set()
        self.progress = progress

    # ------------------------------------------------------------------ the whole site
    def build(self) -> None:
        src = self.source
        pkg = resources.files("conformer_xai.report") / "static"
        for name in ASSETS:
            (self.out / "assets" / name).write_bytes((pkg / name).read_bytes())
        write_js(self.out / "data" / "site.js", "CX_SITE", {
            "format": REPORT_FORMAT, "lut": b64(self.lut),
            "layouts": [layout.as_json() for layout in src.layouts]})
        maps_of: set[int] = set()
        with _bar(len(src.records), self.progress) as tick:
            for i, li, grids in src.maps():
                self._write_maps(i, li, grids)
                maps_of.add(i)
                self._write_pictures(i, src.layouts[li], grids)
                self._write_page(i, li)
                tick()
            for i in range(len(src.records)):
                if i not in maps_of:
                    self._write_pictures(i, None, None)
                    self._write_page(i, None)
                    tick()
        self.with_maps = len(maps_of)
        self._write_index()
        (self.out / MARKER).write_text(json.dumps({
            "format": REPORT_FORMAT, "complete": True, "source": src.kind, "images": len(src.records),
            "with_maps": self.with_maps, "title": self.title,
            "notes": self.clean.value(src.notes)}, indent=1) + "\n")

    # ------------------------------------------------------------------ per image
    def _write_maps(self, i: int, li: int, grids: dict[str, np.ndarray]) -> None:
        layout = self.source.layouts[li]
        data = b"".join(np.ascontiguousarray(grids[k], dtype=np.uint8).tobytes()
                        for k in layout.keys)
        write_js(self.out / "data" / "maps" / f"{self.ids[i]}.js", "CX_MAPS",
                 {"id": self.ids[i], "layout": li, "data": b64(data)})
        parts = dict(zip(layout.keys, layout.parts))
        label, values = branch_agreement({k: g[None] for k, g in grids.items()}, parts)
        if label:
            self.agreement_label = self.agreement_label or label
            self.agreement[i] = {h: _finite(v[0]) for h, v in values.items()}

    def _write_pictures(self, i: int, layout: Layout | None,
                        grids: dict[str, np.ndarray] | None) -> None:
        picture = self.source.picture(i)
        pid = self.ids[i]
        if picture is not None:
            self.picture_size[i] = save_picture(picture, self.out / "images" / f"{pid}.jpg")
            save_picture(picture, self.out / "thumbs" / f"{pid}.jpg", max_side=THUMB_SIDE)
            self.has_picture.add(i)
        elif layout is not None and grids is not None:
            key = _default_key(layout)
            rgb = np.frombuffer(self.lut, dtype=np.uint8).reshape(256, 3)[grids[key]]
            scale = max(1, THUMB_SIDE // max(rgb.shape[:2]))
            rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
            save_picture(rgb.astype(np.float32) / 255.0, self.out / "thumbs" / f"{pid}.jpg",
                         max_side=THUMB_SIDE)
        else:  # no image and no maps (an unreadable file): a grey square
            save_picture(np.full((THUMB_SIDE, THUMB_SIDE), 0.85, np.float32),
                         self.out / "thumbs" / f"{pid}.jpg")

    def _display_size(self, i: int, layout: Layout | None) -> tuple[int, int]:
        if i in self.picture_size:
            return self.picture_size[i]
        size = self.source.records[i].meta.get("input_size")
        if isinstance(size, list) and len(size) >= 2 and all(isinstance(s, int) for s in size):
            return int(size[-2]), int(size[-1])
        if layout is not None:
            h, w = max(layout.shapes, key=lambda s: s[0] * s[1])
            scale = max(1, 256 // max(h, w))
            return h * scale, w * scale
        return 256, 256

    def _write_page(self, i: int, li: int | None) -> None:
        record = self.source.records[i]
        layout = self.source.layouts[li] if li is not None else None
        height, width = self._display_size(i, layout)
        meta = self.clean.value(record.meta)
        view = _view_options(layout) if layout is not None else None
        tf = audio_axes(meta, height, width)
        page = self.env.get_template("image.html").render(
            title=f"{self.clean.text(record.name)} · {self.title}", up="../",
            site_title=self.title, id=self.ids[i], record=_record_view(record, self.clean),
            prev=self.ids[i - 1] if i > 0 else None,
            next=self.ids[i + 1] if i + 1 < len(self.ids) else None,
            picture=f"{self.ids[i]}.jpg" if i in self.has_picture else None,
            width=width, height=height, view=view, tf=tf,
            highlights=_highlights(meta), meta=meta,
            agreement=self.agreement.get(i), agreement_label=self.agreement_label,
            number=i + 1, total=len(self.ids))
        (self.out / "images" / f"{self.ids[i]}.html").write_text(page, encoding="utf-8")

    # ------------------------------------------------------------------ index
    def _write_index(self) -> None:
        src = self.source
        heads = list(dict.fromkeys(h for r in src.records for h in r.predictions))
        has_truth = any(r.truth for r in src.records)
        metric_names = list(dict.fromkeys(m for r in src.records for m in r.metrics))
        rho_heads = list(dict.fromkeys(h for a in self.agreement.values() for h in a))
        cols: list[dict[str, Any]] = [
            {"key": "id", "label": "#", "type": "id"},
            {"key": "thumb", "label": "image", "type": "thumb"},
            {"key": "file", "label": "file", "type": "text"}]
        if has_truth:
            cols.append({"key": "truth", "label": "true class", "type": "text"})
        cols.append({"key": "target", "label": "explained class", "type": "text"})
        for h in heads:
            cols.append({"key": f"pred_{h}", "label": f"{h} head", "type": "text",
                         "title": f"top-1 class of the {h} head"})
            cols.append({"key": f"prob_{h}", "label": f"{h} p", "type": "num",
                         "title": f"probability of the {h} head's top-1 class"})
        if len(heads) > 1:
            cols.append({"key": "agree", "label": "heads agree", "type": "bool",
                         "title": "whether every head predicts the same class"})
        if has_truth and heads:
            cols.append({"key": "correct", "label": f"{heads[0]} correct", "type": "bool",
                         "title": f"whether the {heads[0]} head predicts the true class"})
        for h in rho_heads:
            label = "ρ cnn–transformer" + (f" ({h})" if h else "")
            cols.append({"key": f"rho_{h or 'map'}", "label": label, "type": "num",
                         "title": "Spearman correlation of the CNN and transformer maps "
                                  f"({self.agreement_label})"})
        for m in metric_names:
            cols.append({"key": f"metric_{m}", "label": m, "type": "num"})
        if any(r.error for r in src.records):
            cols.append({"key": "error", "label": "error", "type": "text"})
        rows = []
        for i, r in enumerate(src.records):
            top = {h: (r.predictions[h][0] if r.predictions.get(h) else None) for h in heads}
            values: dict[str, Any] = {
                "id": self.ids[i], "thumb": None, "file": self.clean.text(r.name),
                "truth": r.truth, "target": r.target["name"] if r.target else None}
            for h in heads:
                values[f"pred_{h}"] = top[h]["name"] if top[h] else None
                values[f"prob_{h}"] = round(top[h]["prob"], 4) if top[h] else None
            named = [t["name"] for t in top.values() if t]
            values["agree"] = (len(set(named)) == 1) if len(named) == len(heads) and named \
                else None
            values["correct"] = (top[heads[0]]["name"] == r.truth) \
                if heads and top[heads[0]] and r.truth else None
            for h in rho_heads:
                v = self.agreement.get(i, {}).get(h)
                values[f"rho_{h or 'map'}"] = None if v is None else round(v, 3)
            for m in metric_names:
                values[f"metric_{m}"] = _finite(r.metrics.get(m))
            values["error"] = self.clean.text(r.error) if r.error else None
            rows.append([values[c["key"]] for c in cols if c["type"] != "thumb"])
        write_js(self.out / "data" / "index.js", "CX_INDEX", {
            "columns": cols, "rows": rows, "agreement": self.agreement_label})
        page = self.env.get_template("index.html").render(
            title=self.title, up="", site_title=self.title,
            run=self.clean.value(src.run), notes=self.clean.value(src.notes),
            columns=cols, total=len(rows), agreement_label=self.agreement_label)
        (self.out / "index.html").write_text(page, encoding="utf-8")


# ----------------------------------------------------------------------------- helpers
def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _default_key(layout: Layout) -> str:
    parts = layout.parts
    for method in DEFAULT_METHODS:
        keys = [(p[3] or 0, k) for k, p in zip(layout.keys, parts) if p[0] == method]
        if keys:
            return max(keys)[1]
    return layout.keys[0]


def _view_options(layout: Layout) -> dict[str, Any]:
    """Methods, heads, branches and blocks of a layout, and the view a page opens with."""
    parts = layout.parts
    methods = list(dict.fromkeys(p[0] for p in parts))
    heads = list(dict.fromkeys(p[1] for p in parts if p[1] is not None))
    branches = [b for b in ("cnn", "transformer") if any(p[2] == b for p in parts)]
    branches += [b for b in dict.fromkeys(p[2] for p in parts) if b not in branches]
    blocks = sorted({p[3] for p in parts if p[3] is not None})
    method = next((m for m in DEFAULT_METHODS if m in methods), methods[0])
    m_blocks = sorted({p[3] for p in parts if p[0] == method and p[3] is not None})
    head = "fused" if "fused" in heads else (heads[0] if heads else "")
    return {"methods": methods, "heads": heads, "branches": branches, "method": method,
            "head": head, "block": m_blocks[-1] if m_blocks else (blocks[-1] if blocks else 1),
            "block_count": max(1, len(m_blocks)), "block_index": max(0, len(m_blocks) - 1)}


def _highlights(meta: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    for label, keys in HIGHLIGHTS:
        for key in keys:
            if key in meta and meta[key] not in (None, "", [], {}):
                out.append((label, meta[key]))
                break
    return out


def _record_view(record: Record, clean: Cleaner) -> dict[str, Any]:
    heads = list(record.predictions)
    return {"name": clean.text(record.name), "truth": record.truth,
            "target": record.target, "error": clean.text(record.error) if record.error else None,
            "predictions": clean.value(record.predictions), "heads": heads,
            "target_prob": {h: _finite(v) for h, v in record.target_prob.items()},
            "metrics": {k: _finite(v) for k, v in record.metrics.items()},
            "notes": clean.value(record.meta.get("notes") or [])}


class _bar:
    """A tqdm progress bar on stderr when asked for and stderr is a terminal."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled and sys.stderr.isatty()
        self.bar: Any = None

    def __enter__(self) -> Callable[[], None]:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="image", file=sys.stderr, leave=False)
            return lambda: self.bar.update(1)
        return lambda: None

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
