"""``lrp`` cross-checked against the reference libraries run on the same models.

* timm ResNet (``resnet_micro``, trained weights) against ``zennit``: epsilon on convolutions and
  the linear head, ReLU passed, batch norms merged into their convolutions (zennit's
  ``NamedMergeBatchNorm``), residual sums and average pooling by zennit's ``Norm`` rule. zennit
  ships canonizers only for torchvision's residual blocks, so the test gives timm's Bottleneck
  the same treatment (its sum through zennit's ``Sum`` layer) with zennit's ``AttributeCanonizer``.
* timm ViT (``deit_micro_patch16``, trained weights) against ``lxt``: lxt's own LayerNorm patch
  (``1/sigma`` held constant), its identity rule on GELU, its CP-LRP (gradient stopped at the
  queries and keys) and AttnLRP (``divide_gradient`` on the two matmuls) rules, and zennit's
  epsilon rule on linear layers in lxt's gradient x input form (``monkey_patch_zennit``), as
  lxt runs vision transformers. lxt has patch maps for torchvision's ViT and Hugging Face
  models, not for timm's attention module, so the test writes timm's attention forward with
  lxt's rule functions. lxt's package ``__init__`` imports ``transformers`` (not a dependency
  here), so its rule modules are imported without running it.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from conformer_xai.explain import Explainer
from conformer_xai.models.weights import load_model


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def _scenes(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    from conformer_xai.synthetic import SyntheticScenes

    scenes = SyntheticScenes(n, seed=3, size=128, split="test")
    items = [scenes[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.tensor([it["label"] for it in items])


def _zennit_bottleneck_forward(self, x):
    """timm's Bottleneck forward with the residual sum through zennit's Sum layer."""
    shortcut = x
    x = self.act1(self.bn1(self.conv1(x)))
    x = self.act2(self.bn2(self.conv2(x)))
    x = self.bn3(self.conv3(x))
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return self.act3(self.canonizer_sum(torch.stack([shortcut, x], dim=-1)))


def _timm_bottleneck_canonizer():
    from timm.models.resnet import Bottleneck
    from zennit.canonizers import AttributeCanonizer
    from zennit.layer import Sum

    def attribute_map(name, module):
        if isinstance(module, Bottleneck):
            return {"forward": _zennit_bottleneck_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return AttributeCanonizer(attribute_map)


@pytest.mark.parametrize("composite", ["epsilon", "epsilon_gamma_box"])
def test_lrp_on_resnet_agrees_with_zennit(composite):
    from zennit.attribution import Gradient
    from zennit.canonizers import NamedMergeBatchNorm
    from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon, Gamma, Norm, Pass, ZBox

    model = load_model("resnet_micro", weights="embedded")
    x, labels = _scenes()
    with Explainer(model) as explainer:
        ours = explainer.explain(x, target=labels, methods=["lrp"], blocks=[8],
                                 lrp_composite=composite).raw["lrp/cnn"]

    names = dict(model.named_modules())
    pairs = [(["conv1"], "bn1")]
    for name, module in names.items():
        for i in (1, 2, 3):
            if hasattr(module, f"conv{i}") and hasattr(module, f"bn{i}") and name:
                pairs.append(([f"{name}.conv{i}"], f"{name}.bn{i}"))
        if name.endswith("downsample"):
            pairs.append(([f"{name}.0"], f"{name}.1"))
    canonizers = [NamedMergeBatchNorm(pairs), _timm_bottleneck_canonizer()]
    if composite == "epsilon":
        rules = LayerMapComposite(
            layer_map=[(nn.ReLU, Pass()), (nn.Conv2d, Epsilon(1e-6)), (nn.Linear, Epsilon(1e-6)),
                       (Sum, Norm()), (nn.AdaptiveAvgPool2d, Norm())], canonizers=canonizers)
    else:  # zennit's EpsilonGammaBox, spelled out with the same pooling and sum rules
        cfg = model.pretrained_cfg
        mean = torch.tensor(cfg["mean"])[None, :, None, None]
        std = torch.tensor(cfg["std"])[None, :, None, None]
        low, high = ((0 - mean) / std).expand_as(x), ((1 - mean) / std).expand_as(x)
        rules = SpecialFirstLayerMapComposite(
            layer_map=[(nn.ReLU, Pass()), (nn.Conv2d, Gamma(0.25)), (nn.Linear, Epsilon(1e-6)),
                       (Sum, Norm()), (nn.AdaptiveAvgPool2d, Norm())],
            first_map=[(nn.Conv2d, ZBox(low, high))], canonizers=canonizers)
    with Gradient(model, rules) as attributor:
        logits = model(x)
        onehot = torch.zeros_like(logits).scatter_(1, labels[:, None], 1.0)
        _, relevance = attributor(x, onehot * logits.gather(1, labels[:, None]))
    theirs = relevance.sum(dim=1)
    for i in range(x.shape[0]):
        assert _pearson(ours[i], theirs[i]) >= 0.99
    torch.testing.assert_close(ours.flatten(1).sum(1), theirs.flatten(1).sum(1), rtol=0.02,
                               atol=1e-4)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _lxt_modules():
    """lxt's rule and patch modules, imported without the package __init__ (transformers)."""
    import lxt

    stub = types.ModuleType("lxt.efficient")
    stub.__path__ = [str(Path(lxt.__file__).parent / "efficient")]
    saved = {k: sys.modules.get(k) for k in ("lxt.efficient", "lxt.efficient.rules",
                                             "lxt.efficient.patches",
                                             "lxt.efficient.zennit_patches")}
    sys.modules["lxt.efficient"] = stub
    try:
        rules = importlib.import_module("lxt.efficient.rules")
        patches = importlib.import_module("lxt.efficient.patches")
        zennit_patches = importlib.import_module("lxt.efficient.zennit_patches")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return rules, patches, zennit_patches


