"""Per model family, which module each branch's block reads, and how tokens map to a grid.

Families are data: an adapter names the taps of every block of every branch, the classifier heads
and the token layout. The explainer only ever talks to an adapter.

| family    | branch      | block k (features)                          | block k (gradients)     |
|-----------|-------------|---------------------------------------------|-------------------------|
| conformer | cnn         | k=1 ``conv_1``; k>=2 ``conv_trans_k.fusion_block`` | same             |
| conformer | transformer | ``trans_1`` / ``conv_trans_k.trans_block``  | that block's ``norm1``  |
| resnet    | cnn         | the k-th bottleneck/basic block in order    | same                    |
| vit       | transformer | ``blocks[k-1]``                             | ``blocks[k-1].norm1``   |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Tap", "ModelAdapter", "adapter_for", "SUPPORTED_FAMILIES"]

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
    """

    branch: str
    block: int
    feature_module: nn.Module
    grad_module: nn.Module
    tokens: bool
    attention: nn.Module | None = None
    grid: Callable[[int, int], tuple[int, int]] | None = None


@dataclass
class ModelAdapter:
    """Everything the explainer needs to know about one model family.

    Attributes:
        family: "conformer", "resnet" or "vit".
        model: The wrapped model.
        taps: ``branch -> [Tap for block 1..n]``.
        heads: Classifier heads, in the order logits are reported.
        forward_heads: ``x -> {head: logits}``.
        patch_size: Token patch size in pixels (transformer families).
        num_prefix_tokens: Class (and distillation) tokens before the patch tokens.
        token_grid: ``(H, W) -> (rows, cols)`` of the patch-token grid.
        covered_size: ``(H, W) -> (H', W')`` input extent a grid covers (padding included), or
            None when maps are simply resized to the input size.
        cell_stride: ``(branch, block) -> pixels per grid cell`` when maps must be placed by
            their own stride (a Conformer in ``size_mismatch="resize"`` mode: grids then cover
            different extents, and input pixels beyond a grid are not covered); None otherwise.
    """

    family: str
    model: nn.Module
    taps: dict[str, list[Tap]]
    heads: tuple[str, ...]
    forward_heads: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    patch_size: int | None = None
    num_prefix_tokens: int = 0
    token_grid: Callable[[int, int], tuple[int, int]] | None = None
    covered_size: Callable[[int, int], tuple[int, int]] | None = None
    cell_stride: Callable[[str, int], int | None] | None = None

    input_hw: tuple[int, int] | None = None

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


def _conformer_adapter(model) -> ModelAdapter:
    cnn = [Tap("cnn", k, model.cnn_block_module(k), model.cnn_block_module(k), False)
           for k in range(1, model.depth + 1)]
    trans = []
    for k in range(1, model.depth + 1):
        block = model.trans_block_module(k)
        trans.append(Tap("transformer", k, block, block.norm1, True, block.attn,
                         grid=lambda h, w, k=k: model.token_grid(h, w, k)))

    def cell_stride(branch: str, block: int) -> int | None:
        if model.size_mismatch != "resize":
            return None
        return model.patch_size if branch == "transformer" else model.cnn_stride(block)

    def forward_heads(x: torch.Tensor) -> dict[str, torch.Tensor]:
        c, t = model.forward_branches(x)
        return {"fused": c + t, "cnn": c, "transformer": t}

    return ModelAdapter(
        family="conformer", model=model, taps={"cnn": cnn, "transformer": trans},
        heads=("fused", "cnn", "transformer"), forward_heads=forward_heads,
        patch_size=model.patch_size, num_prefix_tokens=1, token_grid=model.token_grid,
        covered_size=model.padded_input_size, cell_stride=cell_stride)


def _resnet_adapter(model) -> ModelAdapter:
    blocks = [b for name in ("layer1", "layer2", "layer3", "layer4")
              for b in getattr(model, name).children()]
    cnn = [Tap("cnn", k, b, b, False) for k, b in enumerate(blocks, start=1)]
    return ModelAdapter(family="resnet", model=model, taps={"cnn": cnn}, heads=("cnn",),
                        forward_heads=lambda x: {"cnn": model(x)})


def _vit_adapter(model) -> ModelAdapter:
    if getattr(model, "global_pool", "token") != "token" or not getattr(model, "has_class_token",
                                                                         True):
        raise ValueError("cannot explain a VisionTransformer without a class token read by the "
                         "head; supported: timm ViT/DeiT with global_pool='token'")
    trans = [Tap("transformer", k, b, b.norm1, True, b.attn)
             for k, b in enumerate(model.blocks, start=1)]
    patch = model.patch_embed.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch

    def token_grid(height: int, width: int) -> tuple[int, int]:
        if getattr(model.patch_embed, "dynamic_img_pad", False):
            return -(-height // ph), -(-width // pw)
        return height // ph, width // pw

    def covered_size(height: int, width: int) -> tuple[int, int]:
        gh, gw = token_grid(height, width)
        return max(gh * ph, height), max(gw * pw, width)

    return ModelAdapter(
        family="vit", model=model, taps={"transformer": trans}, heads=("transformer",),
        forward_heads=lambda x: {"transformer": model(x)}, patch_size=ph,
        num_prefix_tokens=model.num_prefix_tokens, token_grid=token_grid,
        covered_size=covered_size)
