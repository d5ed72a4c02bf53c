"""conformer_xai.plot: every figure rendered with Agg to PNG; sizes, content, titles, one golden."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from conformer_xai import plot  # noqa: E402
from conformer_xai.explain.result import Explanation, normalise_per_image  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden" / "overlay_jet.png"
SIZE = 40
CLASSES = ["circle", "square", "triangle", "star"]


# --------------------------------------------------------------------------- fixtures
def blob(cy: float, cx: float, sigma: float = 6.0, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))


def scene_image(size: int = SIZE) -> np.ndarray:
    """A deterministic RGB image: a gradient background with a bright square."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    img = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.6 - 0.3 * xx], axis=-1)
    img[10:22, 14:28] = (0.95, 0.85, 0.2)
    return img.astype(np.float32)


def make_explanation(branches=("cnn", "transformer"), heads=("fused", "cnn", "transformer"),
                     n_blocks=None, batch=2, model_name="conformer_test",
                     meta=None, image=True) -> Explanation:
    """An explanation built by hand: one moving blob per block, batch of ``batch`` images.

    On a two-branch model the transformer head's Grad-CAM on the last CNN block is all zero
    (as the real model's: no gradient path).
    """
    n_blocks = n_blocks or {b: 12 for b in branches}
    maps: dict[str, torch.Tensor] = {}

    def add(key: str, per_image) -> None:
        maps[key] = torch.stack([per_image(i) for i in range(batch)])

    for b_i, branch in enumerate(branches):
        n = n_blocks[branch]
        for k in range(1, n + 1):
            frac = k / n
            add(f"features/{branch}/{k}",
                lambda i, f=frac, s=b_i: blob(8 + 24 * f, 8 + 20 * (1 - f) + 6 * s + 3 * i))
            for h_i, head in enumerate(heads):
                if len(branches) == 2 and head == "transformer" and branch == "cnn" and k == n:
                    add(f"gradcam/{head}/{branch}/{k}", lambda i: torch.zeros(SIZE, SIZE))
                    continue
                add(f"gradcam/{head}/{branch}/{k}",
                    lambda i, f=frac, h=h_i: blob(16 + 4 * h, 10 + 20 * f + i, 4 + 3 * f))
    if "transformer" in branches:
        add("rollout/transformer", lambda i: blob(20, 20 + i, 10))
        for head in heads:
            add(f"grad_rollout/{head}/transformer", lambda i: blob(14, 24 - i, 7))
    maps = {k: normalise_per_image(v) for k, v in maps.items()}
    raw = {k: torch.nn.functional.avg_pool2d(v[:, None], 4)[:, 0] for k, v in maps.items()}
    gen = torch.Generator().manual_seed(0)
    logits = {h: torch.randn(batch, len(CLASSES), generator=gen) * 2 for h in heads}
    img = None
    if image:
        img = torch.from_numpy(np.stack([scene_image()] * batch))
    return Explanation(maps=maps, raw=raw, logits=logits, target=torch.tensor([1, 2][:batch]),
                       heads=tuple(heads), input_size=(SIZE, SIZE), model_name=model_name,
                       class_names=list(CLASSES), image=img, meta=dict(meta or {}))


@pytest.fixture(scope="module")
def conformer_exp() -> Explanation:
    return make_explanation(meta={"weights_source": "imagenet"})


