"""Checkpoints as training scripts write them: the run's ``args``, ``model`` / ``model_ema``, and
a Conformer's architecture read from the shapes of its state dict.

DeiT-style training scripts (the official Conformer repository's and the spectrogram fork's)
save ``{"model", "model_ema", "optimizer", "lr_scheduler", "epoch", "args"}`` with ``torch.save``;
``args`` is an :class:`argparse.Namespace`, a plain attribute holder that weights-only loading is
allowed to rebuild (nothing else new is allowed). ``args.model`` names the architecture (the
fork spells it ``Conformer_tinytiny_patch16``; names match case-insensitively).

Without ``args``, a Conformer's architecture is read from the tensors: depth (the block count),
``embed_dim``, ``channel_ratio``, patch size, ``qkv_bias``, ``mlp_ratio``, classes and input
channels. ``num_heads`` leaves no trace in any shape; it comes from a name, a ``num_heads``
argument, or the default ``embed_dim // 64`` with a warning saying it was guessed.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import Setting, SettingWarning
from .catalog import KNOWN_MODELS
from .variants import CONFORMER_VARIANTS

__all__ = ["TRAINING_SAFE_GLOBALS", "CHECKPOINT_ARCH_KEYS", "checkpoint_args",
           "infer_conformer_architecture", "matching_conformer_variant", "registered_name",
           "resolve_checkpoint_model", "CheckpointWarning"]

#: The only Python classes that weights-only loading rebuilds beyond tensors and containers.
TRAINING_SAFE_GLOBALS = (argparse.Namespace,)
#: State-dict keys a Conformer's architecture is read from.
CHECKPOINT_ARCH_KEYS = ("cls_token", "trans_patch_conv.weight", "conv_1.conv3.weight",
                        "trans_1.mlp.fc1.weight", "conv1.weight")
_BLOCK_KEY = re.compile(r"^conv_trans_(\d+)\.")
#: The base CNN width of every published Conformer (the stem's output channels).
BASE_CHANNEL = 64


class CheckpointWarning(SettingWarning):
    """Something about a checkpoint was guessed or overridden (the CLI prints it as a note)."""


def checkpoint_args(raw: object) -> dict[str, Any] | None:
    """The training run's options stored under ``"args"`` (a Namespace or a dict), as a dict."""
    if not isinstance(raw, Mapping):
        return None
    args = raw.get("args")
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, Mapping):
        return dict(args)
    return None


def registered_name(name: str) -> str | None:
    """``name`` as registered with timm (exact, then lower-case), or None when unknown."""
    import timm

    for candidate in (name, name.lower()):
        if candidate in KNOWN_MODELS or timm.is_model(candidate):
            return candidate
    return None


def infer_conformer_architecture(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """A Conformer's constructor arguments read from its state dict (our key names).

    Returns:
        ``dict(depth, embed_dim, channel_ratio, patch_size, qkv_bias, mlp_ratio, num_classes,
        in_chans)`` (``num_classes`` None for a headless checkpoint), or None when the state dict
        is not a Conformer's.
    """
    if not all(isinstance(state_dict.get(k), torch.Tensor) for k in CHECKPOINT_ARCH_KEYS):
        return None
    embed_dim = int(state_dict["cls_token"].shape[-1])
    stage_1 = int(state_dict["conv_1.conv3.weight"].shape[0])
    ratio = stage_1 / BASE_CHANNEL
    blocks = [int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))]
    head = state_dict.get("conv_cls_head.weight")
    return dict(
        depth=max(blocks, default=1),
        embed_dim=embed_dim,
        channel_ratio=int(ratio) if ratio.is_integer() else ratio,
        patch_size=int(state_dict["trans_patch_conv.weight"].shape[-1]) * 4,
        qkv_bias="trans_1.attn.qkv.bias" in state_dict,
        mlp_ratio=int(state_dict["trans_1.mlp.fc1.weight"].shape[0]) / embed_dim,
        num_classes=int(head.shape[0]) if isinstance(head, torch.Tensor) else None,
        in_chans=int(state_dict["conv1.weight"].shape[1]),
    )


_ARCH_DEFAULTS = dict(depth=12, mlp_ratio=4.0, qkv_bias=True)
_COMPARED = ("depth", "embed_dim", "channel_ratio", "patch_size", "qkv_bias", "mlp_ratio",
             "num_heads")


def matching_conformer_variant(arch: Mapping[str, Any]) -> str | None:
    """The registered Conformer whose architecture (heads included) is ``arch``, if any."""
    for name, variant in CONFORMER_VARIANTS.items():
        full = {**_ARCH_DEFAULTS, **variant}
        if all(full.get(k) == arch.get(k) for k in _COMPARED):
            return name
    return None


def custom_name(arch: Mapping[str, Any]) -> str:
    """A descriptive name for a Conformer that no registered name describes."""
    ratio = arch["channel_ratio"]
    return (f"conformer_d{arch['depth']}_e{arch['embed_dim']}_h{arch['num_heads']}_r{ratio:g}"
            f"_patch{arch['patch_size']}")


def resolve_checkpoint_model(name: str | None, args: Mapping[str, Any] | None,
                             state_dict: Mapping[str, torch.Tensor], num_heads: int | None,
                             origin: str) -> tuple[str, str, dict[str, Any]]:
    """Which model to build for a checkpoint.

    In order: an explicit ``name`` (a :class:`CheckpointWarning` when it disagrees with
    ``args.model``), ``args.model`` (case-insensitive), else the architecture read from the state
    dict (``num_heads`` from the argument or guessed as ``embed_dim // 64`` with a warning).

    Returns:
        ``(registered name to build, name to report, extra constructor arguments)``.

    Raises:
        ValueError: No name, no usable ``args.model`` and not a Conformer state dict.
    """
    args_model = args.get("model") if args else None
    args_model = args_model if isinstance(args_model, str) and args_model else None
    if name is not None:
        if args_model is not None and args_model.lower() != name.lower():
            warnings.warn(f"{origin} was trained as {args_model} (args.model); building {name} "
                          f"as asked (the name given wins)", CheckpointWarning, stacklevel=3)
        return name, name, _heads(num_heads)
    if args_model is not None:
        found = registered_name(args_model)
        if found is not None:
            return found, found, _heads(num_heads)
        warnings.warn(f"{origin}: args.model {args_model!r} is not a registered name; the "
                      f"architecture is read from the state dict", CheckpointWarning,
                      stacklevel=3)
    arch = infer_conformer_architecture(state_dict)
    if arch is None:
        raise ValueError(f"{origin} names no model (no args.model) and is not a Conformer state "
                         f"dict whose architecture could be read; pass the model name")
    if num_heads is None:
        num_heads = max(1, arch["embed_dim"] // 64)
        warnings.warn(CheckpointWarning(
            f"{origin}: num_heads cannot be read from the weights; guessed {num_heads} "
            f"(embed_dim {arch['embed_dim']} // 64); pass " "{num_heads} if the model was "
            "trained with another count", num_heads=Setting("num_heads", placeholder="N")),
            stacklevel=3)
    arch = {**arch, "num_heads": int(num_heads)}
    variant = matching_conformer_variant(arch)
    if variant is not None:
        return variant, variant, {}
    kwargs = {k: arch[k] for k in _COMPARED}
    return "conformer_tiny_patch16", custom_name(arch), kwargs


def _heads(num_heads: int | None) -> dict[str, Any]:
    return {} if num_heads is None else {"num_heads": int(num_heads)}
