"""The embedded small models through the console script: a generated scene versus a photo
(the figure and the summaries say plainly when a synthetic-scene model looks at a photo), and
``compare --weights embedded`` with the three small models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from conformer_xai.synthetic import CLASS_NAMES, render_scene

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
CAT = REPO / "examples" / "photos" / "chelsea.png"
EMBEDDED = ["--model", "conformer_micro_patch16", "--weights", "embedded"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_embedded_model_on_a_scene_and_on_a_photo(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    scene = render_scene(7, size=128)
    Image.fromarray(np.asarray(scene.image)).save(inp / "scene_007.png")
    (inp / "cat.png").write_bytes(CAT.read_bytes())
    result = run("explain", inp, *EMBEDDED, "--methods", "gradcam", "--blocks", "12",
                 "--head", "fused", "--json", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["weights"] == "embedded"
    by_name = {Path(s["input"]).name: s for s in summary["images"]}

    on_scene = by_name["scene_007.png"]
    assert on_scene["input_kind"] == "scene" and on_scene["notes"] == []
    assert on_scene["predictions"]["fused"][0]["name"] in CLASS_NAMES
    on_photo = by_name["cat.png"]
    assert on_photo["input_kind"] == "photo"
    [photo_note] = on_photo["notes"]
    assert "trained only on synthetic scenes" in photo_note
    assert any("trained only on synthetic scenes" in n and "1 photo(s)" in n
               for n in summary["notes"])
    assert "conformer-xai: note: conformer_micro_patch16 (embedded weights) was trained only " \
           "on synthetic scenes" in result.stderr
    assert "random weights" not in result.stderr
    assert (out / "cat.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "scene_007.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_embedded_defaults_to_the_three_small_models(tmp_path: Path):
    scene = tmp_path / "scene_001.png"
    Image.fromarray(np.asarray(render_scene(1, size=128).image)).save(scene)
    result = run("compare", scene, "--weights", "embedded", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == f"{scene} -> {tmp_path / 'out' / 'scene_001_compare.png'}"
    summary = json.loads((tmp_path / "out" / "scene_001_compare.json").read_text())
    assert summary["models"] == ["resnet_micro", "deit_micro_patch16", "conformer_micro_patch16"]
    assert set(summary["weights"].values()) == {"embedded"}
    assert summary["notes"] == []
    assert (tmp_path / "out" / "scene_001_compare.png").read_bytes()[:8] == PNG_MAGIC
