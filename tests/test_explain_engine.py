"""The engine's contract: keys, shapes, invariances, hook hygiene, bad input (issue 3)."""

from __future__ import annotations

import gc
import os

import numpy as np
import psutil
import pytest
import timm
import torch
from conftest import make_tiny_conformer
from pytorch_grad_cam import GradCAM

import conformer_xai  # noqa: F401  (registers our models with timm)
from conformer_xai import Explainer, Explanation
from conformer_xai.explain import METHODS


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_default_methods_give_every_documented_key(tiny_conformer, images):
    exp = Explainer(tiny_conformer).explain(images)
    keys = set(exp.maps)
    for k in range(1, 13):
        for branch in ("cnn", "transformer"):
            assert f"features/{branch}/{k}" in keys
            assert f"gradcam/fused/{branch}/{k}" in keys
        assert f"attention/transformer/{k}" in keys
    assert {"rollout/transformer", "grad_rollout/fused/transformer"} <= keys
    assert len(keys) == 12 * 2 + 12 + 24 + 2
    for key, m in exp.maps.items():
        assert m.shape == (2, 64, 64) and m.dtype == torch.float32
        assert m.min() >= 0 and m.max() <= 1 and not torch.isnan(m).any(), key
    assert set(exp.logits) == {"fused", "cnn", "transformer"}
    torch.testing.assert_close(exp.logits["fused"], exp.logits["cnn"] + exp.logits["transformer"])
    torch.testing.assert_close(exp.target, exp.logits["fused"].argmax(-1))
    torch.testing.assert_close(exp.probs["cnn"].sum(-1), torch.ones(2))


def test_features_equal_block_outputs(tiny_conformer, images):
    exp = Explainer(tiny_conformer).explain(images, methods=("features",), reduce="mean")
    with torch.no_grad():
        inter = tiny_conformer.forward_intermediates(images, intermediates_only=True)
    for k in (1, 6, 12):
        torch.testing.assert_close(exp.raw[f"features/transformer/{k}"],
                                   inter[k - 1].transformer.mean(dim=1))
        torch.testing.assert_close(exp.raw[f"features/cnn/{k}"], inter[k - 1].cnn.mean(dim=1))
    l2 = Explainer(tiny_conformer).explain(images, methods=("features",), reduce="l2", blocks=[3])
    torch.testing.assert_close(l2.raw["features/cnn/3"], inter[2].cnn.norm(dim=1))
    ch = Explainer(tiny_conformer).explain(images, methods=("features",), reduce=5, blocks=[3])
    torch.testing.assert_close(ch.raw["features/transformer/3"], inter[2].transformer[:, 5])


def test_batch_invariance(tiny_conformer, images):
    explainer = Explainer(tiny_conformer)
    methods = ("features", "attention", "gradcam", "layercam", "rollout", "grad_rollout")
    # reduce="mean": the engine's batch invariance (pca's SVD adds float32 noise of ~2e-6)
    batch = explainer.explain(images, target=[0, 2], head=("cnn", "transformer"), methods=methods,
                              reduce="mean")
    for i, t in enumerate([0, 2]):
        alone = explainer.explain(images[i:i + 1], target=t, head=("cnn", "transformer"),
                                  methods=methods, reduce="mean")
        for key, value in alone.raw.items():
            torch.testing.assert_close(batch.raw[key][i:i + 1], value, rtol=1e-4, atol=1e-6)


def test_both_attention_paths_give_the_same_maps(tiny_conformer, images):
    methods = ("features", "gradcam", "hirescam")
    fused = Explainer(tiny_conformer).explain(images, head=("cnn", "transformer"),
                                              methods=methods, reduce="mean")
    tiny_conformer.set_fused_attn(False)
    try:
        explicit = Explainer(tiny_conformer).explain(images, head=("cnn", "transformer"),
                                                     methods=methods, reduce="mean")
    finally:
        tiny_conformer.set_fused_attn(True)
    for key in fused.raw:
        torch.testing.assert_close(fused.raw[key], explicit.raw[key], rtol=1e-4, atol=1e-5)


