"""LRP (conservative propagation and AttnLRP): each rule alone, whole-model conservation, the
branch-flow table, TransCAM against a straightforward reference, and the input-level baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_conformer
from torch import nn

from conformer_xai.explain import Explainer
from conformer_xai.explain.input_attribution import nothing_baseline
from conformer_xai.explain.lrp import FLOW_FIELDS, lrp_rules
from conformer_xai.explain.lrp.rules import (
    box_rule,
    epsilon_rule,
    gamma_rule,
    gate_rule,
    layer_norm_rule,
    uniform_rule,
)
from conformer_xai.models.conformer import FCUDown, FCUUp


def _relevance(x: torch.Tensor, out: torch.Tensor, weight: torch.Tensor) -> tuple:
    """Input and output relevance for the score ``sum(out * weight)`` (R_out = out * weight)."""
    (g,) = torch.autograd.grad((out * weight).sum(), x)
    return x.detach() * g, out.detach() * weight


# ----------------------------------------------------------------------- each rule alone
def test_epsilon_rule_matches_the_formula_and_conserves_without_bias():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(6, 4)
    x = torch.randn(3, 6, generator=g).requires_grad_()
    w = torch.randn(3, 4, generator=g)
    eps = 0.3
    z = lin(x)
    r_in, r_out = _relevance(x, epsilon_rule(z, eps), w)
    zd = z.detach()
    stab = zd + eps * torch.where(zd >= 0, 1.0, -1.0)
    expected = (x.detach()[:, :, None] * lin.weight.detach().T[None]
                * (r_out / stab)[:, None, :]).sum(-1)
    torch.testing.assert_close(r_in, expected)
    assert torch.equal(epsilon_rule(z, eps), z)  # the forward value does not move
    nn.init.zeros_(lin.bias)
    z = lin(x)
    r_in, r_out = _relevance(x, epsilon_rule(z, 0.0), w)
    torch.testing.assert_close(r_in.sum(), r_out.sum())


def test_gamma_rule_matches_the_formula_and_conserves_without_bias():
    g = torch.Generator().manual_seed(9)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    x = torch.rand(2, 3, 5, 5, generator=g).requires_grad_()  # non-negative input
    w = torch.randn(2, 4, 5, 5, generator=g)
    z = conv(x)
    out = gamma_rule(conv, x, z, 0.25, 0.0)
    assert torch.equal(out, z)
    r_in, r_out = _relevance(x, out, w)
    torch.testing.assert_close(r_in.sum(), r_out.sum(), rtol=1e-4, atol=1e-5)
    # reference: the rule written out, w + 0.25 w+ for positive outputs, w + 0.25 w- for negative
    w0 = conv.weight.detach()
    expected = torch.zeros_like(r_in)
    for w_g, mask in ((w0 + 0.25 * w0.clamp(min=0), z.detach() > 0),
                      (w0 + 0.25 * w0.clamp(max=0), z.detach() < 0)):
        xr = x.detach().clone().requires_grad_()
        z_g = F.conv2d(xr, w_g, padding=1)
        (gr,) = torch.autograd.grad(z_g, xr, grad_outputs=torch.where(mask, r_out / z_g.detach(),
                                                                      torch.zeros_like(r_out)))
        expected += xr.detach() * gr
    torch.testing.assert_close(r_in, expected, rtol=1e-4, atol=1e-5)


def test_box_rule_conserves_and_stays_within_the_bounds_terms():
    g = torch.Generator().manual_seed(10)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    low, high = torch.full((1, 3, 1, 1), -2.0), torch.full((1, 3, 1, 1), 2.5)
    x = (torch.rand(2, 3, 6, 6, generator=g) * 4.5 - 2.0)
    r_out = torch.rand(2, 4, 6, 6, generator=g)
    r_in = box_rule(conv, x, r_out, low, high, eps=0.0)
    assert r_in.shape == x.shape
    torch.testing.assert_close(r_in.sum(), r_out.sum(), rtol=1e-4, atol=1e-5)
    # z^B is positive: with positive output relevance every pixel's relevance is >= 0
    assert (r_in >= -1e-6).all()


def test_gate_rule_passes_gelu_relevance_unchanged():
    x = torch.randn(4, 7, generator=torch.Generator().manual_seed(1)).requires_grad_()
    y = F.gelu(x)
    w = torch.randn(4, 7)
    r_in, r_out = _relevance(x, gate_rule(x, y), w)
    torch.testing.assert_close(r_in, r_out)


def test_layer_norm_rule_conserves_with_sigma_held_constant():
    ln = nn.LayerNorm(8, eps=1e-6)
    with torch.no_grad():
        ln.weight.copy_(torch.linspace(0.5, 1.5, 8))
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(2)).requires_grad_()
    y = ln(x)
    out = layer_norm_rule(x, y, ln.weight, ln.eps)
    assert torch.equal(out, y)
    r_in, r_out = _relevance(x, out, torch.randn(5, 8))
    torch.testing.assert_close(r_in.sum(-1), r_out.sum(-1), rtol=1e-5, atol=1e-5)


def test_uniform_rule_splits_a_matmul_in_halves():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 4, generator=g).requires_grad_()
    b = torch.randn(2, 4, 5, generator=g).requires_grad_()
    y = a @ b
    w = torch.randn(2, 3, 5, generator=g)
    ga, gb = torch.autograd.grad((uniform_rule(y) * w).sum(), (a, b))
    r_a, r_b = (a.detach() * ga).sum(), (b.detach() * gb).sum()
    torch.testing.assert_close(r_a + r_b, (y.detach() * w).sum())
    torch.testing.assert_close(r_a, r_b)  # a bilinear form: each factor gets exactly half


def test_softmax_gradient_x_input_is_the_attnlrp_softmax_rule():
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(4)).requires_grad_()
    s = x.softmax(-1)
    w = torch.randn(3, 6)
    r_in, r_out = _relevance(x, s, w)
    expected = x.detach() * (r_out - s.detach() * r_out.sum(-1, keepdim=True))
    torch.testing.assert_close(r_in, expected)


@pytest.mark.parametrize("variant", ["lrp", "attnlrp"])
def test_attention_rule_conserves_through_values(variant):
    from conformer_xai.models.conformer import Attention

    attn = Attention(12, 3).eval()
    for m in attn.modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    x = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(5)).requires_grad_()
    w = torch.randn(2, 5, 12)
    plain = attn(x)
    with lrp_rules(attn, variant, epsilon=0.0):
        out = attn(x)
    torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-6)
    r_in, r_out = _relevance(x, out, w)
    if variant == "lrp":  # attention weights held constant: exactly conservative
        torch.testing.assert_close(r_in.sum(), r_out.sum(), rtol=1e-4, atol=1e-5)
    else:  # the softmax rule's bias term absorbs a share
        assert not torch.allclose(r_in.sum(), r_out.sum(), rtol=1e-3)
    assert "forward" not in vars(attn)  # the attention forward is restored


@pytest.mark.parametrize("fcu", ["down", "up"])
def test_each_fcu_splits_relevance_conservatively(fcu):
    g = torch.Generator().manual_seed(6)
    if fcu == "down":
        module = FCUDown(8, 12, 2).eval()
        x = torch.randn(2, 8, 4, 4, generator=g).requires_grad_()
        t = torch.randn(2, 5, 12, generator=g)
        nn.init.zeros_(module.conv_project.bias)
        nn.init.zeros_(module.ln.bias)
        run = lambda: module(x, t)[:, 1:]  # noqa: E731 - the patch tokens come from x
    else:
        module = FCUUp(12, 8, 2).eval()
        x = torch.randn(2, 5, 12, generator=g).requires_grad_()
        nn.init.zeros_(module.conv_project.bias)
        nn.init.zeros_(module.bn.bias)
        run = lambda: module(x, 2, 2)  # noqa: E731
    plain = run()
    with lrp_rules(module, "lrp", epsilon=0.0):
        out = run()
    torch.testing.assert_close(out, plain)
    r_in, r_out = _relevance(x, out, torch.randn(out.shape, generator=g))
    if fcu == "up":
        assert r_in[:, 0].abs().sum() == 0  # the class token never crosses to the CNN
    torch.testing.assert_close(r_in.sum(), r_out.sum(), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------- the whole model
def _bias_free(model: nn.Module) -> nn.Module:
    """Zero biases and class token, identity batch norms: LRP must then conserve exactly."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "cls_token":
                p.zero_()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.weight.fill_(1.0)
    return model


