"""Per model family, which module each branch's block reads, and how tokens map to a grid.

Families are data: an adapter names the taps of every block of every branch, the classifier heads
and the token layout. The explainer only ever talks to an adapter.

| family    | branch      | block k (features)                          | block k (gradients)     |
|-----------|-------------|---------------------------------------------|-------------------------|
| conformer | cnn         | k=1 ``conv_1``; k>=2 ``conv_trans_k.fusion_block`` | same             |
| conformer | transformer | ``trans_1`` / ``conv_trans_k.trans_block``  | see below               |
| resnet    | cnn         | the k-th bottleneck/basic block in order    | same                    |
| vit       | transformer | ``blocks[k-1]``                             | see below               |

Transformer gradient taps (:data:`TAP_KINDS`): ``"residual"`` (default) reads the block's output
tokens, except at the last block, where it reads the block's *input* (for Conformer after the
FCU-down sum), because the last block's output patch tokens get no gradient from a head reading
the class token; ``"attention_input"`` reads the block's ``norm1`` output (the attention path's
input) at every block.

Every tap knows its stride in input pixels (:attr:`Tap.stride`): a grid cell ``i`` covers input
rows ``[i * stride, (i + 1) * stride)``; grids that extend past the input (padding) are cropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..names import HEADS, TAPS

__all__ = ["Tap", "ModelAdapter", "adapter_for", "SUPPORTED_FAMILIES", "TAP_KINDS"]

#: Where transformer gradient methods read a block (see the module docstring).
TAP_KINDS = TAPS

SUPPORTED_FAMILIES = ("conformer (conformer_xai.models.Conformer)",
                      "resnet (timm.models.resnet.ResNet)",
                      "vit (timm.models.vision_transformer.VisionTransformer, e.g. DeiT)")


@dataclass(frozen=True)
class Tap:
    """One block of one branch.

    Attributes:
        branch: "cnn" or "transformer".
        block: 1-based block number.
        feature_module: Module whose output is the block's output (features).
        grad_module: Module whose output the gradient methods read.
        tokens: True when the modules output tokens (B, P+N, D) rather than maps (B, C, h, w).
        attention: The block's attention module (has ``fused_attn`` and ``attn_drop``), if any.
        grid: ``(H, W) -> (rows, cols)`` of this tap's token grid, when it has its own (a
            Conformer in ``size_mismatch="resize"`` mode changes the grid between stages);
            None uses the adapter's ``token_grid``.
        stride: ``(rows, cols)`` input pixels per grid cell, or None when unknown (maps are
            then resized to the input size).
        last: True for the last block of its branch.
    """

    branch: str
    block: int
    feature_module: nn.Module
    grad_module: nn.Module
    tokens: bool
    attention: nn.Module | None = None
    grid: Callable[[int, int], tuple[int, int]] | None = None
    stride: tuple[int, int] | None = None
    last: bool = False

    def gradient_source(self, kind: str = "residual") -> tuple[nn.Module, bool]:
        """``(module, reads_input)`` the gradient methods read for a tap kind.

        ``reads_input`` is True when the tap is the module's first input rather than its
        output (the residual tap of a transformer's last block).

        Raises:
            ValueError: ``kind`` is not one of :data:`TAP_KINDS`.
        """
        check_tap_kind(kind)
        if not self.tokens:
            return self.grad_module, False
        if kind == "attention_input":
            return self.grad_module, False
        return self.feature_module, self.last


def check_tap_kind(kind: str) -> None:
    """Raise ValueError unless ``kind`` is one of :data:`TAP_KINDS`."""
    if kind not in TAP_KINDS:
        raise ValueError(f"unknown tap {kind!r}; accepted: {', '.join(TAP_KINDS)}")


@dataclass
class ModelAdapter:
    """Everything the explainer needs to know about one model family.

    Attributes:
        family: "conformer", "resnet" or "vit".
        model: The wrapped model.
        taps: ``branch -> [Tap for block 1..n]``.
        heads: Classifier heads, in the order logits are reported.
        forward_heads: ``x -> {head: logits}``.
        num_prefix_tokens: Class (and distillation) tokens before the patch tokens.
        token_grid: ``(H, W) -> (rows, cols)`` of the patch-token grid.
        uncovered_nan: ``() -> bool``: True when input pixels past a grid's last cell are no
            token's (a Conformer in ``size_mismatch="resize"`` mode, whose grids floor): maps
            are then NaN there instead of repeating the edge.
        hooks: Hooks the interop helpers hold (:meth:`holding`); :meth:`remove_hooks` removes
            any still there.
    """

    family: str
    model: nn.Module
    taps: dict[str, list[Tap]]
    heads: tuple[str, ...]
    forward_heads: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    num_prefix_tokens: int = 0
    token_grid: Callable[[int, int], tuple[int, int]] | None = None
    uncovered_nan: Callable[[], bool] = lambda: False

    input_hw: tuple[int, int] | None = None
    hooks: list[torch.utils.hooks.RemovableHandle] = dataclasses.field(default_factory=list)

    @contextlib.contextmanager
    def holding(self, handles: Sequence[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
        """Hold hook ``handles`` for the body of a ``with``; they are removed on exit."""
        self.hooks.extend(handles)
        try:
            yield
        finally:
            for h in handles:
                h.remove()
                if h in self.hooks:
                    self.hooks.remove(h)

    def remove_hooks(self) -> None:
        """Remove every hook still held (those of an interop context left unfinished)."""
        while self.hooks:
            self.hooks.pop().remove()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head; remembers the input size for token-grid reshapes."""
        self.input_hw = (int(x.shape[-2]), int(x.shape[-1]))
        return self.forward_heads(x)

    @property
    def branches(self) -> tuple[str, ...]:
        return tuple(self.taps)

    @property
    def attention_modules(self) -> list[nn.Module]:
        return [t.attention for t in self.taps.get("transformer", []) if t.attention is not None]

    def token_stride(self) -> tuple[int, int] | None:
        """Input pixels per patch token (rollout and gradient-rollout grids), or None."""
        taps = [t for t in self.taps.get("transformer", []) if t.stride is not None]
        return taps[0].stride if taps else None

    def stride_of(self, branch: str, block: int | None) -> tuple[int, int] | None:
        """Stride of a map's grid: the tap's, or for block-less maps (rollouts, TransCAM),
        which lie on the (first block's) token grid, the token stride."""
        if block is None:
            return self.token_stride()
        return self.tap(branch, block).stride

    def tap(self, branch: str, block: int) -> Tap:
        """The tap of ``branch`` at 1-based ``block`` (ValueError naming the valid range)."""
        if branch not in self.taps:
            raise ValueError(f"unknown branch {branch!r} for a {self.family} model; "
                             f"accepted: {', '.join(self.taps)}")
        taps = self.taps[branch]
        if not isinstance(block, int) or not 1 <= block <= len(taps):
            raise ValueError(f"block {block!r} out of range for the {branch} branch; "
                             f"accepted: 1..{len(taps)}")
        return taps[block - 1]

    def tokens_to_grid(self, tokens: torch.Tensor, height: int, width: int,
                       tap: Tap | None = None) -> torch.Tensor:
        """(B, P+N, D) tokens -> (B, D, rows, cols) map of the patch tokens (of ``tap``'s grid)."""
        grid = tap.grid if tap is not None and tap.grid is not None else self.token_grid
        gh, gw = grid(height, width)
        patches = tokens[:, self.num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Build the adapter of a supported model; ValueError naming the supported families."""
    from ..models.conformer import Conformer

    if isinstance(model, Conformer):
        return _conformer_adapter(model)
    try:
        from timm.models.resnet import ResNet
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        ResNet = VisionTransformer = ()  # type: ignore[assignment]
    if isinstance(model, ResNet):
        return _resnet_adapter(model)
    if isinstance(model, VisionTransformer):
        return _vit_adapter(model)
    raise ValueError(f"cannot explain a model of class {type(model).__name__}: no adapter for "
                     f"this model family; supported: {'; '.join(SUPPORTED_FAMILIES)}")


def _conv_stride(module: nn.Module) -> int:
    """The largest stride of any convolution or pooling inside ``module`` (1 when none)."""
    strides = [1]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            strides.append(int(s))
    return max(strides)


def _conformer_adapter(model) -> ModelAdapter:
    depth = model.depth
    stride = _conv_stride(model.conv1) * _conv_stride(model.maxpool)  # the stem
    token = stride * _conv_stride(model.trans_patch_conv)
    cnn = []
    for k in range(1, depth + 1):
        module = model.cnn_block_module(k)
        if k == 1:
            stride *= _conv_stride(module)
        else:
            stride *= _conv_stride(getattr(model, f"conv_trans_{k}").cnn_block)
            stride *= _conv_stride(module)
        cnn.append(Tap("cnn", k, module, module, False, stride=(stride, stride),
                       last=k == depth))
    trans = []
    for k in range(1, depth + 1):
        block = model.trans_block_module(k)
        trans.append(Tap("transformer", k, block, block.norm1, True, block.attn,
                         grid=lambda h, w, k=k: model.token_grid(h, w, k),
                         stride=(token, token), last=k == depth))

    def forward_heads(x: torch.Tensor) -> dict[str, torch.Tensor]:
        c, t = model.forward_branches(x)
        return {"fused": c + t, "cnn": c, "transformer": t}

    return ModelAdapter(
        family="conformer", model=model, taps={"cnn": cnn, "transformer": trans},
        heads=HEADS, forward_heads=forward_heads,
        num_prefix_tokens=1, token_grid=model.token_grid,
        uncovered_nan=lambda: model.size_mismatch == "resize")


def _resnet_adapter(model) -> ModelAdapter:
    reduction = {info.get("module"): info.get("reduction")
                 for info in getattr(model, "feature_info", None) or []}
    cnn = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        r = reduction.get(name)
        for b in getattr(model, name).children():
            cnn.append(Tap("cnn", len(cnn) + 1, b, b, False,
                           stride=None if r is None else (int(r), int(r))))
    cnn[-1] = dataclasses.replace(cnn[-1], last=True)
    return ModelAdapter(family="resnet", model=model, taps={"cnn": cnn}, heads=("cnn",),
                        forward_heads=lambda x: {"cnn": model(x)})


def _vit_adapter(model) -> ModelAdapter:
    if getattr(model, "global_pool", "token") != "token" or not getattr(model, "has_class_token",
                                                                         True):
        raise ValueError("cannot explain a VisionTransformer without a class token read by the "
                         "head; supported: timm ViT/DeiT with global_pool='token'")
    patch = model.patch_embed.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    trans = [Tap("transformer", k, b, b.norm1, True, b.attn, stride=(ph, pw),
                 last=k == len(model.blocks))
             for k, b in enumerate(model.blocks, start=1)]

    def token_grid(height: int, width: int) -> tuple[int, int]:
        if getattr(model.patch_embed, "dynamic_img_pad", False):
            return -(-height // ph), -(-width // pw)
        return height // ph, width // pw

    return ModelAdapter(
        family="vit", model=model, taps={"transformer": trans}, heads=("transformer",),
        forward_heads=lambda x: {"transformer": model(x)},
        num_prefix_tokens=model.num_prefix_tokens, token_grid=token_grid)
