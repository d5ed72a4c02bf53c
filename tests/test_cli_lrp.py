"""The new methods through the real console script: ``explain --methods lrp,transcam`` (figure,
JSON with conservation and branch flow, arrays, the branch-share line) and ``explain-dataset``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conformer_xai.batch.store import MapStore, array_name
from conformer_xai.explain import Explanation

SCRIPT = Path(sys.executable).parent / "conformer-xai"
SCENE = Path(__file__).resolve().parent.parent / "examples" / "scenes" / "scene_000.png"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_explain_lrp_transcam_writes_flows_and_prints_branch_shares(tmp_path: Path):
    out = tmp_path / "out"
    done = run("explain", SCENE, "--model", "conformer_micro_patch16", "--weights", "embedded",
               "--methods", "lrp,transcam", "--blocks", "1,12", "--head", "fused,cnn",
               "--out", out, "--save-arrays")
    assert done.returncode == 0, done.stderr
    assert "LRP relevance reaching the stem through each branch's input path: fused head" in \
        done.stdout
    summary = json.loads((out / "scene_000.json").read_text())
    assert "lrp/fused" in summary["maps"] and "transcam/cnn" in summary["maps"]
    assert "lrp/cnn/transformer/12" in summary["maps"]
    for head in ("fused", "cnn"):
        cons = summary["lrp"][head]
        assert cons["ratio"] == pytest.approx(cons["relevance"] / cons["logit"], rel=1e-5)
        assert cons["absorbed_share"] == pytest.approx(1 - cons["ratio"], abs=1e-6)
        rows = summary["flows"][head]
        assert [r["block"] for r in rows] == list(range(1, 13))
        for r in rows:
            assert r["cnn_stays"] + r["transformer_stays"] + r["fcu_down"] + r["fcu_up"] + \
                r["absorbed"] == pytest.approx(r["cnn_in"] + r["transformer_in"], abs=1e-4)
        share = summary["branch_share"][head]
        assert share["cnn"] + share["transformer"] == pytest.approx(1)
    exp = Explanation.load(out / "scene_000.maps.npz")
    assert exp.flows["cnn"][5]["fcu_up"] == [summary["flows"]["cnn"][5]["fcu_up"]]
    assert exp.maps["lrp/fused"].shape == (1, 128, 128)
    assert (out / "scene_000.png").stat().st_size > 10_000


def test_explain_rejects_transcam_for_resnet(tmp_path: Path):
    done = run("explain", SCENE, "--model", "resnet_micro", "--weights", "embedded",
               "--methods", "transcam", "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.startswith("conformer-xai: error: ") and "transcam" in done.stderr
    assert "Traceback" not in done.stderr


def test_explain_dataset_stores_lrp_and_transcam(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    store = tmp_path / "maps.zarr"
    done = run("explain-dataset", data, "--out", store, "--model", "conformer_micro_patch16",
               "--weights", "embedded", "--methods", "lrp,transcam", "--blocks", "12",
               "--input-size", "64x64", "--num-workers", "0", "--device", "cpu", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["processed"] == 2
    keys = MapStore(store).map_keys
    assert {"lrp/fused", "lrp/fused/cnn/12", "lrp/fused/transformer/12",
            "transcam/cnn"} <= set(keys)
    maps = MapStore(store).group[array_name("maps", "lrp/fused")][:]
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and maps.max() > 0
