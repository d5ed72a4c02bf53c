"""Conformer (Peng et al., ICCV 2021): a CNN branch and a transformer branch coupled in every block.

The module names, parameter names and shapes are exactly those of the published checkpoints, so
``load_state_dict(published, strict=True)`` works for all four variants and the logits are the
published model's. Differences from the published code, none of which changes the logits:

* ``model(x)`` returns one tensor, the sum of both heads (how the published evaluation scores);
  :meth:`Conformer.forward_branches` returns both heads' logits.
* No in-place operation touches a tensor that an explanation reads (block outputs, ``norm1``
  outputs, attention probabilities).
* Attention has two paths with the same result: fused scaled-dot-product attention, and an
  explicit path (``fused_attn = False``) whose probabilities pass through ``attn_drop`` so that a
  forward hook there sees them (timm's convention).
* Inputs whose height or width is not a multiple of 32 are padded after the stem on the right and
  bottom up to a multiple of ``patch_size // 4`` (as OpenMMLab's port does; ``size_mismatch="pad"``,
  the default); multiples of 32 are untouched. ``size_mismatch="resize"`` instead resizes whatever
  does not line up as the spectrogram fork (``Conformer_xai``) does: no padding, the FCU-up map
  resized (nearest) to the CNN block's map, the transformer tokens (class token included) resized
  along the token axis (nearest) to the FCU-down token count.
* A 3-channel model given a 1-channel input repeats it over the 3 channels (the fork's
  ``forward``; exactly a 1-channel model whose stem weights are summed over the channels).

The size logic lives in small functions wrapped with ``torch.fx.wrap`` (leaves of an FX graph), so
the model traces with ``torch.fx`` and exports with ``torch.export`` in both size modes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import PretrainedCfg
from torch import nn

from ..errors import Setting, SettingError
from .variants import CONFORMER_VARIANTS, FORK_VARIANTS

__all__ = ["Conformer", "BranchLogits", "BranchFeatures", "Attention", "TransformerBlock",
           "SIZE_MISMATCH_MODES", "token_resize_index"]

#: How mismatched CNN maps and token grids are reconciled: OpenMMLab's padding or the fork's resize.
SIZE_MISMATCH_MODES = ("pad", "resize")


def _check_size_mismatch(mode: object) -> str:
    if mode not in SIZE_MISMATCH_MODES:
        raise SettingError("{size_mismatch}" f" must be one of "
                           f"{', '.join(map(repr, SIZE_MISMATCH_MODES))}, got {mode!r}",
                           size_mismatch=Setting("size_mismatch"))
    return mode  # type: ignore[return-value]


# ----------------------------------------------------------------- size logic (FX leaf functions)
def _resize_map_to(x_t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The FCU-up map resized (nearest) to ``ref``'s spatial size when the two differ (fork)."""
    if x_t.shape[-2:] != ref.shape[-2:]:
        x_t = F.interpolate(x_t, size=ref.shape[-2:])
    return x_t


