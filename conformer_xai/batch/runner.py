"""Explain every image of a folder in batches and write the maps to a resumable Zarr store."""

from __future__ import annotations

import errno
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import SettingError
from ..files import jsonable
from ..registry import is_side_key
from .accel import prepare_model, resolve_device, resolve_dtype
from .images import ImageFiles, list_images
from .lock import StoreLock, deferred_interrupt, lock_path
from .merge import merge_shards
from .resume import (
    EXTEND,
    check_files,
    finished_merge,
    not_ours,
    open_or_create,
    refuse_single_store,
)
from .scaling import SCALE_NOTE, SIGNED_SCALE, encode, scaling_of, signed_keys
from .stops import stop_point
from .store import PREDICTIONS, MapStore, array_name, store_state

__all__ = ["run_dataset", "distributed_env", "weights_fingerprint", "MAP_DTYPES"]

#: Dtypes the maps can be stored in.
MAP_DTYPES = ("float16", "float32")


def distributed_env(world_size: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world_size, rank)`` from the arguments or torchrun's ``WORLD_SIZE`` / ``RANK``.

    Raises:
        ValueError: Not 0 <= rank < world_size.
    """
    try:
        ws = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
        r = int(os.environ.get("RANK", "0")) if rank is None else int(rank)
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE and RANK must be integers: {err}") from err
    if ws < 1 or not 0 <= r < ws:
        raise ValueError(f"rank {r} out of range for world size {ws}; accepted: 0..{ws - 1}")
    return ws, r


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes) in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_dataset(
    input_dir: str | os.PathLike,
    store: str | os.PathLike,
    model: nn.Module,
    *,
    batch_size: int = 32,
    num_workers: int = 4,
    methods: Sequence[str] | None = None,
    blocks: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    heads: str | Sequence[str] | None = None,
    target: int | None = None,
    reduce: str | int | None = None,
    tap: str = "residual",
    input_size: int | Sequence[int] | None = None,
    crop: bool = True,
    audio_config: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    dtype: str = "float16",
    autocast_dtype: str | torch.dtype | None = None,
    channels_last: bool = False,
    compile: bool | str = False,
    resume: bool = True,
    force: bool = False,
    extend: bool = False,
    world_size: int | None = None,
    rank: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Explain every image under ``input_dir`` and write the maps to the Zarr store ``store``.

    Images are found recursively (sorted relative paths; an image's index is its position in
    that list), preprocessed as :func:`conformer_xai.load_image` does (the model's timm data
    config) in a torch ``DataLoader``, and
    explained in batches by :class:`conformer_xai.Explainer` (one forward, one ``autograd.grad``
    per head). Each map key becomes one (N, h, w) array at grid resolution, min-max normalised
    per image, plus each image's raw range; predictions go to ``predictions.csv``. See
    :mod:`conformer_xai.batch.store` for the layout.

    Resumable: a batch's arrays are written before the batch is marked done in
    ``progress.json`` (replaced atomically), so a run killed at any point restarts where it
    stopped, with no partial records; a store killed while being created is created again.
    One writer at a time: the run holds a lock on ``<store>.lock`` (a rank: on
    ``<store>/shard-<rank>.lock``) from before the store exists to the end; a second writer
    gets :class:`~conformer_xai.batch.lock.StoreBusyError` naming the holder's PID, and the
    lock of a killed process is taken over. A resume checks the files, not only their names:
    a done image whose size or mtime changed is hashed (sha256, recorded when it was read) and
    explained again when its content changed; failed images are retried once their file
    changed; images that vanished are marked; new images are refused unless ``extend``.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r explains
    images r, r + W, r + 2W, ... into ``<store>/shard-<r>``; on CUDA the ranks join an NCCL
    process group only to wait for each other, and rank 0 then merges the shards by index into
    ``<store>``. On CPU no process group is created: run :func:`merge_shards` once every rank
    has finished.

    Args:
        input_dir: Folder of images (png, jpg, ...; searched recursively).
        store: Output directory (the Zarr store root).
        model: A model the explainer supports (moved to ``device`` and set to eval mode).
        batch_size: Images per batch, also the store's chunk length. A resumed run keeps the
            batch size the store was created with (a warning says so when they differ).
        num_workers: DataLoader worker processes (0 = load in this process).
        methods, blocks, heads, target, reduce, tap: As :meth:`Explainer.explain` (heads = its
            ``head``; target None = each image's top-1 class; reduce None = its default). The
            store's attributes record the tap and each map's geometry (stride and grid, see
            :func:`conformer_xai.explain.result.upsample_grid`).
        input_size: Model input size (int or (height, width)); None = the model's data config.
        crop: Centre crop as timm's eval transform (default); False resizes each image to the
            input size exactly (non-square inputs such as spectrograms).
        audio_config: Front-end settings for audio inputs (see
            :func:`conformer_xai.audio.resolve_audio_config`). A folder of raw arrays or audio
            clips is explained at their one common size (``input_size`` and ``crop`` do not
            apply); clips of different lengths need ``frames`` (see
            :mod:`conformer_xai.batch.spectrograms`).
        device: "cpu", "cuda" (this rank's ``LOCAL_RANK`` GPU under torchrun) or "cuda:<n>";
            None = "cuda" when available, else "cpu".
        dtype: Storage dtype of the maps: "float16" (default) or "float32".
        autocast_dtype: Run forward and backward under autocast, e.g. "bfloat16" on CUDA.
        channels_last: Run the CNN branch channels-last (see :func:`prepare_model`).
        compile: Regionally ``torch.compile`` the model (True or a backend name).
        resume: Continue an existing store written with the same settings.
        force: Start over, replacing an existing store written by this function (a folder
            that is not such a store is never deleted).
        extend: On resume, add the images of ``input_dir`` that the store does not hold yet
            (appended after the stored ones; single-process stores only).
        world_size, rank: Sharding; None = torchrun's ``WORLD_SIZE`` / ``RANK`` (default 1, 0).
        on_batch: Called as ``on_batch(done, total)`` after each batch is marked done (in the
            writer thread), e.g. to drive a progress bar.
        method_options: Per-method options, as :meth:`Explainer.explain`'s (e.g.
            ``{"integrated_gradients": {"steps": 16}}``); the store's attributes record the
            options every method with options ran with (``method_options``), and a resume
            needs the same.

    Returns:
        A summary: store, shard, images, assigned, already_done, processed (images computed in
        this run), explained (processed less failed ones), failed (a count, this shard's
        store), failures (``{"input": path, "error": message}`` per unreadable image), added,
        changed, retried, vanished (the resume's file check), batch_size, seconds,
        images_per_second, device, world_size, rank, map_keys, predictions, merged.

    Raises:
        FileNotFoundError: ``input_dir`` does not exist.
        FileExistsError: ``store`` exists and may not be resumed or replaced.
        StoreBusyError: Another live process writes the store.
        ValueError: Bad arguments, no images, new images without ``extend``, or a store
            written with different settings.
    """
    t0 = time.perf_counter()
    batch_size = _positive_int("batch_size", batch_size)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    if dtype not in MAP_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} for the stored maps; accepted: "
                         f"{', '.join(MAP_DTYPES)}")
    amp_dtype = resolve_dtype(autocast_dtype)
    world, rank = distributed_env(world_size, rank)
    input_dir, root = Path(input_dir), Path(store)
    paths = list_images(input_dir)
    dev = resolve_device(device)
    if extend and world > 1:
        raise SettingError("{extend} works on single-process stores; merge the shards first, "
                           "then extend the merged store", extend=EXTEND)
    shard = root if world == 1 else root / f"shard-{rank}"
    lock = _lock(root, shard, world)
    try:
        summary, ms = _run_locked(
            input_dir, root, shard, paths, model, dev, world, rank,
            batch_size=batch_size, num_workers=num_workers, methods=methods, blocks=blocks,
            heads=heads, target=target, reduce=reduce, tap=tap, input_size=input_size, crop=crop,
            audio_config=audio_config, dtype=dtype, amp_dtype=amp_dtype, channels_last=channels_last, compile=compile,
            resume=resume, force=force, extend=extend, on_batch=on_batch,
            method_options=method_options)
    finally:
        if lock is not None:
            lock.release()
    if ms is not None and world > 1 and dev.type == "cuda":
        summary["merged"] = _wait_and_merge(root, rank, dev)
        if summary["merged"]:
            summary["predictions"] = str(root / PREDICTIONS)
    elapsed = time.perf_counter() - t0
    summary.update(seconds=elapsed,
                   images_per_second=summary["processed"] / elapsed if elapsed else 0.0)
    return summary