def _lxt_attention(rules, variant: str):
    def forward(self, x, *args, **kwargs):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if variant == "lrp":  # CP-LRP: no gradient through the softmax (lxt's cp patches)
            q, k = rules.stop_gradient(q), rules.stop_gradient(k)
            scores = (q * self.scale) @ k.transpose(-2, -1)
        else:
            scores = rules.divide_gradient((q * self.scale) @ k.transpose(-2, -1), 2)
        out = scores.softmax(dim=-1) @ v
        if variant == "attnlrp":
            out = rules.divide_gradient(out, 2)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    return forward


@pytest.mark.parametrize("variant", ["lrp", "attnlrp"])
def test_lrp_on_vit_agrees_with_lxt(variant):
    from zennit.composites import LayerMapComposite
    from zennit.core import BasicHook
    from zennit.rules import Epsilon

    rules, patches, zennit_patches = _lxt_modules()
    model = load_model("deit_micro_patch16", weights="embedded")
    x, labels = _scenes()
    with Explainer(model) as explainer:
        ours = explainer.explain(x, target=labels, methods=[variant], blocks=[12]).raw[
            f"{variant}/transformer"]

    saved_hook = (BasicHook.forward, BasicHook.backward)
    # per instance: timm's LayerNorm subclass has a forward of its own
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    attns = [b.attn for b in model.blocks]
    patched = norms + gelus + attns
    try:
        zennit_patches.monkey_patch_zennit()
        for m in norms:
            m.forward = types.MethodType(patches.layer_norm_forward, m)
        for m in gelus:
            m.original_forward = m.forward
            m.forward = types.MethodType(patches.non_linear_forward, m)
        for a in attns:
            a.forward = types.MethodType(_lxt_attention(rules, variant), a)
        composite = LayerMapComposite(layer_map=[(nn.Linear, Epsilon(1e-6)),
                                                 (nn.Conv2d, Epsilon(1e-6))])
        x_in = x.clone().requires_grad_(True)
        with composite.context(model) as modified:
            logits = modified(x_in)
            score = logits.gather(1, labels[:, None]).sum()
            (grad,) = torch.autograd.grad(score, x_in)
    finally:
        BasicHook.forward, BasicHook.backward = saved_hook
        for m in patched:
            vars(m).pop("forward", None)
            vars(m).pop("original_forward", None)
    theirs = (x * grad).sum(dim=1)
    for i in range(x.shape[0]):
        assert _pearson(ours[i], theirs[i]) >= 0.99