def render(fig: Figure, dpi: int = 50) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array, through a real PNG file in memory."""
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as png:
        assert png.format == "PNG"
        return np.asarray(png.convert("RGB"))


def all_text(fig: Figure) -> str:
    """Every title, label, suptitle and free text of a figure (subfigures included)."""
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text())


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.findobj(matplotlib.axes.Axes) if ax.get_title()]


def assert_content(pixels: np.ndarray, width: int, height: int) -> None:
    assert pixels.shape[1] == pytest.approx(width, abs=2)
    assert pixels.shape[0] == pytest.approx(height, abs=2)
    assert pixels.std() > 20, "figure is blank"
    # the jet colour map is present: saturated reds/blues that the image has no source for
    hsv_sat = pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)
    assert (hsv_sat > 150).mean() > 0.01


# --------------------------------------------------------------------------- panels
def test_overlay_draws_map_over_image_edge_to_edge() -> None:
    img = scene_image()
    heat = blob(20, 20).numpy()
    fig = plot.overlay(img, heat, alpha=0.5)
    pixels = render(fig, dpi=40)
    assert pixels.shape == (120, 120, 3)
    assert not all_text(fig)
    centre, corner = pixels[58:62, 58:62].astype(int), pixels[2:6, 2:6].astype(int)
    # jet: the map's maximum is dark red at the centre, its minimum blue in the corner
    assert centre[..., 0].mean() > 120 and centre[..., 2].mean() < 80
    assert corner[..., 2].mean() > corner[..., 0].mean() + 40
    # alpha: the image shows through (blend of map and image, not the map alone)
    no_image = render(plot.overlay(np.zeros_like(img), heat, alpha=0.5), dpi=40)
    assert np.abs(pixels.astype(int) - no_image).mean() > 10


def test_overlay_accepts_uint8_grayscale_and_tensors_and_existing_axes() -> None:
    heat = blob(10, 30)
    gray = (scene_image()[..., 0] * 255).astype(np.uint8)
    a = render(plot.overlay(gray, heat), dpi=30)
    b = render(plot.overlay(torch.from_numpy(gray / 255.0), heat.numpy()), dpi=30)
    c = render(plot.overlay(gray[..., None], heat), dpi=30)  # (H, W, 1) as load_image gives
    assert np.abs(a.astype(int) - c).mean() < 1.0
    assert np.abs(a.astype(int) - b).mean() < 1.0
    fig = Figure(figsize=(4, 2))
    ax1, ax2 = fig.subplots(1, 2)
    assert plot.overlay(scene_image(), heat, ax=ax2) is fig
    assert ax2.images and not ax1.images
    with pytest.raises(ValueError, match="image must be"):
        plot.overlay(np.zeros((4, 5, 2)), heat)
    with pytest.raises(ValueError, match="map must be"):
        plot.overlay(scene_image(), np.zeros((2, 3, 4)))


def test_overlay_matches_golden_png() -> None:
    """Golden image of a text-free panel (mean absolute difference tolerance)."""
    fig = plot.overlay(scene_image(), blob(16, 24, 8).numpy(), cmap="jet", alpha=0.5)
    pixels = render(fig, dpi=40).astype(np.float64)
    with Image.open(GOLDEN) as golden_png:
        golden = np.asarray(golden_png.convert("RGB")).astype(np.float64)
    assert pixels.shape == golden.shape
    assert np.abs(pixels - golden).mean() < 2.0
    # the tolerance is meaningful: another colour map fails it
    other = render(plot.overlay(scene_image(), blob(16, 24, 8).numpy(), cmap="viridis"), dpi=40)
    assert np.abs(other.astype(np.float64) - golden).mean() > 10.0


def test_map_panel_has_title_and_colour_bar() -> None:
    fig = plot.map_panel(blob(12, 30), image=scene_image(), title="Grad-CAM block 12")
    pixels = render(fig)
    assert_content(pixels, 200, 170)
    assert "Grad-CAM block 12" in titles(fig)
    assert len(fig.axes) == 2  # the panel and its colour bar
    bare = plot.map_panel(blob(12, 30), colorbar=False)
    assert len(bare.axes) == 1
    assert render(bare).std() > 20


def test_figures_display_in_jupyter_without_pyplot() -> None:
    """IPython's PNG formatter (what a notebook calls on a returned value) renders our figures."""
    from IPython.core.formatters import PNGFormatter

    png = PNGFormatter()(plot.overlay(scene_image(), blob(20, 20)))
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(png)) as shown:
        assert np.asarray(shown.convert("RGB")).std() > 20


