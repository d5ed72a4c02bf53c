"""Deletion and insertion (RISE) on a real linear model whose score reads only masked pixels."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from conformer_xai.metrics import auc, deletion_auc, gaussian_blur, insertion_auc

SIDE = 12
SCALE = 0.05


@pytest.fixture
def region() -> torch.Tensor:
    """The 6x6 top-left quarter: 36 of 144 pixels, exactly one step of four."""
    m = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    m[:6, :6] = True
    return m


@pytest.fixture
def model(region) -> nn.Module:
    """Linear two-class model: logits (s, -s) with s = SCALE * (sum of the pixels in ``region``)."""
    w = region.float().flatten() * SCALE
    linear = nn.Linear(SIDE * SIDE, 2, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.stack([w, -w]))
    return nn.Sequential(nn.Flatten(), linear).eval()


def prob(s: float) -> float:
    return 1 / (1 + math.exp(-2 * s))


def test_auc_of_known_curves():
    assert auc(torch.tensor([0.0, 1.0])).item() == pytest.approx(0.5)
    assert auc(torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.5, 0.0]])).tolist() == [1.0, 0.5]
    curve = np.random.default_rng(0).uniform(size=(3, 51))
    expected = np.trapezoid(curve, np.linspace(0, 1, 51), axis=1)
    assert auc(curve).numpy() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 points"):
        auc(torch.tensor([1.0]))


def test_perfect_map_deletes_the_score_first(model, region):
    x = torch.ones(2, 1, SIDE, SIDE)
    perfect = region.float().expand(2, -1, -1)
    area, curves = deletion_auc(model, x, perfect, 0, steps=4, return_curves=True)
    p0 = prob(36 * SCALE)
    # step 1 removes exactly the 36 pixels the model reads: logits (0, 0), probability 0.5
    assert curves[0].tolist() == pytest.approx([p0, 0.5, 0.5, 0.5, 0.5])
    assert area[0].item() == pytest.approx((p0 / 2 + 0.5 * 3 + 0.25) / 4)
    inverse = deletion_auc(model, x, 1 - perfect, 0, steps=4, return_curves=True)
    assert inverse[1][0].tolist() == pytest.approx([p0, p0, p0, p0, 0.5])
    assert area[0] < inverse[0][0]


def test_perfect_map_inserts_the_score_first(model, region):
    x = torch.zeros(1, 1, SIDE, SIDE)
    x[0, 0][region] = 1.0
    perfect = region.float()[None]
    blurred = gaussian_blur(x)
    p_blur = prob(float(blurred[0, 0][region].sum()) * SCALE)
    p0 = prob(36 * SCALE)
    assert p_blur < p0
    area, curves = insertion_auc(model, x, perfect, 0, steps=4, return_curves=True)
    assert curves[0].tolist() == pytest.approx([p_blur, p0, p0, p0, p0], rel=1e-5)
    inverse, inv_curves = insertion_auc(model, x, 1 - perfect, 0, steps=4, return_curves=True)
    assert inv_curves[0].tolist() == pytest.approx([p_blur, p_blur, p_blur, p_blur, p0], rel=1e-5)
    assert area[0] > inverse[0]


def test_chunking_and_targets_do_not_change_the_result(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, SIDE, SIDE, generator=gen)
    maps = torch.rand(3, SIDE, SIDE, generator=gen)
    target = [0, 1, 0]
    one = deletion_auc(model, x, maps, target, steps=7, batch_size=1, return_curves=True)
    many = deletion_auc(model, x, maps, target, steps=7, batch_size=5, return_curves=True)
    torch.testing.assert_close(one[1], many[1])
    # each curve starts at the unperturbed probability of its own target
    p = model(x).softmax(1)
    torch.testing.assert_close(one[1][:, 0], p[torch.arange(3), torch.tensor(target)])
    numpy_in = insertion_auc(model, x.numpy(), maps.numpy(), np.array(target), steps=7)
    torch.testing.assert_close(numpy_in, insertion_auc(model, x, maps, target, steps=7))


def test_gaussian_blur_matches_scipy():
    img = np.random.default_rng(1).normal(size=(2, 3, 20, 24)).astype(np.float64)
    ours = gaussian_blur(torch.from_numpy(img), kernel=11, sigma=5.0).numpy()
    # kernel 11 = radius 5 = truncate 1.0 at sigma 5; torch's "reflect" is scipy's "mirror"
    ref = gaussian_filter(img, sigma=(0, 0, 5, 5), truncate=1.0, mode="mirror")
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_bad_input_is_a_value_error(model):
    x = torch.zeros(2, 1, SIDE, SIDE)
    with pytest.raises(ValueError, match="saliency must have shape"):
        deletion_auc(model, x, torch.zeros(2, 6, 6), 0)
    with pytest.raises(ValueError, match="target must be one int or 2"):
        deletion_auc(model, x, torch.zeros(2, SIDE, SIDE), [0, 1, 0])
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 2\)"):
        insertion_auc(model, x, torch.zeros(2, SIDE, SIDE), 5, steps=2)
    with pytest.raises(ValueError, match="steps and batch_size"):
        insertion_auc(model, x, torch.zeros(2, SIDE, SIDE), 0, steps=0)
    with pytest.raises(ValueError, match="odd kernel"):
        gaussian_blur(x, kernel=4)
