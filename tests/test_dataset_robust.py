"""explain-dataset as an interrupted user meets it: real kills (SIGKILL, SIGINT) at named points
of creation, run and merge, two writers on one store, images replaced between runs, odd --out
paths and read-only stores. Every store is compared map by map with a clean run.

The runs stop themselves at a named point (``CONFORMER_XAI_STOP_AT``, see
``conformer_xai/batch/stops.py``: SIGSTOP) and the test then kills them for real there.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from conformer_xai import load_model
from conformer_xai.batch import MapStore, merge_shards, run_dataset
from conformer_xai.batch.lock import StoreBusyError
from conformer_xai.batch.merge import shard_dirs
from conformer_xai.cli.errors import cli_message

SCRIPT = Path(sys.executable).parent / "conformer-xai"
MODEL = "conformer_micro_patch16"
N = 6
CLI = ["--model", MODEL, "--weights", "embedded", "--methods", "features,gradcam,rollout",
       "--blocks", "1,12", "--input-size", "64x64", "--batch-size", "2", "--num-workers", "0",
       "--device", "cpu"]
API = dict(methods=["features", "gradcam", "rollout"], blocks=[1, 12], input_size=(64, 64),
           batch_size=2, num_workers=0, device="cpu")


# ------------------------------------------------------------------ helpers
def model():
    return load_model(MODEL, weights="embedded")


def make_images(folder: Path, n: int = N, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return folder


def start(*args: str, stop_at: str | None = None, cwd: Path | None = None,
          env: dict | None = None) -> subprocess.Popen:
    extra = {"CONFORMER_XAI_STOP_AT": stop_at} if stop_at else {}
    return subprocess.Popen([str(SCRIPT), "explain-dataset", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**os.environ, **extra, **(env or {})}, preexec_fn=default_sigint)


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, even when this test runs in a background job
    (which ignores SIGINT, and an ignored SIGINT stays ignored in Python)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    proc = start(*args, **kwargs)
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_stopped(proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until the process has stopped itself (state T) at its stop point."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before its stop point: {proc.communicate()}")
        try:
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "?"
        if state == "T":
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run never reached its stop point")


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def interrupt(proc: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C a stopped run (SIGINT, then SIGCONT so that it handles it)."""
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    return out, err