def _resize_tokens_to(x_t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Tokens (B, N, C) resized (nearest) along the token axis to ``ref``'s count N' (fork).

    As the fork does it: the tokens as a (1, B, N, C) image resized to (N', C), class token
    included.
    """
    if x_t.shape[1] != ref.shape[1]:
        x_t = F.interpolate(x_t[None], size=(ref.shape[1], ref.shape[2]))[0]
    return x_t


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad a map right and bottom with zeros up to a multiple of ``multiple`` (OpenMMLab)."""
    pad_h, pad_w = (-x.shape[2]) % multiple, (-x.shape[3]) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def _check_and_expand_input(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Validate a (B, C, H, W) batch; a 1-channel batch for a 3-channel model is repeated."""
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans and not (x.shape[1] == 1 and in_chans == 3):
        accepted = "3 (or 1, repeated over 3)" if in_chans == 3 else str(in_chans)
        raise ValueError(f"expected {accepted} input channels, got {x.shape[1]}")
    if x.shape[2] < 32 or x.shape[3] < 32:
        raise SettingError("{input} height and width must be >= 32, got "
                           f"{tuple(x.shape[2:])}", input=Setting("input"))
    if x.shape[1] != in_chans:
        x = x.expand(-1, in_chans, -1, -1)
    return x


torch.fx.wrap("_resize_map_to")
torch.fx.wrap("_resize_tokens_to")
torch.fx.wrap("_pad_to_multiple")
torch.fx.wrap("_check_and_expand_input")


def token_resize_index(n_in: int, n_out: int) -> torch.Tensor:
    """Which incoming token each of ``n_out`` tokens copies when tokens are resized (nearest).

    Computed with the same ``F.interpolate`` call the model makes, so the index is exactly the
    model's selection; ``index[j] = i`` means output token j is input token i.
    """
    src = torch.arange(n_in, dtype=torch.float64)[None, None, :, None]
    return F.interpolate(src, size=(n_out, 1))[0, 0, :, 0].round().long()


class BranchLogits(NamedTuple):
    """Logits of the two classifier heads."""

    cnn: torch.Tensor
    transformer: torch.Tensor


class BranchFeatures(NamedTuple):
    """One block's output for each branch: a CNN map and a transformer map or tokens."""

    cnn: torch.Tensor
    transformer: torch.Tensor


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with a fused and an explicit path (same result)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape[0], x.shape[1], x.shape[2]  # indexed, not unpacked: FX-traceable
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = attn @ v
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class TransformerBlock(nn.Module):
    """Pre-norm ViT block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-6)


class ConvBlock(nn.Module):
    """ResNet bottleneck (expansion 4) whose 3x3 conv can also read a coupling input ``x_t``."""

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, res_conv: bool = False,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        med = outplanes // 4
        self.conv1 = nn.Conv2d(inplanes, med, 1, bias=False)
        self.bn1 = _bn(med)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(med, med, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(med)
        self.act2 = nn.ReLU()
        self.conv3 = nn.Conv2d(med, outplanes, 1, bias=False)
        self.bn3 = _bn(outplanes)
        self.act3 = nn.ReLU()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.res_conv = res_conv
        self.resize_coupling = False  # True: resize a mismatched coupling input (the fork)
        if res_conv:
            self.residual_conv = nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False)
            self.residual_bn = _bn(outplanes)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor | None = None,
                return_x_2: bool = True) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        residual = x
        h = self.act1(self.bn1(self.conv1(x)))
        if x_t is not None:
            h = h + (_resize_map_to(x_t, h) if self.resize_coupling else x_t)
        h = self.conv2(h)
        x2 = self.act2(self.bn2(h))
        h = self.drop_path(self.bn3(self.conv3(x2)))
        if self.res_conv:
            residual = self.residual_bn(self.residual_conv(residual))
        out = self.act3(h + residual)
        return (out, x2) if return_x_2 else out


class FCUDown(nn.Module):
    """Feature coupling CNN -> tokens: 1x1 conv, average pool, LayerNorm, GELU, class token."""

    def __init__(self, inplanes: int, outplanes: int, dw_stride: int) -> None:
        super().__init__()
        self.dw_stride = dw_stride
        self.conv_project = nn.Conv2d(inplanes, outplanes, 1)
        self.sample_pooling = nn.AvgPool2d(dw_stride, dw_stride)
        self.ln = nn.LayerNorm(outplanes, eps=1e-6)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        x = self.sample_pooling(self.conv_project(x)).flatten(2).transpose(1, 2)
        x = self.act(self.ln(x))
        return torch.cat([x_t[:, :1], x], dim=1)


class FCUUp(nn.Module):
    """Feature coupling tokens -> CNN: drop the class token, 1x1 conv, BN, ReLU, nearest upsampling."""

    def __init__(self, inplanes: int, outplanes: int, up_stride: int) -> None:
        super().__init__()
        self.up_stride = up_stride
        self.conv_project = nn.Conv2d(inplanes, outplanes, 1)
        self.bn = _bn(outplanes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, c = x.shape[0], x.shape[2]
        x_r = x[:, 1:].transpose(1, 2).reshape(b, c, h, w)
        x_r = self.act(self.bn(self.conv_project(x_r)))
        return F.interpolate(x_r, size=(h * self.up_stride, w * self.up_stride), mode="nearest")


class ConvTransBlock(nn.Module):
    """One coupled block: CNN bottleneck, FCU down, transformer block, FCU up, fusion bottleneck."""

    def __init__(self, inplanes: int, outplanes: int, res_conv: bool, stride: int, dw_stride: int,
                 embed_dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, last_fusion: bool = False) -> None:
        super().__init__()
        self.cnn_block = ConvBlock(inplanes, outplanes, stride, res_conv, drop_path)
        if last_fusion:
            self.fusion_block = ConvBlock(outplanes, outplanes, 2, True, drop_path)
        else:
            self.fusion_block = ConvBlock(outplanes, outplanes, 1, False, drop_path)
        self.squeeze_block = FCUDown(outplanes // 4, embed_dim, dw_stride)
        self.expand_block = FCUUp(embed_dim, outplanes // 4, dw_stride)
        self.trans_block = TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop,
                                            attn_drop, drop_path)
        self.dw_stride = dw_stride
        self.resize_tokens = False  # True: resize mismatched tokens to FCU down's count (the fork)

    def forward(self, x: torch.Tensor, x_t: torch.Tensor, return_cnn_block: bool = False
                ) -> tuple[torch.Tensor, ...]:
        """``(cnn map, tokens)``; with ``return_cnn_block`` also ``cnn_block``'s output (the map
        before the fusion block)."""
        x_cnn, x2 = self.cnn_block(x)
        h, w = x2.shape[2], x2.shape[3]
        x_st = self.squeeze_block(x2, x_t)
        if self.resize_tokens:
            x_t = _resize_tokens_to(x_t, x_st)
        x_t = self.trans_block(x_st + x_t)
        x_t_r = self.expand_block(x_t, h // self.dw_stride, w // self.dw_stride)
        x = self.fusion_block(x_cnn, x_t_r, return_x_2=False)
        return (x, x_t, x_cnn) if return_cnn_block else (x, x_t)


class Conformer(nn.Module):
    """The Conformer network with published module names.

    Args:
        patch_size: Transformer patch size in input pixels (16 or 32).
        in_chans: Number of input channels.
        num_classes: Classes of both heads.
        base_channel: CNN base width (64 in every published variant).
        channel_ratio: CNN width multiplier.
        embed_dim: Token width.
        depth: Number of blocks (12; must be divisible by 3).
        num_heads: Attention heads.
        mlp_ratio: Transformer MLP expansion.
        qkv_bias: Bias on the qkv projection.
        drop_rate, attn_drop_rate, drop_path_rate: Training-only regularisation.
        size_mismatch: ``"pad"`` (default; OpenMMLab's padding of the stem output) or
            ``"resize"`` (the spectrogram fork's resizing of mismatched maps and tokens); also
            settable later as ``model.size_mismatch``. Both give the same logits when height and
            width are multiples of 32.
        global_pool: ``"avg"`` (default: the CNN head pools its map) or ``""`` (with
            ``num_classes=0``, ``forward`` returns :meth:`forward_features`' unpooled branches).
        device, dtype: Where and in which dtype to create the parameters (timm's factory
            arguments).

    Attributes:
        num_features, head_hidden_size: Width of ``forward_head(..., pre_logits=True)`` and of
            ``forward`` without classifiers: the CNN's pooled features and the class token,
            concatenated (``num_cnn_features + embed_dim``).
        feature_info: The CNN branch's stage ends at strides 4, 8, 16 and 32 (timm's
            ``features_only``).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 base_channel: int = 64, channel_ratio: float = 4, embed_dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, size_mismatch: str = "pad", global_pool: str = "avg",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 **kwargs) -> None:
        super().__init__()
        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        kwargs.pop("cache_dir", None)
        if kwargs:  # TypeError, as Python (and timm's contract) has it for unknown arguments
            raise TypeError(f"unknown Conformer arguments: {sorted(kwargs)}")
        if depth % 3 != 0:
            raise ValueError(f"depth must be a multiple of 3, got {depth}")
        if patch_size not in (16, 32):
            raise ValueError(f"patch_size must be 16 or 32, got {patch_size}")
        _check_size_mismatch(size_mismatch)
        self.global_pool = _check_global_pool(global_pool)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.stem_stride = 4
        self.pad_multiple = patch_size // 4
        dpr = [v.item() for v in torch.linspace(0, drop_path_rate, depth, device="cpu")]

        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.trans_norm = nn.LayerNorm(embed_dim)
        self.trans_cls_head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.pooling = nn.AdaptiveAvgPool2d(1)
        stage_3 = int(base_channel * channel_ratio * 4)
        self.conv_cls_head = nn.Linear(stage_3, num_classes) if num_classes > 0 else nn.Identity()
        self.num_cnn_features = stage_3
        self.num_features = self.head_hidden_size = stage_3 + embed_dim

        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.act1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        stage_1 = int(base_channel * channel_ratio)
        dw = patch_size // 4
        self.conv_1 = ConvBlock(64, stage_1, 1, True, dpr[0])
        self.trans_patch_conv = nn.Conv2d(64, embed_dim, dw, stride=dw)
        self.trans_1 = TransformerBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate,
                                        attn_drop_rate, dpr[0])
        common = dict(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                      qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate)
        third = depth // 3
        for i in range(2, third + 1):
            self.add_module(f"conv_trans_{i}", ConvTransBlock(
                stage_1, stage_1, False, 1, dw, drop_path=dpr[i - 1], **common))
        stage_2 = int(base_channel * channel_ratio * 2)
        for i in range(third + 1, 2 * third + 1):
            first = i == third + 1
            self.add_module(f"conv_trans_{i}", ConvTransBlock(
                stage_1 if first else stage_2, stage_2, first, 2 if first else 1, dw // 2,
                drop_path=dpr[i - 1], **common))
        for i in range(2 * third + 1, depth + 1):
            first = i == 2 * third + 1
            self.add_module(f"conv_trans_{i}", ConvTransBlock(
                stage_2 if first else stage_3, stage_3, first, 2 if first else 1, dw // 4,
                drop_path=dpr[i - 1], last_fusion=i == depth, **common))
        self._init_weights()
        self.size_mismatch = size_mismatch
        third = depth // 3
        self.feature_info = [
            dict(num_chs=stage_1, reduction=4, module=_cnn_module_name(third)),
            dict(num_chs=stage_2, reduction=8, module=_cnn_module_name(2 * third)),
            dict(num_chs=stage_3, reduction=16, module=f"conv_trans_{depth}.cnn_block"),
            dict(num_chs=stage_3, reduction=32, module=_cnn_module_name(depth)),
        ]
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @property
    def size_mismatch(self) -> str:
        """``"pad"`` (OpenMMLab's padding) or ``"resize"`` (the spectrogram fork's resizing)."""
        return self._size_mismatch

    @size_mismatch.setter
    def size_mismatch(self, mode: str) -> None:
        self._size_mismatch = _check_size_mismatch(mode)
        resize = mode == "resize"
        for m in self.modules():
            if isinstance(m, ConvBlock):
                m.resize_coupling = resize
            elif isinstance(m, ConvTransBlock):
                m.resize_tokens = resize

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- structure helpers
    @property
    def blocks(self) -> list[nn.Module]:
        """The ``depth`` blocks in order: ``trans_1`` stands for block 1's transformer side."""
        return [self.trans_1] + [getattr(self, f"conv_trans_{i}") for i in range(2, self.depth + 1)]

    def cnn_block_module(self, k: int) -> nn.Module:
        """The module whose output is the CNN branch's block ``k`` (1-based)."""
        return self.conv_1 if k == 1 else getattr(self, f"conv_trans_{k}").fusion_block

    def trans_block_module(self, k: int) -> TransformerBlock:
        """The transformer block of block ``k`` (1-based)."""
        return self.trans_1 if k == 1 else getattr(self, f"conv_trans_{k}").trans_block

    def stage_of(self, block: int) -> int:
        """Stage (1, 2 or 3) of a 1-based block: each stage holds a third of the depth."""
        if not 1 <= block <= self.depth:
            raise ValueError(f"block {block} out of range; accepted: 1..{self.depth}")
        third = self.depth // 3
        return 1 if block <= third else 2 if block <= 2 * third else 3

    def cnn_stride(self, block: int) -> int:
        """Input pixels per cell of the CNN branch's map after ``block`` (4, 8, 16; 32 last)."""
        return 32 if block == self.depth else 2 ** (self.stage_of(block) + 1)

    def token_grid(self, height: int, width: int, block: int | None = None) -> tuple[int, int]:
        """The transformer token grid (rows, cols) of ``block`` (1-based) for an input size.

        With ``size_mismatch="pad"`` every block has the same grid (of the padded stem). With
        ``"resize"`` the grid is each block's FCU-down grid (floor), which can change between
        stages; ``block=None`` means block 1 (the patch embedding's grid).
        """
        stage = 1 if block is None else self.stage_of(block)
        return _grid(height, width, self.pad_multiple, stage, self.size_mismatch == "resize")

    def token_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """The token grid of every block (1..depth) for an input size."""
        return [self.token_grid(height, width, k) for k in range(1, self.depth + 1)]

    def padded_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Input-pixel extent the block-1 token grid covers (padding included; with
        ``size_mismatch="resize"`` it can be smaller than the input, whose last pixels no token
        covers)."""
        gh, gw = self.token_grid(height, width)
        return gh * self.patch_size, gw * self.patch_size

    def set_fused_attn(self, enabled: bool) -> None:
        """Switch every attention module between the fused and the explicit path."""
        for m in self.modules():
            if isinstance(m, Attention):
                m.fused_attn = enabled

    def get_classifier(self) -> tuple[nn.Module, nn.Module]:
        return self.conv_cls_head, self.trans_cls_head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace both heads with fresh ones for ``num_classes`` classes (timm API).

        ``num_classes=0`` removes both: ``forward`` then returns the pooled CNN features and the
        class token, concatenated (``head_hidden_size`` wide); ``global_pool=""`` also drops the
        pooling, and ``forward`` returns :meth:`forward_features`' ``BranchFeatures``.
        """
        if global_pool is not None:
            self.global_pool = _check_global_pool(global_pool)
        self.num_classes = num_classes
        like = dict(device=self.cls_token.device, dtype=self.cls_token.dtype)
        self.conv_cls_head = (nn.Linear(self.num_cnn_features, num_classes, **like)
                              if num_classes > 0 else nn.Identity())
        self.trans_cls_head = (nn.Linear(self.embed_dim, num_classes, **like)
                               if num_classes > 0 else nn.Identity())
        for head in (self.conv_cls_head, self.trans_cls_head):
            head.train(self.training)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    # ----------------------------------------------------------------- forward
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem (conv, BN, ReLU, max-pool); padded right/bottom to a multiple of patch/4 in
        ``"pad"`` mode, left as it is (the patch conv floors) in ``"resize"`` mode."""
        x = _check_and_expand_input(x, self.in_chans)
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        if self._size_mismatch == "pad":
            x = _pad_to_multiple(x, self.pad_multiple)
        return x

    def _iter_blocks(self, x: torch.Tensor, stop: int | None = None):
        """Yield ``(k, cnn_map, tokens, cnn_block_map)`` after each block k = 1..depth.

        ``cnn_block_map`` is the block's ``cnn_block`` output before its fusion block (block 1:
        its CNN map).
        """
        x_base = self.forward_stem(x)
        cls = self.cls_token.expand(x_base.shape[0], -1, -1)
        c = self.conv_1(x_base, return_x_2=False)
        t = self.trans_patch_conv(x_base).flatten(2).transpose(1, 2)
        t = self.trans_1(torch.cat([cls, t], dim=1))
        yield 1, c, t, c
        for k in range(2, (stop or self.depth) + 1):
            c, t, pre = getattr(self, f"conv_trans_{k}")(c, t, return_cnn_block=True)
            yield k, c, t, pre

    def forward_features(self, x: torch.Tensor) -> BranchFeatures:
        """Last CNN map (B, C, h, w) and all final tokens after ``trans_norm`` (B, 1+N, D)."""
        *_, (_, c, t, _) = self._iter_blocks(x)
        return BranchFeatures(c, self.trans_norm(t))

    def forward_head(self, features: BranchFeatures | Sequence[torch.Tensor],
                     pre_logits: bool = False) -> torch.Tensor:
        """Fused logits (sum of both heads) from :meth:`forward_features`' output."""
        cnn, trans = self._heads(features, pre_logits)
        if pre_logits:
            return torch.cat([cnn, trans], dim=1)
        return cnn + trans

    def _heads(self, features, pre_logits: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        c, t = features
        pooled = self.pooling(c).flatten(1)
        cls = t[:, 0]
        if pre_logits:
            return pooled, cls
        return self.conv_cls_head(pooled), self.trans_cls_head(cls)

    def forward_branches(self, x: torch.Tensor) -> BranchLogits:
        """Both heads' logits as ``BranchLogits(cnn, transformer)``."""
        return BranchLogits(*self._heads(self.forward_features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | BranchFeatures:
        """Fused logits: CNN head + transformer head (the published evaluation's score).

        Without classifiers (``num_classes=0``): the pre-logits features (B, head_hidden_size),
        or with ``global_pool=""`` the unpooled ``BranchFeatures``.
        """
        features = self.forward_features(x)
        if self.num_classes == 0:
            return features if self.global_pool == "" else self.forward_head(features, True)
        cnn, trans = self._heads(features)
        return cnn + trans

    def forward_stage_features(self, x: torch.Tensor, indices: Sequence[int] | None = None,
                               branch: str = "cnn") -> list[torch.Tensor]:
        """Feature maps at the stage ends (what ``features_only=True`` returns).

        Args:
            x: Input batch (B, C, H, W).
            indices: Which stage ends (0-based into :meth:`stage_feature_info`); None = all.
            branch: ``"cnn"``: the CNN branch at strides 4, 8, 16, 32 (the blocks ending stages
                1 and 2, the last block's ``cnn_block`` and the last block); ``"transformer"``:
                the patch tokens (B, D, h, w) after the blocks ending stages 1, 2 and 3.

        Returns:
            One (B, C, h, w) map per requested index, in the order of ``indices``.
        """
        info = self.stage_feature_info(branch)
        wanted = list(range(len(info))) if indices is None else [int(i) for i in indices]
        for i in wanted:
            if not 0 <= i < len(info):
                raise ValueError(f"feature index {i} out of range; accepted: 0..{len(info) - 1}")
        blocks = [info[i]["block"] for i in wanted]
        found: dict[int, torch.Tensor] = {}
        for k, c, t, pre in self._iter_blocks(x, max(blocks)):
            for i in wanted:
                if info[i]["block"] != k:
                    continue
                if branch == "transformer":
                    grid = _token_grid_of(x, self.pad_multiple, self.stage_of(k),
                                          self._size_mismatch == "resize")
                    found[i] = t[:, 1:].transpose(1, 2).reshape(
                        t.shape[0], t.shape[2], grid[0], grid[1])
                else:
                    found[i] = pre if info[i].get("pre_fusion") else c
        return [found[i] for i in wanted]

    def stage_feature_info(self, branch: str = "cnn") -> list[dict]:
        """timm ``feature_info`` entries (num_chs, reduction, module, block) of one branch."""
        if branch == "cnn":
            info = [dict(f) for f in self.feature_info]
            for f, k in zip(info, (self.depth // 3, 2 * self.depth // 3, self.depth, self.depth)):
                f["block"] = k
            info[2]["pre_fusion"] = True
            return info
        if branch == "transformer":
            return [dict(num_chs=self.embed_dim, reduction=self.patch_size, block=k,
                         module=("trans_1" if k == 1 else f"conv_trans_{k}.trans_block"))
                    for k in (self.depth // 3, 2 * self.depth // 3, self.depth)]
        raise ValueError(f"branch must be 'cnn' or 'transformer', got {branch!r}")

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[BranchFeatures] | tuple[BranchFeatures, list[BranchFeatures]]:
        """Per-block outputs of both branches (timm's API; indices are 0-based).

        Args:
            x: Input batch (B, C, H, W).
            indices: Block indices (0-based; negative counts from the end), or an int ``n`` for
                the last ``n`` blocks; ``None`` means all blocks.
            norm: Apply ``trans_norm`` to the transformer intermediates.
            stop_early: Stop after the last requested block (only with ``intermediates_only``).
            output_fmt: ``"NCHW"`` gives the transformer's patch tokens as a (B, D, h, w) map;
                ``"NLC"`` gives the tokens (B, 1+N, D) with the class token.
            intermediates_only: Return only the intermediates.

        Returns:
            A list of ``BranchFeatures(cnn, transformer)`` per requested block, and with
            ``intermediates_only=False`` also the final features first.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if indices is None:
            wanted = list(range(self.depth))
        elif isinstance(indices, int):
            if not 0 < indices <= self.depth:
                raise ValueError(f"indices as an int must be in 1..{self.depth}, got {indices}")
            wanted = list(range(self.depth - indices, self.depth))
        else:
            wanted = []
            for i in indices:
                j = i + self.depth if i < 0 else i
                if not 0 <= j < self.depth:
                    raise ValueError(f"block index {i} out of range for depth {self.depth}")
                wanted.append(j)
        stop = max(wanted) + 1 if (stop_early and intermediates_only) else None
        out: dict[int, BranchFeatures] = {}
        c = t = None
        for k, c, t, _ in self._iter_blocks(x, stop):
            if k - 1 in wanted:
                tt = self.trans_norm(t) if norm else t
                if output_fmt == "NCHW":
                    gh, gw = self.token_grid(x.shape[2], x.shape[3], k)
                    tt = tt[:, 1:].transpose(1, 2).reshape(t.shape[0], t.shape[2], gh, gw)
                out[k - 1] = BranchFeatures(c, tt)
        intermediates = [out[j] for j in wanted]
        if intermediates_only:
            return intermediates
        return BranchFeatures(c, self.trans_norm(t)), intermediates


def _check_global_pool(global_pool: object) -> str:
    if global_pool not in ("avg", ""):
        raise ValueError(f"global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
    return global_pool  # type: ignore[return-value]


def _cnn_module_name(block: int) -> str:
    return "conv_1" if block == 1 else f"conv_trans_{block}.fusion_block"


def _grid(height: int, width: int, dw: int, stage: int, resize: bool) -> tuple[int, int]:
    """Token grid of a stage: padded stem / dw (pad mode), or each stage's floored FCU-down
    grid (resize mode)."""
    sh, sw = _stem_size(height), _stem_size(width)
    if not resize:
        return math.ceil(sh / dw), math.ceil(sw / dw)
    for _ in range(stage - 1):  # stride-2 3x3 conv (padding 1) at each stage's first block
        sh, sw, dw = (sh - 1) // 2 + 1, (sw - 1) // 2 + 1, dw // 2
    return sh // dw, sw // dw


def _token_grid_of(x: torch.Tensor, dw: int, stage: int, resize: bool) -> tuple[int, int]:
    """The token grid for input batch ``x`` (an FX leaf: the arithmetic runs on real sizes)."""
    return _grid(int(x.shape[2]), int(x.shape[3]), dw, stage, resize)


torch.fx.wrap("_token_grid_of")


def _stem_size(n: int) -> int:
    """Spatial size after the stem's stride-2 conv (k7, p3) and stride-2 max-pool (k3, p1)."""
    n = (n + 2 * 3 - 7) // 2 + 1
    return (n + 2 * 1 - 3) // 2 + 1


# --------------------------------------------------------------------------- timm registration
#: OpenMMLab's mirror of the published weights (file names end in their sha256 prefix).
_OPENMMLAB = "https://download.openmmlab.com/mmclassification/v0/conformer/"
_FROM_OFFICIAL = "OpenMMLab (converted from the official file)"
_OPENMMLAB_RENAMES = (
    (".ln1.", ".norm1."),
    (".ln2.", ".norm2."),
    (".ffn.layers.0.0.", ".mlp.fc1."),
    (".ffn.layers.1.", ".mlp.fc2."),
)


@dataclasses.dataclass
class ConformerPretrainedCfg(PretrainedCfg):
    """timm's pretrained config plus the published ImageNet-1k top-1 accuracies (%).

    ``top1_paper`` is the paper's number, ``top1_weights`` that of the file at ``url`` and
    ``weights_from`` who trained or converted that file. The three stay out of
    :meth:`to_dict` (a model's ``pretrained_cfg``), which keeps timm's keys only.
    """

    top1_paper: float | None = None
    top1_weights: float | None = None
    weights_from: str | None = None

    def to_dict(self, remove_source: bool = False, remove_null: bool = True) -> dict:
        """timm's dict of the config, without the accuracies."""
        out = super().to_dict(remove_source=remove_source, remove_null=remove_null)
        for key in ("top1_paper", "top1_weights", "weights_from"):
            out.pop(key, None)
        return out


def _cfg(url: str = "", **kwargs) -> ConformerPretrainedCfg:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return ConformerPretrainedCfg(**{
        "url": url,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "conv1",
        "classifier": ("conv_cls_head", "trans_cls_head"),
        "license": "apache-2.0",
        "paper_ids": "arXiv:2105.03889",
        "paper_name": "Conformer: Local Features Coupling Global Representations for Visual Recognition",
        "origin_url": "https://github.com/pengzhiliang/Conformer",
        **kwargs,
    })


def _pretrained_cfgs() -> dict[str, ConformerPretrainedCfg]:
    """The published ImageNet-1k weights (URL with sha256 prefix, accuracies) and the fork's."""
    cfgs = {
        "conformer_tiny_patch16.in1k": _cfg(
            _OPENMMLAB + "conformer-tiny-p16_3rdparty_8xb128_in1k_20211206-f6860372.pth",
            top1_paper=81.3, top1_weights=81.31, weights_from=_FROM_OFFICIAL),
        "conformer_small_patch16.in1k": _cfg(
            _OPENMMLAB + "conformer-small-p16_3rdparty_8xb128_in1k_20211206-3065dcf5.pth",
            top1_paper=83.4, top1_weights=83.32, weights_from=_FROM_OFFICIAL),
        "conformer_small_patch32.in1k": _cfg(
            _OPENMMLAB + "conformer-small-p32_8xb128_in1k_20211206-947a0816.pth",
            top1_weights=81.96, weights_from="OpenMMLab (own training)"),
        "conformer_base_patch16.in1k": _cfg(
            _OPENMMLAB + "conformer-base-p16_3rdparty_8xb128_in1k_20211206-bfdf8637.pth",
            top1_paper=84.1, top1_weights=83.82, weights_from=_FROM_OFFICIAL),
    }
    # the fork's variants: inputs are raw dB spectrograms, no mean/std, no crop
    cfgs.update({name: _cfg(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0,
                            license=None, origin_url="https://github.com/pengzhiliang/Conformer")
                 for name in FORK_VARIANTS})
    return cfgs


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor],
                         model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Bring OpenMMLab's Conformer keys to the official names (timm's ``pretrained_filter_fn``).

    OpenMMLab adds ``backbone.`` and ``head.`` prefixes and renames ``norm1``/``norm2`` to
    ``ln1``/``ln2`` and ``mlp.fc1``/``mlp.fc2`` to ``ffn.layers.0.0``/``ffn.layers.1``. A state dict
    in the official names (the official repository's and the spectrogram fork's) or of another
    model passes through unchanged.
    """
    if not any(k.startswith(("backbone.", "head.conv_cls_head.", "head.trans_cls_head."))
               for k in state_dict):
        return dict(state_dict)
    return {_official_key(k): v for k, v in state_dict.items()}


def _official_key(key: str) -> str:
    if key.startswith("backbone."):
        key = key[len("backbone."):]
    elif key.startswith(("head.conv_cls_head.", "head.trans_cls_head.")):
        key = key[len("head."):]
    key = "." + key
    for old, new in _OPENMMLAB_RENAMES:
        key = key.replace(old, new)
    return key[1:]


def conformer_feature_cfg(kwargs: dict) -> dict:
    """timm's ``feature_cfg`` for a Conformer (pops ``feature_branch`` from the kwargs)."""
    from .features import ConformerFeatures

    cfg = dict(feature_cls=ConformerFeatures, out_indices=(0, 1, 2, 3))
    if "feature_branch" in kwargs:
        cfg["branch"] = kwargs.pop("feature_branch")
        cfg["out_indices"] = (0, 1, 2)
    return cfg


def _create_conformer(variant: str, pretrained: bool = False, **kwargs) -> Conformer:
    from timm.models import build_model_with_cfg

    kwargs = {**CONFORMER_VARIANTS[variant], **kwargs}
    feature_cfg = conformer_feature_cfg(kwargs)
    if not pretrained:
        return build_model_with_cfg(Conformer, variant, pretrained=False, feature_cfg=feature_cfg,
                                    **kwargs)
    from .errors import WeightsError, one_line
    from .pretrained import finish_pretrained, prepare_pretrained

    # the weights load into the plain model; timm's builder then wraps it as it would
    wrap = {k: kwargs.pop(k) for k in ("features_only", "out_indices", "feature_cls")
            if k in kwargs}
    load = prepare_pretrained(variant, kwargs, checkpoint_filter_fn)
    try:
        model = build_model_with_cfg(Conformer, variant, pretrained=True,
                                     pretrained_filter_fn=load.filter_fn, **kwargs)
    except RuntimeError as e:  # torch's load_state_dict on shapes the checks let through
        raise WeightsError(f"{load.origin} does not fit {variant}: {one_line(e)}") from e
    finish_pretrained(model, load)
    if not wrap.get("features_only"):
        return model
    return build_model_with_cfg(lambda **_: model, variant, pretrained=False,
                                feature_cfg=feature_cfg, **wrap)


def _register() -> None:
    """Register the Conformer variants with timm (called when the package is imported)."""
    from timm.models import generate_default_cfgs, register_model

    globals()["default_cfgs"] = generate_default_cfgs(_pretrained_cfgs())
    for fn in (conformer_tiny_patch16, conformer_small_patch16, conformer_small_patch32,
               conformer_base_patch16, conformer_tinytiny_patch16, conformer_tinytinytiny_patch16):
        register_model(fn)


def conformer_tiny_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """Conformer-Ti, patch 16 (23.5 M parameters; 81.3 % ImageNet top-1 in the paper)."""
    return _create_conformer("conformer_tiny_patch16", pretrained, **kwargs)


def conformer_small_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """Conformer-S, patch 16 (37.7 M parameters; 83.4 % ImageNet top-1 in the paper)."""
    return _create_conformer("conformer_small_patch16", pretrained, **kwargs)


def conformer_small_patch32(pretrained: bool = False, **kwargs) -> Conformer:
    """Conformer-S, patch 32 (38.8 M parameters; 81.96 % ImageNet top-1, OpenMMLab's training)."""
    return _create_conformer("conformer_small_patch32", pretrained, **kwargs)


def conformer_base_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """Conformer-B, patch 16 (83.3 M parameters; 84.1 % ImageNet top-1 in the paper)."""
    return _create_conformer("conformer_base_patch16", pretrained, **kwargs)


def conformer_tinytiny_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """The spectrogram fork's ``Conformer_tinytiny_patch16``: depth 6, width 384, 3 heads."""
    return _create_conformer("conformer_tinytiny_patch16", pretrained, **kwargs)


def conformer_tinytinytiny_patch16(pretrained: bool = False, **kwargs) -> Conformer:
    """The spectrogram fork's ``Conformer_tinytinytiny_patch16``: depth 3, width 192, 3 heads."""
    return _create_conformer("conformer_tinytinytiny_patch16", pretrained, **kwargs)
