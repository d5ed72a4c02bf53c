"""What a report is built from: an ``explain`` output folder or an ``explain-dataset`` store.

Both are read into the same shape: one :class:`Record` per image (names, predictions, metadata)
and, batch by batch, each image's maps as uint8 grids with the key layout they follow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..batch.scaling import is_signed_key, scaling_of, shown
from ..batch.store import array_name
from ..errors import Setting, SettingError
from ..registry import is_side_key
from .encode import key_parts, normalise, quantise

__all__ = ["Record", "Layout", "Source", "ExplainFolder", "StoreSource", "open_source"]

SIDECAR = ".maps.json"
#: Sidecar fields that are the arrays' table of contents, not metadata to show.
_SIDECAR_INTERNAL = ("format", "map_keys", "raw_keys", "logit_heads", "class_names", "meta")


@dataclass
class Layout:
    """The map keys one image has, their grid sizes and their parts (method, head, branch, k)."""

    keys: list[str]
    shapes: list[tuple[int, int]]
    parts: list[list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.parts = [key_parts(k) for k in self.keys]

    def as_json(self) -> dict[str, Any]:
        offsets = np.concatenate([[0], np.cumsum([h * w for h, w in self.shapes])]).tolist()
        return {"keys": self.keys, "shapes": [list(s) for s in self.shapes],
                "offsets": offsets[:-1], "parts": self.parts}


@dataclass
class Record:
    """One image of the report.

    Attributes:
        name: The image's path relative to the folder explained (shown, and matched by filter).
        target: The explained class ``{"index", "name"}``.
        predictions: head -> ranked ``[{"index", "name", "prob"}]`` (top-5, or top-1 in stores).
        truth: The true class name when known (generated scenes, class folders), else None.
        meta: Everything known about how the maps were made, shown on the image page.
        error: Why the image has no maps (unreadable file), else None.
        metrics: Per-image scores (name -> number) when the run recorded them.
        target_prob: head -> probability of the explained class, when known.
    """

    name: str
    target: dict[str, Any] | None
    predictions: dict[str, list[dict[str, Any]]]
    truth: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    target_prob: dict[str, float] = field(default_factory=dict)


class Source:
    """Base of the two readers: records, layouts, and maps and pictures per image."""

    kind = ""
    records: list[Record]
    layouts: list[Layout]
    roots: list[Path]
    run: dict[str, Any]
    notes: list[str]

    def maps(self, batch: int = 256) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """Yield ``(image position, layout index, {key: uint8 (h, w)})`` in record order
        (images without maps are left out)."""
        raise NotImplementedError

    def picture(self, i: int) -> np.ndarray | None:
        """The image the model saw, float (H, W, C) in [0, 1], or None when not available."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- explain folder
