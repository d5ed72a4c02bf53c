"""Dataset-scale runs (conformer_xai.batch): Zarr store, predictions, kill and resume, shards."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from conformer_xai.batch import MapStore, compile_regions, merge_shards, run_dataset
from conformer_xai.data import load_image
from conformer_xai.explain import Explainer
from conformer_xai.explain.result import normalise_per_image
from conformer_xai.models import Conformer

ROOT = Path(__file__).resolve().parents[1]
MODEL_ARGS = dict(channel_ratio=0.25, embed_dim=48, num_heads=3, num_classes=5, depth=3)
RUN = dict(batch_size=4, num_workers=0, input_size=64, device="cpu")
N_IMAGES = 12

# Runs run_dataset in a fresh process. After each batch is marked done it prints a line; with
# "stall_after" it then waits (a slow consumer), so that the parent can kill it mid-run.
DRIVER = """
import json, sys, time
import torch
from conformer_xai.batch import run_dataset
from conformer_xai.models import Conformer

args = json.loads(sys.argv[1])
torch.set_num_threads(1)
model = Conformer(**args["model"])
model.load_state_dict(torch.load(args["weights"], weights_only=True))

def on_batch(done, total):
    print(f"batch done {done}/{total}", flush=True)
    if args.get("stall_after") and done >= args["stall_after"]:
        time.sleep(600)