def _lock(root: Path, shard: Path, world: int) -> StoreLock | None:
    """Take the store's writer lock before anything of the store is created.

    A single process locks ``<store>.lock`` beside the store; a torchrun rank locks
    ``<store>/shard-<rank>.lock`` (its own shard). A complete store that cannot be locked
    because its folders are read-only is resumed without a lock (the resume writes nothing).
    """
    if root.is_symlink() and not root.exists():
        raise FileNotFoundError(f"{root} is a symbolic link to a missing folder")
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder; choose another store path")
    if world == 1:
        path, what = lock_path(root), str(root)
        root.absolute().parent.mkdir(parents=True, exist_ok=True)
    else:
        state = store_state(root)
        if state == "store":
            refuse_single_store(root)
            return None  # the merged store of a finished run: nothing is written
        if state not in ("absent", "empty", "shards"):
            raise FileExistsError(not_ours(root, state))
        root.mkdir(parents=True, exist_ok=True)
        path, what = root / f"{shard.name}.lock", str(shard)
    lock = StoreLock(path, what)
    try:
        lock.acquire()
    except OSError as err:  # the lock file cannot be created (StoreBusyError passes through)
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        if store_state(shard) == "store" and MapStore(shard).complete():
            return None
        raise
    if lock.stale_pid is not None:
        warnings.warn(f"took over the lock of process {lock.stale_pid}, which no longer runs "
                      f"(killed?); resuming {shard}", stacklevel=3)
    return lock


