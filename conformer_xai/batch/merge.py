"""Merge the per-rank shard stores of a ``torchrun`` dataset run into one store, by index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .store import IMAGES, PREDICTIONS, PROGRESS, MapStore, array_name

__all__ = ["merge_shards", "shard_dirs"]

#: Entries a (possibly interrupted) merge writes into the store root, besides the shards.
_MERGED_ENTRIES = ("zarr.json", "maps", "range", "target", "pred", "prob", "target_prob",
                   "index", IMAGES, PREDICTIONS, PROGRESS)
_TMP = ".merge-tmp"


def shard_dirs(store: str | os.PathLike) -> list[Path]:
    """The ``shard-<rank>`` folders under ``store``, ordered by rank."""
    root = Path(store)
    found = [p for p in root.glob("shard-*") if p.is_dir() and p.name[6:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[6:]))


def merge_shards(store: str | os.PathLike, remove_shards: bool = True) -> dict[str, Any]:
    """Merge ``<store>/shard-<rank>`` (all complete) into ``<store>`` in image-index order.

    The merged store is built in ``<store>/.merge-tmp`` and its entries are then moved into
    ``<store>``, ``progress.json`` last, so an interrupted merge leaves the shards intact and is
    simply run again. The shards are deleted afterwards unless ``remove_shards`` is False.

    Returns:
        ``{"store", "images", "shards", "failed", "predictions"}``.

    Raises:
        FileNotFoundError: No shard under ``store``.
        ValueError: A shard is missing or unfinished, or the shards disagree on their settings.
    """
    root = Path(store)
    dirs = shard_dirs(root)
    if not dirs:
        raise FileNotFoundError(f"no shard-<rank> stores under {root}")
    shards = [MapStore(d) for d in dirs]
    first = shards[0].config
    world = int(first["world_size"])
    ranks = [int(s.config["rank"]) for s in shards]
    if ranks != list(range(world)):
        missing = sorted(set(range(world)) - set(ranks))
        raise ValueError(f"{root}: shards of ranks {missing} are missing (world size {world})")
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

    for name in (*_MERGED_ENTRIES, _TMP):  # leftovers of an interrupted merge
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
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
    tmp = root / _TMP
    merged = MapStore.create(tmp, config, paths, np.arange(n), grids, shards[0].logit_heads,
                             int(first["chunk"]), str(first["map_dtype"]))
    names = ([array_name("maps", k) for k in merged.map_keys]
             + [array_name("range", k) for k in merged.map_keys]
             + ["target"] + [f"{a}/{h}" for h in merged.logit_heads
                             for a in ("pred", "prob", "target_prob")])
    for start in range(0, n, merged.chunk):
        stop = min(n, start + merged.chunk)
        for name in names:
            src0 = shards[0].group[name]
            buf = np.empty((stop - start, *src0.shape[1:]), dtype=src0.dtype)
            for s, idx in zip(shards, indices):
                lo, hi = np.searchsorted(idx, [start, stop])
                if hi > lo:
                    buf[idx[lo:hi] - start] = s.group[name][lo:hi]
            merged.group[name][start:stop] = buf
    merged.mark_done(0, n, failed)
    merged.write_predictions()

    entries = [p for p in tmp.iterdir() if p.name != PROGRESS]
    for p in entries:
        os.replace(p, root / p.name)
    os.replace(tmp / PROGRESS, root / PROGRESS)
    tmp.rmdir()
    if remove_shards:
        for d in dirs:
            shutil.rmtree(d)
    return {"store": str(root), "images": n, "shards": world, "failed": len(failed),
            "predictions": str(root / PREDICTIONS)}