@pytest.fixture(scope="module")
def bias_free_result():
    model = _bias_free(make_tiny_conformer())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with Explainer(model) as explainer:
        exp = explainer.explain(x, head=("fused", "cnn", "transformer"), methods=["lrp"],
                                blocks=[1, 6, 12])
    return model, exp


def test_lrp_conserves_the_target_logit_for_every_head(bias_free_result):
    _, exp = bias_free_result
    for head in ("fused", "cnn", "transformer"):
        logit = exp.logits[head].gather(1, exp.target[:, None])[:, 0]
        total = exp.raw[f"lrp/{head}"].flatten(1).sum(1)
        torch.testing.assert_close(total, logit, rtol=0.05, atol=0.0)
        ratio = exp.meta["lrp_conservation"][head]["ratio"]
        assert all(abs(r - 1) < 0.05 for r in ratio)


def test_lrp_on_the_embedded_model_reports_ratio_and_absorbed_share(tiny_conformer, images):
    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, methods=["lrp", "attnlrp"], blocks=[12])
    for variant in ("lrp", "attnlrp"):
        c = exp.meta[f"{variant}_conservation"]["fused"]
        total = exp.raw[f"{variant}/fused"].flatten(1).sum(1)
        torch.testing.assert_close(torch.tensor(c["relevance"]), total)
        for r, a in zip(c["ratio"], c["absorbed_share"]):
            assert abs(r + a - 1) < 1e-6
    # the two variants differ (AttnLRP's softmax and matmul rules change the map)
    assert not torch.allclose(exp.raw["lrp/fused"], exp.raw["attnlrp/fused"])


