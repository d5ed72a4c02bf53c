"""Merge the per-rank shard stores of a ``torchrun`` dataset run into one store, by index."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .lock import StoreBusyError, StoreLock, deferred_interrupt, lock_path
from .stops import stop_point
from .store import (
    LOCAL_FILES,
    PREDICTIONS,
    PROGRESS,
    STORE_ENTRIES,
    MapStore,
    array_name,
    is_shard_entry,
    store_state,
)

__all__ = ["merge_shards", "shard_dirs"]

#: Entries a (possibly interrupted) merge writes into the store root, besides the shards.
_MERGED_ENTRIES = STORE_ENTRIES
_TMP = ".merge-tmp"


def shard_dirs(store: str | os.PathLike) -> list[Path]:
    """The ``shard-<rank>`` folders under ``store``, ordered by rank."""
    root = Path(store)
    found = [p for p in root.glob("shard-*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def merge_shards(store: str | os.PathLike, remove_shards: bool = True) -> dict[str, Any]:
    """Merge ``<store>/shard-<rank>`` (all complete) into ``<store>`` in image-index order.

    The merge holds the store's lock (``<store>.lock``) and every shard's lock, so it refuses
    to start while a rank still writes. The merged store is built in a temporary sibling
    folder (``.<name>.merge-tmp``; inside the store when its parent is read-only) and its
    entries are then renamed into ``<store>``, ``progress.json`` last; the shards are deleted
    only after that (unless ``remove_shards`` is False). So an interrupted merge leaves the
    shards intact and is simply run again, and a finished merged store is never deleted or
    rewritten: merging again only completes an interrupted removal of the shards.

    Returns:
        ``{"store", "images", "shards", "failed", "predictions", "already_merged"}``.

    Raises:
        FileNotFoundError: No shard under ``store``.
        FileExistsError: ``store`` holds files that are not ours.
        StoreBusyError: A rank or another merge holds a lock.
        ValueError: A shard is missing, unfinished or damaged, or the shards disagree on
            their settings.
    """
    root = Path(store)
    locks = [StoreLock(lock_path(root), str(root)).acquire()]
    try:
        for d in shard_dirs(root):
            locks.append(StoreLock(root / f"{d.name}.lock", str(d)).acquire())
        summary = _merge(root, remove_shards)
    finally:
        for lock in reversed(locks):
            lock.release()
    for stale in root.glob("shard-*.lock"):  # lock files of killed ranks whose shard is gone
        if not stale.with_suffix("").exists():
            with contextlib.suppress(StoreBusyError, OSError):
                StoreLock(stale, str(stale)).acquire().release()
    return summary


def _merge(root: Path, remove_shards: bool) -> dict[str, Any]:
    dirs = shard_dirs(root)
    if store_state(root) == "store":
        done = MapStore(root)
        if int(done.config.get("merged_from", 0)) < 2 or not done.complete():
            raise FileExistsError(f"{root} holds a single-process store, not shards to merge")
        if remove_shards:  # a merge interrupted while removing the shards
            for d in dirs:
                shutil.rmtree(d)
        return {"store": str(root), "images": done.n, "shards": done.config["merged_from"],
                "failed": len(done.progress()["failed"]), "predictions": str(root / PREDICTIONS),
                "already_merged": True}
    if not dirs:
        raise FileNotFoundError(f"no shard-<rank> stores under {root}")
    foreign = [p.name for p in root.iterdir()
               if p.name not in (*_MERGED_ENTRIES, *LOCAL_FILES) and not is_shard_entry(p.name)]
    if foreign:
        raise FileExistsError(f"{root} holds {foreign[0]!r}, which is not ours; the shards are "
                              "not merged into a folder holding other files")
    shards = []
    for d in dirs:
        if store_state(d) != "store":
            raise ValueError(f"{d} is not a finished shard store (killed while being created?); "
                             "run its rank again, then merge")
        shards.append(MapStore(d))
    first = shards[0].config
    world = int(first["world_size"])
    ranks = [int(s.config["rank"]) for s in shards]
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        raise ValueError(f"{root}: shards of ranks {missing} are missing (world size {world})")
    names = ([array_name("maps", k) for k in shards[0].map_keys]
             + [array_name("range", k) for k in shards[0].map_keys] + ["target"]
             + [f"{a}/{h}" for h in shards[0].logit_heads for a in ("pred", "prob", "target_prob")])
    if all("file" in s.group for s in shards):
        names += ["file/stat", "file/sha256"]
    for s in shards:
        if not s.complete():
            done = int(s.done_mask().sum())
            raise ValueError(f"{s.path} is unfinished ({done}/{s.n} images done); run rank "
                             f"{s.config['rank']} again to finish it, then merge")
        fields = [k for k in first if k not in ("rank", "n", "chunk")]
        diff = [k for k in fields if s.config.get(k) != first.get(k)]
        if diff:
            raise ValueError(f"{s.path} was written with other settings than {dirs[0]} "
                             f"({', '.join(diff)}); these shards cannot be merged")
        lacking = [name for name in names if name not in s.group]
        if lacking:
            raise ValueError(f"{s.path} lacks {lacking[0]!r}; it cannot be merged (run rank "
                             f"{s.config['rank']} again with force to redo it)")

    tmp = _tmp_dir(root)
    for p in [*(root / name for name in _MERGED_ENTRIES), root / _TMP, tmp]:
        if p.is_dir() and not p.is_symlink():  # leftovers of an interrupted merge
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()

    n = int(first["n_total"])
    paths: list[str] = [""] * n
    indices = [s.group["index"][:] for s in shards]
    failed: dict[int, str] = {}
    for s, idx in zip(shards, indices):
        for local, path in enumerate(s.paths):
            paths[int(idx[local])] = path
        failed.update({int(idx[p]): msg for p, msg in s.progress()["failed"].items()})
    grids = {k: tuple(shards[0].group[array_name("maps", k)].shape[1:])
             for k in shards[0].map_keys}
    config = {k: v for k, v in first.items()
              if k not in ("format", "n", "chunk", "map_keys", "logit_heads")}
    config.update(world_size=1, rank=0, merged_from=world)
    with deferred_interrupt():
        merged = MapStore.create(tmp, config, paths, np.arange(n), grids,
                                 shards[0].logit_heads, int(first["chunk"]),
                                 str(first["map_dtype"]))
    for start in range(0, n, merged.chunk):
        stop = min(n, start + merged.chunk)
        with deferred_interrupt():
            for name in names:
                src0 = shards[0].group[name]
                buf = np.empty((stop - start, *src0.shape[1:]), dtype=src0.dtype)
                for s, idx in zip(shards, indices):
                    lo, hi = np.searchsorted(idx, [start, stop])
                    if hi > lo:
                        buf[idx[lo:hi] - start] = s.group[name][lo:hi]
                merged.group[name][start:stop] = buf
    with deferred_interrupt():
        merged.mark_done(0, n, failed)
        merged.write_predictions()
        for p in [p for p in tmp.iterdir() if p.name != PROGRESS]:
            os.replace(p, root / p.name)
        stop_point("merge-move")
        os.replace(tmp / PROGRESS, root / PROGRESS)  # from here on the merged store is finished
        tmp.rmdir()
    if remove_shards:
        for d in dirs:
            shutil.rmtree(d)
            stop_point("merge-remove")
    return {"store": str(root), "images": n, "shards": world, "failed": len(failed),
            "predictions": str(root / PREDICTIONS), "already_merged": False}


def _tmp_dir(root: Path) -> Path:
    """Where the merged store is built: a hidden sibling of ``root``, or (read-only parent)
    a hidden folder inside it."""
    real = Path(os.path.realpath(root))
    if os.access(real.parent, os.W_OK | os.X_OK):
        return real.parent / f".{real.name}.merge-tmp"
    return root / _TMP
