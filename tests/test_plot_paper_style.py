"""The paper's own figure style (issue 12, item 5) and the single-channel maps it shows."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import make_tiny_conformer

from conformer_xai import Explainer, plot
from conformer_xai.plot.paper import PAPER_LABELS, blocky


@pytest.fixture(scope="module")
def explanations():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(7))
    models = {
        "resnet18": timm.create_model("resnet18", num_classes=5).eval(),
        "conformer": make_tiny_conformer(),
        "deit": timm.create_model("deit_tiny_patch16_224", img_size=96, num_classes=5).eval(),
    }
    return {name: Explainer(m).explain(x, methods=("features",), channels=2)
            for name, m in models.items()}


def test_feature_channels_are_the_two_with_the_largest_spatial_spread():
    model = make_tiny_conformer()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    exp = Explainer(model).explain(x, methods=("features",), blocks=[4, 12], channels=2)
    with torch.no_grad():
        acts = model.forward_intermediates(x, indices=[3, 11], intermediates_only=True)
    for act, k in zip(acts, (4, 12)):
        for branch in ("cnn", "transformer"):
            a = getattr(act, branch)
            key = f"feature_channels/{branch}/{k}"
            chosen = exp.meta["feature_channels"][key]
            for i in range(2):
                spread = a[i].flatten(1).std(dim=1, unbiased=False)
                expected = torch.argsort(-spread, stable=True)[:2].tolist()
                assert chosen[i] == expected, key
                torch.testing.assert_close(exp.raw[key][i], a[i, expected])
    assert "feature_channels/cnn/4" not in exp.maps  # grids only, like attention_heads
    with pytest.raises(ValueError, match="channels must be an int >= 0"):
        Explainer(model).explain(x, methods=("features",), channels=-1)


def test_paper_style_layout_labels_colours_and_blocky_cells(explanations):
    fig = plot.paper_figure(None, explanations, style="paper")
    axes = fig.get_axes()
    assert len(axes) == 1 + 2 * 2 * 4  # input, then 2 groups x 2 rows x 4 models
    titles = [ax.get_title() for ax in axes if ax.get_title()]
    order = [PAPER_LABELS[r] for r in (("cnn", "cnn"), ("conformer", "cnn"),
                                       ("transformer", "transformer"),
                                       ("conformer", "transformer"))]
    assert titles == ["Input", *order, *order]
    texts = [t.get_text() for sf in fig.subfigs for t in ([sf._suptitle] if sf._suptitle else [])]
    assert texts == ["Shallow Layers", "Deep Layers"]
    shown = [ax.images[0] for ax in axes[1:]]
    assert all(im.get_cmap().name == "hot" for im in shown)
    assert all(im.get_interpolation() == "nearest" for im in shown)
    assert all(len(ax.images) == 1 for ax in axes[1:])  # stand-alone: no image under the map
    # Conformer block 12's CNN cells are 32x32 blocks of one value
    conformer = explanations["conformer"]
    cells = blocky(conformer, "feature_channels/cnn/12", 0, 0)
    assert cells.shape == (96, 96)
    for r in range(3):
        for c in range(3):
            block = cells[32 * r:32 * (r + 1), 32 * c:32 * (c + 1)]
            assert np.ptp(block) == 0
    assert np.ptp(cells) > 0


def test_paper_style_needs_single_channel_maps_and_known_style():
    model = make_tiny_conformer()
    exp = Explainer(model).explain(torch.randn(1, 3, 64, 64), methods=("features",))
    with pytest.raises(ValueError, match="channels=2"):
        plot.paper_figure(None, {"c": exp}, style="paper")
    with pytest.raises(ValueError, match="unknown style 'jet'; accepted: overlay, paper"):
        plot.paper_figure(None, {"c": exp}, style="jet")
    assert plot.paper_figure(None, {"c": exp}).axes  # the overlay style stays the default
