"""The spectrogram fork's variants and size behaviour: reference logits, any depth, 1-channel input.

The reference logits (``data/fork_tinytiny_detlogits.json``) are the fork's
``Conformer_tinytiny_patch16`` under the deterministic-weights recipe, on raw 1-channel inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import make_tiny_conformer, recipe_state_dict

from conformer_xai.models import Conformer
from conformer_xai.models.conformer import token_resize_index

DATA = Path(__file__).parent / "data"
FORK = json.loads((DATA / "fork_tinytiny_detlogits.json").read_text())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def det_input(shape: list[int], seed: int = 5) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 20 - 40


@pytest.fixture(scope="module")
def fork_model() -> Conformer:
    """The fork's tinytiny built from the reference manifest's deterministic state dict."""
    assert FORK["model"] == "Conformer_tinytiny_patch16" and FORK["num_classes"] == 3
    model = timm.create_model("conformer_tinytiny_patch16", num_classes=3).eval()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == FORK["manifest"]  # names and shapes exactly the fork's
    model.load_state_dict(recipe_state_dict(FORK["manifest"]), strict=True)
    return model


@pytest.mark.parametrize(("shape", "mode"), [
    ("[1, 1, 224, 224]", "pad"), ("[1, 1, 224, 224]", "resize"),
    ("[1, 1, 224, 200]", "resize"), ("[1, 1, 224, 136]", "resize")])
def test_fork_reference_logits(fork_model, shape, mode):
    expected = FORK["logits"][shape]
    fork_model.size_mismatch = mode
    try:
        with torch.no_grad():
            cnn, trans = fork_model.forward_branches(det_input(json.loads(shape)))
    finally:
        fork_model.size_mismatch = "pad"
    assert rel_err(cnn, torch.tensor([expected["cnn"]])) <= 1e-4
    assert rel_err(trans, torch.tensor([expected["transformer"]])) <= 1e-4


def test_padding_differs_from_the_fork_where_widths_do_not_line_up(fork_model):
    x = det_input([1, 1, 224, 200])
    with torch.no_grad():
        padded = fork_model(x)
    expected = FORK["logits"]["[1, 1, 224, 200]"]
    fork = torch.tensor([expected["cnn"]]) + torch.tensor([expected["transformer"]])
    assert rel_err(padded, fork) > 1e-2  # the issue's -10.55 / 28.69 / 44.58 against the fork
    torch.testing.assert_close(padded, torch.tensor([[-10.55, 28.69, 44.58]]), atol=0.01, rtol=0)


def test_size_mismatch_is_a_constructor_argument_and_an_attribute():
    model = timm.create_model("conformer_tinytinytiny_patch16", num_classes=3,
                              size_mismatch="resize")
    assert model.size_mismatch == "resize"
    assert all(b.resize_tokens for b in model.blocks[1:])
    model.size_mismatch = "pad"
    assert not any(b.resize_tokens for b in model.blocks[1:])
    with pytest.raises(ValueError, match="size_mismatch must be one of 'pad', 'resize'"):
        model.size_mismatch = "crop"
    with pytest.raises(ValueError, match="size_mismatch"):
        Conformer(size_mismatch="stretch")


# --------------------------------------------------------------------------- variants, depth
def test_fork_variants_are_registered_with_their_table():
    rows = {"conformer_tinytiny_patch16": (384, 6, 3, 16),
            "conformer_tinytinytiny_patch16": (192, 3, 3, 16)}
    for name, (dim, depth, heads, patch) in rows.items():
        assert timm.is_model(name)
        model = timm.create_model(name, num_classes=3)
        assert (model.embed_dim, model.depth, model.num_heads, model.patch_size) == (
            dim, depth, heads, patch)
        assert model.conv_1.conv3.out_channels == 64  # channel_ratio 1
        assert model.trans_1.attn.qkv.bias is not None
        assert model.pretrained_cfg["mean"] == (0.0, 0.0, 0.0)  # raw dB spectrograms


def test_depth_three_has_no_stage_one_coupled_block():
    model = timm.create_model("conformer_tinytinytiny_patch16", num_classes=3)
    names = {n.split(".")[0] for n, _ in model.named_children()}
    assert {"conv_trans_2", "conv_trans_3"} <= names and "conv_trans_4" not in names
    # conv_trans_2 opens stage 2 (stride 2, residual conv), conv_trans_3 opens stage 3 and fuses
    assert model.conv_trans_2.cnn_block.conv2.stride == (2, 2)
    assert model.conv_trans_2.cnn_block.res_conv and model.conv_trans_2.dw_stride == 2
    assert model.conv_trans_3.cnn_block.res_conv and model.conv_trans_3.dw_stride == 1
    assert model.conv_trans_3.fusion_block.res_conv
    assert [model.stage_of(k) for k in (1, 2, 3)] == [1, 2, 3]
    assert [model.cnn_stride(k) for k in (1, 2, 3)] == [4, 8, 32]


def test_architecture_keyword_arguments_as_timm_takes_them():
    model = timm.create_model("conformer_tiny_patch16", depth=9, num_heads=2, embed_dim=64,
                              channel_ratio=0.25, num_classes=4)
    assert (model.depth, model.num_heads, model.embed_dim) == (9, 2, 64)
    assert len(model.blocks) == 9
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    with pytest.raises(ValueError, match="multiple of 3"):
        timm.create_model("conformer_tiny_patch16", depth=8)


# --------------------------------------------------------------------------- 1-channel input
def test_one_channel_input_to_a_three_channel_model_equals_summed_stem():
    model = make_tiny_conformer(num_classes=3)
    mono = make_tiny_conformer(num_classes=3, in_chans=1)
    state = model.state_dict()
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    mono.load_state_dict(state)
    x = torch.randn(2, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expanded = model(x)
        summed = mono(x)
        repeated = model(x.repeat(1, 3, 1, 1))
    assert rel_err(expanded, summed) < 1e-5
    torch.testing.assert_close(expanded, repeated, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"expected 3 \(or 1, repeated over 3\) input channels"):
        model(torch.randn(1, 2, 64, 64))


# --------------------------------------------------------------------------- token grids
@pytest.mark.parametrize("depth", [3, 6, 12])
@pytest.mark.parametrize("size", [(96, 72), (64, 64), (112, 200)])
def test_token_grid_per_block_is_what_the_model_carries(depth, size):
    model = make_tiny_conformer(depth=depth)
    model.size_mismatch = "resize"
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        inter = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    grids = model.token_grids(*size)
    assert [t.transformer.shape[1] for t in inter] == [1 + h * w for h, w in grids]
    nchw = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(t.transformer.shape[-2:]) for t in nchw] == grids


def test_token_resize_index_is_the_models_selection():
    model = make_tiny_conformer(depth=6)
    model.size_mismatch = "resize"
    block = model.conv_trans_5  # first block of stage 3: 96 x 72 gives 1+24 -> 1+30 tokens
    seen = {}
    handles = [
        block.register_forward_pre_hook(lambda m, a: seen.__setitem__("incoming", a[1])),
        block.squeeze_block.register_forward_hook(lambda m, a, o: seen.__setitem__("fcu", o)),
        block.trans_block.register_forward_pre_hook(lambda m, a: seen.__setitem__("sum", a[0]))]
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, 96, 72, generator=torch.Generator().manual_seed(2)))
    finally:
        for h in handles:
            h.remove()
    incoming = seen["incoming"]
    n_in, n_out = incoming.shape[1], seen["sum"].shape[1]
    assert (n_in, n_out) == (25, 31)
    index = token_resize_index(n_in, n_out)
    assert index[0] == 0 and index.diff().ge(0).all() and index[-1] == n_in - 1
    # what the block added to FCU down's tokens is the incoming tokens picked by the index
    torch.testing.assert_close(seen["sum"] - seen["fcu"], incoming[:, index], rtol=1e-6,
                               atol=1e-6)
