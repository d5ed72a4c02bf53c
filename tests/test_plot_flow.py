"""plot.branch_flow and the explanation figure with the new methods' maps."""

from __future__ import annotations

import pytest
import torch

from conformer_xai.explain import Explainer
from conformer_xai.plot import branch_flow, explanation_figure


@pytest.fixture(scope="module")
def explained():
    from conftest import make_tiny_conformer

    model = make_tiny_conformer()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with Explainer(model) as explainer:
        return explainer.explain(x, head=("fused", "transformer"), blocks=[1, 12],
                                 methods=["gradcam", "lrp", "transcam", "attnlrp"])


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_branch_flow_draws_lanes_crossings_and_shares(explained, tmp_path):
    fig = branch_flow(explained, head="transformer", index=1)
    texts = _texts(fig)
    assert "CNN" in texts and "transformer" in texts and "absorbed" in texts
    rows = explained.flows["transformer"]
    total = rows[-1]["cnn_in"][1] + rows[-1]["transformer_in"][1]
    # every block's absorbed share and the stem's lane shares are printed
    for r in rows:
        assert f"{r['absorbed'][1] / total:.0%}" in texts
    assert f"{rows[0]['cnn_stays'][1] / total:.0%}" in texts
    arrows = [p for p in fig.axes[0].patches if type(p).__name__ == "FancyArrowPatch"]
    crossings = sum(1 for r in rows for f in ("fcu_up", "fcu_down") if abs(r[f][1]) >= 1e-12)
    assert len(arrows) == crossings > 0
    assert "transformer head" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "flow.png")
    assert (tmp_path / "flow.png").stat().st_size > 5_000


def test_branch_flow_without_lrp_says_what_to_do(explained):
    with pytest.raises(ValueError, match="methods including 'lrp'"):
        branch_flow(explained, head="cnn")


def test_explanation_figure_draws_lrp_strips_transcam_and_input_maps(explained):
    fig = explanation_figure(explained)
    titles = [ax.get_title() for ax in fig.axes]
    assert "TransCAM" in titles
    assert "LRP\nfused head" in titles and "AttnLRP\nfused head" in titles
    subtitles = [sf._suptitle.get_text() for sf in fig.subfigs if sf._suptitle is not None]
    assert any("LRP" in t for t in subtitles)
