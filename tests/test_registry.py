"""One source of truth (issue 15 items 1 and 2): the method registry drives the engine, the CLI,
the plots and the docs; the names module is torch-free and the package's only copy."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformer_xai import Explainer, names, registry
from conformer_xai.explain import Explanation, main_pass, own_pass
from conformer_xai.registry import REGISTRY, SIDE_KEYS, MethodSpec, key_of, parse_key

REPO = Path(__file__).resolve().parents[1]
ENGINE = [REPO / "conformer_xai" / "explain" / f
          for f in ("explainer.py", "main_pass.py", "arguments.py")]


def test_names_module_imports_no_torch():
    code = ("import sys, conformer_xai.names, conformer_xai.registry, "
            "conformer_xai.cli._map_options; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


def test_method_names_are_the_registry_keys_and_the_cli_uses_them():
    from conformer_xai.cli import options as _common
    from conformer_xai.explain import METHODS, explainer
    from conformer_xai.models import weights
    from conformer_xai.plot import METHOD_LABELS

    assert names.METHODS == tuple(REGISTRY) == tuple(METHODS)
    assert _common.METHODS is names.METHODS and _common.HEADS is names.HEADS
    assert explainer.HEAD_NAMES is names.HEADS
    assert weights.EMBEDDED_MODELS is names.EMBEDDED_MODELS
    assert weights.WEIGHT_CHOICES is names.WEIGHTS
    assert {m: s.label for m, s in REGISTRY.items()} == METHOD_LABELS
    assert names.DEFAULT_METHODS == ("features", "attention", "gradcam", "rollout", "grad_rollout")


def test_our_models_are_registered_with_timm():
    import timm

    assert set(names.EMBEDDED_MODELS) <= set(names.OUR_MODELS)
    for name in names.OUR_MODELS:
        assert timm.is_model(name), name


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_spec_is_complete(name):
    spec = REGISTRY[name]
    assert spec.name == name
    assert callable(spec.compute)
    assert spec.label and spec.citation
    for option_name, option in spec.options.items():
        assert option.check(name, option_name, option.default) == option.default
    # every key shape the spec describes parses back to its parts
    head = "fused" if spec.per_head else None
    keys = [key_of(name, head)] if spec.input_map else []
    if spec.per_block or not spec.input_map:
        keys.append(key_of(name, head, spec.branches[0], 3 if spec.per_block else None))
    for key in keys:
        parts = parse_key(key)
        assert key_of(parts["method"], parts["head"], parts["branch"], parts["block"]) == key
        assert parts["method"] == name and parts["head"] == head


def test_engine_never_tests_a_method_name():
    """The engine's source holds no method name (nor side-map key) as a string literal."""
    taboo = set(REGISTRY) | set(SIDE_KEYS)
    sources = [p.read_text() for p in ENGINE] + [inspect.getsource(own_pass.run_own_passes)]
    for source in sources:
        literals = {n.value for n in ast.walk(ast.parse(source))
                    if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not literals & taboo, literals & taboo


def test_a_new_cam_method_needs_only_its_registry_line(monkeypatch, tiny_conformer, images):
    """A spec added to the registry (here: HiResCAM's function under a new name) runs through
    the engine, parses, saves and loads, with no other change."""
    spec = MethodSpec("mycam", function="methods.cam:hirescam", label="My CAM",
                      citation="this test", kind="cam", per_head=True,
                      reads=("activations", "gradients"), tap="gradient")
    monkeypatch.setitem(registry._SPECS, "mycam", spec)
    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, methods=["mycam", "hirescam"], head=("cnn", "fused"),
                                blocks=[1, 12])
    mine = sorted(k for k in exp.raw if k.startswith("mycam/"))
    assert mine == sorted(k.replace("hirescam", "mycam") for k in exp.raw
                          if k.startswith("hirescam/"))
    assert len(mine) == 2 * 2 * 2  # heads x branches x blocks
    for key in mine:
        torch.testing.assert_close(exp.raw[key], exp.raw[key.replace("mycam", "hirescam")])
    assert exp.get("mycam", "cnn", 12, head="fused").shape == (2, 64, 64)


def test_new_cam_methods_save_load_and_plot(tmp_path, tiny_conformer, images):
    from conformer_xai import plot

    with Explainer(tiny_conformer) as explainer:
        exp = explainer.explain(images, methods=["xgradcam", "gradcam_elementwise"],
                                head=("cnn", "transformer"), blocks=[1, 12])
    keys = [k for k in exp.maps if k.startswith(("xgradcam/", "gradcam_elementwise/"))]
    assert len(keys) == 2 * 2 * 2 * 2
    exp.save(tmp_path / "e")
    back = Explanation.load(tmp_path / "e")
    assert sorted(back.maps) == sorted(exp.maps)
    for method, label in (("xgradcam", "XGrad-CAM"), ("gradcam_elementwise",
                                                      "Grad-CAM element-wise")):
        fig = plot.head_branch_matrix(back, method=method)
        texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
        assert any(label in t for t in texts), texts


def test_head_rule_is_one_function():
    """Explanation.get and the figures pick a map's head with ``registry.head_for``."""
    from conformer_xai.plot import figures

    for module in (REPO / "conformer_xai" / "explain" / "result.py",
                   Path(inspect.getsourcefile(figures))):
        assert "head_for(" in module.read_text()
    assert registry.head_for("gradcam", None, ("cnn", "fused")) == "cnn"
    assert registry.head_for("rollout", None, ("cnn", "fused")) is None
    assert registry.head_for("attention_heads", None, ("cnn",)) is None
    assert registry.head_for("lrp", "fused", ("cnn",)) == "fused"


def test_readme_lists_every_method_with_its_label():
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- methods:start -->")
    table = readme[start:readme.index("<!-- methods:end -->")]
    assert registry.methods_table().strip() in table, "regenerate: python -m conformer_xai.registry"


def test_main_pass_kinds_cover_every_main_pass_spec():
    kinds = {s.kind for s in REGISTRY.values() if not s.own_pass}
    assert kinds <= set(main_pass.KIND_COMPUTE)
