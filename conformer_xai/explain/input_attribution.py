"""Input-level baselines through captum: Integrated Gradients and SmoothGrad, per head.

Both run many forward and backward passes (:data:`STEPS` and :data:`SAMPLES` by default; the ``steps`` and
``samples`` options of their specs), so they are opt-in. Integrated
Gradients integrates from a baseline that means "nothing" for the input: a blurred copy of the
image for photos (3 channels), and for single-channel inputs (log-mel spectrograms) the floor
value of each input, i.e. its minimum, the normalised value of silence (not 0 dB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..registry import REGISTRY

__all__ = ["input_attributions", "nothing_baseline", "STEPS", "SAMPLES", "BLUR_SIGMA_FRACTION",
           "NOISE_FRACTION"]

#: Default integration steps of Integrated Gradients.
STEPS = REGISTRY["integrated_gradients"].options["steps"].default
#: Default noisy samples of SmoothGrad.
SAMPLES = REGISTRY["smoothgrad"].options["samples"].default
#: Gaussian blur of the photo baseline: sigma as a fraction of the shorter image side.
BLUR_SIGMA_FRACTION = 0.1
#: Default SmoothGrad noise: standard deviation as a fraction of the images' value range.
NOISE_FRACTION = REGISTRY["smoothgrad"].options["noise"].default


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    pad_h, pad_w = min(radius, x.shape[2] - 1), min(radius, x.shape[3] - 1)
    k_w = k[radius - pad_w: radius + pad_w + 1].view(1, 1, 1, -1).expand(c, 1, 1, -1)
    k_h = k[radius - pad_h: radius + pad_h + 1].view(1, 1, -1, 1).expand(c, 1, -1, 1)
    out = F.conv2d(F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect"), k_w, groups=c)
    return F.conv2d(F.pad(out, (0, 0, pad_h, pad_h), mode="reflect"), k_h, groups=c)


def nothing_baseline(x: torch.Tensor) -> torch.Tensor:
    """The "nothing" baseline: a blurred image (3 channels) or each input's floor (1 channel)."""
    if x.shape[1] == 1:
        return x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x).clone()
    sigma = BLUR_SIGMA_FRACTION * min(x.shape[-2:])
    return _gaussian_blur(x, sigma)


def input_attributions(head_fn: Callable[[str], Callable[[torch.Tensor], torch.Tensor]],
                       x: torch.Tensor, target: torch.Tensor, heads: Sequence[str],
                       methods: Sequence[str], steps: int = STEPS, samples: int = SAMPLES,
                       noise: float = NOISE_FRACTION) -> dict[str, torch.Tensor]:
    """``<method>/<head>`` (B, H, W) maps summed over channels.

    Integrated Gradients keeps its sign; SmoothGrad averages absolute gradients (captum's
    ``NoiseTunnel(Saliency)``), so it is non-negative.

    Args:
        head_fn: ``head -> (x -> that head's logits)``.
        x: Input batch (B, C, H, W).
        target: (B,) classes.
        heads: Heads to explain.
        methods: Subset of "integrated_gradients", "smoothgrad".
        steps: Integration steps of Integrated Gradients.
        samples: Noisy samples of SmoothGrad.
        noise: SmoothGrad's noise standard deviation as a fraction of the batch's mean value
            range.
    """
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency

    out: dict[str, torch.Tensor] = {}
    x = x.detach()
    batch = x.shape[0]
    tgt = target.tolist()
    devices = [x.device.index or 0] if x.is_cuda else []
    with torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)  # SmoothGrad's noise: the same maps for the same input
        for h in heads:
            fn = head_fn(h)
            if "integrated_gradients" in methods:
                ig = IntegratedGradients(fn).attribute(
                    x, baselines=nothing_baseline(x), target=tgt, n_steps=steps,
                    internal_batch_size=batch)
                out[f"integrated_gradients/{h}"] = ig.detach().float().sum(dim=1)
            if "smoothgrad" in methods:
                span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))).mean()
                sg = NoiseTunnel(Saliency(fn)).attribute(
                    x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=batch,
                    stdevs=float(noise * span), target=tgt)
                out[f"smoothgrad/{h}"] = sg.detach().float().sum(dim=1)
    return out
