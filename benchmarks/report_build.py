"""``python -m benchmarks.report_build``: time ``conformer-xai report`` on a large synthetic store.

The store is written directly through :class:`conformer_xai.batch.store.MapStore` (no model
runs): ``--images`` images in ten class folders, each with the map keys and grid sizes that
``explain-dataset`` writes for ``conformer_small_patch16`` at 224x224 (112 keys: CNN grids
56/28/14/7 over the four stages, transformer 14x14; about 78 kB of uint8 per image), smooth
random maps, random predictions. Then the report is built and timed, and the site's size
counted. One JSON lands in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("disc", "square", "triangle", "star", "ring", "cross", "bird", "fish", "leaf", "key")
HEADS = ("fused", "cnn", "transformer")
#: (first block, last block, grid side at 224x224) of the CNN branch's four stages.
SMALL_STAGES = ((1, 4, 56), (5, 8, 28), (9, 11, 14), (12, 12, 7))


def conformer_grids(scale: float = 1.0) -> dict[str, tuple[int, int]]:
    """Map key -> grid size as ``explain-dataset`` stores them for a 12-block Conformer at 224
    (``scale`` shrinks every grid, e.g. 0.25 for a quick run)."""
    def side(s: int) -> int:
        return max(2, round(s * scale))

    grids: dict[str, tuple[int, int]] = {}
    for first, last, s in SMALL_STAGES:
        for k in range(first, last + 1):
            grids[f"features/cnn/{k}"] = (side(s), side(s))
            for h in HEADS:
                grids[f"gradcam/{h}/cnn/{k}"] = (side(s), side(s))
    t = side(14)
    for k in range(1, 13):
        grids[f"features/transformer/{k}"] = (t, t)
        grids[f"attention/transformer/{k}"] = (t, t)
        for h in HEADS:
            grids[f"gradcam/{h}/transformer/{k}"] = (t, t)
    grids["rollout/transformer"] = (t, t)
    for h in HEADS:
        grids[f"grad_rollout/{h}/transformer"] = (t, t)
    return grids


def _blobs(rng: np.random.Generator, centres: np.ndarray, h: int, w: int) -> np.ndarray:
    """(n, h, w) smooth maps in [0, 1]: a Gaussian bump per image at ``centres`` plus noise."""
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    d2 = (ys[None, :, None] - centres[:, 0, None, None]) ** 2 \
        + (xs[None, None, :] - centres[:, 1, None, None]) ** 2
    m = np.exp(-d2 / 0.04) + 0.15 * rng.random((len(centres), h, w))
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    return ((m - lo) / (hi - lo)).astype(np.float32)


def synthetic_store(store: Path, n: int, images: Path | None = None, seed: int = 0,
                    grid_scale: float = 1.0, chunk: int = 64, image_side: int = 96,
                    metrics: bool = False) -> dict[str, Any]:
    """Write a complete store of ``n`` synthetic images (and, with ``images``, the images).

    Returns ``{"paths", "grids", "class_names"}``.
    """
    import zarr
    from PIL import Image

    from conformer_xai.batch.store import MapStore

    rng = np.random.default_rng(seed)
    grids = conformer_grids(grid_scale)
    labels = rng.integers(0, len(CLASSES), n)
    paths = [f"{CLASSES[c]}/img_{i:05d}.png" for i, c in enumerate(labels)]
    config = {"model_name": "conformer_small_patch16", "weights_sha256": "0" * 64,
              "num_classes": len(CLASSES), "class_names": list(CLASSES),
              "files_sha256": "synthetic", "n_total": n, "input_size": [3, 224, 224],
              "data_config": {"input_size": [3, 224, 224], "interpolation": "bilinear",
                              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                              "crop_pct": 1.0, "crop_mode": "center"},
              "crop": False, "methods": ["features", "attention", "gradcam", "rollout",
                                         "grad_rollout"],
              "blocks": None, "heads": list(HEADS), "target": None, "reduce": "mean",
              "autocast_dtype": None, "map_dtype": "float16", "world_size": 1, "rank": 0}
    ms = MapStore.create(store, config, paths, list(range(n)), grids, list(HEADS), chunk,
                         "float16")
    centres = rng.random((n, 2)) * 0.6 + 0.2
    for start in range(0, n, ms.chunk):
        stop = min(n, start + ms.chunk)
        c = centres[start:stop]
        maps, ranges = {}, {}
        for j, (key, (h, w)) in enumerate(grids.items()):
            shift = (j % 7) * 0.02
            maps[key] = _blobs(rng, np.clip(c + shift, 0, 1), h, w)
            ranges[key] = np.tile(np.array([[0.0, 1.0]], np.float32), (stop - start, 1))
        target = labels[start:stop].astype(np.int64)
        preds = {}
        for head in HEADS:
            pred = np.where(rng.random(stop - start) < 0.8, target,
                            rng.integers(0, len(CLASSES), stop - start)).astype(np.int64)
            prob = rng.uniform(0.3, 1.0, stop - start).astype(np.float32)
            preds[head] = (pred, prob, np.where(pred == target, prob, prob / 3))
        ms.write_batch(start, stop, maps, ranges, target, preds, {})
    ms.write_predictions()
    if metrics:
        group = zarr.open_group(str(store), mode="r+")
        arr = group.create("metrics/pointing_game", shape=(n,), chunks=(n,), dtype="float32")
        arr[:] = rng.random(n).astype(np.float32)
    if images is not None:
        for i, rel in enumerate(paths):
            file = images / rel
            file.parent.mkdir(parents=True, exist_ok=True)
            y, x = (centres[i] * image_side).astype(int)
            pixels = np.full((image_side, image_side, 3), 40 + 20 * labels[i] % 200, np.uint8)
            r = image_side // 6
            pixels[max(0, y - r):y + r, max(0, x - r):x + r] = (230, 200, 40)
            Image.fromarray(pixels).save(file)
    return {"paths": paths, "grids": grids, "class_names": list(CLASSES)}


def _complete(store: Path, n: int) -> bool:
    from conformer_xai.batch.store import MapStore, is_store

    if not is_store(store):
        return False
    ms = MapStore(store)
    return ms.n == n and ms.complete()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report_build",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images in the store")
    parser.add_argument("--grid-scale", type=float, default=1.0,
                        help="grid sides relative to conformer_small_patch16 at 224")
    parser.add_argument("--no-pictures", action="store_true",
                        help="no image files (the pages show the maps alone)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the store, images and site (default: a temporary one, "
                             "removed afterwards)")
    parser.add_argument("--reuse-store", action="store_true",
                        help="keep a complete store (and images) already in --work")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder of the result JSON")
    args = parser.parse_args(argv)

    import torch

    from conformer_xai.report import build_report

    from .timing import machine_info

    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        store, images, site = work / "store", work / "images", work / "site"
        shutil.rmtree(site, ignore_errors=True)
        t0 = time.perf_counter()
        if args.reuse_store and _complete(store, args.images):
            info = {"grids": conformer_grids(args.grid_scale)}
            made = None
        else:
            for p in (store, images):
                shutil.rmtree(p, ignore_errors=True)
            info = synthetic_store(store, args.images, None if args.no_pictures else images,
                                   grid_scale=args.grid_scale)
            made = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = build_report(store, site, images=None if args.no_pictures else images)
        built = time.perf_counter() - t0
        index_bytes = (site / "data" / "index.js").stat().st_size
        maps_bytes = sum(p.stat().st_size for p in (site / "data" / "maps").iterdir())
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "report_build", "format": 1,
        "config": {"images": args.images, "map_keys": len(info["grids"]),
                   "maps": args.images * len(info["grids"]), "grid_scale": args.grid_scale,
                   "pictures": not args.no_pictures,
                   "uint8_bytes_per_image": sum(h * w for h, w in info["grids"].values())},
        "machine": machine_info(torch.device("cpu")),
        "store_write_s": made, "build_s": built, "images_per_s": args.images / built,
        "site": {"files": summary["files"], "bytes": summary["bytes"],
                 "index_js_bytes": index_bytes, "maps_js_bytes": maps_bytes},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    file = args.out / f"report_build_{args.images}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    file.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.images} images, {result['config']['maps']} maps: site built in {built:.1f} s "
          f"({result['images_per_s']:.0f} images/s), {summary['files']} files, "
          f"{summary['bytes'] / 2**20:.0f} MiB (index {index_bytes / 2**20:.2f} MiB) -> {file}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
