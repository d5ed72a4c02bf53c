"""Our maps against pytorch-grad-cam, captum and straightforward reference code (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam
from conftest import make_tiny_conformer
from pytorch_grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

from conformer_xai import Explainer
from conformer_xai.explain.methods import CAM_METHODS

TARGETS = [1, 3]  # two images, different targets
#: pytorch-grad-cam's class of every gradient CAM method but Grad-CAM (checked on its own below).
PYTORCH_GRAD_CAM = {"gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM,
                    "xgradcam": XGradCAM, "gradcam_elementwise": GradCAMElementWise}
BLOCKS = [1, 6, 12]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def conformer():
    return make_tiny_conformer()


@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 96, 96, generator=g)


@pytest.fixture(scope="module")
def explanation(conformer, x):
    with Explainer(conformer) as explainer:
        return explainer.explain(x, target=TARGETS, head=("fused", "cnn", "transformer"),
                                 methods=("gradcam", "rollout", "grad_rollout"))


@pytest.fixture(scope="module")
def attention_input(conformer, x):
    with Explainer(conformer) as explainer:
        return explainer.explain(x, target=TARGETS, head=("fused", "cnn", "transformer"),
                                 methods=("gradcam",), tap="attention_input")


@pytest.mark.parametrize("head,branch", [("cnn", "cnn"), ("transformer", "transformer"),
                                         ("fused", "cnn"), ("fused", "transformer")])
@pytest.mark.parametrize("block", BLOCKS)
def test_gradcam_matches_pytorch_grad_cam_at_norm1(conformer, x, attention_input, head, branch,
                                                   block):
    assert attention_input.meta["tap"] == "attention_input"
    assert_matches_pytorch_grad_cam(conformer, x, attention_input, GradCAM, "gradcam", head,
                                    branch, block, tap="attention_input")


@pytest.mark.parametrize("head", ["fused", "cnn", "transformer"])
@pytest.mark.parametrize("block", BLOCKS)
def test_gradcam_on_the_residual_stream_matches_pytorch_grad_cam(conformer, x, explanation,
                                                                 head, block):
    """The default tap: block k's output tokens (block 1, 6), the last block's input (12)."""
    assert explanation.meta["tap"] == "residual"
    assert_matches_pytorch_grad_cam(conformer, x, explanation, GradCAM, "gradcam", head,
                                    "transformer", block, tap="residual")


def test_residual_tap_reads_block_output_and_last_block_input(conformer, x, explanation):
    """Reference by hand: Grad-CAM of the tokens a plain forward hook sees on trans_block 6
    (output) and as the input of trans_block 12, with autograd.grad of the fused score."""
    seen = {}
    b6, b12 = conformer.trans_block_module(6), conformer.trans_block_module(12)
    handles = [b6.register_forward_hook(lambda m, a, o: seen.__setitem__(6, o)),
               b12.register_forward_pre_hook(lambda m, a: seen.__setitem__(12, a[0]))]
    try:
        c, t = conformer.forward_branches(x)
        score = (c + t)[torch.arange(2), torch.tensor(TARGETS)].sum()
        grads = torch.autograd.grad(score, [seen[6], seen[12]])
    finally:
        for h in handles:
            h.remove()
    gh, gw = conformer.token_grid(*x.shape[-2:])
    for (k, act), g in zip(sorted(seen.items()), grads):
        a = act[:, 1:].transpose(1, 2).reshape(2, -1, gh, gw).detach()
        gg = g[:, 1:].transpose(1, 2).reshape(2, -1, gh, gw)
        expected = (gg.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp_min(0)
        torch.testing.assert_close(explanation.raw[f"gradcam/fused/transformer/{k}"], expected,
                                   rtol=1e-4, atol=1e-6)
        assert expected.abs().sum() > 0


def test_tap_is_checked(conformer, x):
    with pytest.raises(ValueError, match="unknown tap 'norm2'; accepted: residual, "
                                         "attention_input"):
        Explainer(conformer).explain(x, methods=("gradcam",), tap="norm2")


def assert_matches_pytorch_grad_cam(conformer, x, explanation, cam_class, method, head, branch,
                                    block, tap="residual"):
    with Explainer(conformer) as explainer:
        theirs = explainer.pytorch_grad_cam(cam_class, x, branch, block, head=head, target=TARGETS,
                                            tap=tap)
    ours = explanation.maps[f"{method}/{head}/{branch}/{block}"].numpy()
    assert theirs.shape == ours.shape
    compared = 0
    for i in range(len(TARGETS)):
        if ours[i].max() == 0:  # every location negative before the ReLU: both must be empty
            assert theirs[i].max() < 1e-5
            continue
        assert pearson(ours[i], theirs[i]) >= 0.99
        compared += 1
    assert compared >= 1, "both maps empty: the comparison would prove nothing"


@pytest.fixture(scope="module")
def cam_family(conformer, x):
    with Explainer(conformer) as explainer:
        return explainer.explain(x, target=TARGETS, head=("fused", "cnn", "transformer"),
                                 methods=(*PYTORCH_GRAD_CAM, "eigencam"),
                                 blocks=[1, 6, 11], tap="attention_input")


def test_every_cam_method_is_cross_checked():
    assert set(CAM_METHODS) == {"gradcam", *PYTORCH_GRAD_CAM}


@pytest.mark.parametrize("method,cam_class", list(PYTORCH_GRAD_CAM.items()))
@pytest.mark.parametrize("head,branch,block", [("cnn", "cnn", 6), ("fused", "cnn", 1),
                                               ("transformer", "transformer", 11),
                                               ("fused", "transformer", 6)])
def test_cam_family_matches_pytorch_grad_cam(conformer, x, cam_family, method, cam_class, head,
                                             branch, block):
    assert_matches_pytorch_grad_cam(conformer, x, cam_family, cam_class, method, head, branch,
                                    block, tap="attention_input")


@pytest.mark.parametrize("branch,block", [("cnn", 1), ("cnn", 11), ("transformer", 6),
                                          ("transformer", 11)])
def test_eigencam_is_pytorch_grad_cams_projection_signed_by_the_mean_activation(
        conformer, x, cam_family, branch, block):
    """pytorch-grad-cam's EigenCAM leaves the SVD's sign to chance; ours takes the sign that
    correlates with the channel-mean activation, then the same ReLU."""
    with torch.no_grad():
        act = getattr(conformer.forward_intermediates(x, intermediates_only=True)[block - 1],
                      branch).numpy()
    projection = get_2d_projection(act)
    ours = cam_family.raw[f"eigencam/{branch}/{block}"].numpy()
    for i in range(x.shape[0]):
        mean = act[i].mean(axis=0)
        sign = np.sign(((mean - mean.mean()) * projection[i]).sum())
        expected = np.maximum(sign * projection[i], 0)
        np.testing.assert_allclose(ours[i], expected, rtol=1e-3, atol=1e-4 * expected.max())


@pytest.mark.parametrize("head,branch", [("cnn", "cnn"), ("transformer", "transformer"),
                                         ("cnn", "transformer"), ("transformer", "cnn")])
@pytest.mark.parametrize("block,tap", [(1, "residual"), (6, "residual"), (11, "residual"),
                                       (12, "residual"), (6, "attention_input"),
                                       (12, "attention_input")])
def test_gradcam_matches_captum_layergradcam(conformer, x, explanation, attention_input, head,
                                             branch, block, tap):
    exp = explanation if tap == "residual" else attention_input
    if block == 12 and (head, branch) == ("transformer", "cnn"):  # no gradient path (captum
        assert torch.count_nonzero(exp.raw[f"gradcam/{head}/{branch}/{block}"]) == 0  # raises)
        return
    with Explainer(conformer) as explainer, explainer.nchw_tap(branch, block, tap) as layer:
        attribution = LayerGradCam(explainer.head_fn(head), layer).attribute(
            x, target=TARGETS, relu_attributions=True)
    ours = exp.raw[f"gradcam/{head}/{branch}/{block}"]
    assert attribution.shape[1] == 1
    torch.testing.assert_close(ours, attribution[:, 0].detach(), rtol=1e-4, atol=1e-6)
    assert ours.abs().sum() > 0


def test_no_gradient_path_gives_zero_map_not_nan(explanation):
    # Block 12's CNN output reaches only the CNN head.
    raw = explanation.raw["gradcam/transformer/cnn/12"]
    assert torch.count_nonzero(raw) == 0
    assert torch.count_nonzero(explanation.maps["gradcam/transformer/cnn/12"]) == 0
    assert not torch.isnan(explanation.maps["gradcam/transformer/cnn/12"]).any()
    assert explanation.raw["gradcam/cnn/cnn/12"].abs().sum() > 0


def test_nchw_tap_leaves_no_hooks_and_same_logits(conformer, x):
    before = conformer(x)
    with Explainer(conformer) as explainer, explainer.nchw_tap("transformer", 4) as layer:
        inside = conformer(x)
        assert isinstance(layer, torch.nn.Module)
    torch.testing.assert_close(before, inside)
    assert _hook_count(conformer) == 0


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


# ---------------------------------------------------------------------- rollout references
def _reference_attentions(model, x):
    """Every block's attention probabilities, recomputed by hand from norm1 outputs."""
    inputs = []
    handles = [model.trans_block_module(k).norm1.register_forward_hook(
        lambda m, a, o: inputs.append(o.detach())) for k in range(1, model.depth + 1)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    attentions = []
    for k, tokens in enumerate(inputs, start=1):
        attn = model.trans_block_module(k).attn
        b, n, c = tokens.shape
        qkv = attn.qkv(tokens).reshape(b, n, 3, attn.num_heads, c // attn.num_heads)
        q, kk = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)
        scores = q @ kk.transpose(-2, -1) / np.sqrt(c // attn.num_heads)
        attentions.append(scores.softmax(-1).detach().numpy().astype(np.float64))
    return attentions


def _reference_rollout(attentions, image, head_fusion="mean", discard_ratio=0.0, start_block=1):
    """Abnar and Zuidema's rollout with the options of jacobgil/vit-explain (rows renormalised)."""
    n = attentions[0].shape[-1]
    result = np.eye(n)
    for attn in attentions[start_block - 1:]:
        a = {"mean": np.mean, "max": np.max, "min": np.min}[head_fusion](attn[image], axis=0)
        if discard_ratio:
            flat = a.ravel().copy()
            lowest = np.argsort(flat)[:int(flat.size * discard_ratio)]
            flat[lowest[lowest != 0]] = 0  # the class token's attention to itself stays
            a = flat.reshape(n, n)
        a = 0.5 * a + 0.5 * np.eye(n)
        a = a / a.sum(axis=-1, keepdims=True)
        result = a @ result
    return result[0, 1:]


def test_rollout_matches_reference(conformer, x, explanation):
    attentions = _reference_attentions(conformer, x)
    for i in range(x.shape[0]):
        ref = _reference_rollout(attentions, i)
        ours = explanation.raw["rollout/transformer"][i].numpy().ravel()
        assert pearson(ours, ref) >= 0.995
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6)


def test_grad_rollout_matches_reference(conformer, x, explanation):
    """Chefer et al. 2021, written the way their code does it: tensor hooks and backward()."""
    for head in ("cnn", "transformer", "fused"):
        saved = []

        def keep(module, args, output, saved=saved):
            output.retain_grad()
            saved.append(output)

        conformer.set_fused_attn(False)
        handles = [conformer.trans_block_module(k).attn.attn_drop.register_forward_hook(keep)
                   for k in range(1, conformer.depth + 1)]
        try:
            xi = x.clone().requires_grad_(True)
            c, t = conformer.forward_branches(xi)
            logits = {"cnn": c, "transformer": t, "fused": c + t}[head]
            logits[torch.arange(2), torch.tensor(TARGETS)].sum().backward()
        finally:
            for h in handles:
                h.remove()
            conformer.set_fused_attn(True)
            conformer.zero_grad(set_to_none=True)
        for i in range(2):
            n = saved[0].shape[-1]
            r = np.eye(n)
            for a in saved:
                cam = (a.grad[i] * a[i]).detach().numpy().astype(np.float64)
                cam = np.clip(cam, 0, None).mean(axis=0)
                r = r + cam @ r
            ref = r[0, 1:]
            ours = explanation.raw[f"grad_rollout/{head}/transformer"][i].numpy().ravel()
            assert pearson(ours, ref) >= 0.995


@pytest.mark.parametrize("options", [{"head_fusion": "max", "discard_ratio": 0.5},
                                     {"head_fusion": "min"}, {"discard_ratio": 0.9},
                                     {"start_block": 7}])
def test_rollout_options_match_reference(conformer, x, explanation, options):
    attentions = _reference_attentions(conformer, x)
    with Explainer(conformer) as explainer:
        ours = explainer.explain(x, methods=("rollout",), rollout_options=options)
    for i in range(x.shape[0]):
        ref = _reference_rollout(attentions, i, **options)
        mine = ours.raw["rollout/transformer"][i].numpy().ravel()
        np.testing.assert_allclose(mine, ref, rtol=1e-3, atol=1e-6)
        plain = explanation.raw["rollout/transformer"][i].numpy().ravel()
        assert not np.allclose(mine, plain, rtol=1e-3, atol=1e-6)


def test_rollout_options_are_checked(conformer, x):
    with pytest.raises(ValueError, match="head_fusion"):
        Explainer(conformer).explain(x, methods=("rollout",),
                                     rollout_options={"head_fusion": "median"})
