"""Our metrics against Quantus 0.6 where it implements the same metric (issue 4).

Quantus is installed with ``--no-deps`` by the Makefile (its requirement of ``opencv-python``
would overwrite grad-cam's ``opencv-python-headless`` ``cv2``); pandas and cachetools, the rest
of what it imports, are in the dev extra.

* Deletion: Quantus' PixelFlipping with a replacement value of 0 (the mean colour after
  normalisation) and softmax scores. It counts ``features_in_step`` in attribution elements but
  replaces elements of the channel-broadcast attribution, so three of its steps remove the pixels
  of one of ours: its curve at every third step equals ours.
* Pointing game: Quantus' PointingGame (Zhang et al.) without tolerance.
* Energy pointing game: Quantus' AttributionLocalisation (Kohlbrenner et al. 2020, unweighted),
  the share of positive attribution inside the mask.

Not cross-checked here: Quantus has no insertion from a blurred copy (ours shares the curve code
checked by the deletion test), and its ModelParameterRandomisation re-initialises layer by layer
with its own initialiser, unlike our seeded copy; SSIM and Spearman are checked against
scikit-image and SciPy in test_metrics_agreement.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch

from conformer_xai import load_model
from conformer_xai.metrics import deletion_auc, energy_pointing_game, pointing_game
from conformer_xai.synthetic import SyntheticScenes

STEPS = 16


@pytest.fixture(scope="module")
def scenes() -> dict[str, torch.Tensor]:
    data = SyntheticScenes(4, seed=0, size=128, split="test")
    items = [data[i] for i in range(4)]
    mask = torch.stack([it["object_mask"] for it in items]).float()
    # half the maps favour the object, half the background: pointing game 1, 1, 0, 0
    favour = torch.stack([mask[0], mask[1], 1 - mask[2], 1 - mask[3]])
    maps = torch.rand(4, 128, 128, generator=torch.Generator().manual_seed(0)) + 0.5 * favour
    maps[:, 0, 0] = 0.0  # min 0: min-max normalisation only rescales
    return {"x": torch.stack([it["image"] for it in items]),
            "y": torch.tensor([it["label"] for it in items]), "mask": mask, "maps": maps}


def _quantus_inputs(scenes: dict[str, torch.Tensor]) -> dict:
    return {"x_batch": scenes["x"].numpy(), "y_batch": scenes["y"].numpy(),
            "a_batch": scenes["maps"][:, None].numpy(), "device": "cpu"}


def test_deletion_curve_equals_quantus_pixel_flipping(scenes):
    model = load_model("resnet_micro", weights="embedded")
    _, ours = deletion_auc(model, scenes["x"], scenes["maps"], scenes["y"], steps=STEPS,
                           return_curves=True)
    metric = quantus.PixelFlipping(features_in_step=128 * 128 // STEPS, perturb_baseline=0.0,
                                   abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(metric(model=model, softmax=True, **_quantus_inputs(scenes)))
    assert theirs.shape == (4, 3 * STEPS)
    assert ours[:, 0].min() > 0.5  # the trained model is confident on the intact scenes
    np.testing.assert_allclose(theirs[:, 2::3], ours[:, 1:].numpy(), rtol=1e-5, atol=1e-6)


def test_pointing_games_equal_quantus(scenes):
    model = load_model("resnet_micro", weights="embedded")
    s_batch = scenes["mask"][:, None].numpy()
    pg = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    theirs = pg(model=model, s_batch=s_batch, **_quantus_inputs(scenes))
    ours = pointing_game(scenes["maps"], scenes["mask"])
    assert ours.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert [float(t) for t in theirs] == ours.tolist()

    al = quantus.AttributionLocalisation(abs=False, normalise=False, disable_warnings=True)
    theirs = np.asarray(al(model=model, s_batch=s_batch, **_quantus_inputs(scenes)),
                        dtype=np.float64)
    np.testing.assert_allclose(energy_pointing_game(scenes["maps"], scenes["mask"]).numpy(),
                               theirs, rtol=1e-5)