def test_epsilon_gamma_box_composite_conserves_on_the_bias_free_model():
    model = _bias_free(make_tiny_conformer())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with Explainer(model) as explainer:
        exp = explainer.explain(x, methods=["lrp"], blocks=[12], lrp_composite="epsilon_gamma_box")
        plain = explainer.explain(x, methods=["lrp"], blocks=[12])
        with pytest.raises(ValueError, match="epsilon_gamma_box"):
            explainer.explain(x, methods=["lrp"], lrp_composite="gamma")
    logit = exp.logits["fused"].gather(1, exp.target[:, None])[:, 0]
    torch.testing.assert_close(exp.raw["lrp/fused"].flatten(1).sum(1), logit, rtol=0.05, atol=0.0)
    assert exp.meta["lrp_composite"] == "epsilon_gamma_box"
    assert not torch.allclose(exp.raw["lrp/fused"], plain.raw["lrp/fused"])


def test_lrp_pass_leaves_logits_and_model_untouched(tiny_conformer, images):
    before = tiny_conformer.forward_branches(images)
    with lrp_rules(tiny_conformer, "attnlrp"):
        inside = tiny_conformer.forward_branches(images)
    for a, b in zip(before, inside):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for m in tiny_conformer.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in vars(m)


def test_lrp_maps_signed_raw_positive_maps(bias_free_result):
    _, exp = bias_free_result
    raw = exp.raw["lrp/fused"]
    assert raw.shape == (2, 64, 64) and (raw < 0).any() and (raw > 0).any()
    m = exp.maps["lrp/fused"]
    assert m.min() >= 0 and m.max() <= 1
    # the map is the positive part: where raw relevance is negative the map is 0
    assert (m[raw < 0] == 0).all()
    assert exp.get("lrp", head="cnn").shape == (2, 64, 64)
    assert exp.get("lrp", "transformer", 6, head="cnn", raw=True).shape == (2, 4, 4)
    assert exp.get("lrp", "cnn", 1, head="fused", raw=True).shape == (2, 16, 16)


def test_tap_relevance_of_transformer_head_reaches_no_cnn_block_12(bias_free_result):
    _, exp = bias_free_result
    assert exp.raw["lrp/transformer/cnn/12"].abs().max() == 0
    assert exp.raw["lrp/cnn/cnn/12"].abs().max() > 0


# ----------------------------------------------------------------------- branch flow
def test_flow_rows_add_up_and_lanes_chain(bias_free_result):
    _, exp = bias_free_result
    for head in ("fused", "cnn", "transformer"):
        rows = exp.flows[head]
        assert [r["block"] for r in rows] == list(range(1, 13))
        assert all(set(r) == set(FLOW_FIELDS) for r in rows)
        for i in range(2):
            for r in rows:
                incoming = r["cnn_in"][i] + r["transformer_in"][i]
                outgoing = sum(r[f][i] for f in ("cnn_stays", "transformer_stays", "fcu_down",
                                                 "fcu_up", "absorbed"))
                assert outgoing == pytest.approx(incoming, rel=1e-5, abs=1e-6)
                assert abs(r["absorbed"][i]) <= 0.05 * max(abs(incoming), 1e-6) + 1e-5
            for upper, lower in zip(rows[1:], rows[:-1]):
                # what leaves block k on a lane is what enters block k-1 on it
                assert upper["cnn_stays"][i] + upper["fcu_down"][i] == pytest.approx(
                    lower["cnn_in"][i], rel=1e-5, abs=1e-6)
                assert upper["transformer_stays"][i] + upper["fcu_up"][i] == pytest.approx(
                    lower["transformer_in"][i], rel=1e-5, abs=1e-6)
            top = rows[-1]
            logit = float(exp.logits[head][i, exp.target[i]])
            assert top["cnn_in"][i] + top["transformer_in"][i] == pytest.approx(logit, rel=1e-4)
    cnn_rows = exp.flows["cnn"]
    assert all(v == 0 for v in cnn_rows[-1]["transformer_in"])  # the CNN head reads no tokens
    shares = exp.meta["branch_share"]["fused"]
    assert all(s["cnn"] + s["transformer"] == pytest.approx(1) for s in shares)


