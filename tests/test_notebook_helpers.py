"""conformer_xai.notebook: the helpers the tutorial notebooks share, on real tiny models and data.

The notebooks themselves are executed by tests/test_notebooks.py; these tests pin each helper's
behaviour on its own, against straightforward reference code where there is one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import conformer_xai as cx
from conformer_xai import notebook as nb
from conformer_xai.data import class_names_for
from conformer_xai.synthetic import SyntheticScenes

REPO = Path(__file__).resolve().parents[1]
MICRO = "conformer_micro_patch16"


@pytest.fixture(scope="module")
def micro():
    """The embedded micro Conformer (trained on the synthetic scenes), loaded once."""
    return cx.load_model(MICRO, weights="embedded")


@pytest.fixture(scope="module")
def tiny_exp():
    """A tiny Conformer's explanation of two images: Grad-CAM for every head, rollout, features,
    per-head attention."""
    from conftest import make_tiny_conformer

    model = make_tiny_conformer()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    pixels = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    with cx.Explainer(model, class_names=[f"c{i}" for i in range(5)]) as explainer:
        exp = explainer.explain(x, head=("fused", "cnn", "transformer"),
                                methods=("features", "gradcam", "attention", "rollout"),
                                attn_heads=True, image=pixels)
    return model, x, exp


def heat_of(ax) -> np.ndarray:
    """The map layer drawn by map_panel (the last image of the axes)."""
    return np.asarray(ax.get_images()[-1].get_array())


# ------------------------------------------------------------------------------------ tables
def test_markdown_table_formats_floats_missing_values_and_others():
    rows = [{"a": 0.123456, "b": 3, "c": "x"}, {"a": float("nan"), "b": None}]
    table = nb.markdown_table(rows, ["a", "b", "c"], digits=2)
    assert str(table) == "\n".join(["| a | b | c |", "|---|---|---|", "| 0.12 | 3 | x |",
                                    "| – | – | – |"])
    assert table._repr_markdown_() == str(table)
    assert str(nb.markdown_table([], ["only"])) == "| only |\n|---|"


def test_markdown_table_needs_columns():
    with pytest.raises(ValueError, match="at least one column"):
        nb.markdown_table([{"a": 1}], [])


# ------------------------------------------------------------------------------------ inputs
def test_model_names_per_weights_choice(tmp_path):
    assert nb.model_names("embedded") == {"cnn": "resnet_micro", "conformer": MICRO,
                                          "transformer": "deit_micro_patch16"}
    assert nb.model_names("random") == nb.model_names("embedded")
    assert nb.model_names("imagenet") == {"cnn": "resnet101",
                                          "conformer": "conformer_small_patch16",
                                          "transformer": "deit_small_patch16_224"}
    assert nb.model_names(tmp_path / "mine.pth", "conformer_tiny_patch16") == {
        "conformer": "conformer_tiny_patch16"}


def test_load_weights_by_name_and_from_a_checkpoint(micro, tmp_path):
    named = nb.load_weights(MICRO, "embedded")
    assert named.weights_source == micro.weights_source
    path = tmp_path / "mine.pth"
    torch.save(micro.state_dict(), path)
    mine = nb.load_weights(MICRO, path)
    for key, value in micro.state_dict().items():
        assert torch.equal(mine.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="embedded, imagenet, random"):
        nb.load_weights(MICRO, tmp_path / "missing.pth")


def test_examples_dir_is_found_from_below_and_missing_elsewhere(tmp_path, monkeypatch):
    deep = REPO / "notebooks"
    assert nb.examples_dir(deep) == REPO / "examples"
    monkeypatch.chdir(deep)
    assert nb.examples_dir() == REPO / "examples"
    with pytest.raises(FileNotFoundError, match="no examples/ folder"):
        nb.examples_dir(tmp_path)


def test_benchmark_scene_writes_the_scene_as_a_png(tmp_path):
    path, scene = nb.benchmark_scene(8, tmp_path)
    reference = SyntheticScenes(9, seed=0, split="test").scene(8)
    assert path == tmp_path / f"scene_008_{reference.class_name}.png"
    assert np.array_equal(np.asarray(Image.open(path)), reference.image)
    assert np.array_equal(scene.part_mask, reference.part_mask)
    with pytest.raises(ValueError, match="scene index"):
        nb.benchmark_scene(-1, tmp_path)


def test_choose_image_file_photo_or_scene(tmp_path, monkeypatch):
    image = tmp_path / "mine.png"
    Image.new("RGB", (8, 8)).save(image)
    assert nb.choose_image(image, "embedded", 3, tmp_path) == (image, None)
    with pytest.raises(FileNotFoundError, match="not found"):
        nb.choose_image(tmp_path / "gone.png", "embedded", 3, tmp_path)
    monkeypatch.chdir(REPO)
    path, scene = nb.choose_image(None, "imagenet", 3, tmp_path)
    assert path == REPO / "examples" / "photos" / "chelsea.png" and scene is None
    path, scene = nb.choose_image(None, "random", 3, tmp_path)
    assert path.parent == tmp_path and scene.label == 3


def test_explain_image_matches_a_direct_explanation(micro, tmp_path):
    path, _ = nb.benchmark_scene(2, tmp_path)
    exp = nb.explain_image(micro, path, methods=("gradcam",), head="cnn")
    x, shown = cx.load_image(path, micro)
    with cx.Explainer(micro, class_names=class_names_for(micro)) as explainer:
        ref = explainer.explain(x, methods=("gradcam",), head="cnn")
    assert exp.keys() == ref.keys()
    for key in ref.maps:
        torch.testing.assert_close(exp.maps[key], ref.maps[key])
    assert np.allclose(np.asarray(exp.image[0]), shown)
    assert exp.class_name(0) == class_names_for(micro)[0]


def test_load_batch_stacks_preprocessed_files(micro, tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"{i}.npy"
        np.save(path, np.random.default_rng(i).normal(size=(32, 64)).astype(np.float32))
        files.append((path, i % 2))
    kwargs = {"input_size": (32, 64), "crop": False, "as_image": True}
    x, y = nb.load_batch(files, micro, **kwargs)
    reference = torch.cat([cx.load_image(p, micro, **kwargs)[0] for p, _ in files])
    assert torch.equal(x, reference) and x.shape == (3, 3, 32, 64)
    assert y.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="at least one"):
        nb.load_batch([], micro)


# ------------------------------------------------------------------------------------ measures
def test_unit_range():
    m = torch.tensor([[2.0, 4.0], [3.0, 6.0]])
    assert torch.equal(nb.unit_range(m), torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(nb.unit_range(torch.full((2, 2), 7.0)), torch.zeros(2, 2))


def test_deepest_nonzero_block_skips_blocks_without_a_gradient_path(tiny_exp):
    _, _, exp = tiny_exp
    last = max(exp.blocks("gradcam", "cnn"))
    # the transformer head has no gradient path to the CNN branch's last block
    assert float(exp.get("gradcam", "cnn", last, head="transformer").abs().max()) == 0.0
    expected = max(k for k in exp.blocks("gradcam", "cnn", "transformer")
                   if exp.get("gradcam", "cnn", k, head="transformer").max() > 0)
    assert expected < last
    assert nb.deepest_nonzero_block(exp, "gradcam", "cnn", "transformer") == expected
    assert nb.deepest_nonzero_block(exp, "gradcam", "cnn", "cnn") == last


def test_deepest_nonzero_block_raises_when_every_map_is_zero(tiny_exp):
    _, _, exp = tiny_exp
    zeroed = exp.select(0)
    for key in zeroed.find("gradcam", "transformer", None, "fused"):
        zeroed.maps[key] = torch.zeros_like(zeroed.maps[key])
    with pytest.raises(ValueError, match="no block with a non-zero gradcam map"):
        nb.deepest_nonzero_block(zeroed, "gradcam", "transformer", "fused")


def test_paper_blocks_and_part_body_off_rows(tiny_exp):
    _, _, exp = tiny_exp
    assert nb.paper_blocks(exp, "cnn") == [4, 12]
    g = torch.Generator().manual_seed(0)
    object_mask = torch.zeros(2, 64, 64, dtype=torch.bool)
    object_mask[:, 10:40, 10:50] = True
    part_mask = torch.zeros_like(object_mask)
    part_mask[:, 10:20, 10:20] = True
    object_mask[1] = torch.rand(64, 64, generator=g) > 0.5
    part_mask[1] = object_mask[1] & (torch.rand(64, 64, generator=g) > 0.7)
    columns = [("conformer (cnn branch)", exp, "cnn"), ("conformer (transformer)", exp,
                                                        "transformer")]
    rows = nb.part_body_off_rows(columns, (object_mask, part_mask), nb.paper_blocks)
    assert [(r["model / branch"], r["block"]) for r in rows] == [
        ("conformer (cnn branch)", 4), ("conformer (cnn branch)", 12),
        ("conformer (transformer)", 4), ("conformer (transformer)", 12)]
    for row, (_, _, branch) in zip(rows, [c for c in columns for _ in range(2)]):
        m = exp.get("features", branch, row["block"]).double()
        # reference: each image's energy split by the masks, then the mean over images
        total = m.sum(dim=(1, 2))
        part = (m * part_mask).sum(dim=(1, 2)) / total
        body = (m * (object_mask & ~part_mask)).sum(dim=(1, 2)) / total
        assert row["part"] == pytest.approx(float(part.mean()), abs=1e-5)
        assert row["body"] == pytest.approx(float(body.mean()), abs=1e-5)
        assert row["part"] + row["body"] + row["off"] == pytest.approx(1.0, abs=1e-5)
    every = nb.part_body_off_rows(columns[:1], (object_mask, part_mask))
    assert [r["block"] for r in every] == exp.blocks("features", "cnn")


def test_accuracy_is_top1_in_eval_mode(tiny_exp):
    model, x, _ = tiny_exp
    model.train()
    with torch.no_grad():
        predicted = model.eval()(x).argmax(1)
    model.train()
    y = torch.stack([predicted[0], (predicted[1] + 1) % 5])
    assert nb.accuracy(model, x, y) == 0.5
    assert not model.training


def test_fcu_down_ratios_match_a_direct_computation(tiny_exp):
    model, x, _ = tiny_exp
    inputs = {}

    def keep(k):
        def pre_hook(module, args):
            inputs[k] = tuple(a.detach().clone() for a in args)
        return pre_hook

    handles = [getattr(model, f"conv_trans_{k}").squeeze_block.register_forward_pre_hook(keep(k))
               for k in range(2, model.depth + 1)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    ratios = nb.fcu_down_ratios(model, x)
    assert list(ratios) == list(range(2, model.depth + 1))
    with torch.no_grad():
        for k, (cnn, tokens) in inputs.items():
            added = getattr(model, f"conv_trans_{k}").squeeze_block(cnn, tokens)[:, 1:]
            assert ratios[k] == pytest.approx(float(added.norm() / tokens[:, 1:].norm()),
                                              rel=1e-5)
    units = [getattr(model, f"conv_trans_{k}").squeeze_block for k in range(2, model.depth + 1)]
    assert all(not u._forward_hooks for u in units)

    def boom(module, args, output):
        raise RuntimeError("boom")

    failing = model.conv_trans_5.register_forward_hook(boom)  # fails mid-forward
    try:
        with pytest.raises(RuntimeError, match="boom"):
            nb.fcu_down_ratios(model, x)
    finally:
        failing.remove()
    assert all(not u._forward_hooks for u in units), "hooks left behind after an error"
    with pytest.raises(ValueError, match="not a Conformer"):
        nb.fcu_down_ratios(torch.nn.Linear(2, 2), torch.zeros(1, 2))


# ------------------------------------------------------------------------------------ figures
def test_method_rows_figure_draws_each_method_branch_and_block(tiny_exp):
    _, _, exp = tiny_exp
    fig = nb.method_rows_figure(exp, ("features", "gradcam"), "cnn", blocks=(3, 12))
    axes = fig.axes
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == ["cnn · block 3", "cnn · block 12",
                                                   "transformer · block 3",
                                                   "transformer · block 12"]
    assert axes[4].get_ylabel() == cx.plot.METHOD_LABELS["gradcam"]
    expected = exp.get("gradcam", "transformer", 12, head="cnn")[0].numpy()
    assert np.allclose(heat_of(axes[7]), np.clip(expected, 0, 1))
    with pytest.raises(KeyError):
        nb.method_rows_figure(exp, ("layercam",), "cnn")


def test_attention_heads_figure_scales_each_head(tiny_exp):
    _, _, exp = tiny_exp
    per_head = exp.raw["attention_heads/transformer/12"][0]
    fig = nb.attention_heads_figure(exp, 12)
    assert len(fig.axes) == len(per_head) == 3
    for ax, m in zip(fig.axes, per_head):
        ref = (m - m.min()) / (m.max() - m.min())
        assert np.allclose(heat_of(ax), ref.numpy(), atol=1e-6)
    without = exp.select(0)
    without.raw.pop("attention_heads/transformer/12")
    with pytest.raises(KeyError, match="attn_heads=True"):
        nb.attention_heads_figure(without, 12)


def test_rollout_options_figure_draws_each_option(tiny_exp):
    model, x, exp = tiny_exp
    shown = np.asarray(exp.image[0])
    fig = nb.rollout_options_figure(model, x[:1], shown, fusions=("mean", "max"),
                                    discards=(0.0, 0.9))
    axes = fig.axes
    assert len(axes) == 4
    assert [axes[0].get_ylabel(), axes[2].get_ylabel()] == ["mean fusion", "max fusion"]
    with cx.Explainer(model) as explainer:
        ref = explainer.explain(x[:1], methods=("rollout",),
                                rollout_options={"head_fusion": "max", "discard_ratio": 0.9})
    assert np.allclose(heat_of(axes[3]), ref.get("rollout", "transformer")[0].numpy(), atol=1e-6)
    assert not np.allclose(heat_of(axes[0]), heat_of(axes[3]))


# ------------------------------------------------------------------------------------ calls
def test_call_spectrogram_puts_a_loud_call_under_its_mask():
    for label in range(3):
        spec, mask = nb.call_spectrogram(np.random.default_rng(label), label, 64, 160)
        assert spec.shape == mask.shape == (64, 160) and spec.dtype == np.float32
        assert 0 < mask.mean() < 0.5
        assert spec[mask].mean() > spec[~mask].mean() + 10  # dB above the noise floor
    # row 0 is the highest mel bin: the noise floor is louder at the bottom
    spec, mask = nb.call_spectrogram(np.random.default_rng(0), 1, 64, 160)
    assert spec[~mask][:10].mean() < spec[-8:].mean()
    again, _ = nb.call_spectrogram(np.random.default_rng(0), 1, 64, 160)
    assert np.array_equal(spec, again)
    with pytest.raises(ValueError, match="chirp, harmonic_stack, clicks"):
        nb.call_spectrogram(np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="too small"):
        nb.call_spectrogram(np.random.default_rng(0), 0, 4, 160)


def test_write_call_split_saves_what_the_generator_draws(tmp_path):
    files, masks = nb.write_call_split(tmp_path / "test", 4, seed=5, n_mels=32, n_frames=64)
    assert [(p.name, label) for p, label in files] == [
        ("0000_chirp.npy", 0), ("0001_harmonic_stack.npy", 1), ("0002_clicks.npy", 2),
        ("0003_chirp.npy", 0)]
    rng = np.random.default_rng(5)
    for (path, label), mask in zip(files, masks):
        spec, ref_mask = nb.call_spectrogram(rng, label, 32, 64)
        assert np.array_equal(np.load(path), spec)
        assert np.array_equal(mask.numpy(), ref_mask)
    assert masks.shape == (4, 32, 64) and masks.dtype == torch.bool
    with pytest.raises(ValueError, match="at least 1"):
        nb.write_call_split(tmp_path, 0, seed=0)


# ------------------------------------------------------------------------------------ explorer
def test_map_explorer_caches_and_draws_the_chosen_map(tiny_exp):
    model, x, exp = tiny_exp
    images = {"a": (x[:1], exp.image[0]), "b": (x[1:], exp.image[1])}
    explorer = nb.MapExplorer(model, images, ("fused", "transformer"),
                              ("gradcam", "rollout"), class_names=[f"c{i}" for i in range(5)])
    first = explorer.explanation("b")
    assert explorer.explanation("b") is first
    fig = explorer.figure("b", "transformer", "cnn", "gradcam", 5)
    ax = fig.axes[0]
    assert ax.get_title().startswith(f"{cx.plot.METHOD_LABELS['gradcam']} · cnn branch · block 5")
    assert "transformer head, p(" in ax.get_title()
    expected = first.get("gradcam", "cnn", 5, head="transformer")[0].numpy()
    assert np.allclose(heat_of(ax), np.clip(expected, 0, 1))
    # rollout: transformer branch whatever the branch chosen, no block, no head
    title = explorer.figure("a", "fused", "cnn", "rollout", 5).axes[0].get_title()
    assert "transformer branch" in title and "block" not in title and "target: c" in title
    last = model.depth
    title = explorer.figure("a", "transformer", "cnn", "gradcam", last).axes[0].get_title()
    assert title.endswith("all-zero map")
    with pytest.raises(ValueError, match="unknown image 'c'; accepted: a, b"):
        explorer.figure("c", "fused", "cnn", "gradcam", 1)
    with pytest.raises(ValueError, match="not explained; accepted: gradcam, rollout"):
        explorer.figure("a", "fused", "cnn", "features", 1)
    with pytest.raises(ValueError, match="at least one image"):
        nb.MapExplorer(model, {}, ("fused",), ("gradcam",))
    assert math.isfinite(float(first.probs["fused"][0, 0]))


def test_work_folder_is_the_given_folder_or_a_temporary_one(tmp_path: Path):
    given = tmp_path / "out" / "nested"
    assert nb.work_folder(given) == given and given.is_dir()
    temporary = nb.work_folder(prefix="conformer_xai_test_")
    assert temporary.is_dir() and temporary.name.startswith("conformer_xai_test_")
    assert nb.work_folder() != temporary  # a new one each call, kept for the kernel's life
