"""``evaluate --audio`` and ``train-synthetic --audio`` through the real console script (issue 17):
rows with the image rows' fields, the floor fill, the spectrogram model's training round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformer_xai.metrics.evaluate import ROW_FIELDS, evaluate
from conformer_xai.metrics.evaluate_audio import AUDIO_ROW_FIELDS, STAT_FIELDS, evaluate_audio

SCRIPT = Path(sys.executable).parent / "conformer-xai"
TINY = ("--n", "2", "--methods", "gradcam", "--head", "fused", "--batch-size", "2")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def test_evaluate_audio_json_rows_have_the_image_rows_fields():
    audio = run("evaluate", "--audio", "--weights", "random", *TINY, "--blocks", "3",
                "--steps", "2", "--json")
    assert audio.returncode == 0, audio.stderr
    report = json.loads(audio.stdout)
    assert report["command"] == "evaluate" and report["meta"]["input"] == "audio"
    assert report["meta"]["model"] == "conformer_micro_audio"
    assert report["meta"]["fill_db"] == -100.0
    rows = report["rows"]
    assert {(r["method"], r["head"], r["branch"], r["block"]) for r in rows} == {
        ("gradcam", "fused", "cnn", 3), ("gradcam", "fused", "transformer", 3)}
    image = evaluate("conformer_micro_patch16", weights="random", n=1, methods=["rollout"],
                     faithfulness="none", randomisation=False)
    image_fields = list(image["rows"][0])
    for row in rows:
        assert list(row) == list(AUDIO_ROW_FIELDS)
        # every image field, in the image order; at most the statistics beyond them
        assert [f for f in row if f in image_fields] == image_fields
        assert set(row) - set(image_fields) <= set(STAT_FIELDS)
        assert row["n"] == 2 and row["n_scored"]["pointing_game"] == 2
        assert 0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0
        assert 0.0 < row["chance"]["pointing_game"] < 0.25  # the event's share of the plane
        assert row["faithfulness_head"] == "fused"
    assert set(ROW_FIELDS) <= set(AUDIO_ROW_FIELDS)


@pytest.mark.parametrize(("args", "message"), [
    (("--audio", "--model", "conformer_micro_patch16"), "trained on the image scenes"),
    (("--model", "conformer_micro_audio", "--weights", "random"), "add --audio"),
    ((), "Missing option '--model'"),
])
def test_evaluate_audio_usage_errors_are_one_line(args, message):
    result = run("evaluate", *args)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("conformer-xai: error: ") and message in line


def test_evaluate_audio_scores_against_the_time_frequency_masks():
    """Chance is the mask's share of the (band, frame) plane; a part-and-body clip gets shares."""
    from conformer_xai.synthetic import SOUND_NUM_CLASSES, SoundScenes

    torch.manual_seed(0)
    result = evaluate_audio("conformer_micro_audio", weights="random", n=SOUND_NUM_CLASSES,
                            methods=["rollout"], faithfulness="none", randomisation=False,
                            batch_size=SOUND_NUM_CLASSES, bootstrap=50)
    [row] = result["rows"]
    data = SoundScenes(SOUND_NUM_CLASSES, seed=0, split="test")
    area = sum(data.scene(i).object_mask.mean() for i in range(SOUND_NUM_CLASSES))
    assert row["chance"]["pointing_game"] == pytest.approx(area / SOUND_NUM_CLASSES, abs=1e-6)
    assert result["meta"]["n_part"] == 2 and row["n_scored"]["part_share"] == 2
    shares = row["part_share"] + row["body_share"] + row["off_share"]
    assert shares == pytest.approx(1.0, abs=1e-5)
    lo, hi = row["ci95"]["energy_pointing_game"]
    assert lo <= row["energy_pointing_game"] <= hi
    assert row["deletion_auc"] is None and row["randomisation_spearman"] is None


def test_train_synthetic_audio_round_trip(tmp_path: Path):
    out = tmp_path / "trained"
    result = run("train-synthetic", "--audio", "--steps", "1", "--batch-size", "2", "--eval-n",
                 "7", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["name"] == "conformer_micro_audio" and meta["input_size"] == [1, 224, 224]
    assert meta["command"].startswith("conformer-xai train-synthetic --audio --steps 1")
    assert meta["test"]["n"] == 7 and len(meta["test"]["per_class"]) == 7
    weights = out / "conformer_micro_audio.safetensors"
    assert weights.is_file() and (out / "conformer_micro_audio.json").is_file()
    scored = run("evaluate", "--audio", "--checkpoint", weights, "--n", "1", "--methods",
                 "rollout", "--faithfulness", "none", "--json")
    assert scored.returncode == 0, scored.stderr
    [row] = json.loads(scored.stdout)["rows"]
    assert row["method"] == "rollout" and row["n"] == 1
    wrong = run("train-synthetic", "--audio", "--model", "resnet_micro", "--steps", "1",
                "--out", out)
    assert wrong.returncode == 2 and "image model" in wrong.stderr
