"""Checkpoints as training scripts write them (the spectrogram fork's, DeiT-style): loaded with
no name, from ``args.model`` or from the state dict's shapes, ``model_ema``, and the fork's
reference logits in both size modes."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch
from _fork import REFERENCE, det_input, fork_state_dict, write_fork_checkpoint

import conformer_xai as cx
from conformer_xai.models.checkpoints import CheckpointWarning, infer_conformer_architecture
from conformer_xai.models.weights import WeightsError


@pytest.fixture(scope="module")
def fork_file(tmp_path_factory) -> Path:
    return write_fork_checkpoint(tmp_path_factory.mktemp("fork") / "checkpoint.pth",
                                 ema_offset=1.0)


def _rel_err(got: torch.Tensor, want: list[float]) -> float:
    want_t = torch.tensor(want)
    return float((got.flatten() - want_t).abs().max() / want_t.abs().max())


@pytest.mark.parametrize(("shape", "modes"), [
    ((1, 1, 224, 224), ("pad", "resize")),
    ((1, 1, 224, 200), ("resize",)),
    ((1, 1, 224, 136), ("resize",)),
])
def test_fork_checkpoint_loads_with_no_name_and_gives_the_reference_logits(fork_file, shape,
                                                                           modes):
    x = det_input(shape)
    want = REFERENCE["logits"][str(list(shape))]
    for mode in modes:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # nothing guessed: args.model
            model = cx.load_model(checkpoint=fork_file, size_mismatch=mode)
        assert model.model_name == "conformer_tinytiny_patch16"
        assert (model.depth, model.num_heads, model.num_classes) == (6, 3, 3)
        assert model.size_mismatch == mode
        with torch.no_grad():
            cnn, transformer = model.forward_branches(x)
        assert _rel_err(cnn, want["cnn"]) <= 1e-4, mode
        assert _rel_err(transformer, want["transformer"]) <= 1e-4, mode


def test_model_ema_and_explicit_names(fork_file):
    x = det_input((1, 1, 224, 224))
    plain = cx.load_model(checkpoint=fork_file)
    ema = cx.load_model(checkpoint=fork_file, ema=True)
    with torch.no_grad():  # the ema weights differ by +1 on both heads' biases
        diff = ema.forward_branches(x).cnn - plain.forward_branches(x).cnn
    torch.testing.assert_close(diff, torch.ones_like(diff), atol=1e-4, rtol=0)
    wins = r"trained as Conformer_tinytiny_patch16 \(args.model\); building conformer_tiny_patch16"
    with pytest.warns(CheckpointWarning, match=wins), \
            pytest.raises(WeightsError, match="does not fit conformer_tiny_patch16"):
        cx.load_model("conformer_tiny_patch16", checkpoint=fork_file)
    same = cx.load_model("CONFORMER_TINYTINY_PATCH16", checkpoint=fork_file)  # no warning
    assert same.model_name == "conformer_tinytiny_patch16"
    bare = write_fork_checkpoint(fork_file.with_name("plain.pth"), args=False)
    torch.save({"model": fork_state_dict()}, bare)
    with pytest.raises(WeightsError, match="holds no model_ema weights"):
        cx.load_model(checkpoint=bare, ema=True)


def test_architecture_from_the_state_dict_and_guessed_heads(fork_file, tmp_path: Path):
    path = write_fork_checkpoint(tmp_path / "no_args.pth", args=False)
    arch = infer_conformer_architecture(fork_state_dict())
    assert arch == dict(depth=6, embed_dim=384, channel_ratio=1, patch_size=16, qkv_bias=True,
                        mlp_ratio=4.0, num_classes=3, in_chans=3)
    with pytest.warns(CheckpointWarning, match=r"num_heads cannot be read from the weights; "
                                               r"guessed 6 \(embed_dim 384 // 64\)"):
        guessed = cx.load_model(checkpoint=path)
    assert (guessed.depth, guessed.num_heads) == (6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        told = cx.load_model(checkpoint=path, num_heads=3)
    assert told.num_heads == 3 and told.model_name == "conformer_tinytiny_patch16"
    x = det_input((1, 1, 224, 224))
    with torch.no_grad():
        cnn = told.forward_branches(x).cnn
    assert _rel_err(cnn, REFERENCE["logits"]["[1, 1, 224, 224]"]["cnn"]) <= 1e-4


def test_only_namespace_is_allowed_and_bad_requests(tmp_path: Path):
    path = tmp_path / "with_path.pth"
    torch.save({"model": fork_state_dict(), "args": argparse.Namespace(out=Path("/tmp"))}, path)
    with pytest.raises(WeightsError, match=r"holds Python objects other than tensors "
                                           r"\(pathlib\.\w*Path\)"):
        cx.load_model(checkpoint=path)
    with pytest.raises(ValueError, match="no model name given"):
        cx.load_model()
    with pytest.raises(ValueError, match="unknown size_mismatch 'stretch'"):
        cx.load_model("conformer_micro_patch16", weights="random", size_mismatch="stretch")
    with pytest.raises(ValueError, match="ema=True reads a checkpoint"):
        cx.load_model("conformer_micro_patch16", weights="random", ema=True)
    headless = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(3, 4)}, headless)
    with pytest.raises(ValueError, match="names no model"):
        cx.load_model(checkpoint=headless)
