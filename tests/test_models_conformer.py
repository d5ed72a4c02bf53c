"""The Conformer architecture: published keys and logits, both heads, attention paths, sizes, hooks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from conftest import recipe_state_dict

import conformer_xai  # noqa: F401  (registers our models with timm)
from conformer_xai.models import CONFORMER_VARIANTS, Conformer

DATA = Path(__file__).parent / "data"
PARAMS_M = {"conformer_tiny_patch16": 23.5, "conformer_small_patch16": 37.7,
            "conformer_small_patch32": 38.8, "conformer_base_patch16": 83.3}
VARIANTS = tuple(PARAMS_M)


def small_conformer(num_classes: int = 5, in_chans: int = 3, patch_size: int = 16) -> Conformer:
    """A small real Conformer (12 coupled blocks) with deterministic, non-degenerate weights."""
    model = Conformer(patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                      channel_ratio=0.25, embed_dim=48, num_heads=3)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(recipe_state_dict(shapes), strict=True)
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def official_keys() -> dict[str, dict[str, list[int]]]:
    return json.loads((DATA / "official_conformer_keys.json").read_text())


@pytest.fixture(scope="module")
def model() -> Conformer:
    return small_conformer()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- published structure
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_key_and_shape_matches_the_published_checkpoint(variant, official_keys):
    model = timm.create_model(variant)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_keys[variant]
    assert list(ours) == list(official_keys[variant])
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - PARAMS_M[variant]) < 0.1  # the table rounds 38.85 M down
    assert model.patch_size == CONFORMER_VARIANTS[variant]["patch_size"]


def test_deterministic_weights_reproduce_the_published_logits(official_keys):
    reference = json.loads((DATA / "deterministic_logits_tiny.json").read_text())
    expected = reference["conformer_tiny_patch16"]["[2, 3, 224, 224]"]
    model = timm.create_model("conformer_tiny_patch16").eval()
    model.load_state_dict(recipe_state_dict(official_keys["conformer_tiny_patch16"]), strict=True)
    x = torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cnn, trans = model.forward_branches(x)
        fused = model(x)
    assert rel_err(cnn, torch.tensor(expected["cnn"])) < 1e-4
    assert rel_err(trans, torch.tensor(expected["transformer"])) < 1e-4
    torch.testing.assert_close(fused, cnn + trans, rtol=0, atol=0)


def test_timm_registration_carries_the_published_preprocessing():
    for variant in VARIANTS:
        assert timm.is_model(variant)
    model = timm.create_model("conformer_small_patch32", num_classes=3, in_chans=1)
    assert (model.num_classes, model.in_chans, model.patch_size) == (3, 1, 32)
    assert model.conv1.weight.shape[1] == 1
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["interpolation"] == "bicubic"
    assert cfg["crop_pct"] == 0.875
    assert cfg["mean"] == (0.485, 0.456, 0.406)
    assert cfg["std"] == (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- heads and attention
def test_model_output_is_the_sum_of_both_heads(model, x):
    with torch.no_grad():
        branches = model.forward_branches(x)
        fused = model(x)
        feats = model.forward_features(x)
    assert branches.cnn.shape == branches.transformer.shape == (2, 5)
    torch.testing.assert_close(fused, branches.cnn + branches.transformer, rtol=0, atol=0)
    torch.testing.assert_close(model.forward_head(feats), fused, rtol=0, atol=0)
    assert not torch.allclose(branches.cnn, branches.transformer)


def test_both_attention_paths_give_the_same_logits(x):
    model = small_conformer()
    with torch.no_grad():
        fused_path = model(x)
        model.set_fused_attn(False)
        explicit_path = model(x)
    assert all(not m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    assert rel_err(explicit_path, fused_path) < 1e-4


def test_a_three_class_head():
    model = small_conformer(num_classes=3)
    assert model.conv_cls_head.out_features == model.trans_cls_head.out_features == 3
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 3)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


# --------------------------------------------------------------------------- intermediates
def test_forward_intermediates_nchw_and_nlc(model, x):
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        tokens = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
        feats = model.forward_features(x)
    assert len(inter) == len(tokens) == 12
    gh, gw = model.token_grid(64, 64)
    assert (gh, gw) == (4, 4)
    for k, (nchw, nlc) in enumerate(zip(inter, tokens, strict=True), start=1):
        assert nchw.transformer.shape == (2, 48, gh, gw)
        assert nlc.transformer.shape == (2, 1 + gh * gw, 48)
        width = 16 if k <= 4 else 32 if k <= 8 else 64
        side = 16 if k <= 4 else 8 if k <= 8 else 4
        if k == 12:
            side = 2  # block 12's fusion block has stride 2
        assert nchw.cnn.shape == (2, width, side, side)
        grid = nlc.transformer[:, 1:].transpose(1, 2).reshape(2, 48, gh, gw)
        torch.testing.assert_close(nchw.transformer, grid, rtol=0, atol=0)
        torch.testing.assert_close(nchw.cnn, nlc.cnn, rtol=0, atol=0)
    torch.testing.assert_close(final.cnn, feats.cnn, rtol=0, atol=0)
    torch.testing.assert_close(final.transformer, feats.transformer, rtol=0, atol=0)


def test_forward_intermediates_indices(model, x):
    with torch.no_grad():
        every = model.forward_intermediates(x, intermediates_only=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[0, -1, 5], intermediates_only=True,
                                             stop_early=True)
        early = model.forward_intermediates(x, indices=[3], intermediates_only=True,
                                            stop_early=True, norm=True, output_fmt="NLC")
    assert len(last_two) == 2 and len(picked) == 3
    for got, want in [(last_two[0], every[10]), (last_two[1], every[11]), (picked[0], every[0]),
                      (picked[1], every[11]), (picked[2], every[5])]:
        torch.testing.assert_close(got.cnn, want.cnn, rtol=0, atol=0)
        torch.testing.assert_close(got.transformer, want.transformer, rtol=0, atol=0)
    assert early[0].transformer.shape == (2, 17, 48)
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[12])
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")


# --------------------------------------------------------------------------- input sizes
@pytest.mark.parametrize("size", [(224, 288), (250, 250), (64, 96), (32, 32)])
def test_non_square_and_odd_sizes_run(model, size):
    h, w = size
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
        inter = model.forward_intermediates(x, indices=[0], intermediates_only=True)
    assert out.shape == (1, 5) and torch.isfinite(out).all()
    gh, gw = model.token_grid(h, w)
    assert inter[0].transformer.shape[-2:] == (gh, gw)
    ph, pw = model.padded_input_size(h, w)
    assert (ph, pw) == (gh * 16, gw * 16)
    assert ph >= h - 15 and pw >= w - 15
    if h % 32 == 0 and w % 32 == 0:
        assert (ph, pw) == (h, w)


def test_odd_size_is_padded_after_the_stem_and_multiples_of_32_are_untouched(model):
    x = torch.randn(1, 3, 250, 250, generator=torch.Generator().manual_seed(4))
    stem = model.forward_stem(x)
    assert stem.shape[-2:] == (64, 64)  # 63 after the stem, padded to a multiple of 4
    assert stem[..., 63, :].abs().sum() == 0 and stem[..., :, 63].abs().sum() == 0
    y = torch.randn(1, 3, 224, 288)
    assert model.forward_stem(y).shape[-2:] == (56, 72)


def test_one_channel_input_runs():
    model = small_conformer(num_classes=3, in_chans=1)
    x = torch.randn(2, 1, 112, 160, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("shape", [(1, 3, 31, 64), (1, 3, 64, 16), (3, 64, 64)])
def test_bad_input_shapes_are_refused(model, shape):
    with pytest.raises(ValueError, match=r">= 32|\(B, C, H, W\)"):
        model(torch.randn(*shape))


def test_patch32_variant_on_a_small_input():
    model = small_conformer(patch_size=32)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        out = model(x)
        inter = model.forward_intermediates(x, indices=[-1], intermediates_only=True)
    assert torch.isfinite(out).all()
    assert inter[0].transformer.shape[-2:] == model.token_grid(96, 64) == (3, 2)


# --------------------------------------------------------------------------- explanation safety
def test_no_in_place_change_to_tensors_explanations_read(x):
    model = small_conformer()
    model.set_fused_attn(False)
    seen = []

    def keep(module, args, output):
        for t in output if isinstance(output, tuple) else (output,):
            seen.append((module, t, t.detach().clone()))

    modules = []
    for k in range(1, model.depth + 1):
        block = model.trans_block_module(k)
        modules += [block, block.norm1, block.attn.attn_drop, model.cnn_block_module(k)]
    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        out = model(x.clone().requires_grad_(True))
        out.sum().backward()
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 4 * model.depth
    for module, live, snapshot in seen:
        assert torch.equal(live, snapshot), f"{module.__class__.__name__} output changed in place"
    assert all(not m._forward_hooks for m in modules)


def test_attention_probabilities_at_attn_drop_are_row_stochastic(model, x):
    model.set_fused_attn(False)
    probs = []
    handles = [model.trans_block_module(k).attn.attn_drop.register_forward_hook(
        lambda m, a, o: probs.append(o)) for k in range(1, model.depth + 1)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.set_fused_attn(True)
    assert len(probs) == model.depth
    for p in probs:
        assert p.shape == (2, 3, 17, 17)
        assert (p >= 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 17), rtol=0, atol=1e-5)


def test_fused_path_has_no_attention_at_attn_drop(model, x):
    calls = []
    handle = model.trans_1.attn.attn_drop.register_forward_hook(lambda m, a, o: calls.append(o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert calls == []
