"""Resuming a store: whether a store on disk can be resumed by this run, and what to redo.

A store resumes only with the settings it was written with (its configuration, less the fields
of :data:`_RESUMABLE_FIELDS`); its images are compared with the folder's files by size, mtime
and content (sha256) so that changed images are explained again. Every refusal names what to
change (the :class:`~conformer_xai.errors.Setting` s ``force`` / ``extend``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Setting, SettingError, SettingExistsError
from ..registry import REGISTRY
from .images import file_stat, file_state
from .merge import shard_dirs
from .store import IMAGES, LOCAL_FILES, MapStore, store_state

__all__ = ["not_ours", "refuse_single_store", "open_or_create", "check_files", "finished_merge"]

#: Configuration fields that are not part of a run's identity (a resume may change them; the
#: image list is compared file by file instead).
_RESUMABLE_FIELDS = ("world_size", "rank", "n", "n_total", "merged_from")

#: The settings the store's messages name.
FORCE = Setting("force", True)
EXTEND = Setting("extend", True)


def not_ours(path: Path, state: str) -> str:
    if state == "file":
        return f"{path} exists and is not a folder; choose another store path"
    if state == "creating":
        return (f"{path} holds a conformer-xai store that is still being created (or was killed "
                "while being created); run the same command again without torchrun")
    if state == "shards":
        ranks = sorted(int(p.name[6:]) for p in path.glob("shard-*") if p.name[6:].isdigit())
        return (f"{path} holds the unmerged shards of a torchrun run (shard-"
                f"{', shard-'.join(map(str, ranks))}); merge them with --merge (merge_shards), "
                "resume them under torchrun with the same world size, or choose another "
                "store path")
    first = next((p.name for p in sorted(path.iterdir()) if p.name not in LOCAL_FILES), "")
    return (f"{path} exists and is not a conformer-xai store (it holds {first!r}); refusing to "
            "overwrite it; choose another store path")


def refuse_single_store(root: Path) -> None:
    ms = MapStore(root)
    if int(ms.config.get("merged_from", 0)) > 1:
        return  # a merged store: _finished_merge decides
    done = int(ms.done_mask().sum())
    state = "a finished" if done == ms.n else f"an unfinished ({done}/{ms.n} images done)"
    raise FileExistsError(f"{root} holds {state} single-process store; resume it without "
                          "torchrun, or choose another store path")


def _written_before(field: str, config: Mapping[str, Any]) -> Any:
    """What a store written before ``field`` was recorded holds for it: the methods' default
    options for ``method_options`` (earlier versions ran every method with its defaults)."""
    if field != "method_options":
        return None
    return {m: {name: opt.default for name, opt in REGISTRY[m].options.items()}
            for m in config["method_options"]}


def open_or_create(shard: Path, root: Path, world: int, config: dict[str, Any], resume: bool,
                    force: bool, paths: Sequence[str], mine: np.ndarray,
                    grids: Mapping[str, tuple[int, int]], logit_heads: Sequence[str],
                    batch_size: int, dtype: str) -> tuple[MapStore, bool]:
    """The store to write: ``(store, created)``. Runs under the store's lock."""
    def create() -> tuple[MapStore, bool]:
        return MapStore.create(shard, config, [paths[i] for i in mine], mine, grids,
                               logit_heads, batch_size, dtype), True

    state = store_state(shard)
    if state in ("absent", "empty", "creating"):  # creating: killed while being created
        return create()
    if state != "store":
        raise FileExistsError(not_ours(shard, state))
    existing = MapStore(shard)
    if not resume:
        if force:
            return create()
        raise SettingExistsError(f"{shard} exists; resume it " "({resume}) or replace it "
                                 "({force})", resume=Setting("resume", True), force=FORCE)
    stored = existing.config
    if stored.get("world_size", 1) != world:
        if force:
            return create()
        if int(stored.get("world_size", 1)) > 1:
            hint = (f"it is the shard of rank {stored.get('rank')} of a run over "
                    f"{stored.get('world_size')} ranks")
        else:
            hint = f"it was written by a run over {stored.get('world_size')} ranks"
        raise SettingError(f"{shard}: {hint}, this one has {world}; use the same world size, "
                           "or {force}", force=FORCE)
    diff = sorted(k for k in config if k not in _RESUMABLE_FIELDS
                  and stored.get(k, _written_before(k, config)) != config[k])
    if diff:
        if force:
            return create()
        if diff == ["signed_maps"] and "signed_maps" not in stored:
            methods = dict.fromkeys(k.split("/")[0] for k in config["signed_maps"]["keys"])
            raise SettingError(f"{shard} was written by an earlier conformer-xai that stored the "
                               f"signed maps ({', '.join(methods)}) min-max normalised; it stays "
                               "readable (conformer-xai report), but it cannot be resumed "
                               "with signed maps stored as they are now; {force} starts over, "
                               "or choose another store path", force=FORCE)
        raise SettingError(f"{shard} was written with other settings ({', '.join(diff)}); "
                           "resume with the same settings, choose another store path, or "
                           "{force} to start over", force=FORCE)
    existing.remove_partial_files()
    return existing, False


