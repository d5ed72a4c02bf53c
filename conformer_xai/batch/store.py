"""The on-disk result of a dataset run: a chunked Zarr store plus progress and predictions files.

Layout of a store directory (one per process; ``<store>/shard-<rank>`` under ``torchrun``)::

    zarr.json                   root group; attrs["conformer_xai"] = the run's configuration,
                                including "tap" and "geometry" (map key -> stride and grid:
                                upsample with conformer_xai.explain.result.upsample_grid)
    maps/<map key>              (N, h, w) maps at grid resolution (float16 by default),
                                chunked (batch, h, w): min-max normalised per image, except the
                                signed maps (lrp, attnlrp, integrated_gradients; listed in
                                attrs["conformer_xai"]["signed_maps"]), divided by each image's
                                max |raw| into [-1, 1] so that zero stays 0 and the sign is kept
    range/<map key>             (N, 2) float32: each image's raw minimum and maximum, so that
                                raw = min + map * (max - min), or for a signed map
                                raw = map * max(|min|, |max|) (:mod:`.scaling`)
    (input-resolution keys <method>/<head> of lrp, attnlrp, integrated_gradients and smoothgrad
    live at maps/<method>/<head>/input and range/<method>/<head>/input, beside their per-tap
    keys; :func:`array_name` gives the array of a key. Stores written before "signed_maps"
    existed hold signed maps min-max normalised over the signed range: still readable through
    the range, not resumable.)
    target                      (N,) int64: the class explained
    pred/<head>, prob/<head>    (N,) top-1 class and its probability per classifier head
    target_prob/<head>          (N,) probability of the explained class per head
    index                       (N,) int64: position of each image in the sorted file list
                                (images added later with ``extend`` follow, sorted among
                                themselves)
    file/stat, file/sha256      (N, 3) int64 size, mtime_ns, ctime_ns and (N, 32) uint8 sha256
                                of each image file as it was read (-1 and 0: not read yet)
    images.json                 relative paths of the N images, in store order
    progress.json               the done positions (ranges), unreadable files and vanished
                                ones; atomic writes. Written last at creation: a store folder
                                without it (or with ``.conformer-xai-creating``) is a
                                half-created store of ours, created again by the next run
    predictions.csv             written from the store once every image is done

A batch is written in this order: every array of the batch, then ``progress.json`` (replaced
atomically with :func:`os.replace`). Batches are chunk-aligned, so writing one never rewrites a
chunk of another; after a kill, positions not listed as done are simply computed again.

A new store is built in a temporary sibling folder (``.<name>.creating-*``) and renamed into
place; in an existing empty folder (kept as it is: permissions, a symlink to it, ``.``) it is
built in place behind the marker file ``.conformer-xai-creating``, removed last. Files are
created with the usual permissions (0666 less the umask).
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

from ..files import UMASK, atomic_write_text
from .stops import stop_point

__all__ = ["MapStore", "FORMAT", "is_store", "store_state", "atomic_write_text",
           "ranges_from_mask"]

FORMAT = "conformer-xai dataset maps v1"
ATTR = "conformer_xai"
PROGRESS = "progress.json"
IMAGES = "images.json"
PREDICTIONS = "predictions.csv"
CREATING = ".conformer-xai-creating"
#: Entries of a store folder (those a merge moves into the store root).
STORE_ENTRIES = ("zarr.json", "maps", "range", "target", "pred", "prob", "target_prob", "file",
                 "index", IMAGES, PREDICTIONS, PROGRESS)
#: Files of ours that may sit inside a store folder without being part of the store.
LOCAL_FILES = (CREATING, ".conformer-xai.lock")


def array_name(kind: str, key: str) -> str:
    """The zarr array of a map key: ``<kind>/<key>``, with ``/input`` appended to the input-
    resolution keys ``<method>/<head>`` of LRP, AttnLRP, IG and SmoothGrad, whose per-tap keys
    ``<method>/<head>/<branch>/<k>`` would otherwise nest arrays inside an array."""
    from ..explain.result import INPUT_METHODS

    parts = key.split("/")
    if len(parts) == 2 and parts[0] in INPUT_METHODS:
        return f"{kind}/{key}/input"
    return f"{kind}/{key}"


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


def store_state(path: Path) -> str:
    """What ``path`` holds: "absent", "file" (not a folder), "empty", "creating" (a store of
    ours killed while being created), "store", "shards" (the shards of a torchrun run, not
    merged yet, perhaps with an interrupted merge's entries) or "foreign" (anything else:
    never touched)."""
    if not path.exists():
        return "absent"
    if not path.is_dir():
        return "file"
    entries = [p.name for p in path.iterdir() if p.name not in LOCAL_FILES]
    complete = is_store(path) and (path / PROGRESS).exists()
    if (not complete and any(is_shard_entry(name) for name in entries)
            and all(is_shard_entry(name) or name in STORE_ENTRIES for name in entries)):
        return "shards"  # with the leftovers of an interrupted merge, maybe: never cleared
    if (path / CREATING).exists():
        return "creating"
    if is_store(path):
        return "store" if complete else "creating"
    if not entries:
        return "empty"
    return "foreign"


def is_shard_entry(name: str) -> bool:
    """Whether a name inside a torchrun store root is ours: ``shard-<r>``, its lock file, a
    shard being created (``.shard-<r>.creating-*``) or a merge's leftover ``.merge-tmp``."""
    if name == ".merge-tmp":
        return True
    if name.startswith(".shard-") and ".creating-" in name:
        name = name[1:name.index(".creating-")]
    stem = name.removesuffix(".lock")
    return stem.startswith("shard-") and stem[6:].isdigit()


