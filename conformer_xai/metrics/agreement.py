"""Agreement between two maps: Spearman rank correlation, top-k% IoU and SSIM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ._tensors import as_maps, unbatch


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    ma, single_a = as_maps(a, "a")
    mb, single_b = as_maps(b, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"maps must have the same shape, got {tuple(ma.shape)} and "
                         f"{tuple(mb.shape)}")
    return ma.double(), mb.to(ma.device).double(), single_a and single_b


def rank_average(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..N along the last dimension, ties sharing their average rank (as scipy's)."""
    ordered = values.sort(dim=-1).values.contiguous()
    queries = values.contiguous()
    left = torch.searchsorted(ordered, queries, right=False)
    right = torch.searchsorted(ordered, queries, right=True)
    return (left + right + 1).double() / 2


def spearman(a: Any, b: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Spearman rank correlation between two maps, per image.

    Spearman 1904, "The proof and measurement of association between two things": the Pearson
    correlation of the pixel ranks, ties given their average rank (the same as
    ``scipy.stats.spearmanr``). Used for agreement between branches or methods and, as in
    Adebayo et al. 2018 ("Sanity Checks for Saliency Maps"), between original and randomised maps.

    Args:
        a, b: Maps (B, H, W) or (H, W), torch or numpy, of the same shape.
        dtype: Of the result (the ranks are correlated in float64; float64 keeps that).

    Returns:
        Tensor (B,) in [-1, 1] (or a scalar); NaN where a map is constant.
    """
    ma, mb, single = _pair(a, b)
    ra = rank_average(ma.flatten(1))
    rb = rank_average(mb.flatten(1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    rho = (ra * rb).sum(dim=1) / denom
    rho = torch.where(denom > 0, rho.clamp(-1, 1), torch.full_like(rho, float("nan")))
    return unbatch(rho.to(dtype), single)


def topk_iou(a: Any, b: Any, k: float = 0.1) -> torch.Tensor:
    """Intersection over union of the two maps' top ``k`` fraction of pixels, per image.

    The top-k overlap of Ghorbani et al. 2019 ("Interpretation of Neural Networks is Fragile",
    AAAI), measured as intersection over union (Jaccard index) of the two pixel sets. Each map
    selects its ``round(k * H * W)`` (at least 1) highest pixels; ties resolve in raster order.

    Args:
        a, b: Maps (B, H, W) or (H, W), torch or numpy, of the same shape.
        k: Fraction of pixels in (0, 1].

    Returns:
        Float tensor (B,) in [0, 1] (or a scalar).
    """
    if not 0 < k <= 1:
        raise ValueError(f"k must be a fraction in (0, 1], got {k}")
    ma, mb, single = _pair(a, b)
    fa, fb = ma.flatten(1), mb.flatten(1)
    count = max(1, round(k * fa.shape[1]))
    sel_a = _top(fa, count)
    sel_b = _top(fb, count)
    inter = (sel_a & sel_b).sum(dim=1).float()
    union = (sel_a | sel_b).sum(dim=1).float()
    return unbatch(inter / union, single)


def _top(flat: torch.Tensor, count: int) -> torch.Tensor:
    order = flat.argsort(dim=1, descending=True, stable=True)[:, :count]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)


def ssim(a: Any, b: Any, data_range: float = 1.0, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (SSIM) between two maps, per image.

    Wang et al. 2004, "Image Quality Assessment: From Error Visibility to Structural Similarity"
    (IEEE TIP): Gaussian-weighted local statistics (sigma 1.5, window truncated at 3.5 sigma,
    K1 = 0.01, K2 = 0.03), averaged over the positions where the window fits in the image. This
    equals ``skimage.metrics.structural_similarity(a, b, data_range=data_range,
    gaussian_weights=True, sigma=sigma, use_sample_covariance=False)``. Adebayo et al. 2018 use
    SSIM between original and randomised maps scaled to [0, 1].

    Args:
        a, b: Maps (B, H, W) or (H, W), torch or numpy, of the same shape.
        data_range: Value range of the maps (1 for maps in [0, 1]).
        sigma: Standard deviation of the Gaussian window in pixels.

    Returns:
        Float tensor (B,) in [-1, 1] (or a scalar).
    """
    if data_range <= 0 or sigma <= 0:
        raise ValueError(f"data_range and sigma must be > 0, got {data_range} and {sigma}")
    ma, mb, single = _pair(a, b)
    radius = int(3.5 * sigma + 0.5)
    size = 2 * radius + 1
    if min(ma.shape[-2:]) < size:
        raise ValueError(f"maps must be at least {size}x{size} pixels for SSIM with sigma "
                         f"{sigma}, got {tuple(ma.shape[-2:])}")
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=ma.device)
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t.unsqueeze(1), g.view(1, 1, 1, -1))
        return F.conv2d(t, g.view(1, 1, -1, 1)).squeeze(1)

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = blur(ma), blur(mb)
    var_a = blur(ma * ma) - mu_a**2
    var_b = blur(mb * mb) - mu_b**2
    cov = blur(ma * mb) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    value = (num / den).flatten(1).mean(dim=1)
    return unbatch(value.float(), single)