def check_files(ms: MapStore, input_dir: Path, root: Path, paths: Sequence[str], world: int,
                 extend: bool) -> dict[str, Any]:
    """Compare the store's images with the folder's files now; unmark what must be redone.

    New files are refused (or appended, with ``extend``); a done image whose size or mtime
    changed is hashed, and computed again when its content changed; a failed image is retried
    when its file changed in any way (size, mtime, ctime: fixed, replaced, permissions); done
    images whose file vanished are marked. Returns counts for the summary.
    """
    stored = ms.paths
    if len(stored) < ms.n:  # an interrupted extend: complete it
        ms.n = len(stored)
    known = set(stored)
    if world > 1:
        for other in shard_dirs(root):
            if other != ms.path and (other / IMAGES).exists():
                known.update(MapStore(other).paths)
    new = [p for p in paths if p not in known]
    if world > 1 and len(shard_dirs(root)) < world:
        new = []  # the other shards do not exist yet: their images cannot be told from new ones
    if new and not extend:
        how = ("{extend} adds them to the store" if world == 1 else "merge the shards, "
               "then {extend} adds them to the merged store")
        raise SettingError(f"{input_dir} holds {len(new)} image(s) that {ms.path} does not "
                           f"(first: {new[0]}); " + how + "; or choose another store path",
                           extend=EXTEND)
    added = 0
    if new:
        ms.extend(new)
        added = len(new)
        warnings.warn(f"added {added} new image(s) to {ms.path}", stacklevel=5)
    stat_now = np.stack([file_stat(input_dir / p) for p in ms.paths]) if ms.n else np.empty(
        (0, 3), dtype=np.int64)
    state = ms.progress()
    done = ms.done_mask()
    if "file" not in ms.group:
        warnings.warn(f"{ms.path} was written before content checks; its images are checked "
                      "by name only", stacklevel=5)
        return {"added": added}
    stat_then = ms.group["file/stat"][:]
    digest_then = ms.group["file/sha256"][:]
    missing = stat_now[:, 0] < 0
    failed = np.zeros(ms.n, dtype=bool)
    failed[list(state["failed"])] = True
    redo: list[int] = []
    changed = 0
    for pos in np.flatnonzero(done & ~missing & ~failed):
        if (stat_now[pos, :2] == stat_then[pos, :2]).all():
            continue
        if not np.array_equal(file_state(input_dir / ms.paths[pos])[1], digest_then[pos]):
            redo.append(int(pos))
            changed += 1
    retried = [int(p) for p in np.flatnonzero(done & failed)
               if not (stat_now[p] == stat_then[p]).all()]
    marked = np.zeros(ms.n, dtype=bool)
    marked[state["vanished"]] = True  # undone since (killed before its chunk was redone)
    vanished = sorted(int(p) for p in np.flatnonzero((done | marked) & missing & ~failed))
    vanished_changed = vanished != sorted(state["vanished"])
    if vanished_changed:
        ms.set_vanished(vanished)
    if changed:
        warnings.warn(f"{changed} image(s) changed since they were explained; explaining them "
                      "again", stacklevel=5)
    if retried:
        warnings.warn(f"retrying {len(retried)} image(s) that failed before and whose file "
                      "changed since", stacklevel=5)
    if vanished and vanished_changed:
        warnings.warn(f"{len(vanished)} explained image(s) no longer exist under {input_dir} "
                      "(first: {}); their maps are kept and marked 'vanished' in "
                      "predictions.csv".format(ms.paths[vanished[0]]), stacklevel=5)
    c = ms.chunk
    chunks = sorted({p // c for p in redo + retried})
    ms.unmark([q for k in chunks for q in range(k * c, min(ms.n, (k + 1) * c))])
    return {"added": added, "changed": changed, "vanished": len(vanished),
            "retried": len(retried), "vanished_changed": vanished_changed}


def finished_merge(root: Path, config: dict[str, Any], resume: bool) -> bool:
    """True when ``root`` already holds the merged result of this run; raises if it blocks."""
    if store_state(root) != "store":
        return False
    stored = MapStore(root)
    diff = sorted(k for k in config if k not in _RESUMABLE_FIELDS
                  and stored.config.get(k, _written_before(k, config)) != config[k])
    if resume and not diff and stored.complete():
        return True
    if not diff:
        raise SettingExistsError(f"{root} holds the merged store of this run, which is never "
                                 "replaced (not even with {force}); remove it by hand to start "
                                 "over", force=FORCE)
    raise FileExistsError(f"{root} holds a merged store written with other settings "
                          f"({', '.join(diff)}); remove it or choose another store path")
