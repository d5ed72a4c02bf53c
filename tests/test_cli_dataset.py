"""``conformer-xai explain-dataset``: the real console script over a real folder, then a resume."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(sys.executable).parent / "conformer-xai"
FAST = ["--model", "conformer_micro_patch16", "--methods",
        "features,gradcam,rollout", "--blocks", "1,12", "--input-size", "64x64", "--batch-size",
        "3", "--num-workers", "0", "--device", "cpu"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "explain-dataset", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def make_images(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(sub / f"{i}.png")


def test_explain_dataset_writes_store_and_resumes(tmp_path: Path):
    make_images(tmp_path / "data", 5)
    store = tmp_path / "maps.zarr"
    first = run(tmp_path / "data", "--out", store, *FAST, "--weights", "embedded", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["processed"] == 5 and summary["weights_source"] == "embedded"
    rows = list(csv.DictReader((store / "predictions.csv").open()))
    assert len(rows) == 5
    again = run(tmp_path / "data", "--out", store, *FAST, "--weights", "embedded", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_done"] == 5
    assert json.loads(again.stdout)["processed"] == 0
    # Other weights must never be mixed into the same store.
    other = run(tmp_path / "data", "--out", store, *FAST, "--weights", "random")
    assert other.returncode == 2 and "random weights" in other.stderr
    assert "other settings (weights_sha256)" in other.stderr and "Traceback" not in other.stderr
    assert "--force" in other.stderr and "force=True" not in other.stderr
    refused = run(tmp_path / "data", "--out", store, *FAST, "--weights", "embedded",
                  "--no-resume")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        f"conformer-xai: error: {store} exists; resume it (leave out --no-resume) or replace it "
        "(--force)"]


def test_explain_dataset_names_each_failed_image_up_to_twenty(tmp_path: Path):
    make_images(tmp_path / "data", 1)
    bad = [tmp_path / "data" / f"bad{i:02d}.png" for i in range(22)]
    for path in bad:
        path.write_text("not an image")
    result = run(tmp_path / "data", "--out", tmp_path / "s.zarr", *FAST, "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["processed"] == 23 and summary["failed"] == 22
    assert [f["input"] for f in summary["failures"]] == [str(p) for p in bad]
    assert all("not an image file" in f["error"] for f in summary["failures"])
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors[:20] == [f"conformer-xai: error: {p}: not an image file (unknown or "
                           "unsupported image format)" for p in bad[:20]]
    assert errors[20:] == ["conformer-xai: error: ... and 2 more failed input(s)"]
    assert "Traceback" not in result.stderr


def test_explain_dataset_store_that_cannot_be_created_is_a_runtime_error(tmp_path: Path):
    make_images(tmp_path / "data", 1)
    blocker = tmp_path / "a_file"
    blocker.write_text("a file, not a folder")
    stores = [(blocker / "s.zarr", "Not a directory")]
    if Path("/proc/self").is_dir():
        stores.append((Path("/proc/x"), "No such file or directory"))
    for store, reason in stores:
        result = run(tmp_path / "data", "--out", store, *FAST)
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            f"conformer-xai: error: cannot create store {store}: {reason}"]


def test_explain_dataset_usage_errors(tmp_path: Path):
    missing = run(tmp_path / "nope", "--out", tmp_path / "s.zarr", *FAST)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("conformer-xai: error: ")
    assert "Traceback" not in missing.stderr
    bad = run(tmp_path, "--out", tmp_path / "s.zarr", "--methods", "shap")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
