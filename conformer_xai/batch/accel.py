"""Model placement for fast batched explanation: device, dtype, channels-last, regional compile."""

from __future__ import annotations

import torch
from torch import nn

from ..devices import DTYPES, resolve_device, resolve_dtype

__all__ = ["resolve_device", "resolve_dtype", "prepare_model", "compile_regions", "DTYPES"]


def prepare_model(model: nn.Module, device: str | torch.device = "cpu",
                  channels_last: bool = False, compile: bool | str = False) -> nn.Module:
    """Move a model to ``device`` in eval mode, optionally channels-last and regionally compiled.

    Args:
        model: The model (changed in place and returned).
        device: Target device.
        channels_last: Store 4-D weights channels-last (the CNN branch's convolutions then run in
            NHWC; feed inputs with ``x.to(memory_format=torch.channels_last)``).
        compile: False, True (``torch.compile`` with the inductor backend) or a backend name; see
            :func:`compile_regions` for what is compiled and why not the whole forward.
    """
    model = model.to(resolve_device(device)).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        compile_regions(model, backend="inductor" if compile is True else str(compile))
    return model


def _tap_modules(model: nn.Module) -> set[int]:
    """ids of the modules an explanation hooks (taps and attention-probability recorders)."""
    from ..explain.taps import adapter_for

    adapter = adapter_for(model)
    ids: set[int] = set()
    for taps in adapter.taps.values():
        for tap in taps:
            ids.update({id(tap.feature_module), id(tap.grad_module)})
            if tap.attention is not None:
                ids.update({id(tap.attention), id(tap.attention.attn_drop)})
    return ids


def compile_regions(model: nn.Module, backend: str = "inductor") -> int:
    """``torch.compile`` the ``forward`` of every largest submodule that holds no hooked module.

    An explanation reads block outputs with forward hooks and asks ``autograd.grad`` for their
    gradients; inside one compiled graph those tensors would not be the ones the rest of the
    graph uses, so the whole forward cannot be compiled. Instead the forward of each largest
    submodule that contains no other hooked module (CNN bottlenecks, coupling units, MLPs) is
    compiled; a hooked module's own hooks run outside its compiled ``forward``, so they see its
    real output. Leaf modules (a single convolution or linear layer) are left alone. Raises
    dynamo's (process-wide) recompile limits to 256, since all blocks of one class share a cache.

    Returns:
        The number of compiled submodules.
    """
    import torch._dynamo

    # Instances of one class share one code object and so one cache of compiled variants (per
    # shape, per argument pattern); a 12-block model needs more than dynamo's default 8.
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 256))
    taps = _tap_modules(model)
    count = 0

    def visit(module: nn.Module) -> None:
        nonlocal count
        for child in module.children():
            inner = [m for m in child.modules() if m is not child]
            if not inner:
                continue
            if any(id(m) in taps for m in inner):
                visit(child)
            else:
                child.forward = torch.compile(child.forward, backend=backend)
                count += 1

    visit(model)
    return count
