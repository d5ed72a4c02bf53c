"""The explainer on a Conformer in ``size_mismatch="resize"`` mode (the spectrogram fork's).

At 96 x 72 the tiny depth-6 model carries 1 + 6 x 4 tokens in stages 1-2 and 1 + 6 x 5 in stage 3
(the tokens are resized along the token axis at block 5). Rollouts are checked against plain
reference code whose selection matrix comes from the fork's own operation applied to an identity.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_conformer

from conformer_xai.explain.explainer import Explainer
from conformer_xai.explain.methods.rollout import token_selection
from conformer_xai.explain.result import normalise_per_image

SIZE = (96, 72)


@pytest.fixture(scope="module")
def model():
    m = make_tiny_conformer(depth=6)
    m.size_mismatch = "resize"
    return m


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def exp(model, x):
    return Explainer(model).explain(
        x, methods=["features", "gradcam", "attention", "rollout", "grad_rollout"], head="fused")


def reference_attentions(model, x):
    """Explicit-path attention probabilities of every block and their gradients (fused head)."""
    model.set_fused_attn(False)
    store = []

    def hook(module, args, out):
        out.retain_grad()
        store.append(out)

    attns = [model.trans_block_module(k).attn for k in range(1, model.depth + 1)]
    handles = [a.attn_drop.register_forward_hook(hook) for a in attns]
    try:
        logits = model(x)
        target = logits.argmax(dim=1)
        logits.gather(1, target[:, None]).sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.set_fused_attn(True)
        model.zero_grad(set_to_none=True)
    return [a.detach().double().numpy() for a in store], [a.grad.double().numpy() for a in store]


def test_fork_selection_reference_is_the_package_selection():
    for n_in, n_out in [(25, 31), (169, 183), (113, 127), (7, 7)]:
        eye = torch.eye(n_in)[None]
        ref = F.interpolate(eye[None], size=(n_out, n_in))[0, 0].numpy()  # rows of the identity
        np.testing.assert_array_equal(token_selection(n_in, n_out).numpy(), ref)


def test_rollouts_carry_relevance_through_the_token_resize(model, x, exp):
    attns, grads = reference_attentions(model, x)
    counts = [a.shape[-1] for a in attns]
    assert counts == [25, 25, 25, 25, 31, 31]
    for b in range(x.shape[0]):
        rollout = np.eye(25)
        relevance = np.eye(25)
        for a, g in zip(attns, grads, strict=True):
            n = a.shape[-1]
            if n != rollout.shape[0]:
                s = F.interpolate(torch.eye(rollout.shape[0], dtype=torch.float64)[None, None],
                                  size=(n, rollout.shape[0]))[0, 0].numpy()
                assert set(np.unique(s)) == {0.0, 1.0} and (s.sum(1) == 1).all()
                rollout, relevance = s @ rollout, s @ relevance
            fused = 0.5 * a[b].mean(0) + 0.5 * np.eye(n)
            fused /= fused.sum(-1, keepdims=True)
            rollout = fused @ rollout
            relevance = relevance + np.maximum(g[b] * a[b], 0).mean(0) @ relevance
        np.testing.assert_allclose(exp.raw["rollout/transformer"][b].numpy(),
                                   rollout[0, 1:].reshape(6, 4), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(exp.raw["grad_rollout/fused/transformer"][b].numpy(),
                                   relevance[0, 1:].reshape(6, 4), rtol=1e-3, atol=1e-6)


def test_each_block_keeps_its_own_token_grid(model, exp):
    assert model.token_grids(*SIZE) == [(6, 4)] * 4 + [(6, 5)] * 2
    for k in range(1, 7):
        grid = (6, 4) if k <= 4 else (6, 5)
        assert exp.raw[f"attention/transformer/{k}"].shape[-2:] == grid
        assert exp.raw[f"features/transformer/{k}"].shape[-2:] == grid
        assert exp.raw[f"gradcam/fused/transformer/{k}"].shape[-2:] == grid
    assert exp.raw["rollout/transformer"].shape[-2:] == (6, 4)  # the first block's grid


def test_pixels_no_token_covers_are_nan_not_stretched(exp):
    h, w = SIZE
    for key, m in exp.maps.items():
        assert m.shape == (2, h, w), key
        covered = exp.raw[key].shape[-1] * (16 if "transformer" in key else 1)
        if "/transformer" in key and covered < w:
            # 4 token columns of 16 px cover 64 px; columns 64..71 no token covers
            assert torch.isnan(m[..., 64:]).all(), key
            assert not torch.isnan(m[..., :64]).any(), key
            assert m[..., :64].amin() == 0 and m[..., :64].amax() == 1
            ref = F.interpolate(exp.raw[key][:, None].float(), size=(h, 64), mode="bilinear",
                                align_corners=False)[:, 0]
            torch.testing.assert_close(m[..., :64], normalise_per_image(ref))
        else:
            assert not torch.isnan(m).any(), key
    # stage 3's 5 token columns cover 80 px: every pixel covered, the grid cropped at 72
    assert not torch.isnan(exp.maps["attention/transformer/6"]).any()
    raw = exp.raw["attention/transformer/6"]
    ref = F.interpolate(raw[:, None], size=(96, 80), mode="bilinear", align_corners=False)
    torch.testing.assert_close(exp.maps["attention/transformer/6"],
                               normalise_per_image(ref[:, 0, :, :72]))


def test_cnn_maps_are_placed_by_their_stride(exp):
    # block 1 (stride 4): 24 x 18 cells cover 96 x 72 exactly; block 6 (stride 32): 3 x 3 cover
    # 96 x 96, cropped to 72
    assert exp.raw["features/cnn/1"].shape[-2:] == (24, 18)
    assert exp.raw["features/cnn/6"].shape[-2:] == (3, 3)
    raw = exp.raw["features/cnn/6"]
    ref = F.interpolate(raw[:, None], size=(96, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(exp.maps["features/cnn/6"], normalise_per_image(ref[:, 0, :, :72]))


def test_one_channel_input_explains_a_three_channel_model(model, x, exp):
    mono = x[:, :1]
    got = Explainer(model).explain(mono, methods=["rollout"], head="fused")
    again = Explainer(model).explain(mono.repeat(1, 3, 1, 1), methods=["rollout"], head="fused")
    torch.testing.assert_close(got.raw["rollout/transformer"], again.raw["rollout/transformer"])


def test_metrics_count_uncovered_pixels_as_least_relevant(exp):
    from conformer_xai import metrics

    m = exp.maps["rollout/transformer"]
    assert torch.isnan(m).any()
    filled = torch.nan_to_num(m, nan=0.0)  # normalised maps: the lowest value is 0
    mask = torch.zeros(m.shape, dtype=torch.bool)
    mask[:, 20:60, 30:72] = True
    torch.testing.assert_close(metrics.pointing_game(m, mask), metrics.pointing_game(filled, mask))
    torch.testing.assert_close(metrics.energy_pointing_game(m, mask),
                               metrics.energy_pointing_game(filled, mask))
    other = exp.maps["features/cnn/2"]
    torch.testing.assert_close(metrics.spearman(m, other), metrics.spearman(filled, other))
    assert torch.isfinite(metrics.spearman(m, other)).all()