def test_flows_survive_save_load_and_select(bias_free_result, tmp_path):
    from conformer_xai.explain import Explanation

    _, exp = bias_free_result
    back = Explanation.load(exp.save(tmp_path / "e.npz"))
    assert back.flows == exp.flows
    torch.testing.assert_close(back.raw["lrp/fused"], exp.raw["lrp/fused"])
    one = exp.select(1)
    assert one.flows["cnn"][4]["fcu_up"] == [exp.flows["cnn"][4]["fcu_up"][1]]


# ----------------------------------------------------------------------- TransCAM
def test_transcam_equals_a_straightforward_reference(tiny_conformer, images):
    model = tiny_conformer
    with Explainer(model) as explainer:
        exp = explainer.explain(images, methods=["transcam"], target=[1, 3])
    # reference: explicit attention, a loop over images, tokens and blocks
    attns = []
    model.set_fused_attn(False)
    hooks = [model.trans_block_module(k).attn.attn_drop.register_forward_hook(
        lambda m, a, o: attns.append(o.detach())) for k in range(1, 13)]
    feats = {}
    hooks.append(model.cnn_block_module(12).register_forward_hook(
        lambda m, a, o: feats.setdefault("c", o.detach())))
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
        model.set_fused_attn(True)
    gh, gw = model.token_grid(64, 64)
    w = model.conv_cls_head.weight.detach()
    for i, cls in enumerate([1, 3]):
        cam = torch.zeros(feats["c"].shape[2:])
        for c in range(w.shape[1]):
            cam += w[cls, c] * feats["c"][i, c]
        cam = F.interpolate(cam.clamp(min=0)[None, None], size=(gh, gw), mode="bilinear",
                            align_corners=False)[0, 0].reshape(-1)
        n = gh * gw
        a = torch.zeros(n, n)
        for att in attns:
            a += att[i].mean(0)[1:, 1:]
        refined = torch.tensor([max(0.0, float(sum(a[p, q] * cam[q] for q in range(n))))
                                for p in range(n)]).reshape(gh, gw)
        torch.testing.assert_close(exp.raw["transcam/cnn"][i], refined, rtol=1e-4, atol=1e-5)
    assert exp.maps["transcam/cnn"].shape == (2, 64, 64)
    assert not any(v.requires_grad for v in (*exp.raw.values(), *exp.maps.values()))


def test_transcam_is_offered_only_for_conformer():
    import timm

    vit = timm.create_model("deit_tiny_patch16_224", num_classes=3, depth=2).eval()
    with Explainer(vit) as explainer:
        assert "transcam" not in explainer.applicable_methods()
        assert "lrp" in explainer.applicable_methods()
        with pytest.raises(ValueError, match="transcam"):
            explainer.explain(torch.randn(1, 3, 64, 64), methods=["transcam"])


# ----------------------------------------------------------------------- IG and SmoothGrad
def test_nothing_baselines():
    g = torch.Generator().manual_seed(8)
    photo = torch.randn(2, 3, 40, 48, generator=g)
    blurred = nothing_baseline(photo)
    assert blurred.shape == photo.shape
    assert blurred.std() < 0.5 * photo.std()  # a blurred image, not zeros
    spec = torch.randn(2, 1, 40, 64, generator=g)
    floor = nothing_baseline(spec)
    assert torch.equal(floor[0], torch.full_like(floor[0], float(spec[0].min())))
    assert torch.equal(floor[1], torch.full_like(floor[1], float(spec[1].min())))


def test_integrated_gradients_and_smoothgrad_per_head(tiny_conformer, images):
    from captum.attr import IntegratedGradients

    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, head=("cnn", "transformer"),
                                methods=["integrated_gradients", "smoothgrad"])
        fn = explainer.head_fn("cnn")
    assert set(exp.maps) == {f"{m}/{h}" for m in ("integrated_gradients", "smoothgrad")
                             for h in ("cnn", "transformer")}
    assert (exp.raw["smoothgrad/cnn"] >= 0).all()
    ig = IntegratedGradients(fn).attribute(images, baselines=nothing_baseline(images),
                                           target=exp.target.tolist(), n_steps=50)
    torch.testing.assert_close(exp.raw["integrated_gradients/cnn"], ig.sum(1), rtol=1e-4,
                               atol=1e-5)
    assert not torch.allclose(exp.raw["integrated_gradients/cnn"],
                              exp.raw["integrated_gradients/transformer"])
