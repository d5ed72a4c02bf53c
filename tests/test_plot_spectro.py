"""Maps on the time-frequency plane: ``Explanation.unfolded`` and ``plot.spectrogram_figure`` for
folded audio inputs and raw arrays, at depths other than 12."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import make_tiny_conformer

import conformer_xai as cx
from conformer_xai.audio import fold, unfold


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


@pytest.mark.parametrize("depth", [6, 3])
def test_spectrogram_figure_unfolds_audio_maps(depth):
    model = make_tiny_conformer(num_classes=3, in_chans=1, depth=depth)
    spec = torch.randn(128, 32, generator=torch.Generator().manual_seed(0)) * 10 - 40
    x = fold(spec, 2)[None, None]  # (1, 1, 64, 64): 128 frames of 32 bands
    meta = {"fold": {"freq_ratio": 2, "n_mels": 32, "frames": 128, "sr": 16000,
                     "hop_length": 160, "fmin": 50.0, "fmax": 8000.0}}
    display = ((x[0, 0] - x.min()) / (x.max() - x.min())).numpy()
    with cx.Explainer(model) as explainer:
        exp = explainer.explain(x, head=("fused", "cnn", "transformer"),
                                methods=("gradcam", "rollout", "grad_rollout"),
                                image=display[None, :, :, None], meta=meta)
    tf = exp.unfolded("gradcam", "cnn", depth, head="cnn")
    assert tf.shape == (1, 32, 128)
    folded = exp.get("gradcam", "cnn", depth, head="cnn")
    torch.testing.assert_close(tf, unfold(folded, 32, 2))
    assert tf[0, 5, 64 + 3] == folded[0, 32 + 5, 3]  # band 5 of frame 67: second half's row
    fig = cx.plot.spectrogram_figure(exp)
    titles = " ".join(_titles(fig))
    shallow = max(1, round(depth / 3))
    assert f"cnn branch · block {shallow}" in titles and f"cnn branch · block {depth}" in titles
    assert "importance over time" in titles and "importance over frequency" in titles
    assert "attention rollout" in titles and "gradient rollout · fused head" in titles
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert {"time (s)", "frequency (Hz)"} <= labels
    spectro_ax = next(ax for ax in fig.axes if ax.get_title().startswith("input"))
    assert spectro_ax.get_xlim()[1] == pytest.approx(128 * 160 / 16000)  # 1.28 s of frames


def test_raw_arrays_get_row_and_column_axes_and_no_unfold():
    model = make_tiny_conformer(num_classes=3, in_chans=1, depth=6)
    x = torch.randn(1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    with cx.Explainer(model) as explainer:
        exp = explainer.explain(x, head=("cnn", "transformer"), methods=("gradcam",),
                                image=np.random.default_rng(0).random((1, 64, 96, 1)))
    fig = cx.plot.spectrogram_figure(exp)
    labels = {ax.get_xlabel() for ax in fig.axes} | {ax.get_ylabel() for ax in fig.axes}
    assert {"column", "row"} <= labels and "time (s)" not in labels
    assert "importance over columns" in " ".join(_titles(fig))
    with pytest.raises(ValueError, match="records no fold"):
        exp.unfolded("gradcam", "cnn", 6, head="cnn")
    with pytest.raises(ValueError, match="block 7 has no Grad-CAM map"):
        cx.plot.spectrogram_figure(exp, shallow=7)


def test_the_figure_draws_whichever_gradient_cam_was_explained():
    model = make_tiny_conformer(num_classes=3, in_chans=1, depth=3)
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    image = np.random.default_rng(0).random((1, 64, 64, 1))
    with cx.Explainer(model) as explainer:
        exp = explainer.explain(x, head=("cnn", "transformer"), methods=("xgradcam",),
                                image=image)
        both = explainer.explain(x, head=("cnn", "transformer"),
                                 methods=("layercam", "gradcam"), image=image)
    titles = " ".join(_titles(cx.plot.spectrogram_figure(exp)))
    assert "XGrad-CAM · cnn branch · block 3" in titles
    assert re.search(r"(?<!X)Grad-CAM ·", titles) is None
    # gradcam first when explained; another CAM on request
    assert "Grad-CAM · cnn branch" in " ".join(_titles(cx.plot.spectrogram_figure(both)))
    chosen = " ".join(_titles(cx.plot.spectrogram_figure(both, method="layercam")))
    assert "LayerCAM · cnn branch · block 3" in chosen
    with cx.Explainer(model) as explainer:
        features = explainer.explain(x, methods=("features",), image=image)
    with pytest.raises(ValueError, match="needs gradient CAM maps"):
        cx.plot.spectrogram_figure(features)
