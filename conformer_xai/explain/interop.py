"""Bridges to pytorch-grad-cam and captum on the same taps, heads and targets as the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .taps import ModelAdapter


class HeadModule(nn.Module):
    """Wraps a model so that ``forward`` returns one classifier head's logits."""

    def __init__(self, adapter: ModelAdapter, head: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.model = adapter.model
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.forward(x)[self.head]


def head_fn(adapter: ModelAdapter, head: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> logits`` of one head (captum's forward_func)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return adapter.forward(x)[head]

    forward.__name__ = f"{adapter.family}_{head}_head"
    return forward


class _GridIdentity(nn.Module):
    """Identity: the module captum or pytorch-grad-cam hooks where no model module outputs the
    tap (a transformer tap as a (B, D, h, w) map, or a block's input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@contextlib.contextmanager
def tap_module(adapter: ModelAdapter, branch: str, block: int, tap: str = "residual"
               ) -> Iterator[nn.Module]:
    """Yield a module whose output is the tensor the engine's gradient methods read.

    That is the tap's module itself, except for a block *input* (the residual tap of a
    transformer's last block), which is routed through an identity module for the duration.
    """
    module, reads_input = adapter.tap(branch, block).gradient_source(tap)
    if not reads_input:
        yield module
        return
    identity = _GridIdentity()

    def route(mod: nn.Module, args: Any) -> tuple:
        return (identity(args[0]), *args[1:])

    with adapter.holding([module.register_forward_pre_hook(route)]):
        yield identity


@contextlib.contextmanager
def nchw_tap(adapter: ModelAdapter, branch: str, block: int, tap: str = "residual"
             ) -> Iterator[nn.Module]:
    """Yield a module whose output is the gradient-method tap as a (B, C, h, w) map."""
    t = adapter.tap(branch, block)
    with tap_module(adapter, branch, block, tap) as source:
        if not t.tokens:
            yield source
            return
        grid_module = _GridIdentity()

        def capture_size(module: nn.Module, args: Any) -> None:
            adapter.input_hw = tuple(args[0].shape[-2:])

        def reroute(module: nn.Module, args: Any, tokens: torch.Tensor) -> torch.Tensor:
            grid = grid_module(adapter.tokens_to_grid(tokens, *adapter.input_hw, t))
            prefix = tokens[:, : adapter.num_prefix_tokens]
            return torch.cat([prefix, grid.flatten(2).transpose(1, 2)], dim=1)

        with adapter.holding([adapter.model.register_forward_pre_hook(capture_size),
                              source.register_forward_hook(reroute)]):
            yield grid_module


def pytorch_grad_cam_setup(adapter: ModelAdapter, branch: str, block: int, head: str,
                           tap: str = "residual"
                           ) -> tuple[nn.Module, list[nn.Module], Callable | None]:
    """(model returning the head's logits, target layers, reshape transform) for pytorch-grad-cam.

    The target layer is the module whose output the engine reads with ``tap``; for a block
    *input* (the residual tap of a transformer's last block) use :func:`run_pytorch_grad_cam`,
    which routes that input through an identity module while the method runs.
    """
    t = adapter.tap(branch, block)
    model = HeadModule(adapter, head)
    module, reads_input = t.gradient_source(tap)
    if reads_input:
        raise ValueError(f"the {tap} tap of {branch} block {block} is the block's input, which "
                         "no module outputs; use Explainer.pytorch_grad_cam (or "
                         "interop.tap_module) instead")
    if not t.tokens:
        return model, [module], None

    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return adapter.tokens_to_grid(tokens, *adapter.input_hw, t)

    return model, [module], reshape_transform


def run_pytorch_grad_cam(adapter: ModelAdapter, method_class: type, x: torch.Tensor, branch: str,
                         block: int, head: str, target: int | Sequence[int] | None = None,
                         tap: str = "residual", **cam_kwargs: Any) -> np.ndarray:
    """Run a pytorch-grad-cam method (e.g. ``GradCAM``) on one tap; returns (B, H, W) in [0, 1].

    ``tap`` is :meth:`Explainer.explain`'s: the same tensor the engine reads.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    t = adapter.tap(branch, block)
    model = HeadModule(adapter, head)

    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        return adapter.tokens_to_grid(tokens, *adapter.input_hw)

    targets = None
    if target is not None:
        ts = [target] * x.shape[0] if isinstance(target, int) else list(target)
        targets = [ClassifierOutputTarget(int(t_)) for t_ in ts]
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        with tap_module(adapter, branch, block, tap) as layer, \
                method_class(model=model, target_layers=[layer],
                             reshape_transform=reshape_transform if t.tokens else None,
                             **cam_kwargs) as cam:
            return cam(input_tensor=x, targets=targets)
    finally:
        adapter.model.train(was_training)
