"""Signed maps (LRP, AttnLRP, Integrated Gradients) in explain-dataset stores: stored so that zero
stays zero and the sign survives, read back by the report as their positive part (as
``Explanation.maps`` shows them), and stores of the earlier min-max format still readable."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image

from conformer_xai import load_model
from conformer_xai.batch import merge_shards, run_dataset
from conformer_xai.batch.scaling import encode, scaling_of, shown, to_raw
from conformer_xai.batch.store import MapStore, array_name
from conformer_xai.data import load_image
from conformer_xai.explain import Explainer
from conformer_xai.explain.result import normalise_per_image
from conformer_xai.models import Conformer

SCRIPT = Path(sys.executable).parent / "conformer-xai"
MICRO = ["--model", "conformer_micro_patch16", "--weights", "embedded", "--device", "cpu"]
LRP_KEYS = ("lrp/fused", "lrp/fused/cnn/12", "lrp/fused/transformer/12")


def cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def site_maps(site: Path, page_id: str) -> dict[str, np.ndarray]:
    """One image's maps decoded from the site's data files: key -> uint8 (h, w)."""
    def read_js(path: Path, name: str):
        text = path.read_text().rstrip()
        return json.loads(text[len(f"window.{name}="):-1])

    layouts = read_js(site / "data" / "site.js", "CX_SITE")["layouts"]
    maps = read_js(site / "data" / "maps" / f"{page_id}.js", "CX_MAPS")
    layout = layouts[maps["layout"]]
    data = np.frombuffer(base64.b64decode(maps["data"]), dtype=np.uint8)
    return {key: data[off:off + h * w].reshape(h, w)
            for key, (h, w), off in zip(layout["keys"], layout["shapes"], layout["offsets"])}


def positive_uint8(raw: torch.Tensor) -> np.ndarray:
    """What the report must show for a signed raw grid: Explanation.maps' positive part."""
    return np.rint(normalise_per_image(raw.clamp_min(0)[None]).numpy()[0] * 255)


@pytest.fixture(scope="module")
def lrp_run(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("signed")
    data = base / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / f"{i}.png")
    store = base / "maps.zarr"
    args = ["explain-dataset", data, "--out", store, *MICRO, "--methods", "lrp", "--blocks",
            "12", "--head", "fused", "--input-size", "64x64", "--num-workers", "0",
            "--dtype", "float32"]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    model = load_model("conformer_micro_patch16", weights="embedded")
    paths = json.loads((store / "images.json").read_text())
    x = torch.cat([load_image(data / p, model, input_size=64)[0] for p in paths])
    with Explainer(model) as explainer:
        exp = explainer.explain(x, methods=["lrp"], blocks=[12], head="fused", upsample=False)
    return {"base": base, "data": data, "store": store, "args": args, "raw": exp.raw,
            "paths": paths}


def test_stored_lrp_keeps_zero_and_sign(lrp_run):
    ms = MapStore(lrp_run["store"])
    signed = ms.config["signed_maps"]
    assert set(LRP_KEYS) <= set(signed["keys"]) and signed["scale"] == "max_abs"
    for key in LRP_KEYS:
        raw = lrp_run["raw"][key].numpy()
        stored = ms.group[array_name("maps", key)][:]
        ranges = ms.group[array_name("range", key)][:]
        peak = np.abs(raw).reshape(len(raw), -1).max(axis=1)[:, None, None]
        if key == "lrp/fused":  # pixel relevance: both signs present
            assert (raw < 0).any() and (raw > 0).any()
        assert np.abs(stored).reshape(len(raw), -1).max(axis=1) == pytest.approx(1.0, abs=1e-6)
        # zero stays zero: the stored map is raw / max|raw| (no offset, unlike min-max)
        np.testing.assert_allclose(stored, raw / peak, atol=1e-5, err_msg=key)
        big = np.abs(raw) > 1e-3 * peak
        assert (np.sign(stored)[big] == np.sign(raw)[big]).all(), key
        assert (stored[raw == 0] == 0).all()
        np.testing.assert_allclose(to_raw(stored, ranges, "max_abs"), raw,
                                   atol=1e-5 * peak.max(), err_msg=key)


def test_report_shows_the_positive_part_of_signed_store_maps(lrp_run):
    site = lrp_run["base"] / "site"
    done = cli("report", lrp_run["store"], "--images", lrp_run["data"], "--out", site)
    assert done.returncode == 0, done.stderr
    for i in range(len(lrp_run["paths"])):
        grids = site_maps(site, f"{i:04d}")
        for key in LRP_KEYS:
            raw = lrp_run["raw"][key][i]
            expected = positive_uint8(raw)
            assert np.abs(grids[key].astype(int) - expected).max() <= 1, key
            assert (grids[key][raw.numpy() <= 0] == 0).all(), key  # negative relevance: none


