"""Explain every image of a folder in batches and write the maps to a resumable Zarr store."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .accel import prepare_model, resolve_device, resolve_dtype
from .images import ImageFiles, list_images
from .merge import merge_shards
from .store import PROGRESS, MapStore, is_store

__all__ = ["run_dataset", "distributed_env", "weights_fingerprint", "MAP_DTYPES"]

#: Dtypes the maps can be stored in.
MAP_DTYPES = ("float16", "float32")
#: Configuration fields that are not part of a run's identity (a resume may change them).
_SHARD_FIELDS = ("world_size", "rank", "n")


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
    reduce: str | int = "mean",
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
    world_size: int | None = None,
    rank: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
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
    stopped, with no partial records. Under ``torchrun`` (``WORLD_SIZE`` > 1) rank r explains
    images r, r + W, r + 2W, ... into ``<store>/shard-<r>``; on CUDA the ranks join an NCCL
    process group only to wait for each other, and rank 0 then merges the shards by index into
    ``<store>``. On CPU no process group is created: run :func:`merge_shards` once every rank
    has finished.

    Args:
        input_dir: Folder of images (png, jpg, ...; searched recursively).
        store: Output directory (the Zarr store root).
        model: A model the explainer supports (moved to ``device`` and set to eval mode).
        batch_size: Images per batch, also the store's chunk length. A resumed run keeps the
            batch size the store was created with.
        num_workers: DataLoader worker processes (0 = load in this process).
        methods, blocks, heads, target, reduce: As :meth:`Explainer.explain` (heads = its
            ``head``; target None = each image's top-1 class).
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
        world_size, rank: Sharding; None = torchrun's ``WORLD_SIZE`` / ``RANK`` (default 1, 0).
        on_batch: Called as ``on_batch(done, total)`` after each batch is marked done (in the
            writer thread), e.g. to drive a progress bar.

    Returns:
        A summary: store, shard, images, assigned, already_done, processed, failed (a count),
        failures (``{"input": path, "error": message}`` per unreadable image of this shard),
        batch_size, seconds, images_per_second, device, world_size, rank, map_keys,
        predictions, merged.

    Raises:
        FileNotFoundError: ``input_dir`` does not exist.
        FileExistsError: ``store`` exists and may not be resumed or replaced.
        ValueError: Bad arguments, no images, or a store written with different settings.
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
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    fingerprint = weights_fingerprint(model)

    model = prepare_model(model, dev, channels_last=channels_last, compile=compile)
    from ..data import resolve_data_config
    from .spectrograms import common_spectrogram_size

    spectro_size = common_spectrogram_size(input_dir, paths, audio_config)
    if spectro_size is not None:
        if input_size is not None or not crop:
            raise ValueError("input_size and crop=False do not apply to raw arrays and audio: "
                             "they are fed at their own size")
        input_size = spectro_size
    data_config = resolve_data_config(model, None, input_size)
    input_shape = tuple(int(s) for s in data_config["input_size"])

    from ..explain import Explainer

    explain_kwargs = dict(target=target, head=heads, methods=methods, blocks=blocks,
                          reduce=reduce, autocast_dtype=amp_dtype, upsample=False)
    explainer = Explainer(model)
    probe = explainer.explain(_to_device(torch.zeros(1, *input_shape), dev, channels_last),
                              **explain_kwargs)
    grids = {key: tuple(int(s) for s in r.shape[-2:]) for key, r in probe.raw.items()
             if not key.startswith("attention_heads/")}
    config = {
        "model_name": probe.model_name, "weights_sha256": fingerprint,
        "num_classes": int(next(iter(probe.logits.values())).shape[-1]),
        "files_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(),
        "n_total": len(paths), "input_size": list(input_shape),
        "data_config": {k: _jsonable(v) for k, v in data_config.items()}, "crop": crop,
        **({"audio_config": _jsonable(dict(audio_config))} if audio_config else {}),
        "methods": list(probe.meta["methods"]), "blocks": _jsonable(blocks),
        "heads": list(probe.heads), "target": target, "reduce": reduce,
        "autocast_dtype": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "map_dtype": dtype, "world_size": world, "rank": rank,
    }
    mine = np.arange(rank, len(paths), world, dtype=np.int64)
    shard = root if world == 1 else root / f"shard-{rank}"
    summary: dict[str, Any] = {
        "store": str(root), "shard": None if world == 1 else str(shard), "images": len(paths),
        "assigned": int(mine.size), "device": str(dev), "world_size": world, "rank": rank,
        "map_keys": list(grids), "predictions": None, "merged": False}

    if world > 1 and _finished_merge(root, config, resume):
        summary.update(already_done=int(mine.size), processed=0, failed=None,
                       batch_size=batch_size, seconds=time.perf_counter() - t0,
                       images_per_second=0.0, predictions=str(root / "predictions.csv"),
                       merged=True)
        return summary
    ms = _open_or_create(shard, root, world, config, resume, force, paths, mine, grids,
                         list(probe.logits), batch_size, dtype)
    done = ms.done_mask()
    pending = np.flatnonzero(~done)
    dataset = ImageFiles(input_dir, [paths[i] for i in mine], data_config, crop=crop,
                         spectrograms=spectro_size is not None, audio_config=audio_config)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, pending.tolist()), batch_size=ms.chunk, shuffle=False,
        num_workers=num_workers, pin_memory=dev.type == "cuda", drop_last=False)

    processed = 0
    done_count = int(done.sum())
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conformer-xai-writer")
    in_flight: list[Future] = []
    try:
        for x, positions, errors in loader:
            start, stop = int(positions[0]), int(positions[-1]) + 1
            if stop - start != len(positions):
                raise RuntimeError(f"batch positions {positions.tolist()} are not contiguous")
            exp = explainer.explain(_to_device(x, dev, channels_last), **explain_kwargs)
            maps, stats = _pack(exp, list(grids), ms.logit_heads, dev, dtype)
            failed = {start + i: e for i, e in enumerate(errors) if e}
            while in_flight:  # at most one batch being written while the next one computes
                in_flight.pop(0).result()
            done_count += stop - start
            in_flight.append(writer.submit(
                _write, ms, start, stop, maps, stats, failed, on_batch, done_count, ms.n))
            processed += stop - start
        for f in in_flight:
            f.result()
    finally:
        writer.shutdown(wait=True)
        explainer.close()

    if ms.complete():
        ms.write_predictions()
    failed = ms.progress()["failed"]
    summary.update(
        already_done=int(done.sum()), processed=processed, failed=len(failed),
        failures=[{"input": str(input_dir / paths[mine[pos]]), "error": message}
                  for pos, message in sorted(failed.items())],
        batch_size=ms.chunk,
        predictions=str(ms.path / "predictions.csv") if ms.complete() else None)
    if world > 1 and dev.type == "cuda":
        summary["merged"] = _wait_and_merge(root, rank, dev)
        if summary["merged"]:
            summary["predictions"] = str(root / "predictions.csv")
    elapsed = time.perf_counter() - t0
    summary.update(seconds=elapsed, images_per_second=processed / elapsed if elapsed else 0.0)
    return summary


# ---------------------------------------------------------------------- store management
def _open_or_create(shard: Path, root: Path, world: int, config: dict[str, Any], resume: bool,
                    force: bool, paths: Sequence[str], mine: np.ndarray,
                    grids: Mapping[str, tuple[int, int]], logit_heads: Sequence[str],
                    batch_size: int, dtype: str) -> MapStore:
    def create() -> MapStore:
        return MapStore.create(shard, config, [paths[i] for i in mine], mine, grids, logit_heads,
                               batch_size, dtype)

    if world > 1:
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"{root} exists and is not a folder; choose another store path")
        if root.is_dir() and not is_store(root):
            foreign = [p.name for p in root.iterdir() if not p.name.startswith("shard-")]
            if foreign:
                raise FileExistsError(f"{root} exists and is not a conformer-xai store "
                                      f"(it holds {foreign[0]!r}); choose another store path")
        root.mkdir(parents=True, exist_ok=True)
    if not shard.exists():
        return create()
    if not shard.is_dir():
        raise FileExistsError(f"{shard} exists and is not a folder; choose another store path")
    if not is_store(shard):
        if any(shard.iterdir()):
            raise FileExistsError(f"{shard} exists and is not a conformer-xai store; refusing to "
                                  "overwrite it; choose another store path")
        return create()
    if not (shard / PROGRESS).exists():  # killed while being created
        return create()
    existing = MapStore(shard)
    if not resume:
        if force:
            return create()
        raise FileExistsError(f"{shard} exists; resume it (resume=True) or replace it "
                              "(force=True)")
    stored = existing.config
    if stored.get("world_size", 1) != world:
        if force:
            return create()
        raise ValueError(f"{shard} was written by a run over {stored.get('world_size')} ranks, "
                         f"this one has {world}; use the same world size, or force=True")
    diff = sorted(k for k in config if k not in _SHARD_FIELDS and stored.get(k) != config[k])
    if diff:
        if force:
            return create()
        raise ValueError(f"{shard} was written with other settings ({', '.join(diff)}); resume "
                         "with the same settings, choose another store path, or force=True "
                         "to start over")
    existing.remove_partial_files()
    return existing


def _finished_merge(root: Path, config: dict[str, Any], resume: bool) -> bool:
    """True when ``root`` already holds the merged result of this run; raises if it blocks."""
    if not (is_store(root) and (root / PROGRESS).exists()):
        return False
    stored = MapStore(root)
    same = all(stored.config.get(k) == config[k] for k in config if k not in _SHARD_FIELDS)
    if resume and same and stored.complete():
        return True
    raise FileExistsError(f"{root} holds a finished store of another run; remove it or choose "
                          "another store path")


# ---------------------------------------------------------------------- batches
def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _pack(exp, keys: Sequence[str], logit_heads: Sequence[str], device: torch.device,
          dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Two host copies per batch: every normalised map, then every per-image statistic."""
    from ..explain.result import normalise_per_image

    maps, stats = [], []
    for key in keys:
        r = exp.raw[key].float()
        flat = r.flatten(1)
        stats += [flat.amin(dim=1), flat.amax(dim=1)]
        maps.append(normalise_per_image(r).flatten(1).to(getattr(torch, dtype)))
    target = exp.target.to(device)
    stats.append(target.float())
    for head in logit_heads:
        p = exp.logits[head].float().softmax(dim=-1)
        prob, pred = p.max(dim=-1)
        stats += [pred.float(), prob, p.gather(1, target[:, None])[:, 0]]
    return torch.cat(maps, dim=1).cpu().numpy(), torch.stack(stats, dim=1).cpu().numpy()


def _write(ms: MapStore, start: int, stop: int, maps: np.ndarray, stats: np.ndarray,
           failed: Mapping[int, str], on_batch: Callable[[int, int], None] | None,
           done_count: int, total: int) -> None:
    n = stop - start
    bad = np.array([start + i in failed for i in range(n)])
    out_maps, ranges, offset = {}, {}, 0
    for j, key in enumerate(ms.map_keys):
        h, w = ms.group[f"maps/{key}"].shape[1:]
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
    ms.write_batch(start, stop, out_maps, ranges, target, preds, failed)
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
