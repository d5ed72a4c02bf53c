"""The on-disk result of a dataset run: a chunked Zarr store plus progress and predictions files.

Layout of a store directory (one per process; ``<store>/shard-<rank>`` under ``torchrun``)::

    zarr.json                   root group; attrs["conformer_xai"] = the run's configuration,
                                including "tap" and "geometry" (map key -> stride and grid:
                                upsample with conformer_xai.explain.result.upsample_grid)
    maps/<map key>              (N, h, w) maps at grid resolution, min-max normalised per image
                                (float16 by default), chunked (batch, h, w)
    range/<map key>             (N, 2) float32: each image's raw minimum and maximum, so that
                                raw = min + map * (max - min)
    target                      (N,) int64: the class explained
    pred/<head>, prob/<head>    (N,) top-1 class and its probability per classifier head
    target_prob/<head>          (N,) probability of the explained class per head
    index                       (N,) int64: position of each image in the sorted file list
    images.json                 relative paths of the N images, in store order
    progress.json               the done positions (ranges) and unreadable files; atomic writes
    predictions.csv             written from the store once every image is done

A batch is written in this order: every array of the batch, then ``progress.json`` (replaced
atomically with :func:`os.replace`). Batches are chunk-aligned, so writing one never rewrites a
chunk of another; after a kill, positions not listed as done are simply computed again.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MapStore", "FORMAT", "is_store", "atomic_write_text", "ranges_from_mask"]

FORMAT = "conformer-xai dataset maps v1"
ATTR = "conformer_xai"
PROGRESS = "progress.json"
IMAGES = "images.json"
PREDICTIONS = "predictions.csv"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and :func:`os.replace`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ranges_from_mask(mask: np.ndarray) -> list[list[int]]:
    """``[[start, stop), ...]`` runs of True in a boolean mask."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def is_store(path: Path) -> bool:
    """Whether ``path`` holds a store written by this module (complete or not)."""
    meta = path / "zarr.json"
    if not meta.is_file():
        return False
    try:
        return ATTR in json.loads(meta.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return False


def _zarr():
    import zarr

    return zarr


class MapStore:
    """One store directory: create, open, write chunk-aligned batches, mark them done."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.group = _zarr().open_group(str(self.path), mode="r+")
        self.config: dict[str, Any] = dict(self.group.attrs[ATTR])
        self.n = int(self.config["n"])
        self.chunk = int(self.config["chunk"])
        self.map_keys: list[str] = list(self.config["map_keys"])
        self.logit_heads: list[str] = list(self.config["logit_heads"])

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path: str | Path, config: Mapping[str, Any], paths: Sequence[str],
               index: Sequence[int], grids: Mapping[str, tuple[int, int]],
               logit_heads: Sequence[str], chunk: int, map_dtype: str) -> MapStore:
        """Create an empty store (overwrites ``path``'s arrays; callers check ownership first).

        Args:
            path: Store directory.
            config: The run's configuration (compared on resume).
            paths: Relative image paths, in store order.
            index: Global position of each image.
            grids: Map key -> (h, w) grid size.
            logit_heads: Classifier heads whose predictions are stored.
            chunk: Images per chunk (= the batch size).
            map_dtype: numpy dtype name of the maps ("float16", "float32", ...).
        """
        path = Path(path)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        n = len(paths)
        zarr = _zarr()
        group = zarr.open_group(str(path), mode="w")
        c = max(1, min(chunk, n))
        for key, (h, w) in grids.items():
            group.create(f"maps/{key}", shape=(n, h, w), chunks=(c, h, w), dtype=map_dtype,
                         fill_value=0)
            group.create(f"range/{key}", shape=(n, 2), chunks=(c, 2), dtype="float32",
                         fill_value=0)
        group.create("target", shape=(n,), chunks=(c,), dtype="int64", fill_value=-1)
        for head in logit_heads:
            group.create(f"pred/{head}", shape=(n,), chunks=(c,), dtype="int64", fill_value=-1)
            for name in ("prob", "target_prob"):
                group.create(f"{name}/{head}", shape=(n,), chunks=(c,), dtype="float32",
                             fill_value=0)
        idx = group.create("index", shape=(n,), chunks=(max(1, min(n, 65536)),), dtype="int64",
                           fill_value=-1)
        idx[:] = np.asarray(index, dtype=np.int64)
        atomic_write_text(path / IMAGES, json.dumps(list(paths)))
        full = {**config, "format": FORMAT, "n": n, "chunk": c, "map_dtype": map_dtype,
                "map_keys": list(grids), "logit_heads": list(logit_heads)}
        group.attrs.update({ATTR: full})
        store = cls(path)
        store._write_progress([], {})  # the store exists (and is resumable) from here on
        return store

    # ------------------------------------------------------------------ progress
    def progress(self) -> dict[str, Any]:
        """``{"done": [[start, stop), ...], "failed": {position: message}}``."""
        data = json.loads((self.path / PROGRESS).read_text())
        return {"done": data["done"], "failed": {int(k): v for k, v in data["failed"].items()}}

    def done_mask(self) -> np.ndarray:
        """Boolean (N,) mask of the positions whose records are complete."""
        mask = np.zeros(self.n, dtype=bool)
        for a, b in self.progress()["done"]:
            mask[a:b] = True
        return mask

    def _write_progress(self, done: list[list[int]], failed: Mapping[int, str]) -> None:
        atomic_write_text(self.path / PROGRESS, json.dumps(
            {"done": done, "failed": {str(k): v for k, v in sorted(failed.items())}}))

    def remove_partial_files(self) -> int:
        """Delete temporary files a killed write left behind (zarr's ``*.partial``, ours)."""
        count = 0
        for p in list(self.path.rglob("*.partial")) + list(self.path.glob(".*.tmp")):
            p.unlink(missing_ok=True)
            count += 1
        return count

    # ------------------------------------------------------------------ writing
    def write_batch(self, start: int, stop: int, maps: Mapping[str, np.ndarray],
                    ranges: Mapping[str, np.ndarray], target: np.ndarray,
                    preds: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    failed: Mapping[int, str]) -> None:
        """Write positions ``[start, stop)`` (one chunk), then mark them done.

        Args:
            maps: key -> (n, h, w) normalised maps. ranges: key -> (n, 2) raw min and max.
            target: (n,) explained classes. preds: head -> (pred, prob, target_prob), each (n,).
            failed: position -> error message for unreadable images (their maps are NaN).
        """
        if start % self.chunk or (stop - start != self.chunk and stop != self.n):
            raise ValueError(f"batch [{start}, {stop}) is not aligned to chunks of {self.chunk}")
        g = self.group
        for key in self.map_keys:
            g[f"maps/{key}"][start:stop] = maps[key]
            g[f"range/{key}"][start:stop] = ranges[key]
        g["target"][start:stop] = target
        for head in self.logit_heads:
            pred, prob, tprob = preds[head]
            g[f"pred/{head}"][start:stop] = pred
            g[f"prob/{head}"][start:stop] = prob
            g[f"target_prob/{head}"][start:stop] = tprob
        self.mark_done(start, stop, failed)

    def mark_done(self, start: int, stop: int, failed: Mapping[int, str] | None = None) -> None:
        """Add ``[start, stop)`` to the done positions (atomic replace of ``progress.json``)."""
        state = self.progress()
        mask = self.done_mask()
        mask[start:stop] = True
        fails = {k: v for k, v in state["failed"].items() if not start <= k < stop}
        fails.update(failed or {})
        self._write_progress(ranges_from_mask(mask), fails)

    # ------------------------------------------------------------------ reading
    @property
    def paths(self) -> list[str]:
        """Relative image paths in store order."""
        return json.loads((self.path / IMAGES).read_text())

    def complete(self) -> bool:
        """Whether every position is done."""
        return bool(self.done_mask().all())

    def write_predictions(self) -> Path:
        """Write ``predictions.csv`` (atomically) from the stored arrays; returns its path.

        Columns: index, path, target, then per classifier head ``pred_<head>``, ``prob_<head>``
        (top-1 class and probability) and ``target_prob_<head>``, then ``error`` (empty when the
        image was read).
        """
        g = self.group
        failed = self.progress()["failed"]
        index = g["index"][:]
        target = g["target"][:]
        cols = {h: (g[f"pred/{h}"][:], g[f"prob/{h}"][:], g[f"target_prob/{h}"][:])
                for h in self.logit_heads}
        header = ["index", "path", "target"]
        for h in self.logit_heads:
            header += [f"pred_{h}", f"prob_{h}", f"target_prob_{h}"]
        header.append("error")
        rows: list[list[Any]] = []
        for pos, path in enumerate(self.paths):
            row: list[Any] = [int(index[pos]), path, int(target[pos])]
            for h in self.logit_heads:
                pred, prob, tprob = cols[h]
                row += [int(pred[pos]), _fmt(prob[pos]), _fmt(tprob[pos])]
            row.append(failed.get(pos, ""))
            rows.append(row)
        out = self.path / PREDICTIONS
        atomic_write_text(out, _csv_text(header, rows))
        return out


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{float(value):.6g}"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