def maps_by_path(store: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every stored array of every image, keyed by image path."""
    ms = MapStore(store)
    group = zarr.open_group(str(store), mode="r")
    names = [f"maps/{k}" for k in ms.map_keys] + [f"range/{k}" for k in ms.map_keys] + [
        "target"] + [f"{a}/{h}" for h in ms.logit_heads for a in ("pred", "prob", "target_prob")]
    data = {name: group[name][:] for name in names}
    return {p: {name: data[name][i] for name in names} for i, p in enumerate(ms.paths)}


def assert_same_store(store: Path, clean: Path, paths: list[str] | None = None) -> None:
    """``store`` holds, map by map, what the clean run holds (for ``paths``; default all),
    complete, with its predictions file."""
    got, want = maps_by_path(store), maps_by_path(clean)
    assert MapStore(store).complete()
    if paths is None:
        assert MapStore(store).paths == MapStore(clean).paths
        assert zarr.open_group(str(store), mode="r")["index"][:].tolist() == list(range(
            len(want)))
    for path in paths or want:
        assert got[path].keys() == want[path].keys()
        for name, value in want[path].items():
            np.testing.assert_allclose(got[path][name].astype(np.float32),
                                       value.astype(np.float32), atol=2e-3, rtol=1e-3,
                                       err_msg=f"{path} {name}")
    rows = {r["path"]: r for r in read_csv(store / "predictions.csv")}
    for r in read_csv(clean / "predictions.csv"):
        if paths is None or r["path"] in paths:
            assert (rows[r["path"]]["target"], rows[r["path"]]["pred_fused"]) == (
                r["target"], r["pred_fused"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size, p.stat().st_ino)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("robust")


@pytest.fixture(scope="module")
def images(work: Path) -> Path:
    return make_images(work / "images")


@pytest.fixture(scope="module")
def clean(work: Path, images: Path) -> Path:
    """An uninterrupted run (in this process)."""
    store = work / "clean.zarr"
    run_dataset(images, store, model(), **API)
    return store


# ------------------------------------------------------------------ creation
def test_sigkill_while_creating_a_new_store_then_resume(tmp_path, images, clean):
    store = tmp_path / "maps.zarr"
    proc = start(images, "--out", store, *CLI, stop_at="create")
    wait_stopped(proc)
    kill(proc)
    assert not store.exists()  # built in a temporary sibling, never renamed into place
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".maps.zarr.creating-")]

    with pytest.warns(UserWarning, match=f"took over the lock of process {proc.pid}"):
        summary = run_dataset(images, store, model(), **API)
    assert summary["processed"] == N
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.zarr"]  # no lock, no leftover
    assert stat.S_IMODE(store.stat().st_mode) == 0o755
    for name in ("zarr.json", "images.json", "progress.json", "predictions.csv"):
        assert stat.S_IMODE((store / name).stat().st_mode) == 0o644, name
    assert_same_store(store, clean)


def test_sigkill_while_creating_in_an_existing_empty_folder_then_force(tmp_path, images, clean):
    store = tmp_path / "kept"
    store.mkdir(mode=0o555)
    store.chmod(0o555)
    proc = start(images, "--out", store, *CLI, stop_at="create")
    wait_stopped(proc)
    kill(proc)
    assert (store / ".conformer-xai-creating").exists()  # ours, half-created
    assert not (store / "progress.json").exists()

    with pytest.warns(UserWarning, match="took over the lock"):
        summary = run_dataset(images, store, model(), **API, resume=False, force=True)
    assert summary["processed"] == N
    assert stat.S_IMODE(store.stat().st_mode) == 0o555  # the folder itself was kept
    assert not (store / ".conformer-xai-creating").exists()
    assert_same_store(store, clean)


def test_ctrl_c_exits_130_and_leaves_a_resumable_store(tmp_path, images, clean):
    store = tmp_path / "s.zarr"
    for point in ("create", "batch"):  # while the store is created, then after a batch
        proc = start(images, "--out", store, *CLI, stop_at=point)
        wait_stopped(proc)
        _, err = interrupt(proc)
        assert err.strip().splitlines()[-1] == "conformer-xai: error: interrupted", err
        assert "coroutine" not in err and "Traceback" not in err and "aborted" not in err
        assert (store / "progress.json").exists()
    done = json.loads((store / "progress.json").read_text())["done"]
    assert done and done != [[0, N]]
    assert run_dataset(images, store, model(), **API)["already_done"] >= 2
    assert_same_store(store, clean)


# ------------------------------------------------------------------ one writer at a time
def test_second_writer_is_refused_and_a_dead_writers_lock_taken_over(tmp_path, images, clean):
    store = tmp_path / "s.zarr"
    first = start(images, "--out", store, *CLI, stop_at="batch")
    wait_stopped(first)  # alive, holding the lock, one batch done
    lock = tmp_path / "s.zarr.lock"
    assert lock.read_text().strip() == str(first.pid)
    second = run(images, "--out", store, *CLI)
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"conformer-xai: error: {store} is being written by process {first.pid} (lock file "
        f"{lock}); wait for it to finish or stop it, or choose another store path"]
    with pytest.raises(StoreBusyError, match=f"process {first.pid}"):  # --no-resume --force
        run_dataset(images, store, model(), **API, resume=False, force=True)
    assert json.loads((store / "progress.json").read_text())["done"] == [[0, 2]]

    kill(first)  # the lock file stays, naming a dead process
    assert lock.read_text().strip() == str(first.pid)
    with pytest.warns(UserWarning, match=f"took over the lock of process {first.pid}"):
        third = run_dataset(images, store, model(), **API)
    assert third["already_done"] == 2 and third["processed"] == N - 2
    assert not lock.exists()
    assert_same_store(store, clean)


DRIVER = """
import json, sys
import torch
from conformer_xai import load_model
from conformer_xai.batch import run_dataset
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
run_dataset(args["input"], args["store"], load_model(args["model"], weights="embedded"),
            **args["run"])
"""


def test_ranks_lock_their_own_shards_and_merge_waits_for_them(tmp_path, images, clean):
    store = tmp_path / "s.zarr"
    rank0 = subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps({"input": str(images), "store": str(store),
                                                   "model": MODEL, "run": API})],
        env={**os.environ, "WORLD_SIZE": "2", "RANK": "0", "CONFORMER_XAI_STOP_AT": "batch"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_stopped(rank0)
    assert (store / "shard-0.lock").read_text().strip() == str(rank0.pid)
    net = model()
    with pytest.raises(StoreBusyError, match=f"shard-0 is being written by process {rank0.pid}"):
        run_dataset(images, store, net, **API, world_size=2, rank=0)
    run_dataset(images, store, net, **API, world_size=2, rank=1)  # its own shard: not locked
    with pytest.raises(StoreBusyError, match=f"process {rank0.pid}"):
        merge_shards(store)
    kill(rank0)
    resumed = run_dataset(images, store, net, **API, world_size=2, rank=0)
    assert resumed["already_done"] == 2 and resumed["processed"] == 1  # images 0, 2 | 4
    assert merge_shards(store)["already_merged"] is False
    assert_same_store(store, clean)
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in clean.iterdir())


# ------------------------------------------------------------------ merge
@pytest.fixture(scope="module")
def shards(work: Path, images: Path) -> Path:
    store = work / "shards.zarr"
    net = model()
    for rank in range(2):
        run_dataset(images, store, net, **API, world_size=2, rank=rank)
    return store


def test_sigkill_mid_merge_resumes_and_never_deletes_the_merged_store(tmp_path, shards, images,
                                                                      clean):
    # killed after the merged entries were moved in, before progress.json: merged again
    store = tmp_path / "a.zarr"
    shutil.copytree(shards, store)
    proc = start(images, "--out", store, "--merge", stop_at="merge-move")
    wait_stopped(proc)
    kill(proc)
    assert (store / "maps").is_dir() and not (store / "progress.json").exists()
    assert len(shard_dirs(store)) == 2
    with pytest.raises(FileExistsError, match="unmerged shards"):  # never cleared by a run
        run_dataset(images, store, model(), **API, force=True)
    assert len(shard_dirs(store)) == 2 and (store / "maps").is_dir()
    result = run(images, "--out", store, "--merge")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"conformer-xai: note: merged 2 shards ({N} images) into {store}"]
    assert sorted(p.name for p in store.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]
    assert_same_store(store, clean)

    # killed while removing the shards: the finished merged store is kept, never rewritten
    store = tmp_path / "b.zarr"
    shutil.copytree(shards, store)
    proc = start(images, "--out", store, "--merge", stop_at="merge-remove")
    wait_stopped(proc)
    kill(proc)
    assert (store / "progress.json").exists()
    assert [p.name for p in shard_dirs(store)] == ["shard-1"]
    merged = {k: v for k, v in snapshot(store).items() if not k.startswith("shard-")}
    result = run(images, "--out", store, "--merge")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"conformer-xai: note: {store} is already merged ({N} images); nothing to do"]
    assert snapshot(store) == merged  # shard-1 and the killed merge's lock files are gone
    assert merge_shards(store)["already_merged"] is True  # idempotent
    assert snapshot(store) == merged
    assert_same_store(store, clean)

    # a rank started again finds the merged store: nothing to do, said plainly
    again = run(images, "--out", store, *CLI, env={"WORLD_SIZE": "2", "RANK": "1"})
    assert again.returncode == 0, again.stderr
    assert again.stderr.splitlines() == [
        f"conformer-xai: note: {store} already holds the merged store of this run; nothing to do"]
    assert snapshot(store) == merged


# ------------------------------------------------------------------ content-checked resume
def test_replaced_vanished_and_new_images_on_resume(tmp_path, images, clean):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    store = tmp_path / "s.zarr"
    net = model()
    run_dataset(folder, store, net, **API)
    paths = MapStore(store).paths  # a/1, a/3, a/5, b/0, b/2, b/4

    # two images replaced under the same names, one only touched, one removed (it shares a
    # chunk with a replaced one), one added
    other = make_images(tmp_path / "other", seed=1)
    for p in ("b/0", "b/2"):
        shutil.copy(other / f"{p}.png", folder / f"{p}.png")
    os.utime(folder / "b/4.png", ns=(1, 10**18))
    (folder / "a/5.png").unlink()
    shutil.copy(other / "a/1.png", folder / "b/9.png")

    with pytest.raises(ValueError, match=r"holds 1 image\(s\) that .* does not \(first: "
                                         r"b/9.png\); extend=True adds them") as err:
        run_dataset(folder, store, net, **API)
    assert "--extend adds them" in cli_message(err.value)
    assert MapStore(store).complete() and MapStore(store).paths == paths  # nothing changed

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = run_dataset(folder, store, net, **API, extend=True)
    notes = " | ".join(str(w.message) for w in caught)
    assert "2 image(s) changed since they were explained" in notes
    assert "1 explained image(s) no longer exist" in notes and "added 1 new image" in notes
    assert (summary["changed"], summary["vanished"], summary["added"]) == (2, 1, 1)
    ms = MapStore(store)
    assert ms.paths == [*paths, "b/9.png"] and ms.complete()

    fresh = tmp_path / "fresh.zarr"  # a clean run over the folder as it is now
    run_dataset(folder, fresh, net, **API)
    assert_same_store(store, fresh, paths=["a/1.png", "a/3.png", "b/0.png", "b/2.png",
                                           "b/4.png", "b/9.png"])
    assert_same_store(store, clean, paths=["a/5.png"])  # vanished: kept as it was, and marked
    row = next(r for r in read_csv(store / "predictions.csv") if r["path"] == "a/5.png")
    assert row["error"].startswith("vanished")
    old, new = maps_by_path(clean)["b/0.png"], maps_by_path(store)["b/0.png"]
    assert any(not np.allclose(old[k].astype(float), new[k].astype(float), atol=1e-2)
               for k in old if k.startswith("maps/"))  # the replaced image's maps are new

    again = run_dataset(folder, store, net, **API)  # nothing left to do
    assert again["processed"] == 0 and again["changed"] == 0


def test_failed_image_is_retried_once_fixed(tmp_path, images):
    folder = tmp_path / "images"
    shutil.copytree(images / "a", folder)
    (folder / "broken.png").write_bytes(b"not a png")
    store = tmp_path / "s.zarr"
    net = model()
    first = run_dataset(folder, store, net, **API)
    assert first["failed"] == 1 and first["explained"] == 3
    same = run_dataset(folder, store, net, **API)  # unchanged: not retried
    assert same["processed"] == 0 and same["failed"] == 1
    shutil.copy(images / "b" / "0.png", folder / "broken.png")
    fixed = run_dataset(folder, store, net, **API)
    assert fixed["retried"] == 1 and fixed["failed"] == 0 and fixed["processed"] == 2
    rows = read_csv(store / "predictions.csv")
    assert all(r["error"] == "" for r in rows)
    group = zarr.open_group(str(store), mode="r")
    assert np.isfinite(group["maps/rollout/transformer"][:]).all()


# ------------------------------------------------------------------ --out and small items
def test_out_symlink_dot_and_read_only_complete_store(tmp_path, images, clean, monkeypatch):
    net = model()
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert run_dataset(images, link, net, **API)["processed"] == N
    assert link.is_symlink() and (target / "progress.json").exists()
    assert_same_store(link, clean)

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert run_dataset(images, ".", net, **API)["processed"] == N
    assert_same_store(here, clean)

    # a complete store, read-only, resumes to a no-op that writes nothing
    for p in [here, *here.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    before = snapshot(tmp_path)
    try:
        again = run_dataset(images, ".", net, **API)
        assert again["processed"] == 0 and again["already_done"] == N
        assert snapshot(tmp_path) == before
    finally:
        for p in [here, *here.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def test_equivalent_blocks_batch_size_note_and_messages(tmp_path, images, shards):
    net = model()
    store = tmp_path / "s.zarr"
    run_dataset(images, store, net, **{**API, "blocks": None, "methods": ["gradcam"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = run_dataset(images, store, net, **{**API, "blocks": list(range(12, 0, -1)),
                                                   "methods": ["gradcam"], "batch_size": 4})
    assert again["processed"] == 0 and again["batch_size"] == 2
    assert any("created with batch size 2 (its chunk length); resuming with 2, not 4"
               in str(w.message) for w in caught)

    # a partial single-process store under torchrun; a shard root run as a single process
    (store / "progress.json").write_text(json.dumps({"done": [[0, 2]], "failed": {}}))
    with pytest.raises(FileExistsError, match=r"holds an unfinished \(2/6 images done\) "
                                              "single-process store; resume it without torchrun"):
        run_dataset(images, store, net, **API, world_size=2, rank=0)
    with pytest.raises(FileExistsError, match=r"holds the unmerged shards of a torchrun run "
                                              r"\(shard-0, shard-1\); merge them with --merge"):
        run_dataset(images, shards, net, **API)


def test_note_counts_failed_images_apart_from_explained(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.png").write_text("not an image")
    result = run(folder, "--out", tmp_path / "s.zarr", *CLI)
    assert result.returncode == 1
    assert (f"conformer-xai: note: 0 images explained, 2 failed, 0 already done (2 failed in "
            f"all) -> {tmp_path / 's.zarr'}") in result.stderr.splitlines()


def test_cli_refuses_new_images_unless_extend(tmp_path, images):
    folder = tmp_path / "images"
    shutil.copytree(images / "a", folder)
    store = tmp_path / "s.zarr"
    run_dataset(folder, store, model(), **API)
    shutil.copy(images / "b" / "0.png", folder / "9.png")
    refused = run(folder, "--out", store, *CLI)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"conformer-xai: error: {folder} holds 1 image(s) that {store} does not (first: 9.png); "
        "--extend adds them to the store; or choose another store path"]
    extended = run(folder, "--out", store, *CLI, "--extend", "--json")
    assert extended.returncode == 0, extended.stderr
    assert f"conformer-xai: note: added 1 new image(s) to {store}" in extended.stderr
    summary = json.loads(extended.stdout)
    assert (summary["added"], summary["processed"], summary["already_done"]) == (1, 2, 2)
    assert MapStore(store).paths == ["1.png", "3.png", "5.png", "9.png"]