def clear_folder(path: Path, keep: Sequence[str] = LOCAL_FILES) -> None:
    """Remove everything inside ``path`` (a folder of ours) except the names in ``keep``."""
    for p in list(path.iterdir()):
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


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
        """Create an empty store; an interrupted creation leaves nothing a later run refuses.

        A missing ``path`` is built in a temporary sibling folder and renamed into place. An
        existing folder (empty, half-created by us, or a store being replaced: callers check
        ownership and hold the store's lock) is emptied and built in place, behind the marker
        file ``.conformer-xai-creating`` that is removed last; the folder itself (its
        permissions, a symlink to it) is kept.

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
        if path.is_symlink() and not path.exists():
            raise FileNotFoundError(f"{path} is a symbolic link to a missing folder")
        parent = path.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        for leftover in parent.glob(f".{path.absolute().name}.creating-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # of a killed creation (we hold the lock)
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.absolute().name}.creating-"))
            try:
                os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp creates 0700
                cls._build(tmp, config, paths, index, grids, logit_heads, chunk, map_dtype)
                os.rename(tmp, path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return cls(path)
        marker = path / CREATING
        marker.touch()
        clear_folder(path)
        cls._build(path, config, paths, index, grids, logit_heads, chunk, map_dtype)
        marker.unlink()
        return cls(path)

    @classmethod
    def _build(cls, path: Path, config: Mapping[str, Any], paths: Sequence[str],
               index: Sequence[int], grids: Mapping[str, tuple[int, int]],
               logit_heads: Sequence[str], chunk: int, map_dtype: str) -> None:
        n = len(paths)
        zarr = _zarr()
        group = zarr.open_group(str(path), mode="a")
        c = max(1, min(chunk, n))
        for key, (h, w) in grids.items():
            group.create(array_name("maps", key), shape=(n, h, w), chunks=(c, h, w),
                         dtype=map_dtype, fill_value=0)
            group.create(array_name("range", key), shape=(n, 2), chunks=(c, 2), dtype="float32",
                         fill_value=0)
        group.create("target", shape=(n,), chunks=(c,), dtype="int64", fill_value=-1)
        for head in logit_heads:
            group.create(f"pred/{head}", shape=(n,), chunks=(c,), dtype="int64", fill_value=-1)
            for name in ("prob", "target_prob"):
                group.create(f"{name}/{head}", shape=(n,), chunks=(c,), dtype="float32",
                             fill_value=0)
        group.create("file/stat", shape=(n, 3), chunks=(c, 3), dtype="int64", fill_value=-1)
        group.create("file/sha256", shape=(n, 32), chunks=(c, 32), dtype="uint8", fill_value=0)
        idx = group.create("index", shape=(n,), chunks=(max(1, min(n, 65536)),), dtype="int64",
                           fill_value=-1)
        idx[:] = np.asarray(index, dtype=np.int64)
        atomic_write_text(path / IMAGES, json.dumps(list(paths)))
        full = {**config, "format": FORMAT, "n": n, "chunk": c, "map_dtype": map_dtype,
                "map_keys": list(grids), "logit_heads": list(logit_heads)}
        group.attrs.update({ATTR: full})
        stop_point("create")
        # the completion marker: the store exists (and is resumable) from here on
        _write_progress(path, [], {}, [])

    def extend(self, paths: Sequence[str]) -> None:
        """Append images (``paths``, in store order after the stored ones) to the store.

        The last chunk, when partial, is marked undone first (its batch is computed again with
        the new images, so that batches stay chunk-aligned); then every array grows, the index
        and ``images.json`` follow. An interrupted call is completed by calling it again with
        the same paths (``images.json``, written last, still lists the old images only).
        """
        old = self.paths
        n0, n1 = len(old), len(old) + len(paths)
        start = n0 - n0 % self.chunk
        if start < n0:
            self.unmark(range(start, n0))
        self.group.attrs.update({ATTR: {**self.config, "n": n1}})
        for arr in _all_arrays(self.group):
            arr.resize((n1, *arr.shape[1:]))
        self.group["index"][n0:n1] = np.arange(n0, n1, dtype=np.int64)
        atomic_write_text(self.path / IMAGES, json.dumps([*old, *paths]))
        self.config["n"] = self.n = n1

    # ------------------------------------------------------------------ progress
    def progress(self) -> dict[str, Any]:
        """``{"done": [[start, stop), ...], "failed": {position: message}, "vanished":
        [position, ...]}`` (vanished: done images whose file no longer exists)."""
        data = json.loads((self.path / PROGRESS).read_text())
        return {"done": data["done"], "failed": {int(k): v for k, v in data["failed"].items()},
                "vanished": [int(v) for v in data.get("vanished", [])]}

    def done_mask(self) -> np.ndarray:
        """Boolean (N,) mask of the positions whose records are complete."""
        mask = np.zeros(self.n, dtype=bool)
        for a, b in self.progress()["done"]:
            mask[a:b] = True
        return mask

    def _write_progress(self, done: list[list[int]], failed: Mapping[int, str],
                        vanished: Sequence[int] | None = None) -> None:
        if vanished is None:
            vanished = self.progress()["vanished"]
        _write_progress(self.path, done, failed, vanished)

    def unmark(self, positions: Iterable[int]) -> None:
        """Mark positions undone (to be computed again), with their failures cleared; vanished
        ones stay marked (their records are kept when their batch is written again)."""
        drop = {int(p) for p in positions}
        if not drop:
            return
        state = self.progress()
        mask = self.done_mask()
        mask[sorted(drop)] = False
        self._write_progress(ranges_from_mask(mask),
                             {k: v for k, v in state["failed"].items() if k not in drop},
                             state["vanished"])

    def set_vanished(self, positions: Iterable[int]) -> None:
        """Record the done positions whose image file no longer exists."""
        state = self.progress()
        self._write_progress(state["done"], state["failed"], sorted({int(p) for p in positions}))

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
                    failed: Mapping[int, str],
                    files: tuple[np.ndarray, np.ndarray] | None = None,
                    keep: Sequence[int] = ()) -> None:
        """Write positions ``[start, stop)`` (one chunk), then mark them done.

        Args:
            maps: key -> (n, h, w) normalised maps. ranges: key -> (n, 2) raw min and max.
            target: (n,) explained classes. preds: head -> (pred, prob, target_prob), each (n,).
            failed: position -> error message for unreadable images (their maps are NaN).
            files: ((n, 3) size, mtime_ns, ctime_ns; (n, 32) sha256 bytes) of the files read.
            keep: Positions whose stored records are kept as they are (images explained before
                whose file vanished since), and stay marked vanished.
        """
        if start % self.chunk or (stop - start != self.chunk and stop != self.n):
            raise ValueError(f"batch [{start}, {stop}) is not aligned to chunks of {self.chunk}")
        g = self.group
        keep = sorted(int(p) for p in keep)

        def put(name: str, value: np.ndarray) -> None:
            if keep:
                value = np.array(value, copy=True)
                value[np.asarray(keep) - start] = g[name].get_orthogonal_selection((keep,))
            g[name][start:stop] = value

        for key in self.map_keys:
            put(array_name("maps", key), maps[key])
            put(array_name("range", key), ranges[key])
        put("target", target)
        for head in self.logit_heads:
            pred, prob, tprob = preds[head]
            put(f"pred/{head}", pred)
            put(f"prob/{head}", prob)
            put(f"target_prob/{head}", tprob)
        if files is not None and "file" in g:
            put("file/stat", files[0])
            put("file/sha256", files[1])
        self.mark_done(start, stop, {k: v for k, v in failed.items() if k not in keep}, keep)

    def mark_done(self, start: int, stop: int, failed: Mapping[int, str] | None = None,
                  vanished: Sequence[int] = ()) -> None:
        """Add ``[start, stop)`` to the done positions (atomic replace of ``progress.json``);
        of its positions, ``vanished`` stay marked vanished."""
        state = self.progress()
        mask = self.done_mask()
        mask[start:stop] = True
        fails = {k: v for k, v in state["failed"].items() if not start <= k < stop}
        fails.update(failed or {})
        kept = [v for v in state["vanished"] if not start <= v < stop or v in vanished]
        self._write_progress(ranges_from_mask(mask), fails, kept)

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
        state = self.progress()
        failed = state["failed"]
        for pos in state["vanished"]:
            failed.setdefault(pos, "vanished: the file no longer exists (its maps are of the "
                                   "file as it was when explained)")
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


def _write_progress(path: Path, done: list[list[int]], failed: Mapping[int, str],
                    vanished: Sequence[int]) -> None:
    atomic_write_text(path / PROGRESS, json.dumps(
        {"done": done, "failed": {str(k): v for k, v in sorted(failed.items())},
         "vanished": list(vanished)}))


def _all_arrays(group: Any) -> list[Any]:
    out = [a for _, a in group.arrays()]
    for _, sub in group.groups():
        out += _all_arrays(sub)
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
