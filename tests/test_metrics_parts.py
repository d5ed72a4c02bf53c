"""Part / body / off shares on constructed maps: exact values, and they sum to 1."""

import math

import numpy as np
import pytest
import torch

from conformer_xai.metrics import energy_pointing_game, part_body_off_shares


@pytest.fixture
def masks() -> tuple[torch.Tensor, torch.Tensor]:
    obj = torch.zeros(10, 10, dtype=torch.bool)
    obj[2:8, 2:8] = True                  # 36 pixels
    part = torch.zeros(10, 10, dtype=torch.bool)
    part[2:4, 2:4] = True                 # 4 pixels, inside the object
    return obj, part


def test_exact_shares(masks):
    obj, part = masks
    sal = torch.zeros(10, 10)
    sal[part] = 1.0                       # energy 4 on the part
    sal[5, 5] = sal[6, 6] = 1.0           # energy 2 on the body
    sal[0, :] = 0.5                       # energy 5 off the object
    shares = part_body_off_shares(sal, obj, part)
    assert shares.part.item() == pytest.approx(4 / 11)
    assert shares.body.item() == pytest.approx(2 / 11)
    assert shares.off.item() == pytest.approx(5 / 11)


def test_map_on_the_part_only(masks):
    obj, part = masks
    shares = part_body_off_shares(part.float(), obj, part)
    assert (shares.part.item(), shares.body.item(), shares.off.item()) == (1.0, 0.0, 0.0)
    body_only = part_body_off_shares((obj & ~part).float(), obj, part)
    assert body_only.body.item() == 1.0


def test_shares_sum_to_one_and_agree_with_energy_game(masks):
    obj, part = masks
    maps = torch.rand(5, 10, 10, generator=torch.Generator().manual_seed(0))
    shares = part_body_off_shares(maps.numpy(), obj.numpy(), part.numpy())
    total = shares.part + shares.body + shares.off
    torch.testing.assert_close(total, torch.ones(5))
    torch.testing.assert_close(shares.part + shares.body, energy_pointing_game(maps, obj))


def test_zero_map_is_nan_and_negative_needs_normalise(masks):
    obj, part = masks
    shares = part_body_off_shares(np.zeros((10, 10)), obj, part)
    assert all(math.isnan(s.item()) for s in shares)
    with pytest.raises(ValueError, match="negative"):
        part_body_off_shares(-torch.ones(10, 10), obj, part, normalise=False)
    with pytest.raises(ValueError, match="part_mask must have shape"):
        part_body_off_shares(torch.ones(10, 10), obj, part[:5])