def test_store_of_the_earlier_min_max_format_is_read_and_not_resumed(lrp_run, tmp_path):
    # The format before signed_maps: signed maps min-max normalised over their signed range.
    old = tmp_path / "old.zarr"
    shutil.copytree(lrp_run["store"], old)
    group = zarr.open_group(str(old), mode="r+")
    config = dict(group.attrs["conformer_xai"])
    config.pop("signed_maps")
    group.attrs["conformer_xai"] = config
    for key in LRP_KEYS:
        group[array_name("maps", key)][:] = normalise_per_image(lrp_run["raw"][key]).numpy()
    assert scaling_of(config, "lrp/fused") == "minmax"

    site = tmp_path / "site"
    done = cli("report", old, "--out", site)
    assert done.returncode == 0, done.stderr
    grids = site_maps(site, "0000")
    for key in LRP_KEYS:  # read through the stored raw range: the same positive part
        expected = positive_uint8(lrp_run["raw"][key][0])
        assert np.abs(grids[key].astype(int) - expected).max() <= 1, key

    args = [old if a == lrp_run["store"] else a for a in lrp_run["args"]]
    resumed = cli(*args)
    assert resumed.returncode == 2
    lines = resumed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conformer-xai: error: ")
    assert "earlier conformer-xai" in lines[0] and "min-max" in lines[0]
    assert "--force" in lines[0] and "Traceback" not in resumed.stderr


def test_explain_folder_report_shows_the_positive_part(tmp_path):
    scene = Path(__file__).resolve().parents[1] / "examples" / "scenes" / "scene_000.png"
    out = tmp_path / "out"
    done = cli("explain", scene, *MICRO, "--methods", "lrp,gradcam", "--blocks", "12",
               "--head", "fused", "--out", out, "--report")
    assert done.returncode == 0, done.stderr
    from conformer_xai import Explanation

    exp = Explanation.load(out / "scene_000.maps.npz")
    grids = site_maps(out / "report", "0000")
    for key in LRP_KEYS:
        expected = positive_uint8(exp.raw[key][0].float())
        assert np.abs(grids[key].astype(int) - expected).max() <= 1, key
    gradcam = np.rint(normalise_per_image(exp.raw["gradcam/fused/cnn/12"].float()).numpy()[0]
                      * 255)
    assert np.abs(grids["gradcam/fused/cnn/12"].astype(int) - gradcam).max() <= 1


def test_merged_shards_keep_signed_maps(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(data / f"{i}.png")
    torch.manual_seed(0)
    model = Conformer(channel_ratio=0.25, embed_dim=48, num_heads=3, num_classes=5,
                      depth=3).eval()
    run = dict(batch_size=2, num_workers=0, input_size=48, device="cpu", dtype="float32",
               methods=["lrp"], blocks=[3], heads="fused")
    single = tmp_path / "single.zarr"
    run_dataset(data, single, model, **run)
    sharded = tmp_path / "sharded.zarr"
    for rank in range(2):
        run_dataset(data, sharded, model, world_size=2, rank=rank, **run)
    merge_shards(sharded)
    a, b = MapStore(single), MapStore(sharded)
    assert a.config["signed_maps"] == b.config["signed_maps"]
    assert "lrp/fused" in a.config["signed_maps"]["keys"]
    pixels = a.group[array_name("maps", "lrp/fused")][:]
    assert pixels.min() < 0 < pixels.max()
    for key in a.config["signed_maps"]["keys"]:
        m = a.group[array_name("maps", key)][:]
        np.testing.assert_array_equal(m, b.group[array_name("maps", key)][:])


def test_scaling_functions_on_known_maps():
    raw = torch.tensor([[[-2.0, 0.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    stored = encode(raw, "max_abs")
    assert stored.tolist() == [[[-0.5, 0.0], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    ranges = np.array([[-2.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_raw(stored.numpy(), ranges, "max_abs"), raw.numpy())
    minmax = encode(raw, "minmax").numpy()
    np.testing.assert_allclose(to_raw(minmax, ranges, "minmax"), raw.numpy())
    expected = [[[0.0, 0.0], [0.25, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]
    for s, scaling in ((stored.numpy(), "max_abs"), (minmax, "minmax")):
        np.testing.assert_allclose(shown(s, ranges, scaling, signed=True), expected, atol=1e-6)
    np.testing.assert_array_equal(shown(minmax, ranges, "minmax", signed=False), minmax)
    with pytest.raises(ValueError, match="accepted: minmax, max_abs"):
        encode(raw, "abs")
