"""Bridges to pytorch-grad-cam and captum on the same taps, heads and targets as the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .taps import ModelAdapter

if TYPE_CHECKING:
    from .explainer import Explainer


class HeadModule(nn.Module):
    """Wraps a model so that ``forward`` returns one classifier head's logits."""

    def __init__(self, adapter: ModelAdapter, head: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward(x)[self.head]


def head_fn(explainer: Explainer, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> logits`` of one head (captum's forward_func)."""
    adapter = explainer.adapter

    def forward(x: torch.Tensor) -> torch.Tensor:
        return adapter.forward(x)[head]

    forward.__name__ = f"{explainer.family}_{head}_head"
    return forward


class _GridIdentity(nn.Module):
    """Identity on a (B, D, h, w) map: the module captum hooks for a transformer tap."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def nchw_tap(explainer: Explainer, branch: str, block: int) -> Iterator[nn.Module]:
    """Yield a module whose output is the tap (gradient-method tap) as a (B, C, h, w) map."""
    tap = explainer.adapter.tap(branch, block)
    if not tap.tokens:
        yield tap.grad_module
        return
    adapter = explainer.adapter
    grid_module = _GridIdentity()

    def capture_size(module: nn.Module, args: Any) -> None:
        adapter.input_hw = tuple(args[0].shape[-2:])

    def reroute(module: nn.Module, args: Any, tokens: torch.Tensor) -> torch.Tensor:
        grid = grid_module(adapter.tokens_to_grid(tokens, *adapter.input_hw, tap))
        prefix = tokens[:, : adapter.num_prefix_tokens]
        return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)

    handles = [adapter.model.register_forward_pre_hook(capture_size),
               tap.grad_module.register_forward_hook(reroute)]
    explainer._handles.extend(handles)
    try:
        yield grid_module
    finally:
        for h in handles:
            h.remove()
            if h in explainer._handles:
                explainer._handles.remove(h)


def pytorch_grad_cam_setup(explainer: Explainer, branch: str, block: int, head: str
                           ) -> tuple[nn.Module, list[nn.Module], Callable | None]:
    """(model returning the head's logits, target layers, reshape transform) for pytorch-grad-cam."""
    adapter = explainer.adapter
    tap = adapter.tap(branch, block)
    model = HeadModule(adapter, head)
    if not tap.tokens:
        return model, [tap.grad_module], None

    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return adapter.tokens_to_grid(tokens, *adapter.input_hw, tap)

    return model, [tap.grad_module], reshape_transform


def run_pytorch_grad_cam(explainer: Explainer, method_class: type, x: torch.Tensor, branch: str,
                         block: int, head: str, target: int | Sequence[int] | None = None,
                         **cam_kwargs: Any) -> np.ndarray:
    """Run a pytorch-grad-cam method (e.g. ``GradCAM``) on one tap; returns (B, H, W) in [0, 1]."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layers, reshape = pytorch_grad_cam_setup(explainer, branch, block, head)
    targets = None
    if target is not None:
        ts = [target] * x.shape[0] if isinstance(target, int) else list(target)
        targets = [ClassifierOutputTarget(int(t)) for t in ts]
    was_training = explainer.model.training
    explainer.model.eval()
    try:
        with method_class(model=model, target_layers=layers, reshape_transform=reshape,
                          **cam_kwargs) as cam:
            return cam(input_tensor=x, targets=targets)
    finally:
        explainer.model.train(was_training)