# --------------------------------------------------------------------------- strips, matrix
def test_block_strip_one_row_across_blocks(conformer_exp: Explanation) -> None:
    fig = plot.block_strip(conformer_exp, "features", "transformer")
    pixels = render(fig)
    assert_content(pixels, 12 * 1.55 * 50, (1.55 + 0.5) * 50)
    assert titles(fig) == [f"block {k}" for k in range(1, 13)]
    assert "transformer branch" in fig.get_suptitle()
    assert "feature map" in fig.get_suptitle()
    # one row: every panel at the same height
    assert len({round(ax.get_position().y0, 3) for ax in fig.axes}) == 1


def test_block_strip_gradient_method_names_head_target_and_zero_panels(
        conformer_exp: Explanation) -> None:
    fig = plot.block_strip(conformer_exp, "gradcam", "cnn", head="transformer", blocks=[6, 12],
                           index=1)
    render(fig)
    sup = fig.get_suptitle()
    assert "transformer head" in sup and "target: triangle (2)" in sup
    assert "no gradient path" in all_text(fig)
    default_head = plot.block_strip(conformer_exp, "gradcam", "cnn", ncols=6)
    assert "fused head" in default_head.get_suptitle()
    assert len({round(ax.get_position().y0, 3) for ax in default_head.axes}) == 2  # wrapped
    with pytest.raises(ValueError, match="no 'attention' maps"):
        plot.block_strip(conformer_exp, "attention", "transformer")
    with pytest.raises(ValueError, match="not in the explanation"):
        plot.block_strip(conformer_exp, "features", "cnn", blocks=[13])


def test_head_branch_matrix_grid_titles_and_no_gradient_path(
        conformer_exp: Explanation) -> None:
    fig = plot.head_branch_matrix(conformer_exp)
    pixels = render(fig)
    assert_content(pixels, (1.2 + 2 * 2.3) * 50, (0.6 + 2 * 2.3) * 50)
    assert sorted(titles(fig)) == ["cnn branch · block 12", "transformer branch · block 12"]
    text = all_text(fig)
    probs = conformer_exp.probs
    for head in ("cnn", "transformer"):
        assert f"{head} head\np(square) = {probs[head][0, 1]:.2f}" in text
    assert "target: square (1)" in fig.get_suptitle()
    assert "no gradient path" in text  # transformer head x last CNN block
    # the grey panel replaces the heat map: one image fewer carries a colour map
    jet_panels = [ax for ax in fig.axes if len(ax.images) == 2]
    assert len(jet_panels) == 3

    at_six = plot.head_branch_matrix(conformer_exp, block=6, index=1)
    assert "no gradient path" not in all_text(at_six)
    assert "target: triangle (2)" in at_six.get_suptitle()
    three = plot.head_branch_matrix(conformer_exp, heads=("fused", "cnn", "transformer"))
    assert len(three.axes) == 6


def test_head_branch_matrix_default_block_skips_all_zero_blocks() -> None:
    exp = make_explanation(heads=("cnn", "transformer"))
    for head in exp.heads:
        for branch in ("cnn", "transformer"):
            key = f"gradcam/{head}/{branch}/12"
            exp.maps[key] = torch.zeros_like(exp.maps[key])
            exp.raw[key] = torch.zeros_like(exp.raw[key])
    fig = plot.head_branch_matrix(exp)
    assert "cnn branch · block 11" in titles(fig)
    only_fused = make_explanation(heads=("fused",))
    with pytest.raises(ValueError, match=r"head=\('cnn', 'transformer'\)"):
        plot.head_branch_matrix(only_fused, heads=("cnn", "transformer"))
    with pytest.raises(ValueError, match="available"):
        plot.head_branch_matrix(exp, block=40)


# --------------------------------------------------------------------------- compare
def test_spearman_matches_scipy() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.random((9, 9))
    b = a + rng.normal(0, 0.3, (9, 9))
    b[0, :4] = 0.5  # ties
    assert plot.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-12)
    assert plot.spearman(a, a) == pytest.approx(1.0)
    assert math.isnan(plot.spearman(a, np.zeros_like(a)))