def test_hooks_and_state_restored_after_explain_and_after_an_error(tiny_conformer, images):
    tiny_conformer.train()
    params = [p.requires_grad for p in tiny_conformer.parameters()]
    tiny_conformer.eval()
    before = tiny_conformer(images).detach()
    tiny_conformer.train()
    with Explainer(tiny_conformer) as explainer:
        explainer.explain(images)
        assert hook_count(tiny_conformer) == 0
        with pytest.raises(ValueError, match="out of range"):
            explainer.explain(images, target=99)  # raised after the forward, inside the hooks
        assert hook_count(tiny_conformer) == 0
    assert tiny_conformer.training
    assert [p.requires_grad for p in tiny_conformer.parameters()] == params
    assert all(a.fused_attn for a in (tiny_conformer.trans_block_module(k).attn
                                      for k in range(1, 13)))
    tiny_conformer.eval()
    torch.testing.assert_close(tiny_conformer(images), before)


def test_exception_inside_context_manager_removes_hooks(tiny_conformer, images):
    with pytest.raises(RuntimeError, match="boom"), Explainer(tiny_conformer) as explainer, \
            explainer.nchw_tap("transformer", 3):
        assert hook_count(tiny_conformer) > 0
        raise RuntimeError("boom")
    assert hook_count(tiny_conformer) == 0


@pytest.mark.parametrize("size", [(64, 96), (70, 90), (33, 47)])
def test_non_square_and_odd_sizes(size):
    model = make_tiny_conformer()
    x = torch.randn(1, 3, *size)
    exp = Explainer(model).explain(x, head=("cnn", "transformer"))
    gh, gw = model.token_grid(*size)
    for key, m in exp.maps.items():
        assert m.shape == (1, *size), key
    assert exp.raw["rollout/transformer"].shape == (1, gh, gw)
    # CNN block 1 runs at stride 4 on the padded stem: padded rows are cropped away.
    assert exp.raw["features/cnn/1"].shape == (1, -(-size[0] // 4), -(-size[1] // 4))


def test_non_square_token_grid_is_row_major_rows_by_columns():
    """Token t (after the class token) of a 64x96 input is grid cell (t // 6, t % 6) of 4x6."""
    model = make_tiny_conformer()
    x = torch.randn(1, 3, 64, 96)
    tokens = {}
    handles = [model.trans_block_module(k).register_forward_hook(
        lambda m, a, o, k=k: tokens.__setitem__(k, o.detach())) for k in (1, 7)]
    try:
        exp = Explainer(model).explain(x, methods=("features", "attention", "gradcam", "rollout"),
                                       blocks=[1, 7], reduce="mean")
    finally:
        for h in handles:
            h.remove()
    assert model.token_grid(64, 96) == (4, 6)
    for k in (1, 7):
        expected = tokens[k][:, 1:].mean(dim=-1).reshape(1, 4, 6)
        torch.testing.assert_close(exp.raw[f"features/transformer/{k}"], expected)
        assert exp.raw[f"attention/transformer/{k}"].shape == (1, 4, 6)
        assert exp.raw[f"gradcam/fused/transformer/{k}"].shape == (1, 4, 6)
    assert exp.raw["rollout/transformer"].shape == (1, 4, 6)


def test_one_channel_model():
    model = make_tiny_conformer(num_classes=3, in_chans=1)
    exp = Explainer(model).explain(torch.randn(2, 1, 64, 128), head=("cnn", "transformer"))
    assert exp.maps["gradcam/cnn/cnn/12"].shape == (2, 64, 128)
    assert exp.logits["cnn"].shape == (2, 3)


def test_all_methods_and_attention_heads(tiny_conformer, images):
    exp = Explainer(tiny_conformer).explain(images, methods=tuple(METHODS), blocks=[2, 12],
                                            head=("fused", "cnn"), attn_heads=True)
    assert exp.raw["attention_heads/transformer/2"].shape == (2, 3, 4, 4)
    torch.testing.assert_close(exp.raw["attention_heads/transformer/2"].mean(1),
                               exp.raw["attention/transformer/2"])
    for method in ("gradcam", "gradcam++", "layercam", "hirescam"):
        assert f"{method}/cnn/transformer/2" in exp.maps
    assert "eigencam/cnn/12" in exp.maps and "eigencam/transformer/2" in exp.maps
    assert exp.get("gradcam", "cnn", 12, head="cnn") is exp.maps["gradcam/cnn/cnn/12"]
    assert exp.get("rollout") is exp.maps["rollout/transformer"]
    assert exp.blocks("features", "cnn") == [2, 12]
    with pytest.raises(KeyError, match="available"):
        exp.get("gradcam", "cnn", 5)


def test_save_and_load_roundtrip(tiny_conformer, images, tmp_path):
    exp = Explainer(tiny_conformer, class_names=list("abcde")).explain(
        images, methods=("features", "gradcam", "rollout"), blocks=[1, 12])
    path = exp.save(tmp_path / "exp.npz")
    assert path.with_suffix(".json").exists()
    with pytest.raises(FileExistsError):
        exp.save(path)
    back = Explanation.load(path)
    assert back.keys() == exp.keys() and back.class_names == list("abcde")
    for key in exp.maps:
        np.testing.assert_array_equal(back.maps[key].numpy(), exp.maps[key].numpy())
        np.testing.assert_array_equal(back.raw[key].numpy(), exp.raw[key].numpy())
    torch.testing.assert_close(back.logits["fused"], exp.logits["fused"])
    assert back.heads == exp.heads and tuple(back.input_size) == (64, 64)
    assert set(exp.to_numpy()) >= {"target", "logits/cnn", "raw/rollout/transformer"}

    # the sidecar alone blocks a save, and the message names it
    path.unlink()
    with pytest.raises(FileExistsError, match=r"exp\.json exists"):
        exp.save(path)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="not an explanation written by Explanation.save"):
        Explanation.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError, match="missing"):
        Explanation.load(tmp_path / "absent.npz")


