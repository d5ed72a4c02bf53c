"""``conformer-xai models``, ``compare``, ``evaluate`` and ``train-synthetic``: the real console
script with the small models (random weights, tiny settings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
CUP = REPO / "examples" / "photos" / "coffee.png"
MICRO = ("resnet_micro", "deit_micro_patch16", "conformer_micro_patch16")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_models_lists_every_model_with_sources_and_cache_state():
    from conformer_xai.models.weights import KNOWN_MODELS

    table = run("models")
    assert table.returncode == 0, table.stderr
    header, rule, *rows = table.stdout.splitlines()
    for title in ("model", "family", "weights", "top-1 paper", "cached"):
        assert title in header
    assert [row.split()[0] for row in rows] == list(KNOWN_MODELS)
    small = next(row for row in rows if row.startswith("conformer_micro_patch16"))
    assert "embedded" in small and "conformer" in small

    listed = run("models", "--json")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)["models"]
    assert [m["name"] for m in models] == list(KNOWN_MODELS)
    by_name = {m["name"]: m for m in models}
    assert by_name["conformer_small_patch16"]["top1_paper"] == 83.4
    assert "imagenet" in by_name["conformer_small_patch16"]["sources"]
    assert all(isinstance(m["cached"], bool) for m in models)


def test_compare_draws_the_paper_figure_for_three_models(tmp_path: Path):
    out = tmp_path / "out"
    args = ["compare", CUP, "--models", ",".join(MICRO), "--weights", "random", "--out", out]
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["models"] == list(MICRO)
    assert summary["weights"] == dict.fromkeys(MICRO, "random")
    assert len(summary["notes"]) == 3 and all("random weights" in n for n in summary["notes"])
    figure = out / "coffee_compare.png"
    assert summary["files"] == {"figure": str(figure), "summary": str(out / "coffee_compare.json")}
    assert figure.read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "coffee_compare.json").read_text()) == summary
    assert result.stderr.count("conformer-xai: note:") == 3

    again = run(*args)
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"conformer-xai: error: {figure} exists (and 1 more); pass --force to overwrite"]


def test_compare_paper_style(tmp_path: Path):
    out = tmp_path / "paper"
    result = run("compare", CUP, "--models", ",".join(MICRO), "--weights", "random", "--out",
                 out, "--style", "paper", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["style"] == "paper"
    assert (out / "coffee_compare.png").read_bytes()[:8] == PNG_MAGIC


def test_evaluate_prints_one_row_per_map(tmp_path: Path):
    result = run("evaluate", "--model", "conformer_micro_patch16", "--weights", "random",
                 "--n", "2", "--methods", "gradcam", "--blocks", "12", "--head", "fused",
                 "--faithfulness", "none", "--cascade-n", "0", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["command"] == "evaluate"
    rows = report["rows"]
    assert {(r["method"], r["head"], r["branch"], r["block"]) for r in rows} == {
        ("gradcam", "fused", "cnn", 12), ("gradcam", "fused", "transformer", 12)}
    assert all(0.0 <= r["pointing_game"] <= 1.0 for r in rows)
    assert all(r["deletion_auc"] is None for r in rows)
    assert report["cascade"] is None
    assert "random weights" in result.stderr
    assert "batch/s" not in result.stderr and "%|" not in result.stderr  # no bar off a terminal


def test_evaluate_steps_sets_the_deletion_and_insertion_curves(tmp_path: Path):
    figure = tmp_path / "cascade.png"
    args = ["evaluate", "--model", "resnet_micro", "--n", "3", "--methods", "gradcam",
            "--blocks", "8", "--faithfulness", "last", "--steps", "4", "--cascade-n", "2",
            "--cascade-figure", figure]
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["meta"]["steps"] == 4
    [row] = report["rows"]
    assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0
    # every score with its n, constant maps, chance level and bootstrap interval
    assert isinstance(row["n"], int) and row["n"] == 3
    for name in ("n_constant", "chance", "ci95"):
        assert set(row[name]) >= {"pointing_game", "deletion_auc", "randomisation_spearman"}
    assert 0.0 < row["chance"]["pointing_game"] < 1.0
    assert 0.0 <= row["chance"]["deletion_auc"] <= 1.0
    low, high = row["ci95"]["pointing_game"]
    assert low <= row["pointing_game"] <= high
    cascade = report["cascade"]
    assert cascade["n"] == 2 and cascade["layers"][0] != cascade["layers"][-1]
    assert len(cascade["methods"]["gradcam"]["spearman"]) == len(cascade["layers"])
    assert figure.read_bytes()[:8] == PNG_MAGIC
    again = run(*args)
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"conformer-xai: error: {figure} exists; pass --force to overwrite"]


def test_train_synthetic_writes_weights_and_protects_them(tmp_path: Path):
    out = tmp_path / "trained"
    args = ["train-synthetic", "--model", "resnet_micro", "--steps", "2", "--batch-size", "2",
            "--eval-n", "2", "--seed", "3", "--out", out]
    result = run(*args, "--json")
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["command"].startswith("conformer-xai train-synthetic --model resnet_micro")
    assert meta["steps"] == 2 and meta["batch_size"] == 2
    assert "training resnet_micro" in result.stderr  # progress lines go to stderr
    weights = out / "resnet_micro.safetensors"
    assert weights.stat().st_size > 100_000
    assert json.loads((out / "resnet_micro.json").read_text())["seed"] == 3

    before = weights.read_bytes()
    again = run(*args)
    assert again.returncode == 1
    [line] = again.stderr.splitlines()
    assert line.startswith("conformer-xai: error: ") and "resnet_micro.safetensors" in line
    assert "force=True" not in line and "--force" in line
    assert weights.read_bytes() == before

    # evaluate scores the trained weights from the checkpoint file
    scored = run("evaluate", "--model", "resnet_micro", "--checkpoint", weights, "--n", "2",
                 "--methods", "gradcam", "--blocks", "8", "--faithfulness", "none", "--json")
    assert scored.returncode == 0, scored.stderr
    [row] = json.loads(scored.stdout)["rows"]
    assert 0.0 <= row["pointing_game"] <= 1.0


def test_train_synthetic_that_fails_leaves_no_empty_folder(tmp_path: Path):
    out = tmp_path / "new" / "trained"
    result = run("train-synthetic", "--model", "resnet_micro", "--steps", "3", "--batch-size",
                 "2", "--eval-n", "2", "--lr", "1e30", "--out", out)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("conformer-xai: error: ")
    assert "diverged" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
