"""``conformer-xai explain`` with checkpoint files: classes and channels read from the file,
target by name from a labels file, and the errors of checkpoints, targets, labels and devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "conformer-xai"
CAT = REPO / "examples" / "photos" / "chelsea.png"
RANDOM = ["--model", "conformer_micro_patch16", "--weights", "random"]
FAST = ["--methods", "gradcam,rollout", "--blocks", "12", "--input-size", "64x64"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), "explain", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    """A 4-class, 1-channel fine-tuned small Conformer; a ResNet's weights; a corrupt file."""
    import timm
    import torch

    import conformer_xai  # noqa: F401  (registers the small models with timm)

    torch.manual_seed(0)
    conformer = timm.create_model("conformer_micro_patch16", num_classes=4, in_chans=1)
    resnet = timm.create_model("resnet_micro", num_classes=4)
    paths = {"good": tmp_path / "spectro.pth", "other": tmp_path / "resnet.pth",
             "corrupt": tmp_path / "corrupt.pth", "labels": tmp_path / "labels.txt"}
    torch.save({"state_dict": conformer.state_dict()}, paths["good"])
    torch.save(resnet.state_dict(), paths["other"])
    paths["corrupt"].write_bytes(paths["good"].read_bytes()[:5000])
    paths["labels"].write_text("speech\nmusic\nnoise\nsilence\n")
    return paths


def test_checkpoint_sets_classes_and_channels_and_target_by_name(checkpoints, tmp_path: Path):
    out = tmp_path / "out"
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint",
                 checkpoints["good"], "--labels", checkpoints["labels"], "--target", "Noise",
                 "--input-size", "64x96", "--no-crop", "--methods", "gradcam", "--blocks",
                 "11,12", "--head", "cnn", "--format", "svg", "--json", "--out", out)
    assert result.returncode == 0, result.stderr
    [summary] = json.loads(result.stdout)["images"]
    assert summary["weights"] == f"checkpoint:{checkpoints['good']}"
    assert summary["target"] == {"index": 2, "name": "noise"}
    assert summary["input_size"] == [64, 96]
    assert summary["heads"] == ["cnn"]
    assert sorted(summary["maps"]) == sorted(f"gradcam/cnn/{b}/{k}"
                                             for b in ("cnn", "transformer") for k in (11, 12))
    for top in summary["predictions"].values():
        assert sorted(p["index"] for p in top) == [0, 1, 2, 3]
        assert {p["name"] for p in top} == {"speech", "music", "noise", "silence"}
    assert "<svg" in (out / "chelsea.svg").read_text()[:2000]
    assert "random weights" not in result.stderr


@pytest.mark.parametrize(("case", "code", "fragment"), [
    ("other", 1, "resnet.pth"),
    ("corrupt", 1, "corrupt.pth"),
    ("target", 2, "out of range"),
    ("labels", 2, "labels"),
])
def test_checkpoint_and_target_errors(checkpoints, tmp_path: Path, case, code, fragment):
    args = [CAT, "--model", "conformer_micro_patch16", *FAST, "--out", tmp_path / "out"]
    if case in ("other", "corrupt"):
        args += ["--checkpoint", checkpoints[case]]
    elif case == "target":
        args += ["--checkpoint", checkpoints["good"], "--target", "4"]
    else:
        (tmp_path / "three.txt").write_text("a\nb\nc\n")
        args += ["--checkpoint", checkpoints["good"], "--labels", tmp_path / "three.txt"]
    result = run(*args)
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("conformer-xai: error: ") and fragment in line, line
    assert not (tmp_path / "out" / "chelsea.png").exists()


def test_cuda_without_a_gpu_is_a_runtime_error(tmp_path: Path):
    import torch

    result = run(CAT, *RANDOM, *FAST, "--head", "fused", "--device", "cuda",
                 "--out", tmp_path / "out")
    if torch.cuda.is_available():
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            "conformer-xai: error: --device cuda: no CUDA GPU is available here (use --device "
            "cpu or auto)"]


def test_failed_download_is_a_runtime_error(tmp_path: Path):
    env = {**os.environ, "CONFORMER_XAI_BASE_URL": "http://127.0.0.1:9/",
           "TORCH_HOME": str(tmp_path / "torch")}
    result = subprocess.run(
        [str(SCRIPT), "explain", str(CAT), "--model", "conformer_tiny_patch16", "--weights",
         "imagenet", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("conformer-xai: error: cannot download the ImageNet weights of "
                           "conformer_tiny_patch16 from http://127.0.0.1:9/"), line
    assert "--checkpoint" in line


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("conformer-xai: error: "), line
    return line


def test_a_text_file_as_checkpoint_is_one_clear_line(tmp_path: Path):
    text = tmp_path / "ck" / "text.pth"
    text.parent.mkdir()
    text.write_text("hello")
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint", text, *FAST,
                 "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert line == (f"conformer-xai: error: cannot read {text} as a PyTorch checkpoint (.pth/.pt) "
                    f"or safetensors file: it is a text file (starts with 'hello')"), line


def test_code_in_a_checkpoint_is_refused_in_one_short_line(tmp_path: Path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    code = ("import os, sys, torch\n"
            "class Payload:\n"
            "    def __reduce__(self):\n"
            "        return (os.system, ('touch ' + sys.argv[2],))\n"
            "torch.save({'model': {'w': torch.zeros(1)}, 'x': Payload()}, sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(evil), str(marker)], check=True)
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint", evil, *FAST,
                 "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert not marker.exists()
    assert len(line.replace(str(evil), "")) < 250, line  # short, whatever the path
    assert f"refused to load {evil}: it holds Python objects other than tensors" in line
    assert "weights_only" in line and "safetensors" in line
    assert "weights_only=False" not in line and "arbitrary code" not in line


def test_safetensors_named_pth_and_headless_checkpoint_with_new_head(tmp_path: Path):
    import timm
    import torch
    from safetensors.torch import save_file

    import conformer_xai  # noqa: F401

    torch.manual_seed(0)
    sd = timm.create_model("conformer_micro_patch16").state_dict()
    named_pth = tmp_path / "weights.pth"
    save_file(sd, str(named_pth))
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint", named_pth, *FAST,
                 "--json", "--out", tmp_path / "out1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["images"][0]["weights"] == f"checkpoint:{named_pth}"

    headless = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in sd.items() if "cls_head" not in k}, headless)
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint", headless,
                 "--num-classes", "3", "--new-head", *FAST, "--out", tmp_path / "out2")
    assert result.returncode == 0, result.stderr
    assert ("the checkpoint has no head weights (conv_cls_head.bias, conv_cls_head.weight, "
            "trans_cls_head.bias, trans_cls_head.weight)") in result.stderr
    result = run(CAT, "--model", "conformer_micro_patch16", "--checkpoint", headless, *FAST,
                 "--out", tmp_path / "out3")
    assert result.returncode == 1
    assert "has no head weights" in one_error_line(result) and "--new-head" in result.stderr


def test_timm_weights_with_the_hub_unreachable_are_one_line(tmp_path: Path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        [str(SCRIPT), "explain", str(REPO / "examples" / "scenes" / "scene_000.png"), "--model",
         "resnet101", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert line.startswith(f"conformer-xai: error: cannot load timm's pretrained weights for "
                           f"resnet101: 127.0.0.1:{port} cannot be reached ("), line
    assert "--checkpoint PATH" in line and "Retrying" not in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