class ExplainFolder(Source):
    """The ``<name>.maps.npz`` + ``<name>.maps.json`` pairs that ``explain --save-arrays``
    writes (``Explanation.save``), with the ``<name>.json`` summaries beside them."""

    kind = "explain"

    def __init__(self, root: Path, labels: Sequence[str] | None = None,
                 skip: Path | None = None,
                 files: Sequence[str | os.PathLike] | None = None) -> None:
        from ..explain.result import SAVE_FORMAT

        self.root = root
        skip = skip.resolve() if skip is not None else None
        if files is not None:
            sidecars = sorted(Path(f).with_suffix(".json") for f in files)
        else:
            sidecars = sorted(p for p in root.rglob(f"*{SIDECAR}")
                              if skip is None or skip not in p.resolve().parents)
        if not sidecars:
            if files is not None:
                raise ValueError("no explained image to report")
            if any(root.rglob("*.json")):
                raise ValueError(f"{root} holds explain outputs without their arrays; run "
                                 "explain with --save-arrays (or --report) to build a report")
            raise ValueError(f"{root} is neither an explain output folder (with --save-arrays) "
                             "nor an explain-dataset store")
        self.files: list[Path] = []
        self.records, self.layouts, self.layout_of = [], [], []
        self.roots = [root, Path.cwd(), Path.home()]
        self.notes = []
        index: dict[tuple[tuple[str, tuple[int, int]], ...], int] = {}
        runs = []
        for sidecar in sidecars:
            try:
                info = json.loads(sidecar.read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"{sidecar}: not readable as JSON ({exc})") from None
            if info.get("format") != SAVE_FORMAT:
                raise ValueError(f"{sidecar} is not a sidecar written by Explanation.save")
            npz = sidecar.with_name(sidecar.name[: -len(SIDECAR)] + ".maps.npz")
            if not npz.is_file():
                raise FileNotFoundError(f"{npz} is missing (its sidecar {sidecar.name} exists)")
            stem = sidecar.relative_to(root).as_posix()[: -len(SIDECAR)]
            record, shapes = self._record(stem, sidecar, npz, info, labels)
            keys = [k for k in info["raw_keys"] if not is_side_key(k)]
            signature = tuple((k, shapes[k]) for k in keys)
            if signature not in index:
                index[signature] = len(self.layouts)
                self.layouts.append(Layout(keys, [shapes[k] for k in keys]))
            self.layout_of.append(index[signature])
            self.files.append(npz)
            self.records.append(record)
            runs.append((info.get("model_name"), record.meta.get("weights_source")))
        self.run = {"source": "explain output folder", "images": len(self.records),
                    "models": sorted({str(m) for m, _ in runs if m}),
                    "weights": sorted({str(w) for _, w in runs if w})}

    def _record(self, stem: str, sidecar: Path, npz: Path, info: dict[str, Any],
                labels: Sequence[str] | None) -> tuple[Record, dict[str, tuple[int, int]]]:
        names = list(labels) if labels is not None else info.get("class_names")
        with np.load(npz) as data:
            shapes = {k: tuple(int(s) for s in data[f"raw/{k}"].shape[-2:])
                      for k in info["raw_keys"]}
            logits = {h: data[f"logits/{h}"].astype(np.float64)[0] for h in info["logit_heads"]}
            target = int(np.asarray(data["target"]).reshape(-1)[0])
        meta = dict(info.get("meta") or {})
        extra = {k: v for k, v in info.items() if k not in _SIDECAR_INTERNAL}
        meta = {"model": info.get("model_name"), **{k: v for k, v in extra.items()
                                                    if k != "model_name"}, **meta}
        summary = sidecar.with_name(sidecar.name[: -len(SIDECAR)] + ".json")
        metrics: dict[str, float] = {}
        if summary.is_file():
            try:
                extra_summary = json.loads(summary.read_text())
            except (OSError, ValueError):
                extra_summary = {}
            for name, value in (extra_summary.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics[str(name)] = float(value)
        for name, value in (meta.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[str(name)] = float(value)

        def name_of(i: int) -> str:
            return names[i] if names is not None and 0 <= i < len(names) else str(i)

        preds, tprob = {}, {}
        for head, z in logits.items():
            p = np.exp(z - z.max())
            p /= p.sum()
            order = np.argsort(-p, kind="stable")[:5]
            preds[head] = [{"index": int(i), "name": name_of(int(i)), "prob": float(p[i])}
                           for i in order]
            tprob[head] = float(p[target]) if 0 <= target < p.size else float("nan")
        truth = truth_of(meta.get("input"), names)
        record = Record(name=stem, target={"index": target, "name": name_of(target)},
                        predictions=preds, truth=truth, meta=meta, metrics=metrics,
                        target_prob=tprob)
        return record, shapes

    def maps(self, batch: int = 256) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        for i, npz in enumerate(self.files):
            layout = self.layouts[self.layout_of[i]]
            with np.load(npz) as data:
                grids = {k: quantise(normalise(_positive(k, np.asarray(data[f"raw/{k}"],
                                                                      np.float32)[0])))
                         for k in layout.keys}
            yield i, self.layout_of[i], grids

    def picture(self, i: int) -> np.ndarray | None:
        with np.load(self.files[i]) as data:
            return np.asarray(data["image"][0], dtype=np.float32) if "image" in data else None


# ----------------------------------------------------------------------------- store
class StoreSource(Source):
    """A store written by ``explain-dataset`` (see :mod:`conformer_xai.batch.store`).

    The store holds the maps, not the images: ``images`` is the folder the run read (default:
    the store's recorded input folder, when it has one); without it the pages show the maps
    alone.
    """

    kind = "store"

    def __init__(self, root: Path, images: Path | None = None,
                 labels: Sequence[str] | None = None) -> None:
        import zarr

        from ..batch.store import ATTR, IMAGES, PROGRESS

        self.root = root
        self.group = zarr.open_group(str(root), mode="r")
        self.config: dict[str, Any] = dict(self.group.attrs[ATTR])
        self.paths: list[str] = json.loads((root / IMAGES).read_text())
        progress = json.loads((root / PROGRESS).read_text()) if (root / PROGRESS).is_file() \
            else {"done": [], "failed": {}}
        n = len(self.paths)
        done = np.zeros(n, dtype=bool)
        for a, b in progress["done"]:
            done[a:b] = True
        failed = {int(k): str(v) for k, v in progress["failed"].items()}
        self.notes = []
        if not done.all():
            self.notes.append(f"the store is unfinished: {int(done.sum())} of {n} images done; "
                              "the report shows those")
        self.positions = np.flatnonzero(done)
        recorded = self.config.get("input_dir")
        if images is None and isinstance(recorded, str) and Path(recorded).is_dir():
            images = Path(recorded)
        if images is not None and not images.is_dir():
            raise FileNotFoundError(f"images folder not found: {images}")
        self.images = images
        self._transform: tuple[Any, int] | None = None
        if images is None:
            self.notes.append("the store holds maps, not images: pass the folder the run read "
                              "(--images DIR) to see the maps over the images")
        self.roots = [root] + ([images] if images is not None else []) + [Path.cwd(),
                                                                          Path.home()]
        keys = list(self.config["map_keys"])
        shapes = [tuple(int(s) for s in self.group[array_name("maps", k)].shape[1:])
                  for k in keys]
        self.layouts = [Layout(keys, shapes)]
        heads = list(self.config["logit_heads"])
        names = list(labels) if labels is not None else self.config.get("class_names")
        if names is None:
            names = default_class_names(self.config.get("model_name"),
                                        self.config.get("num_classes"))
        self.class_names = names
        g = self.group
        target = g["target"][:]
        cols = {h: (g[f"pred/{h}"][:], g[f"prob/{h}"][:], g[f"target_prob/{h}"][:])
                for h in heads}
        metrics = {}
        if "metrics" in g:
            metrics = {name: np.asarray(arr[:], dtype=np.float64)
                       for name, arr in g["metrics"].arrays()}
        truths = truth_table(images, self.paths, names)
        shared = {k: v for k, v in self.config.items()
                  if k not in ("map_keys", "files_sha256", "class_names")}
        shared["model"] = shared.pop("model_name", None)
        self.records = []
        for pos in self.positions:
            pos = int(pos)

            def name_of(i: int) -> str:
                return names[i] if names is not None and 0 <= i < len(names) else str(i)

            error = failed.get(pos)
            preds, tprob = {}, {}
            if error is None:
                for h, (pred, prob, tp) in cols.items():
                    preds[h] = [{"index": int(pred[pos]), "name": name_of(int(pred[pos])),
                                 "prob": float(prob[pos])}]
                    tprob[h] = float(tp[pos])
            t = int(target[pos])
            self.records.append(Record(
                name=self.paths[pos],
                target={"index": t, "name": name_of(t)} if t >= 0 else None,
                predictions=preds, truth=truths.get(self.paths[pos]),
                meta={**shared, "input": self.paths[pos], "store_index": pos}, error=error,
                metrics={k: float(v[pos]) for k, v in metrics.items()}, target_prob=tprob))
        self.failed_positions = {i for i, p in enumerate(self.positions) if int(p) in failed}
        self.run = {"source": "explain-dataset store", "images": len(self.records),
                    "models": [str(self.config.get("model_name"))],
                    "stored": n, "failed": len(self.failed_positions)}

    def maps(self, batch: int = 256) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        keys = self.layouts[0].keys
        arrays = {k: self.group[array_name("maps", k)] for k in keys}
        signed = {k: (self.group[array_name("range", k)], scaling_of(self.config, k))
                  for k in keys if is_signed_key(k)}
        chunk = max(1, int(self.config.get("chunk", batch)))
        step = max(chunk, batch // chunk * chunk)
        pos = self.positions
        for start in range(0, len(pos), step):
            sel = pos[start:start + step]
            lo, hi = int(sel[0]), int(sel[-1]) + 1
            block = {k: quantise(shown(a[lo:hi], signed[k][0][lo:hi], signed[k][1], True)
                                 if k in signed else a[lo:hi]) for k, a in arrays.items()}
            for j, p in enumerate(sel):
                i = start + j
                if i in self.failed_positions:
                    continue
                yield i, 0, {k: v[int(p) - lo] for k, v in block.items()}

    def picture(self, i: int) -> np.ndarray | None:
        """The image as the model saw it: :func:`conformer_xai.load_image`'s display image
        (same reader, same resize and crop), with the transform built once per store."""
        if self.images is None:
            return None
        from ..data import _geometric_transform, _read_image, resolve_data_config

        if self._transform is None:
            cfg = resolve_data_config(None, self.config.get("data_config"))
            self._transform = (_geometric_transform(cfg, bool(self.config.get("crop", True))),
                               int(cfg["input_size"][0]))
        transform, chans = self._transform
        try:
            pil = _read_image(self.images / self.records[i].name, chans)
        except (OSError, ValueError):
            return None
        pixels = transform(pil).float().clamp(0.0, 255.0).div(255.0)
        return pixels.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- helpers
def _positive(key: str, raw: np.ndarray) -> np.ndarray:
    """A raw grid as ``Explanation.maps`` shows its method: the positive part of signed maps."""
    return np.maximum(raw, 0.0) if is_signed_key(key) else raw


def default_class_names(model_name: Any, num_classes: Any) -> list[str] | None:
    """The class names ``explain`` would use for a model of that name and class count."""
    if not isinstance(num_classes, int) or num_classes <= 0:
        return None
    from ..data import class_names_for

    try:
        return class_names_for(SimpleNamespace(num_classes=num_classes, model_name=model_name,
                                               pretrained_cfg={}))
    except ValueError:
        return None


def truth_table(folder: Path | None, paths: Sequence[str], names: Sequence[str] | None
                ) -> dict[str, str]:
    """True classes of images: from a ``scenes.json`` (the synthetic scenes' record) in an
    image's folder under ``folder`` (when given), else from class folders
    (``<class name>/<file>``) named like the classes."""
    out: dict[str, str] = {}
    known = set(names or ())
    scene_files: dict[Path, dict[str, str]] = {}
    for rel in paths:
        name = None
        if folder is not None:
            parent = (folder / rel).parent
            if parent not in scene_files:
                scene_files[parent] = _scenes_json(parent)
            name = scene_files[parent].get(Path(rel).name)
        if name is None:
            parts = Path(rel).parts
            if len(parts) > 1 and parts[-2] in known:
                name = parts[-2]
        if name is not None:
            out[rel] = name
    return out


def truth_of(input_path: Any, names: Sequence[str] | None) -> str | None:
    """The true class of one explained input, when its folder records it (see
    :func:`truth_table`)."""
    if not isinstance(input_path, str) or not input_path:
        return None
    path = Path(input_path)
    if not path.is_file():
        return None
    return truth_table(path.parent, [path.name], names).get(path.name) or (
        path.parent.name if names and path.parent.name in names else None)


def _scenes_json(folder: Path) -> dict[str, str]:
    file = folder / "scenes.json"
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
        return {str(s["image"]): str(s["class_name"]) for s in data.get("scenes", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def open_source(path: str | os.PathLike, images: str | os.PathLike | None = None,
                labels: Sequence[str] | None = None, skip: Path | None = None,
                files: Sequence[str | os.PathLike] | None = None) -> Source:
    """Read an explain output folder or an explain-dataset store.

    Raises:
        FileNotFoundError: ``path`` (or ``images``) does not exist.
        ValueError: ``path`` is neither, or ``images`` is given for an explain folder.
    """
    from ..batch.store import is_store

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (give an explain output folder or an "
                                "explain-dataset store)")
    if is_store(root):
        return StoreSource(root, Path(images) if images is not None else None, labels)
    if images is not None:
        raise SettingError("{images} is for explain-dataset stores; an explain folder holds its "
                           "images", images=Setting("images"))
    return ExplainFolder(root, labels, skip, files)
