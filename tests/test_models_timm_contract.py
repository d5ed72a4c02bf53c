"""timm's model contract, tested on every registered Conformer: forward and backward,
``features_only`` (and ``feature_info``), classifier reset, FX tracing forward and backward,
``torch.export``, and a feature-pyramid head on a non-square input.

Each registered entry point is built through timm with tiny widths (its depth and patch size
kept), so the builder, the registration and the structure are the real ones and tests stay fast.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import create_feature_extractor
from torch import nn

from conformer_xai.explain.explainer import Explainer
from conformer_xai.models import Conformer

REGISTERED = ["conformer_tiny_patch16", "conformer_small_patch16", "conformer_small_patch32",
              "conformer_base_patch16", "conformer_tinytiny_patch16",
              "conformer_tinytinytiny_patch16", "conformer_micro_patch16", "conformer_micro_audio"]
# in_chans=3 for every model (the spectrogram micro model defaults to 1): one input batch
TINY = dict(embed_dim=48, channel_ratio=0.25, num_heads=3, in_chans=3)
SIZE = (80, 112)  # not a multiple of 32: pad and resize modes differ


def build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **{**TINY, **kwargs})


def expected_hw(model: Conformer, size: tuple[int, int], stride: int) -> tuple[int, int]:
    """A CNN map's size: the (padded, in pad mode) input extent over the stride, rounded up."""
    h, w = model.padded_input_size(*size) if model.size_mismatch == "pad" else size
    return -(-h // stride), -(-w // stride)


def batch(n: int = 2, size: tuple[int, int] = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(1))


def test_every_registered_conformer_is_listed():
    registered = [n for n in timm.list_models("conformer*")
                  if isinstance(timm.create_model(n, **TINY, depth=3), Conformer)]
    assert sorted(registered) == sorted(REGISTERED)


@pytest.mark.parametrize("name", REGISTERED)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = build(name, num_classes=7).train()
    out = model(batch())
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", REGISTERED)
def test_classifier_reset_and_head_widths(name):
    model = build(name, num_classes=5).eval()
    x = batch(1)
    assert model.num_features == model.head_hidden_size == model.num_cnn_features + 48
    with torch.no_grad():
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(0, "")
        unpooled = model(x)
        torch.testing.assert_close(unpooled.cnn, features.cnn)
        torch.testing.assert_close(unpooled.transformer, features.transformer)
        model.reset_classifier(3, "avg")
        assert model(x).shape == (1, 3)
        headless = build(name, num_classes=0, global_pool="").eval()
        assert isinstance(headless(x), tuple) and len(headless(x)) == 2
    with pytest.raises(TypeError, match="unknown Conformer arguments"):
        build(name, not_a_model_arg=1)
    with pytest.raises(ValueError, match="global_pool must be 'avg' or ''"):
        model.reset_classifier(0, "max")
    meta = build(name, num_classes=4, device="meta", dtype=torch.float64)
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    meta.reset_classifier(2)
    assert meta.conv_cls_head.weight.dtype == torch.float64


@pytest.mark.parametrize("mode", ["pad", "resize"])
@pytest.mark.parametrize("name", REGISTERED)
def test_features_only_matches_feature_info(name, mode):
    backbone = build(name, features_only=True, size_mismatch=mode).eval()
    info = backbone.feature_info
    assert info.reduction() == [4, 8, 16, 32]
    x = batch(1)
    with torch.no_grad():
        maps = backbone(x)
    assert len(maps) == 4
    for m, chs, red in zip(maps, info.channels(), info.reduction(), strict=True):
        assert m.shape[:2] == (1, chs)
        assert m.shape[-2:] == expected_hw(backbone.model, SIZE, red)
        assert torch.isfinite(m).all()
    # the maps are the CNN branch's: the blocks that end the stages (and the last cnn_block)
    model = backbone.model
    depth = model.depth
    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
    torch.testing.assert_close(maps[0], inter[depth // 3 - 1].cnn, rtol=0, atol=0)
    torch.testing.assert_close(maps[1], inter[2 * depth // 3 - 1].cnn, rtol=0, atol=0)
    torch.testing.assert_close(maps[3], inter[depth - 1].cnn, rtol=0, atol=0)

    tokens = build(name, features_only=True, feature_branch="transformer", out_indices=(0, 2),
                   size_mismatch=mode).eval()
    assert tokens.feature_info.channels() == [48, 48]
    patch = model.patch_size
    assert tokens.feature_info.reduction() == [patch, patch]
    with torch.no_grad():
        grids = tokens(x)
    for got, k in zip(grids, (depth // 3, depth), strict=True):
        gh, gw = model.token_grid(*SIZE, k)
        assert got.shape == (1, 48, gh, gw) and torch.isfinite(got).all()


def test_features_only_through_timms_hook_and_fx_wrappers_give_the_same_maps():
    default = build("conformer_tinytiny_patch16", features_only=True, out_indices=(1, 2, 3))
    x = batch(1)
    with torch.no_grad():
        expected = default.eval()(x)
        for cls in ("hook", "fx"):
            other = build("conformer_tinytiny_patch16", features_only=True, feature_cls=cls,
                          out_indices=(1, 2, 3)).eval()
            got = other(x)  # same seed, same weights
            assert len(got) == 3
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="out_indices 4 out of range"):
        build("conformer_tinytiny_patch16", features_only=True, out_indices=(4,))
    with pytest.raises(ValueError, match="feature_branch must be one of cnn, transformer"):
        build("conformer_tinytiny_patch16", features_only=True, feature_branch="both")


@pytest.mark.parametrize("mode", ["pad", "resize"])
@pytest.mark.parametrize("name", REGISTERED)
def test_fx_forward_and_backward_equal_eager(name, mode):
    model = build(name, num_classes=4, size_mismatch=mode).train()
    traced = torch.fx.symbolic_trace(model)
    x = batch()
    eager_out = model(x)
    traced_out = traced(x)
    # train mode: the same BatchNorm batch statistics, no dropout in these models
    torch.testing.assert_close(traced_out, eager_out, rtol=1e-5, atol=1e-5)
    eager_out.square().mean().backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    traced_out.square().mean().backward()  # traced shares the model's parameters
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    backbone = build(name, features_only=True, size_mismatch=mode).eval()
    traced_backbone = torch.fx.symbolic_trace(backbone)
    with torch.no_grad():
        for a, b in zip(traced_backbone(x), backbone(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


# With the tiny widths, the depth-12 patch-16 entry points (tiny, small, base, micro) build the
# same graph; exporting (seconds each) covers each distinct structure once.
@pytest.mark.parametrize("name", ["conformer_tiny_patch16", "conformer_small_patch32",
                                  "conformer_tinytiny_patch16", "conformer_tinytinytiny_patch16"])
def test_torch_export(name):
    model = build(name, num_classes=3).eval()
    x = batch(1)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_export_in_resize_mode_and_of_the_backbone():
    model = build("conformer_tinytiny_patch16", num_classes=3, size_mismatch="resize").eval()
    x = batch(1, (96, 72))  # tokens resized along the token axis at block 5
    exported = torch.export.export(model, (x,))
    backbone = build("conformer_tinytiny_patch16", features_only=True).eval()
    exported_backbone = torch.export.export(backbone, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)
        for a, b in zip(exported_backbone.module()(x), backbone(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_explainer_unchanged_by_timms_fx_feature_extraction():
    model = build("conformer_micro_patch16", num_classes=3).eval()
    x = batch(1)
    before = Explainer(model).explain(x, methods=["gradcam", "rollout"], blocks=[2, 12])
    extractor = create_feature_extractor(model, return_nodes=["conv_trans_12.fusion_block"])
    with torch.no_grad():
        extracted = extractor(x)["conv_trans_12.fusion_block"]
        torch.testing.assert_close(extracted, model.forward_features(x).cnn, rtol=0, atol=0)
    after = Explainer(model).explain(x, methods=["gradcam", "rollout"], blocks=[2, 12])
    for key, value in before.raw.items():
        torch.testing.assert_close(after.raw[key], value, rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    # the GraphModule keeps the leaf modules: a hook there sees the traced model's activations
    seen = []
    handle = extractor.get_submodule("conv_trans_12.fusion_block.conv3").register_forward_hook(
        lambda m, a, o: seen.append(o.shape))
    try:
        extractor(x)
    finally:
        handle.remove()
    assert seen and seen[0][1] == model.num_cnn_features


# --------------------------------------------------------------------------- a detection-style neck
class TinyFPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): 1x1 laterals, top-down nearest upsampling, 3x3 outputs."""

    def __init__(self, channels: list[int], width: int = 16) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.output = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        return [conv(f) for conv, f in zip(self.output, laterals, strict=True)]


@pytest.mark.parametrize("mode", ["pad", "resize"])
def test_backbone_feeds_a_feature_pyramid_on_a_non_square_input(mode):
    backbone = build("conformer_tinytiny_patch16", features_only=True, size_mismatch=mode)
    neck = TinyFPN(backbone.feature_info.channels())
    x = batch(2, (100, 164))
    pyramid = neck(backbone.train()(x))
    strides = backbone.feature_info.reduction()
    assert [tuple(p.shape) for p in pyramid] == [
        (2, 16, *expected_hw(backbone.model, (100, 164), s)) for s in strides]
    sum(p.square().mean() for p in pyramid).backward()
    no_grad = {n for n, p in backbone.named_parameters() if p.grad is None}
    # the classifiers are gone; trans_norm only feeds them: everything else is trained
    assert no_grad == {"model.trans_norm.weight", "model.trans_norm.bias"}
    assert all(p.grad.abs().sum() > 0 for p in neck.parameters())
    copy.deepcopy(backbone)  # a backbone is an ordinary module (detection code deep-copies)


def test_pretrained_backbone_loads_the_weights_before_wrapping(tmp_path):
    from safetensors.torch import save_file

    source = build("conformer_tinytinytiny_patch16", num_classes=3).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    backbone = build("conformer_tinytinytiny_patch16", num_classes=3, pretrained=True,
                     features_only=True, out_indices=(3,),
                     pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert backbone.feature_info.channels() == [source.num_cnn_features]
    with torch.no_grad():
        (deepest,) = backbone(batch(1))
        torch.testing.assert_close(deepest, source.forward_features(batch(1)).cnn, rtol=0, atol=0)
