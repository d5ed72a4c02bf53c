"""Spearman, top-k IoU and SSIM: known values, and cross-checks against scipy and scikit-image."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from conformer_xai.metrics import spearman, ssim, topk_iou


def test_spearman_known_values():
    a = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert spearman(a, torch.exp(3 * a)).tolist() == pytest.approx([1.0, 1.0])
    assert spearman(a, -a).tolist() == pytest.approx([-1.0, -1.0])
    # ranks (1, 2, 3, 4) against (1, 3, 2, 4): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([[1.0, 2.0], [3.0, 4.0]]),
                    np.array([[1.0, 3.0], [2.0, 4.0]])).item() == pytest.approx(0.8)
    assert math.isnan(spearman(torch.ones(8, 8), a[0]).item())


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(3)
    a = np.round(rng.uniform(size=(3, 10, 12)), 1)   # many ties
    b = np.round(a + rng.normal(scale=0.3, size=a.shape), 1)
    ours = spearman(a, b).numpy()
    ref = [spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_topk_iou_known_values():
    a = torch.arange(100.0).view(10, 10)             # top 10%: pixels 90..99
    assert topk_iou(a, a, k=0.1).item() == 1.0
    assert topk_iou(a, -a, k=0.1).item() == 0.0
    b = torch.zeros(100)
    b[95:100] = 2.0                                  # shares 95..99 with a
    b[0:5] = 1.0                                     # and 0..4 not
    iou = topk_iou(a, b.view(10, 10), k=0.1)
    assert iou.item() == pytest.approx(5 / 15)
    assert topk_iou(a, b.view(10, 10), k=0.05).item() == 1.0   # top 5: 95..99 in both
    with pytest.raises(ValueError, match="k must be a fraction"):
        topk_iou(a, a, k=0.0)


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(7)
    a = rng.uniform(size=(2, 32, 40))
    b = np.clip(a + rng.normal(scale=0.2, size=a.shape), 0, 1)
    ours = ssim(a, b).numpy()
    ref = [structural_similarity(a[i], b[i], data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for i in range(2)]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ssim(a[0], a[0]).item() == pytest.approx(1.0)
    assert ssim(a[0], b[0]).item() < 0.9


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="same shape"):
        spearman(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(8, 8), torch.zeros(8, 8))