def test_select_one_image(tiny_conformer, images):
    exp = Explainer(tiny_conformer).explain(images, target=[1, 3], methods=("gradcam",),
                                            blocks=[12])
    last = exp.select(-1)
    assert len(last) == 1 and last.target.tolist() == [3]
    key = "gradcam/fused/cnn/12"
    torch.testing.assert_close(last.maps[key], exp.maps[key][1:])
    for bad in (2, -3, 0.0, True):
        with pytest.raises(ValueError, match=r"out of range for a batch of 2; accepted: 0\.\.1"):
            exp.select(bad)


# ---------------------------------------------------------------------- other families
def test_resnet101_has_33_cnn_blocks_and_one_head():
    model = timm.create_model("resnet101", num_classes=4).eval()
    explainer = Explainer(model)
    assert explainer.family == "resnet"
    assert explainer.branches == ("cnn",) and explainer.heads == ("cnn",)
    assert explainer.num_blocks("cnn") == 33


def test_resnet_gradcam_matches_pytorch_grad_cam():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    explainer = Explainer(model)
    exp = explainer.explain(x, target=[1, 2], blocks=[4, 8])
    assert set(exp.maps) == {"features/cnn/4", "features/cnn/8", "gradcam/cnn/cnn/4",
                             "gradcam/cnn/cnn/8"}
    theirs = explainer.pytorch_grad_cam(GradCAM, x, "cnn", 4, target=[1, 2])
    ours = exp.maps["gradcam/cnn/cnn/4"]
    assert all(ours[i].max() > 0 for i in range(2)), "empty map: the check would prove nothing"
    for i in range(2):
        assert np.corrcoef(ours[i].numpy().ravel(), theirs[i].ravel())[0, 1] >= 0.99
    with pytest.raises(ValueError, match="transformer branch"):
        explainer.explain(x, methods=("rollout",))


