"""Conformers of depth 6 and 3 (the spectrogram fork's variants) through every path that reads
depth: the explainer, ``paper_figure``, the summary figure, and the console script's ``explain``,
``compare`` and ``explain-dataset``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch
from conftest import make_tiny_conformer

from conformer_xai import plot
from conformer_xai.explain.explainer import Explainer

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
CUP = REPO / "examples" / "photos" / "coffee.png"
CAT = REPO / "examples" / "photos" / "chelsea.png"
VARIANT = {6: "conformer_tinytiny_patch16", 3: "conformer_tinytinytiny_patch16"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize(("depth", "shallow"), [(6, 2), (3, 1)])
def test_explainer_and_figures_at_any_depth(depth, shallow):
    model = make_tiny_conformer(depth=depth)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    exp = Explainer(model).explain(x)
    assert exp.meta["num_blocks"] == {"cnn": depth, "transformer": depth}
    for branch in ("cnn", "transformer"):
        assert {f"features/{branch}/{k}" for k in range(1, depth + 1)} <= set(exp.maps)
        assert f"gradcam/fused/{branch}/{depth}" in exp.maps
    assert exp.maps["rollout/transformer"].shape == (1, 64, 96)
    assert plot.default_blocks(depth, "cnn") == (shallow, depth)
    fig = plot.paper_figure(None, {"conformer": exp})
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert xlabels == [f"block {shallow}", f"block {depth}"] * 2
    plt.close(fig)
    fig = plot.explanation_figure(exp)
    assert len(fig.axes) > 4
    plt.close(fig)


@pytest.mark.parametrize("depth", [6, 3])
def test_console_script_explain_and_explain_dataset_at_any_depth(depth, tmp_path: Path):
    model = ["--model", VARIANT[depth], "--weights", "random", "--input-size", "64x64"]
    explained = run("explain", CUP, *model, "--methods", "gradcam,rollout", "--out",
                    tmp_path / "e", "--json")
    assert explained.returncode == 0, explained.stderr
    summary = json.loads(explained.stdout)["images"][0]
    assert Path(summary["files"]["figure"]).read_bytes()[:8] == PNG_MAGIC

    data = tmp_path / "data"
    data.mkdir()
    for src in (CUP, CAT):
        (data / src.name).write_bytes(src.read_bytes())
    store = tmp_path / "maps.zarr"
    result = run("explain-dataset", data, "--out", store, *model, "--methods", "features,rollout",
                 "--num-workers", "0", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["processed"] == 2
    expected = {f"features/{b}/{k}" for b in ("cnn", "transformer") for k in range(1, depth + 1)}
    assert set(report["map_keys"]) == expected | {"rollout/transformer"}


@pytest.mark.parametrize("depth", [6, 3])
def test_console_script_compare_at_any_depth(depth, tmp_path: Path):
    result = run("compare", CUP, "--models", VARIANT[depth], "--weights", "random", "--out",
                 tmp_path, "--json")
    assert result.returncode == 0, result.stderr
    figure = Path(json.loads(result.stdout)["files"]["figure"])
    assert figure.read_bytes()[:8] == PNG_MAGIC
