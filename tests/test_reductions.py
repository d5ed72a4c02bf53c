"""Channel reductions of the feature maps (issue 12, item 4) and their measuring script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conformer_xai.cli._map_options import DEFAULT_REDUCE as CLI_DEFAULT
from conformer_xai.cli._map_options import REDUCTIONS as CLI_REDUCTIONS
from conformer_xai.explain.methods.features import (
    DEFAULT_REDUCE,
    REDUCTIONS,
    check_reduce,
    reduce_channels,
)

REPO = Path(__file__).resolve().parents[1]


def test_cli_and_library_agree_on_the_reductions_and_the_default():
    assert CLI_DEFAULT == DEFAULT_REDUCE and set(CLI_REDUCTIONS) == set(REDUCTIONS)


@pytest.mark.parametrize("shape", [(2, 7, 5, 6), (2, 40, 3, 4)], ids=["tall", "wide"])
def test_reductions_against_numpy(shape):
    # tall: more locations than channels (the C x C Gram matrix), wide: fewer (hw x hw)
    act = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    channels = shape[1]
    a = act.numpy().astype(np.float64)
    np.testing.assert_allclose(reduce_channels(act, "abs_mean"), np.abs(a).mean(1), rtol=1e-5)
    np.testing.assert_allclose(reduce_channels(act, "l2"), np.sqrt((a ** 2).sum(1)), rtol=1e-5)
    np.testing.assert_allclose(reduce_channels(act, "mean"), a.mean(1), rtol=1e-5, atol=1e-6)
    pca = reduce_channels(act, "pca").numpy()
    for i in range(2):
        x = a[i].reshape(channels, -1).T  # (hw, C)
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[0]
        norm = np.linalg.norm(x, axis=1)
        proj *= np.sign(((norm - norm.mean()) * proj).sum())  # the documented sign rule
        np.testing.assert_allclose(pca[i].ravel(), proj, rtol=1e-4, atol=1e-5)
    # the sign does not follow the SVD's whim: flipping every channel keeps the map's sign
    # rule (positive correlation with the L2 map, which is unchanged by the flip)
    flipped = reduce_channels(-act, "pca").numpy()
    for i in range(2):
        norm = np.linalg.norm(a[i].reshape(channels, -1), axis=0)
        assert ((norm - norm.mean()) * flipped[i].ravel()).sum() > 0


@pytest.mark.parametrize("bad", ["median", -1, True, 1.5])
def test_bad_reduction_names_the_accepted_values(bad):
    with pytest.raises(ValueError, match="mean, abs_mean, l2, max, pca or a channel index"):
        check_reduce(bad)


def test_the_measuring_script_runs_and_reports_every_reduction(tmp_path):
    out = tmp_path / "choices.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.map_choices", "--n", "2",
                           "--batch-size", "2", "--models", "resnet_micro", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["reductions"]) == set(REDUCTIONS)
    assert result["best_reduction"] in REDUCTIONS
    rows = [r for r in result["rows"] if r["method"] == "features"]
    assert {r["choice"] for r in rows} == set(REDUCTIONS)
    assert all(0.0 <= r["epg"] <= 1.0 for r in rows)
    assert "best (highest mean EPG)" in proc.stdout