def test_deit_attention_and_gradcam():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=64, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    explainer = Explainer(model)
    assert explainer.heads == ("transformer",) and explainer.num_blocks("transformer") == 12
    exp = explainer.explain(x, target=[0, 3])
    assert exp.raw["rollout/transformer"].shape == (2, 4, 4)
    assert "gradcam/transformer/transformer/12" in exp.maps
    theirs = explainer.pytorch_grad_cam(GradCAM, x, "transformer", 6, target=[0, 3])
    ours = exp.maps["gradcam/transformer/transformer/6"]
    for i in range(2):
        if ours[i].max() > 0:
            assert np.corrcoef(ours[i].numpy().ravel(), theirs[i].ravel())[0, 1] >= 0.99
    assert all(b.attn.fused_attn for b in model.blocks)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,x,match", [
    ({}, torch.randn(1, 2, 64, 64), r"2 channels; the model expects 3 \(or 1, repeated"),
    ({}, torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
    ({}, torch.full((1, 3, 64, 64), float("nan")), "NaN"),
    ({}, torch.randn(3, 64, 64), r"\(B, C, H, W\)"),
    ({"target": 5}, None, r"out of range; accepted: 0\.\.4"),
    ({"target": [1, 2, 3]}, None, "3 entries for a batch of 2"),
    ({"methods": ("gradcam", "shap")}, None, "unknown method 'shap'; accepted: features"),
    ({"head": "fusion"}, None, "unknown head 'fusion'.*accepted: fused, cnn, transformer"),
    ({"blocks": [0, 3]}, None, r"block 0 out of range.*accepted: 1\.\.12"),
    ({"blocks": [13]}, None, r"accepted: 1\.\.12"),
    ({"reduce": "median"}, None, "reduce must be one of"),
    ({}, torch.randn(2, 3, 64, 64, dtype=torch.float64), "float64 but the model's parameters"),
    ({}, torch.randn(0, 3, 64, 64), "empty batch"),
    ({"target": 1.5}, None, "integers"),
    ({"target": True}, None, "integers"),
    ({"target": [[1], [2]]}, None, "one dimension"),
    ({"blocks": []}, None, "blocks is empty"),
    ({"blocks": "12"}, None, "not the string"),
    ({"rollout_options": {"fusion": "max"}}, None, "unknown rollout option 'fusion'; accepted"),
    ({"autocast_dtype": "int8"}, None, "unknown dtype 'int8'; accepted"),
    ({"meta": 5}, None, "meta must be a mapping"),
    ({"image": "photo.png"}, None, "image must be a numeric array"),
])
def test_bad_input_names_the_problem(tiny_conformer, images, kwargs, x, match):
    with pytest.raises(ValueError, match=match):
        Explainer(tiny_conformer).explain(images if x is None else x, **kwargs)
    assert hook_count(tiny_conformer) == 0


def test_nan_weights_are_reported_not_explained(images):
    model = make_tiny_conformer()
    with torch.no_grad():
        model.trans_cls_head.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="logits are NaN or infinite: check its weights"):
        Explainer(model).explain(images)
    assert hook_count(model) == 0


def test_unknown_model_family():
    with pytest.raises(ValueError, match="no adapter for this model family; supported: conformer"):
        Explainer(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()))


def test_memory_stays_flat_over_1000_explanations():
    from conformer_xai.models import Conformer

    torch.manual_seed(0)
    model = Conformer(channel_ratio=0.125, embed_dim=24, num_heads=2, num_classes=3,
                      depth=3).eval()
    x = torch.randn(1, 3, 64, 64)
    process = psutil.Process(os.getpid())
    with Explainer(model) as explainer:
        for _ in range(100):
            explainer.explain(x, head=("cnn", "transformer"))
        gc.collect()
        start = process.memory_info().rss
        for _ in range(1000):
            explainer.explain(x, head=("cnn", "transformer"))
        gc.collect()
        growth = process.memory_info().rss - start
    assert growth < 50 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB"
    assert hook_count(model) == 0