def _run_locked(input_dir: Path, root: Path, shard: Path, paths: list[str], model: nn.Module,
                dev: torch.device, world: int, rank: int,
                **opts: Any) -> tuple[dict[str, Any], MapStore | None]:
    """The run proper, under the store's lock: ``(summary, store)`` (store None when a
    torchrun rank finds the merged store of its run)."""
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    fingerprint = weights_fingerprint(model)
    channels_last = opts["channels_last"]
    model = prepare_model(model, dev, channels_last=channels_last, compile=opts["compile"])
    from ..data import resolve_data_config
    from .spectrograms import common_spectrogram_size

    spectro_size = common_spectrogram_size(input_dir, paths, opts["audio_config"])
    input_size, crop = opts["input_size"], opts["crop"]
    if spectro_size is not None:
        if input_size is not None or not crop:
            raise ValueError("input_size and crop=False do not apply to raw arrays and audio: "
                             "they are fed at their own size")
        input_size = spectro_size
    data_config = resolve_data_config(model, None, input_size)
    input_shape = tuple(int(s) for s in data_config["input_size"])

    from ..explain import Explainer
    from ..explain.methods.features import DEFAULT_REDUCE

    reduce = DEFAULT_REDUCE if opts["reduce"] is None else opts["reduce"]
    explain_kwargs = dict(target=opts["target"], head=opts["heads"], methods=opts["methods"],
                          blocks=opts["blocks"], reduce=reduce, tap=opts["tap"],
                          autocast_dtype=opts["amp_dtype"], upsample=False,
                          method_options=opts["method_options"])
    explainer = Explainer(model)
    try:
        probe = explainer.explain(_to_device(torch.zeros(1, *input_shape), dev, channels_last),
                                  **explain_kwargs)
        blocks = explainer._resolve_blocks(opts["blocks"], probe.meta["methods"])
        amp_dtype = opts["amp_dtype"]
        grids = {key: tuple(int(s) for s in r.shape[-2:]) for key, r in probe.raw.items()
                 if not is_side_key(key)}
        config = {
            "model_name": probe.model_name, "weights_sha256": fingerprint,
            "num_classes": int(next(iter(probe.logits.values())).shape[-1]),
            "n_total": len(paths), "input_size": list(input_shape),
            "data_config": {k: jsonable(v) for k, v in data_config.items()},
            "crop": opts["crop"],
            **({"audio_config": jsonable(dict(opts["audio_config"]))}
               if opts["audio_config"] else {}),
            "methods": list(probe.meta["methods"]), "blocks": blocks,
            "heads": list(probe.heads), "target": opts["target"], "reduce": reduce,
            "tap": opts["tap"], "geometry": probe.meta["geometry"],
            "autocast_dtype": None if amp_dtype is None
            else str(amp_dtype).removeprefix("torch."),
            "map_dtype": opts["dtype"], "world_size": world, "rank": rank,
        }
        if probe.meta.get("method_options"):  # the options the run's methods ran with
            config["method_options"] = jsonable(probe.meta["method_options"])
        signed = signed_keys(grids)
        if signed:  # stored divided by max |raw|: zero and the sign survive (batch/scaling.py)
            config["signed_maps"] = {"keys": signed, "scale": SIGNED_SCALE, "note": SCALE_NOTE}
        mine = np.arange(rank, len(paths), world, dtype=np.int64)
        summary: dict[str, Any] = {
            "store": str(root), "shard": None if world == 1 else str(shard),
            "images": len(paths), "assigned": int(mine.size), "device": str(dev),
            "world_size": world, "rank": rank, "map_keys": list(grids), "predictions": None,
            "merged": False, "added": 0, "changed": 0, "retried": 0, "vanished": 0}

        if world > 1 and finished_merge(root, config, opts["resume"]):
            summary.update(already_done=int(mine.size), processed=0, explained=0, failed=None,
                           failures=[], batch_size=opts["batch_size"],
                           predictions=str(root / PREDICTIONS), merged=True)
            return summary, None
        with deferred_interrupt():
            ms, created = open_or_create(shard, root, world, config, opts["resume"],
                                          opts["force"], paths, mine, grids,
                                          list(probe.logits), opts["batch_size"], opts["dtype"])
            checked = {} if created else check_files(ms, input_dir, root, paths, world,
                                                      opts["extend"])
        summary.update(checked)
        if ms.chunk != opts["batch_size"] and not created:
            warnings.warn(f"{shard} was created with batch size {ms.chunk} (its chunk length); "
                          f"resuming with {ms.chunk}, not {opts['batch_size']}", stacklevel=4)
        summary["assigned"] = ms.n
        done = ms.done_mask()
        c = ms.chunk
        batches = [list(range(k * c, min(ms.n, (k + 1) * c)))
                   for k in sorted({int(p) // c for p in np.flatnonzero(~done)})]
        vanished = set(ms.progress()["vanished"])
        scalings = {key: scaling_of(ms.config, key) for key in grids}
        dataset = ImageFiles(input_dir, ms.paths, data_config, crop=opts["crop"],
                             spectrograms=spectro_size is not None,
                             audio_config=opts["audio_config"])
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, num_workers=opts["num_workers"] if batches else 0,
            pin_memory=dev.type == "cuda")

        processed = failed_now = 0
        done_count = ms.n - sum(len(b) for b in batches)
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conformer-xai-writer")
        in_flight: list[Future] = []
        try:
            for x, positions, errors, stats, digests in loader:
                start, stop = int(positions[0]), int(positions[-1]) + 1
                exp = explainer.explain(_to_device(x, dev, channels_last), **explain_kwargs)
                maps, packed = _pack(exp, scalings, ms.logit_heads, dev, opts["dtype"])
                failed = {start + i: e for i, e in enumerate(errors) if e}
                keep = [p for p in range(start, stop) if p in vanished]
                for p in keep:  # explained before, its file gone since: its records are kept
                    failed.pop(p, None)
                files = (stats.numpy(), digests.numpy())
                while in_flight:  # at most one batch being written while the next one computes
                    in_flight.pop(0).result()
                done_count += stop - start
                in_flight.append(writer.submit(
                    _write, ms, start, stop, maps, packed, failed, files, keep,
                    opts["on_batch"], done_count, ms.n))
                processed += stop - start
                failed_now += len(failed)
            for f in in_flight:
                f.result()
        finally:
            writer.shutdown(wait=True)
    finally:
        explainer.close()

    complete = ms.complete()
    if complete and (processed or checked.get("vanished_changed")
                     or not (ms.path / PREDICTIONS).exists()):
        with deferred_interrupt():
            ms.write_predictions()
    state = ms.progress()
    failed = state["failed"]
    summary.pop("vanished_changed", None)
    summary.update(
        already_done=ms.n - processed, processed=processed, explained=processed - failed_now,
        failed=len(failed),
        failures=[{"input": str(input_dir / ms.paths[pos]), "error": message}
                  for pos, message in sorted(failed.items())],
        batch_size=ms.chunk,
        predictions=str(ms.path / PREDICTIONS) if complete else None)
    return summary, ms


# ---------------------------------------------------------------------- batches
def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _pack(exp, scalings: Mapping[str, str], logit_heads: Sequence[str], device: torch.device,
          dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Two host copies per batch: every scaled map (key -> scaling, in store order, see
    :mod:`conformer_xai.batch.scaling`), then every per-image statistic."""
    maps, stats = [], []
    for key, scaling in scalings.items():
        r = exp.raw[key].float()
        flat = r.flatten(1)
        stats += [flat.amin(dim=1), flat.amax(dim=1)]
        maps.append(encode(r, scaling).flatten(1).to(getattr(torch, dtype)))
    target = exp.target.to(device)
    stats.append(target.float())
    for head in logit_heads:
        p = exp.logits[head].float().softmax(dim=-1)
        prob, pred = p.max(dim=-1)
        stats += [pred.float(), prob, p.gather(1, target[:, None])[:, 0]]
    return torch.cat(maps, dim=1).cpu().numpy(), torch.stack(stats, dim=1).cpu().numpy()


def _write(ms: MapStore, start: int, stop: int, maps: np.ndarray, stats: np.ndarray,
           failed: Mapping[int, str], files: tuple[np.ndarray, np.ndarray], keep: list[int],
           on_batch: Callable[[int, int], None] | None, done_count: int, total: int) -> None:
    n = stop - start
    bad = np.array([start + i in failed for i in range(n)])
    out_maps, ranges, offset = {}, {}, 0
    for j, key in enumerate(ms.map_keys):
        h, w = ms.group[array_name("maps", key)].shape[1:]
        m = maps[:, offset:offset + h * w].reshape(n, h, w).copy()
        offset += h * w
        rng = stats[:, 2 * j:2 * j + 2].copy()
        m[bad], rng[bad] = np.nan, np.nan
        out_maps[key], ranges[key] = m, rng
    col = 2 * len(ms.map_keys)
    target = np.where(bad, -1, stats[:, col]).astype(np.int64)
    preds = {}
    for i, head in enumerate(ms.logit_heads):
        pred, prob, tprob = (stats[:, col + 1 + 3 * i + c].copy() for c in range(3))
        pred = np.where(bad, -1, pred).astype(np.int64)
        prob[bad], tprob[bad] = np.nan, np.nan
        preds[head] = (pred, prob, tprob)
    ms.write_batch(start, stop, out_maps, ranges, target, preds, failed, files, keep)
    stop_point("batch")
    if on_batch is not None:
        on_batch(done_count, total)


# ---------------------------------------------------------------------- distributed
def _wait_and_merge(root: Path, rank: int, device: torch.device) -> bool:
    """Wait for every torchrun rank (an NCCL barrier, CUDA only); rank 0 then merges the shards.

    The process group is created here when the caller has none, and only for this barrier; its
    timeout is long because ranks may finish far apart (one of them resumed, say).
    """
    import datetime

    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl", timeout=datetime.timedelta(hours=12))
    try:
        dist.barrier(device_ids=[device.index or 0])
    finally:
        if created:
            dist.destroy_process_group()
    if rank != 0:
        return False
    merge_shards(root)
    return True


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)
