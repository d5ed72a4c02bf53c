"""Training of the small models: a 20-step smoke run, the files it writes, determinism, errors."""

from __future__ import annotations

import hashlib
import json

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import conformer_xai  # noqa: F401  (registers the small models with timm)
from conformer_xai.synthetic import CLASS_NAMES, evaluate_accuracy, train_model
from conformer_xai.synthetic.train import reproduce_command


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """conformer_micro_patch16 trained for 20 steps of 4 scenes."""
    out = tmp_path_factory.mktemp("train")
    lines: list[str] = []
    meta = train_model("conformer_micro_patch16", steps=20, batch_size=4, seed=1, out=out,
                       eval_n=20, log=lines.append, log_every=10)
    return out, meta, lines


def test_smoke_run_writes_loadable_fp16_weights(smoke):
    out, meta, _ = smoke
    path = out / "conformer_micro_patch16.safetensors"
    state = load_file(path)
    assert all(v.dtype == torch.float16 for k, v in state.items() if v.is_floating_point())
    model = timm.create_model("conformer_micro_patch16")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()}, strict=True)
    with safe_open(path, "pt") as f:
        assert json.loads(f.metadata()["classes"]) == list(CLASS_NAMES)
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_smoke_run_trains(smoke):
    """The weights move away from the seed's initialisation and the loss stays finite."""
    out, meta, _ = smoke
    state = load_file(out / "conformer_micro_patch16.safetensors")
    torch.manual_seed(1)
    init = timm.create_model("conformer_micro_patch16").state_dict()
    moved = [k for k, v in state.items() if v.is_floating_point()
             and not torch.allclose(v.float(), init[k], atol=1e-3)]
    assert "conv_cls_head.weight" in moved and "trans_cls_head.weight" in moved
    assert len(moved) > len(state) // 2
    assert 0.0 < meta["train_loss_last100"] < 10.0


def test_metadata_describes_the_run(smoke):
    out, meta, lines = smoke
    on_disk = json.loads((out / "conformer_micro_patch16.json").read_text())
    assert on_disk == meta
    assert meta["name"] == "conformer_micro_patch16"
    assert meta["classes"] == list(CLASS_NAMES)
    assert (meta["seed"], meta["steps"], meta["batch_size"]) == (1, 20, 4)
    assert meta["lr"] == 1e-3 and meta["dtype"] == "float16"
    assert meta["command"] == (f"conformer-xai train-synthetic --model conformer_micro_patch16 "
                               f"--steps 20 --seed 1 --batch-size 4 --out {out}")
    assert meta["test"]["n"] == 20 and meta["test"]["split"] == "test"
    assert 0.0 <= meta["test"]["accuracy"] <= 1.0
    assert meta["test_subset"]["n"] == 20
    assert set(meta["test"]["per_class"]) == set(CLASS_NAMES)
    assert meta["train_time_s"] > 0 and meta["torch_version"] == torch.__version__
    assert lines[0].startswith("training conformer_micro_patch16")
    assert any(line.startswith("step 20/20") for line in lines)


def test_reported_accuracy_is_the_saved_weights_accuracy(smoke):
    out, meta, _ = smoke
    state = load_file(out / "conformer_micro_patch16.safetensors")
    model = timm.create_model("conformer_micro_patch16")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v
                           for k, v in state.items()})
    accuracy = evaluate_accuracy(model, n=20, seed=meta["test"]["seed"], split="test")
    assert accuracy == pytest.approx(meta["test"]["accuracy"], abs=1e-6)


def test_same_seed_same_weights(tmp_path):
    a = train_model("resnet_micro", steps=3, batch_size=2, seed=4, out=tmp_path / "a",
                    eval_n=0, log=None)
    b = train_model("resnet_micro", steps=3, batch_size=2, seed=4, out=tmp_path / "b",
                    eval_n=0, log=None)
    wa = load_file(tmp_path / "a" / "resnet_micro.safetensors")
    wb = load_file(tmp_path / "b" / "resnet_micro.safetensors")
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["train_loss_last100"] == b["train_loss_last100"]
    assert "test" not in a


def test_existing_files_are_not_overwritten_without_force(smoke):
    out, _, _ = smoke
    path = out / "conformer_micro_patch16.safetensors"
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="force"):
        train_model("conformer_micro_patch16", steps=1, batch_size=2, out=out, log=None)
    assert path.read_bytes() == before


def test_force_overwrites(tmp_path):
    train_model("deit_micro_patch16", steps=1, batch_size=2, out=tmp_path, eval_n=0, log=None)
    first = (tmp_path / "deit_micro_patch16.safetensors").read_bytes()
    meta = train_model("deit_micro_patch16", steps=1, batch_size=2, seed=9, out=tmp_path,
                       eval_n=0, log=None, force=True)
    assert (tmp_path / "deit_micro_patch16.safetensors").read_bytes() != first
    assert meta["seed"] == 9


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="conformer_tiny_patch16"), "conformer_micro_patch16, resnet_micro"),
    (dict(steps=0), "steps"),
    (dict(size=100), "multiple of 32"),
    (dict(lr=0.0), "lr must be positive"),
    (dict(seed=-1), "seed"),
])
def test_bad_arguments(kwargs, match):
    args = dict(name="resnet_micro", steps=1, batch_size=2, eval_n=0, log=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_model(**args)


def test_reproduce_command_lists_only_non_defaults():
    assert reproduce_command("resnet_micro", 900, 0, "w") == (
        "conformer-xai train-synthetic --model resnet_micro --steps 900 --seed 0 --out w")
    assert reproduce_command("resnet_micro", 9, 2, "w", batch_size=8, lr=0.01, size=160) == (
        "conformer-xai train-synthetic --model resnet_micro --steps 9 --seed 2 --batch-size 8 "
        "--lr 0.01 --size 160 --out w")


def test_evaluate_accuracy_restores_training_mode():
    torch.manual_seed(0)
    model = timm.create_model("resnet_micro")
    model.train()
    accuracy, per_class = evaluate_accuracy(model, n=10, return_per_class=True)
    assert model.training
    assert 0.0 <= accuracy <= 1.0 and len(per_class) == len(CLASS_NAMES)
    with pytest.raises(ValueError, match="n must be at least 1"):
        evaluate_accuracy(model, n=0)
