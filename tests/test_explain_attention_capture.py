"""Attention methods read the fused kernel's qkv and proj input instead of switching the model to
the explicit attention path; the result equals what the explicit path's probabilities give."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import make_tiny_conformer

import conformer_xai  # noqa: F401  (registers our models with timm)
from conformer_xai import Explainer
from conformer_xai.explain.attention_capture import supports_recompute

TARGETS = [1, 3]


def _conformer() -> torch.nn.Module:
    return make_tiny_conformer()


def _deit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("deit_micro_patch16", num_classes=5).eval()


def _attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    if hasattr(model, "trans_block_module"):
        return [model.trans_block_module(k).attn for k in range(1, model.depth + 1)]
    return [b.attn for b in model.blocks]


def _head_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_branches"):
        return model.forward_branches(x)[1]  # the transformer head
    return model(x)


def _explicit_reference(model: torch.nn.Module, x: torch.Tensor
                        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Attention probabilities and their gradients from the explicit path (tensor hooks)."""
    saved: list[torch.Tensor] = []

    def keep(module, args, output):
        output.retain_grad()
        saved.append(output)

    modules = _attention_modules(model)
    flags = [a.fused_attn for a in modules]
    handles = [a.attn_drop.register_forward_hook(keep) for a in modules]
    try:
        for a in modules:
            a.fused_attn = False
        xi = x.clone().requires_grad_(True)
        logits = _head_logits(model, xi)
        logits[torch.arange(len(TARGETS)), torch.tensor(TARGETS)].sum().backward()
    finally:
        for h in handles:
            h.remove()
        for a, flag in zip(modules, flags):
            a.fused_attn = flag
        model.zero_grad(set_to_none=True)
    return [a.detach() for a in saved], [a.grad.detach() for a in saved]


@pytest.mark.parametrize("make", [_conformer, _deit], ids=["conformer", "deit"])
def test_fused_capture_equals_the_explicit_path(make):
    model = make()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    modules = _attention_modules(model)
    assert all(supports_recompute(a) for a in modules)
    attns, grads = _explicit_reference(model, x)

    called = []  # attn_drop runs only on the explicit path
    handles = [a.attn_drop.register_forward_hook(lambda m, a, o: called.append(1))
               for a in modules]
    try:
        exp = Explainer(model).explain(x, target=TARGETS, head="transformer",
                                       methods=("attention", "rollout", "grad_rollout"))
    finally:
        for h in handles:
            h.remove()
    assert called == [] and all(a.fused_attn for a in modules)
    assert exp.meta["attention_path"] == "fused, recomputed from qkv"

    npt = 1
    gh = gw = 4
    for k in (1, 6, 12):
        ref = attns[k - 1][:, :, 0, npt:].mean(dim=1).reshape(2, gh, gw)
        torch.testing.assert_close(exp.raw[f"attention/transformer/{k}"], ref,
                                   rtol=1e-4, atol=1e-6)
    r = torch.eye(attns[0].shape[-1]).expand(2, -1, -1)
    for a, g in zip(attns, grads):
        r = r + (g * a).clamp_min(0).mean(dim=1) @ r
    torch.testing.assert_close(exp.raw["grad_rollout/transformer/transformer"],
                               r[:, 0, npt:].reshape(2, gh, gw), rtol=1e-3, atol=1e-6)


def test_unsupported_attention_falls_back_to_the_explicit_path():
    """A ViT whose attention normalises its output before proj cannot be recomputed from qkv."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=5, depth=2,
                              scale_attn_norm=True).eval()
    assert not any(supports_recompute(b.attn) for b in model.blocks)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    attns, _ = _explicit_reference(model, x)
    exp = Explainer(model).explain(x, target=TARGETS, methods=("attention", "grad_rollout"))
    assert exp.meta["attention_path"] == "explicit"
    assert all(b.attn.fused_attn for b in model.blocks)
    torch.testing.assert_close(exp.raw["attention/transformer/2"],
                               attns[1][:, :, 0, 1:].mean(dim=1).reshape(2, 4, 4))


def test_bf16_autocast_keeps_the_attention_maps():
    """Under bf16 autocast qkv arrives in bfloat16; the probabilities are recomputed in float32."""
    model = _conformer()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    methods = ("attention", "rollout", "grad_rollout")
    with Explainer(model) as explainer:
        ref = explainer.explain(x, target=TARGETS, methods=methods, blocks=(6, 12))
        low = explainer.explain(x, target=TARGETS, methods=methods, blocks=(6, 12),
                                autocast_dtype=torch.bfloat16)
    assert low.meta["attention_path"] == "fused, recomputed from qkv"
    assert set(low.raw) == set(ref.raw)
    for key, value in ref.raw.items():
        assert low.raw[key].dtype == torch.float32
        corr = torch.corrcoef(torch.stack([value.flatten(), low.raw[key].flatten()]))[0, 1]
        assert corr > 0.99, (key, float(corr))  # measured >= 0.9994
