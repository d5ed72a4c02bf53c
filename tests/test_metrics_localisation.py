"""Pointing game and energy-based pointing game on hand-made maps with known answers."""

import math

import numpy as np
import pytest
import torch

from conformer_xai.metrics import energy_pointing_game, pointing_game


@pytest.fixture
def mask() -> torch.Tensor:
    m = torch.zeros(2, 16, 16, dtype=torch.bool)
    m[:, 4:8, 6:10] = True
    return m


def test_map_equal_to_mask_scores_one(mask):
    maps = mask.float()
    assert pointing_game(maps, mask).tolist() == [1.0, 1.0]
    assert energy_pointing_game(maps, mask).tolist() == [1.0, 1.0]


def test_map_peaked_outside_scores_zero(mask):
    maps = torch.zeros(2, 16, 16)
    maps[:, 12, 2] = 1.0
    assert pointing_game(maps, mask).tolist() == [0.0, 0.0]
    assert energy_pointing_game(maps, mask).tolist() == [0.0, 0.0]


def test_peak_decides_not_mass(mask):
    maps = mask.float() * 0.5
    maps[0, 0, 0] = 1.0          # image 0: the maximum is off the object, most energy on it
    maps[1, 5, 7] = 1.0          # image 1: the maximum is on the object
    assert pointing_game(maps, mask).tolist() == [0.0, 1.0]


def test_energy_is_exact_fraction():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, :4] = True                       # 4 object pixels
    sal = torch.zeros(8, 8)
    sal[0, :4] = 1.0                         # energy 4 on the object
    sal[7, :] = 1.0                          # energy 8 off it
    sal[6, :] = 0.5                          # energy 4 off it
    assert energy_pointing_game(sal, mask).item() == pytest.approx(4 / 16)


def test_energy_normalises_by_default():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    sal = torch.full((1, 4, 4), 10.0)
    sal[0, 0, 0] = 11.0                      # min-max: 1 on the object, 0 elsewhere
    assert energy_pointing_game(sal, mask).item() == 1.0
    assert energy_pointing_game(sal, mask, normalise=False).item() == pytest.approx(11 / 161)
    with pytest.raises(ValueError, match="negative"):
        energy_pointing_game(sal - 20, mask, normalise=False)


def test_tolerance_on_a_non_square_map():
    mask = torch.zeros(10, 30, dtype=torch.bool)
    mask[2, 20] = True
    sal = torch.zeros(10, 30)
    sal[2, 24] = 1.0                         # 4 columns right of the mask pixel
    assert pointing_game(sal, mask, tolerance=3.9).item() == 0.0
    assert pointing_game(sal, mask, tolerance=4).item() == 1.0
    sal = torch.zeros(10, 30)
    sal[7, 20] = 1.0                         # 5 rows below it
    assert pointing_game(sal, mask, tolerance=4.9).item() == 0.0
    assert pointing_game(sal, mask, tolerance=5).item() == 1.0


def test_tolerance_is_euclidean_pixels():
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[10, 10] = True
    sal = torch.zeros(20, 20)
    sal[13, 14] = 1.0                        # distance 5 from the mask pixel
    assert pointing_game(sal, mask, tolerance=4.9).item() == 0.0
    assert pointing_game(sal, mask, tolerance=5).item() == 1.0
    assert pointing_game(sal, mask).item() == 0.0
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(sal, mask, tolerance=-1)


def test_ties_resolve_to_first_maximum_and_constant_map_misses():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 1] = True
    sal = torch.zeros(1, 4, 4)
    sal[0, 0, 1] = sal[0, 3, 3] = 1.0        # first maximum in raster order is on the mask
    assert pointing_game(sal, mask).item() == 1.0
    sal = torch.zeros(1, 4, 4)
    sal[0, 3, 3] = sal[0, 0, 1] = 1.0
    assert pointing_game(sal, mask).item() == 1.0
    mask[0, 0, 0] = True                     # argmax of a constant map would be (0, 0)
    assert pointing_game(torch.ones(1, 4, 4), mask).item() == 0.0
    assert energy_pointing_game(torch.ones(1, 4, 4), mask).item() == 0.0


def test_empty_mask_gives_nan(mask):
    empty = mask.clone()
    empty[1] = False
    maps = mask.float()
    pg = pointing_game(maps, empty)
    eg = energy_pointing_game(maps, empty)
    assert pg[0].item() == 1.0 and math.isnan(pg[1].item())
    assert eg[0].item() == 1.0 and math.isnan(eg[1].item())


def test_numpy_input_and_single_map(mask):
    sal = mask[0].numpy().astype(np.float32)
    assert pointing_game(sal, mask[0].numpy()).shape == ()
    assert pointing_game(sal, mask[0].numpy().astype(np.uint8)).item() == 1.0
    shared = pointing_game(mask.float().numpy(), mask[0])   # one (H, W) mask for the batch
    assert shared.tolist() == [1.0, 1.0]


def test_bad_shapes_and_masks_are_value_errors(mask):
    with pytest.raises(ValueError, match="mask must have shape"):
        pointing_game(torch.zeros(2, 16, 16), torch.zeros(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="saliency must have shape"):
        energy_pointing_game(torch.zeros(2, 1, 16, 16), mask)
    with pytest.raises(ValueError, match="only 0 and 1"):
        pointing_game(torch.zeros(2, 16, 16), mask.float() * 2)