def test_compare_side_by_side_with_per_block_agreement(conformer_exp: Explanation) -> None:
    other = make_explanation(model_name="conformer_other")
    other.maps = {k: v.flip(-1) if k.startswith("features/cnn/") else v
                  for k, v in other.maps.items()}
    fig = plot.compare(conformer_exp, other, branch="cnn")
    pixels = render(fig)
    assert_content(pixels, (0.8 + 12 * 1.55) * 50, (0.7 + 2 * 1.55) * 50)
    scores = plot.block_agreement(conformer_exp, other, "features", "cnn")
    assert len(scores) == 12
    panel_titles = titles(fig)
    assert len(panel_titles) == 12
    for (ka, _, rho), title in zip(scores, panel_titles):
        assert title == f"block {ka}\nρ = {rho:.2f}"
    assert "conformer_test vs conformer_other" in fig.get_suptitle()
    same = plot.block_agreement(conformer_exp, conformer_exp, "features", "transformer")
    assert all(rho == pytest.approx(1.0) for *_, rho in same)
    flipped = [rho for *_, rho in scores]
    assert min(flipped) < 0.9  # the flipped maps disagree somewhere
    both = plot.compare(conformer_exp, other)
    assert len(both.axes) == 4 * 12  # two rows per shared branch


def test_compare_pairs_blocks_by_relative_depth_across_models() -> None:
    resnet = make_explanation(branches=("cnn",), heads=("cnn",), n_blocks={"cnn": 33},
                              model_name="resnet101")
    conformer = make_explanation(model_name="conformer_small_patch16")
    scores = plot.block_agreement(resnet, conformer, "features", "cnn")
    # relative depth: 1 * 33 / 12 = 2.75 -> 3; 2 * 33 / 12 = 5.5 -> 5 (ties go shallower)
    assert [(a, b) for a, b, _ in scores][:2] == [(3, 1), (5, 2)]
    assert scores[-1][:2] == (33, 12)
    fig = plot.compare(resnet, conformer, labels=("ResNet-101", "Conformer-S"))
    assert "blocks 3 | 1" in titles(fig)[0]
    with pytest.raises(ValueError, match="shared branches"):
        plot.compare(resnet, conformer, branch="transformer")


# --------------------------------------------------------------------------- paper figure
def test_paper_figure_finds_roles_from_contents_not_names() -> None:
    # names deliberately misleading: roles must come from the maps' branches
    exps = {
        "model_c": make_explanation(model_name="x"),
        "model_t": make_explanation(branches=("transformer",), heads=("transformer",)),
        "model_r": make_explanation(branches=("cnn",), heads=("cnn",), n_blocks={"cnn": 33}),
    }
    assert [plot.model_role(e) for e in exps.values()] == ["conformer", "transformer", "cnn"]
    fig = plot.paper_figure(scene_image(), exps)
    pixels = render(fig)
    assert_content(pixels, (1.0 + 2.1 * 5) * 50, 4.6 * 50)
    assert titles(fig) == ["(a) input", "(b) model_r", "(c) model_c\nCNN branch",
                           "(d) model_t", "(e) model_c\ntransformer branch"]
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    # default blocks: ResNet-101 end of stage 2 and 33; Conformer/DeiT 4 and 12
    assert xlabels == ["block 7", "block 33", "block 4", "block 12", "block 4", "block 12",
                       "block 4", "block 12"]
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["shallow", "deep"]


def test_paper_figure_block_choices_and_errors() -> None:
    conformer = make_explanation()
    cnn = make_explanation(branches=("cnn",), heads=("cnn",), n_blocks={"cnn": 33})
    fig = plot.paper_figure(None, {"c": conformer, "r": cnn}, shallow={"r": 10, "c": 3},
                            deep=12, method="gradcam")
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert xlabels == ["block 10", "block 12", "block 3", "block 12", "block 3", "block 12"]
    assert "Grad-CAM" in fig.get_suptitle()
    assert plot.default_blocks(33, "cnn") == (7, 33)
    assert plot.default_blocks(12, "transformer") == (4, 12)
    assert plot.default_blocks(7, "cnn") == (2, 7)
    with pytest.raises(ValueError, match="both cnn models"):
        plot.paper_figure(None, {"a": cnn, "b": cnn})
    with pytest.raises(ValueError, match="available"):
        plot.paper_figure(None, {"c": conformer}, deep=13)
    with pytest.raises(ValueError, match="at least one"):
        plot.paper_figure(None, {})


