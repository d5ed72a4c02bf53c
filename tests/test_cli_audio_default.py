"""Audio files without --model or --checkpoint are explained with the embedded spectrogram model
(issue 17): the bundled clips, through the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conformer_xai.synthetic import SOUND_CLASS_NAMES

SCRIPT = Path(sys.executable).parent / "conformer-xai"
SOUNDS = Path(__file__).resolve().parents[1] / "examples" / "sounds"


def test_explain_a_wav_defaults_to_the_embedded_audio_model(tmp_path: Path):
    out = tmp_path / "out"
    result = subprocess.run([str(SCRIPT), "explain", str(SOUNDS / "clip_000.wav"), "--methods",
                             "gradcam,rollout", "--blocks", "3", "--out", str(out), "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "conformer_micro_audio" and report["weights"] == "embedded"
    [image] = report["images"]
    assert image["input_kind"] == "audio" and image["input_size"] == [224, 224]
    summary = json.loads((out / "clip_000.json").read_text())
    fused = summary["predictions"]["fused"]
    assert {p["name"] for p in fused} <= set(SOUND_CLASS_NAMES)  # not ImageNet's names
    assert fused[0]["name"] == "buzz_high_tag"  # the clip's class: the marker is high
    assert (out / "clip_000.png").read_bytes().startswith(b"\x89PNG")


def test_explain_dataset_of_audio_clips_defaults_to_the_embedded_audio_model(tmp_path: Path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in sorted(SOUNDS.glob("*.wav")):
        (clips / clip.name).write_bytes(clip.read_bytes())
    store = tmp_path / "store"
    result = subprocess.run([str(SCRIPT), "explain-dataset", str(clips), "--out", str(store),
                             "--methods", "gradcam", "--blocks", "3", "--num-workers", "0",
                             "--device", "cpu", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    from conformer_xai.batch.store import MapStore

    assert MapStore(store).config["model_name"] == "conformer_micro_audio"
    assert json.loads(result.stdout)["weights_source"] == "embedded"
