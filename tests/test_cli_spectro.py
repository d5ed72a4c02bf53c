"""``conformer-xai explain`` on spectrogram inputs with a fork-style checkpoint: a wav clip and a
raw ``.npy`` array, the time-frequency figure, the probabilities of the raw input, and the one-line
errors of bad audio and array files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from _fork import chirp, det_input, write_fork_checkpoint

SCRIPT = Path(sys.executable).parent / "conformer-xai"
FAST = ["--methods", "gradcam,rollout,grad_rollout"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "explain", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spectro")
    paths = {"fork": write_fork_checkpoint(root / "fork.pth"), "clip": root / "clip.wav",
             "array": root / "spec.npy"}
    soundfile.write(paths["clip"], chirp(1.0), 16000, subtype="PCM_16")  # 101 frames: odd
    np.save(paths["array"], det_input((224, 96), seed=7).numpy())
    return paths


def test_wav_and_raw_npy_with_a_fork_checkpoint(files, tmp_path: Path):
    import conformer_xai as cx

    out = tmp_path / "out"
    result = run(files["clip"], files["array"], "--checkpoint", files["fork"],
                 "--size-mismatch", "resize", *FAST, "--json", "--out", out)
    assert result.returncode == 0, result.stderr
    run_summary = json.loads(result.stdout)
    assert run_summary["model"] == "conformer_tinytiny_patch16"
    assert run_summary["size_mismatch"] == "resize"
    clip, array = run_summary["images"]
    assert clip["input_kind"] == "audio" and array["input_kind"] == "array"
    assert clip["input_size"] == [224, 51] and array["input_size"] == [224, 96]
    assert clip["fold"] == {"freq_ratio": 2, "n_mels": 112, "frames": 101, "sr": 16000,
                            "hop_length": 160, "fmin": 50.0, "fmax": 14000.0}
    assert clip["audio"]["n_fft"] == 512 and clip["size_mismatch"] == "resize"
    for summary in (clip, array):
        figure = Path(summary["files"]["figure"])
        assert figure.read_bytes()[:4] == b"\x89PNG" and figure.stat().st_size > 50_000
        assert sorted(summary["maps"]) == sorted(
            [f"gradcam/{h}/{b}/{k}" for h in ("fused", "cnn", "transformer")
             for b in ("cnn", "transformer") for k in range(1, 7)]
            + ["rollout/transformer"]
            + [f"grad_rollout/{h}/transformer" for h in ("fused", "cnn", "transformer")])

    model = cx.load_model(checkpoint=files["fork"], size_mismatch="resize")
    x_clip = cx.load_audio(files["clip"])[0]  # the model's own 1 -> 3 channel expansion
    x_array = torch.from_numpy(np.load(files["array"]))[None, None]
    for summary, x in ((clip, x_clip), (array, x_array)):
        with torch.no_grad():
            cnn, transformer = model.forward_branches(x)
        for head, logits in (("fused", cnn + transformer), ("cnn", cnn),
                             ("transformer", transformer)):
            probs = logits.softmax(-1)[0]
            for p in summary["predictions"][head]:
                assert p["prob"] == pytest.approx(float(probs[p["index"]]), abs=2e-6)


def test_bad_spectrogram_inputs_fail_one_line_each(files, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "text.wav").write_text("RIFF? no, just some text\n")
    soundfile.write(bad / "zero.wav", np.zeros(0, dtype=np.int16), 16000, subtype="PCM_16")
    np.save(bad / "nan.npy", np.full((64, 64), np.nan, dtype=np.float32))
    np.save(bad / "cube.npy", np.zeros((2, 64, 64), dtype=np.float32))
    stereo = np.stack([chirp(0.7, 22050), chirp(0.7, 22050, seed=1)], axis=1)
    soundfile.write(bad / "stereo.wav", stereo, 22050, subtype="PCM_16")
    names = ["empty.wav", "text.wav", "zero.wav", "nan.npy", "cube.npy", "stereo.wav"]
    result = run(*[bad / n for n in names], "--checkpoint", files["fork"], "--methods",
                 "gradcam", "--json", "--out", tmp_path / "out")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("conformer-xai: ")
              and ": error: " in line]
    assert "Traceback" not in result.stderr
    expected = {"empty.wav": "not an audio file (empty file)",
                "text.wav": "not an audio file soundfile can read",
                "zero.wav": "the clip holds no samples",
                "nan.npy": "the array holds NaN or infinite values",
                "cube.npy": "the array has 2 channels (shape (2, 64, 64)) but the model takes 3"}
    assert len(errors) == len(expected), result.stderr
    for name, fragment in expected.items():
        assert any(name in e and fragment in e for e in errors), (name, result.stderr)
    assert "stereo.wav: 2 channels mixed down to mono" in result.stderr
    assert [i["input"] for i in json.loads(result.stdout)["images"]] == [str(bad / "stereo.wav")]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--input-size", "224x96"], "--input-size: raw arrays are fed to the model at their own "
                                 "size"),
    (["--no-crop"], "--no-crop: raw arrays are fed"),
    (["--frames", "448"], "--audio-config and --frames apply to audio inputs"),
    (["--ema"], None),
])
def test_spectrogram_usage_errors(files, tmp_path: Path, args, fragment):
    if fragment is None:  # --ema without --checkpoint
        result = run(files["array"], "--model", "conformer_tinytiny_patch16", "--weights",
                     "random", *args, "--out", tmp_path / "out")
        fragment = "--ema applies to --checkpoint files"
    else:
        result = run(files["array"], "--checkpoint", files["fork"], *args, "--out",
                     tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("conformer-xai: error: ")
    assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


def test_explain_dataset_of_clips_needs_one_size(files, tmp_path: Path):
    clips = tmp_path / "clips"
    clips.mkdir()
    soundfile.write(clips / "a.wav", chirp(0.9), 16000, subtype="PCM_16")  # 91 frames: 224x46
    soundfile.write(clips / "b.wav", chirp(1.2, seed=1), 16000, subtype="PCM_16")  # 224x61
    common = ["explain-dataset", clips, "--checkpoint", files["fork"], "--methods", "gradcam",
              "--blocks", "2,6", "--num-workers", "0", "--batch-size", "2", "--json"]
    store = tmp_path / "store"
    refused = subprocess.run([str(SCRIPT), *map(str, common), "--out", store],
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("conformer-xai: error: ")
    assert "differ in size (224x46 (1 file(s), e.g. a.wav), 224x61 (1 file(s), e.g. b.wav))" in line
    assert "--frames N" in line and not store.exists()
    done = subprocess.run([str(SCRIPT), *map(str, common), "--frames", "128", "--out", store],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["processed"] == 2 and summary["failed"] == 0
    config = json.loads((store / "zarr.json").read_text())["attributes"]["conformer_xai"]
    assert config["input_size"][1:] == [224, 64]  # 128 frames folded
    assert config["audio_config"]["frames"] == 128


def test_notes_for_a_guessed_head_count_and_a_name_that_disagrees(files, tmp_path: Path):
    bare = write_fork_checkpoint(tmp_path / "no_args.pth", args=False)
    guessed = run(files["array"], "--checkpoint", bare, "--methods", "gradcam", "--blocks", "6",
                  "--json", "--out", tmp_path / "out")
    assert guessed.returncode == 0, guessed.stderr
    assert ("note: checkpoint " + str(bare) + ": num_heads cannot be read from the weights; "
            "guessed 6 (embed_dim 384 // 64); pass --num-heads N") in guessed.stderr
    assert json.loads(guessed.stdout)["model"] == "conformer_d6_e384_h6_r1_patch16"
    named = run(files["array"], "--model", "conformer_tiny_patch16", "--checkpoint",
                files["fork"], "--out", tmp_path / "out2")
    assert named.returncode == 1
    assert "note: checkpoint" in named.stderr and "was trained as Conformer_tinytiny_patch16 " \
        "(args.model); building conformer_tiny_patch16 as asked" in named.stderr
    assert named.stderr.strip().splitlines()[-1].startswith("conformer-xai: error: ")