# --------------------------------------------------------------------------- summary figure
def test_explanation_figure_has_every_section(conformer_exp: Explanation) -> None:
    fig = plot.explanation_figure(conformer_exp, index=1)
    pixels = render(fig, dpi=40)
    assert pixels.std() > 20
    assert pixels.shape[1] > 12 * 1.55 * 40 - 2
    text = all_text(fig)
    for needle in ("cnn branch · feature map", "cnn branch · Grad-CAM · fused head",
                   "transformer branch · feature map", "transformer branch · Grad-CAM",
                   "attention rollout", "gradient rollout", "head × branch",
                   "top-5 predictions per head", "no gradient path", "target: triangle (2)",
                   "weights: ImageNet-1k"):
        assert needle in text, needle
    top = conformer_exp.top_classes("transformer", 4)[1]
    assert f"{CLASSES[top[0][0]]}" in text and f"{top[0][1]:6.3f}" in text


@pytest.mark.parametrize(("meta", "needle", "warning"), [
    ({"weights_source": "random"}, "RANDOM (untrained model)", True),
    ({"weights_source": "embedded", "input_kind": "photo"},
     "trained on synthetic scenes, not on photos", True),
    ({"weights_source": "embedded", "input_kind": "scene"}, "trained on synthetic scenes", False),
    ({"weights_source": "checkpoint:/x/ft.pth"}, "weights: checkpoint /x/ft.pth", False),
])
def test_explanation_figure_states_weights_source(meta, needle, warning) -> None:
    exp = make_explanation(branches=("cnn",), heads=("cnn",), n_blocks={"cnn": 3}, meta=meta,
                           batch=1, image=False)
    fig = plot.explanation_figure(exp, image=scene_image())
    render(fig, dpi=30)
    lines = [t for t in fig.findobj(matplotlib.text.Text) if needle in t.get_text()]
    assert lines
    assert (lines[0].get_color() == plot.report.WARNING_COLOUR) is warning
    assert "head × branch" not in all_text(fig)  # one branch: no matrix


def test_explainer_output_plots_end_to_end(tmp_path: Path) -> None:
    """A real image file, explained by a tiny random Conformer, goes through every plot."""
    import timm

    import conformer_xai

    torch.manual_seed(0)
    model = timm.create_model("conformer_tiny_patch16", embed_dim=48, num_heads=2,
                              base_channel=8, num_classes=len(CLASSES)).eval()
    path = tmp_path / "scene.png"
    Image.fromarray((scene_image(80) * 255).astype(np.uint8)).save(path)
    x, image = conformer_xai.load_image(path, model, input_size=64)
    assert image.shape == (64, 64, 3)
    with conformer_xai.Explainer(model, class_names=CLASSES) as explainer:
        exp = explainer.explain(x, head=("fused", "cnn", "transformer"), image=image[None],
                                methods=("features", "gradcam", "eigencam", "rollout",
                                         "grad_rollout"),
                                meta={"weights_source": "random"})
    fig = plot.explanation_figure(exp)
    pixels = render(fig, dpi=30)
    assert pixels.std() > 20
    text = all_text(fig)
    assert "RANDOM" in text and "head × branch" in text and "no gradient path" in text
    matrix = plot.head_branch_matrix(exp)
    assert "transformer head" in all_text(matrix)
    assert render(plot.block_strip(exp, "eigencam", "cnn")).std() > 20
    assert render(plot.paper_figure(None, {"conformer": exp})).std() > 20