summary = run_dataset(args["input"], args["store"], model, on_batch=on_batch, **args["run"])
print("SUMMARY " + json.dumps(summary), flush=True)
"""


def tiny_model() -> Conformer:
    torch.manual_seed(0)
    return Conformer(**MODEL_ARGS).eval()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dataset_run")


@pytest.fixture(scope="module")
def images(workdir: Path) -> Path:
    folder = workdir / "images"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        sub = folder / ("a" if i % 3 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (64 + 8 * (i % 2), 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def weights(workdir: Path) -> Path:
    path = workdir / "tiny.pt"
    torch.save(tiny_model().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def reference(workdir: Path, images: Path) -> tuple[Path, dict]:
    """An uninterrupted single-process run."""
    store = workdir / "reference.zarr"
    summary = run_dataset(images, store, tiny_model(), **RUN)
    return store, summary


def driver(args: dict, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def driver_args(images: Path, weights: Path, store: Path, **extra) -> dict:
    return {"input": str(images), "store": str(store), "weights": str(weights),
            "model": MODEL_ARGS, "run": RUN, **extra}


def summary_of(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads(out.split("SUMMARY ", 1)[1])


def arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    keys = MapStore(store).map_keys
    out = {f"maps/{k}": group[f"maps/{k}"][:] for k in keys}
    out.update({f"range/{k}": group[f"range/{k}"][:] for k in keys})
    for name in ("target", "index", "pred/fused", "prob/cnn", "target_prob/transformer"):
        out[name] = group[name][:]
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].astype(np.float32), b[key].astype(np.float32),
                                   atol=2e-3, rtol=1e-3, err_msg=key)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def progress(store: Path) -> dict:
    return json.loads((store / "progress.json").read_text())


# ------------------------------------------------------------------ the store
def test_store_holds_every_map_of_every_image(reference, images):
    store, summary = reference
    assert summary["processed"] == N_IMAGES and summary["already_done"] == 0
    assert summary["failed"] == 0 and summary["batch_size"] == 4
    assert progress(store)["done"] == [[0, N_IMAGES]]
    ms = MapStore(store)
    paths = ms.paths
    assert paths == sorted(paths) and len(paths) == N_IMAGES
    assert paths[0].startswith("a/") and paths[-1].startswith("b/")
    group = zarr.open_group(str(store), mode="r")
    assert group["maps/gradcam/fused/cnn/1"].dtype == np.float16
    assert group["maps/gradcam/fused/cnn/1"].chunks[0] == 4
    assert group["index"][:].tolist() == list(range(N_IMAGES))

    # the stored maps are the explainer's raw maps, normalised per image; ranges give them back
    model = tiny_model()
    picked = [1, 6, 11]
    x = torch.cat([load_image(images / paths[i], model, input_size=64)[0] for i in picked])
    with Explainer(model) as explainer:
        exp = explainer.explain(x)
    assert set(ms.map_keys) == set(exp.raw)
    for key, raw in exp.raw.items():
        stored = group[f"maps/{key}"].get_orthogonal_selection((picked,))
        assert stored.shape[1:] == tuple(raw.shape[1:])
        np.testing.assert_allclose(stored, normalise_per_image(raw).numpy(), atol=2e-3,
                                   err_msg=key)
        lo, hi = group[f"range/{key}"].get_orthogonal_selection((picked,)).T
        back = lo[:, None, None] + stored.astype(np.float32) * (hi - lo)[:, None, None]
        np.testing.assert_allclose(back, raw.numpy(), atol=2e-3 * float(raw.abs().max()) + 1e-7,
                                   err_msg=key)

    rows = read_csv(store / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(N_IMAGES))
    assert [r["path"] for r in rows] == paths
    for j, i in enumerate(picked):
        row = rows[i]
        probs = {h: v.softmax(-1)[j] for h, v in exp.logits.items()}
        assert int(row["target"]) == int(exp.target[j]) == int(row["pred_fused"])
        for head, p in probs.items():
            assert int(row[f"pred_{head}"]) == int(p.argmax())
            assert float(row[f"prob_{head}"]) == pytest.approx(float(p.max()), abs=1e-5)
            assert float(row[f"target_prob_{head}"]) == pytest.approx(
                float(p[exp.target[j]]), abs=1e-5)
        assert row["error"] == ""


def test_unreadable_image_is_recorded_not_fatal(tmp_path, images):
    folder = tmp_path / "mixed"
    shutil.copytree(images / "b", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    store = tmp_path / "store"
    summary = run_dataset(folder, store, tiny_model(), **{**RUN, "batch_size": 2})
    assert summary["processed"] == 5 and summary["failed"] == 1
    rows = read_csv(store / "predictions.csv")
    bad = [r for r in rows if r["path"] == "broken.png"]
    assert len(bad) == 1 and "not an image" in bad[0]["error"]
    assert bad[0]["pred_fused"] == "-1" and bad[0]["prob_fused"] == ""
    assert all(r["error"] == "" for r in rows if r["path"] != "broken.png")
    group = zarr.open_group(str(store), mode="r")
    pos = [r["path"] for r in rows].index("broken.png")
    maps = group["maps/rollout/transformer"][:]
    assert np.isnan(maps[pos]).all() and np.isfinite(np.delete(maps, pos, axis=0)).all()


# ------------------------------------------------------------------ kill and resume
def test_killed_run_resumes_without_partial_records(workdir, images, weights, reference):
    store = workdir / "killed.zarr"
    proc = driver(driver_args(images, weights, store, stall_after=4))
    deadline = time.time() + 240
    while time.time() < deadline:
        if (store / "progress.json").exists() and progress(store)["done"]:
            break
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the first batch was never marked done")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # after the kill: only the first batch is recorded, and no predictions file yet
    assert progress(store)["done"] == [[0, 4]]
    assert not (store / "predictions.csv").exists()
    group = zarr.open_group(str(store), mode="r")
    assert (group["target"][4:] == -1).all()  # nothing of the unfinished batches is there

    resumed = run_dataset(images, store, tiny_model(), **RUN)  # the restart
    assert resumed["already_done"] == 4 and resumed["processed"] == N_IMAGES - 4
    assert progress(store)["done"] == [[0, N_IMAGES]]
    assert_same_arrays(arrays(store), arrays(reference[0]))
    rows = read_csv(store / "predictions.csv")
    assert sorted(int(r["index"]) for r in rows) == list(range(N_IMAGES))
    ref_rows = read_csv(reference[0] / "predictions.csv")
    assert [(r["path"], r["target"]) for r in rows] == [(r["path"], r["target"])
                                                        for r in ref_rows]

    # a finished store resumes to nothing, in a fresh process too
    again = summary_of(driver(driver_args(images, weights, store)))
    assert again["processed"] == 0 and again["already_done"] == N_IMAGES


def test_batch_written_but_not_marked_is_computed_again(tmp_path, images, reference):
    store = tmp_path / "store"
    shutil.copytree(reference[0], store)
    (store / "predictions.csv").unlink()
    # the state a kill between writing batch [4, 8) and marking it leaves: its arrays written
    # (here: garbage), progress.json without it, and zarr's temporary file of a chunk write
    group = zarr.open_group(str(store), mode="r+")
    for key in MapStore(store).map_keys:
        arr = group[f"maps/{key}"]
        arr[4:8] = np.full((4, *arr.shape[1:]), 0.5, dtype=arr.dtype)
    group["target"][4:8] = 3
    (store / "progress.json").write_text(json.dumps({"done": [[0, 4], [8, 12]], "failed": {}}))
    partial = store / "maps" / "rollout" / "transformer" / "c" / "1" / "0" / "0.abc.partial"
    partial.write_bytes(b"half a chunk")

    summary = run_dataset(images, store, tiny_model(), **RUN)
    assert summary["already_done"] == 8 and summary["processed"] == 4
    assert not partial.exists()
    assert_same_arrays(arrays(store), arrays(reference[0]))
    assert len(read_csv(store / "predictions.csv")) == N_IMAGES


# ------------------------------------------------------------------ shards
def test_two_ranks_write_shards_that_merge_by_index(workdir, images, weights, reference):
    store = workdir / "sharded.zarr"
    procs = [driver(driver_args(images, weights, store), env={"WORLD_SIZE": "2", "RANK": str(r)})
             for r in range(2)]
    summaries = [summary_of(p) for p in procs]
    for r, s in enumerate(summaries):
        assert s["world_size"] == 2 and s["rank"] == r and s["merged"] is False
        assert s["assigned"] == s["processed"] == N_IMAGES // 2
        shard = MapStore(store / f"shard-{r}")
        assert shard.group["index"][:].tolist() == list(range(r, N_IMAGES, 2))
        assert shard.complete()
    assert not (store / "zarr.json").exists()

    result = merge_shards(store)
    assert result["images"] == N_IMAGES and result["shards"] == 2
    assert not list(store.glob("shard-*"))
    merged = MapStore(store)
    assert merged.complete() and merged.paths == MapStore(reference[0]).paths
    assert_same_arrays(arrays(store), arrays(reference[0]))
    rows, ref_rows = read_csv(store / "predictions.csv"), read_csv(reference[0] / "predictions.csv")
    assert [(r["index"], r["path"], r["pred_cnn"]) for r in rows] == [
        (r["index"], r["path"], r["pred_cnn"]) for r in ref_rows]

    # a rank started again after the merge finds the merged store and has nothing to do
    again = run_dataset(images, store, tiny_model(), **RUN, world_size=2, rank=1)
    assert again["merged"] is True and again["processed"] == 0
    assert not list(store.glob("shard-*"))


def test_merge_refuses_missing_or_unfinished_shards(tmp_path, images):
    store = tmp_path / "store"
    with pytest.raises(FileNotFoundError, match="no shard"):
        merge_shards(store)
    run_dataset(images, store, tiny_model(), **RUN, world_size=3, rank=1)
    with pytest.raises(ValueError, match=r"ranks \[0, 2\] are missing"):
        merge_shards(store)
    assert MapStore(store / "shard-1").complete()
    for rank in (0, 2):
        run_dataset(images, store, tiny_model(), **RUN, world_size=3, rank=rank)
    # shard 2 as a kill during its first batch leaves it: nothing marked done
    (store / "shard-2" / "progress.json").write_text(json.dumps({"done": [], "failed": {}}))
    with pytest.raises(ValueError, match="unfinished"):
        merge_shards(store)
    assert len(list(store.glob("shard-*"))) == 3  # nothing deleted
    assert not (store / "zarr.json").exists()


# ------------------------------------------------------------------ options and bad input
def test_gpu_path_options_give_the_same_maps_on_cpu(tmp_path, images, reference):
    # regional compile: the largest submodules without a hooked module inside, never a block
    # whose norm1 or attention the explainer reads
    model = tiny_model()
    assert compile_regions(model, backend="eager") == 12
    compiled = {name for name, m in model.named_modules() if "forward" in vars(m)}
    assert compiled == {"conv_1", "trans_1.mlp"} | {
        f"conv_trans_{k}.{part}" for k in (2, 3) for part in (
            "cnn_block", "fusion_block", "squeeze_block", "expand_block", "trans_block.mlp")}

    store = tmp_path / "store"
    summary = run_dataset(images, store, tiny_model(), **{**RUN, "num_workers": 1},
                          channels_last=True, compile="eager")
    assert summary["processed"] == N_IMAGES
    assert_same_arrays(arrays(store), arrays(reference[0]))

    bf16 = tmp_path / "bf16"
    run_dataset(images, bf16, tiny_model(), **RUN, autocast_dtype="bfloat16",
                methods=("features",), dtype="float32")
    assert MapStore(bf16).config["autocast_dtype"] == "bfloat16"
    group, ref = zarr.open_group(str(bf16), mode="r"), zarr.open_group(str(reference[0]), mode="r")
    assert group["maps/features/cnn/3"].dtype == np.float32
    for key in ("features/cnn/1", "features/transformer/3"):
        a, b = group[f"maps/{key}"][:].ravel(), ref[f"maps/{key}"][:].astype(np.float32).ravel()
        assert np.corrcoef(a, b)[0, 1] > 0.95, key


def test_existing_stores_are_resumed_only_when_compatible(tmp_path, images):
    store = tmp_path / "store"
    run_dataset(images, store, tiny_model(), **RUN, methods=("features",))
    with pytest.raises(FileExistsError, match="force"):
        run_dataset(images, store, tiny_model(), **RUN, methods=("features",), resume=False)
    with pytest.raises(ValueError, match="methods"):
        run_dataset(images, store, tiny_model(), **RUN, methods=("rollout",))
    other = tiny_model()
    with torch.no_grad():
        other.conv1.weight.mul_(2)
    with pytest.raises(ValueError, match="weights_sha256"):
        run_dataset(images, store, other, **RUN, methods=("features",))
    summary = run_dataset(images, store, tiny_model(), **RUN, methods=("rollout",), force=True)
    assert summary["processed"] == N_IMAGES
    assert MapStore(store).map_keys == ["rollout/transformer"]

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.txt").write_text("mine")
    for kwargs in ({}, {"force": True}):
        with pytest.raises(FileExistsError, match="not a conformer-xai store"):
            run_dataset(images, foreign, tiny_model(), **RUN, **kwargs)
    assert (foreign / "holiday.txt").read_text() == "mine"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"num_workers": -1}, ValueError, "num_workers"),
    ({"dtype": "int8"}, ValueError, "float16, float32"),
    ({"methods": ("gradcam", "nope")}, ValueError, "unknown method 'nope'"),
    ({"heads": "middle"}, ValueError, "unknown head 'middle'"),
    ({"target": 7}, ValueError, "out of range"),
    ({"rank": 2, "world_size": 2}, ValueError, "rank 2 out of range"),
    ({"device": "tpu"}, ValueError, "accepted: cpu, cuda"),
])
def test_bad_arguments_name_the_problem(tmp_path, images, kwargs, error, match):
    store = tmp_path / "store"
    with pytest.raises(error, match=match):
        run_dataset(images, store, tiny_model(), **{**RUN, **kwargs})
    assert not (store / "progress.json").exists()


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_dataset(tmp_path / "missing", tmp_path / "s", tiny_model(), **RUN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        run_dataset(tmp_path / "empty", tmp_path / "s", tiny_model(), **RUN)
