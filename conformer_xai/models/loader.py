"""``load_model``: build a registered model and load its weights from any source.

Sources: a local checkpoint (:mod:`conformer_xai.models.checkpoint_files`), the published
ImageNet weights (:mod:`conformer_xai.models.hub`), the embedded models' shipped weights
(:mod:`conformer_xai.models.embedded`) or random initialisation. A checkpoint's class count and
input channels are read from its tensors; the weights are fitted with
:mod:`conformer_xai.models.fit`.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from ..devices import resolve_device
from ..errors import Setting, SettingError
from .catalog import (
    CONFORMER_MODELS,
    EMBEDDED_MODELS,
    KNOWN_MODELS,
    WEIGHT_CHOICES,
    unknown_name_message,
)
from .checkpoint_files import clean_state_dict, load_state_dict_file, read_checkpoint
from .checkpoints import registered_name, resolve_checkpoint_model
from .conformer import SIZE_MISMATCH_MODES, Conformer, checkpoint_filter_fn
from .embedded import read_embedded
from .errors import WeightsError, WeightsWarning, one_line
from .fit import check_head_request, fit_and_load, infer_checkpoint_config
from .hub import check_hub_reachable, imagenet_checkpoint, is_cached, quiet_hub_logs

__all__ = ["load_model", "convert_state_dict", "SIZE_MISMATCH_MODES"]
CHECKPOINT = Setting("checkpoint", placeholder="PATH")


def convert_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Bring a state dict to our key names.

    Unwraps ``"model"``/``"state_dict"``/``"model_ema"``, strips a ``module.`` prefix, and renames
    OpenMMLab's Conformer keys (``backbone.`` prefix, ``head.conv_cls_head``/``head.trans_cls_head``,
    ``ln1``/``ln2`` -> ``norm1``/``norm2``, ``ffn.layers.0.0``/``ffn.layers.1`` -> ``mlp.fc1``/
    ``mlp.fc2``) with the model's :func:`~conformer_xai.models.conformer.checkpoint_filter_fn`.
    Other key names pass through unchanged.
    """
    return checkpoint_filter_fn(clean_state_dict(state_dict))


def _create(name: str, num_classes: int | None, in_chans: int | None, **kwargs) -> nn.Module:
    import timm

    args = {k: v for k, v in dict(num_classes=num_classes, in_chans=in_chans).items()
            if v is not None}
    return timm.create_model(name, **args, **kwargs)


def load_model(name: str | None = None, weights: str | None = None,
               checkpoint: str | os.PathLike | None = None,
               num_classes: int | None = None, in_chans: int | None = None,
               new_head: bool = False, device: str | torch.device = "cpu", *,
               ema: bool = False, num_heads: int | None = None,
               size_mismatch: str | None = None) -> nn.Module:
    """Build a registered model, load its weights and return it in eval mode.

    Args:
        name: A Conformer (``conformer_tiny_patch16``, ``conformer_small_patch16``,
            ``conformer_small_patch32``, ``conformer_base_patch16``, the spectrogram fork's
            ``conformer_tinytiny_patch16`` and ``conformer_tinytinytiny_patch16``), a small model
            (``resnet_micro``, ``deit_micro_patch16``, ``conformer_micro_patch16``), a comparison
            model (``resnet101``, ``deit_small_patch16_224``) or any timm model name; matched
            case-insensitively. May be None with ``checkpoint``: the name then comes from the
            training ``args`` saved in the file (``args.model``), else the Conformer's
            architecture is read from the state dict (see
            :mod:`conformer_xai.models.checkpoints`). A name given wins over ``args.model``
            (a warning says so).
        weights: ``"imagenet"`` (published weights), ``"embedded"`` (the small models' shipped
            weights), ``"random"`` (explicit random initialisation), or None with ``checkpoint``.
        checkpoint: A local ``.pth``/``.pt``/``.safetensors`` file (used with ``weights=None``).
        num_classes: Classes of the head(s); None reads them from the weights.
        in_chans: Input channels; None reads them from the weights (3 for random weights).
            Other counts than the weights' adapt the stem as timm does.
        new_head: Allow heads of another size than the weights', or weights without heads: the
            heads start random (a :class:`WeightsWarning` names the keys).
        device: Where to put the model: ``"cpu"``, ``"cuda"``, ``"cuda:<n>"`` or a
            :class:`torch.device`.
        ema: Load the checkpoint's ``model_ema`` weights instead of ``model``.
        num_heads: Attention heads, for architectures whose head count the weights cannot tell
            (a checkpoint without a name; default then ``embed_dim // 64``, with a warning).
        size_mismatch: A Conformer's way with inputs whose branches' maps do not line up:
            ``"pad"`` (the default, OpenMMLab's) or ``"resize"`` (the spectrogram fork's).

    Returns:
        The model in eval mode with ``model.weights_source`` ("imagenet", "embedded", "random" or
        "checkpoint:<path>") and ``model.model_name``.

    Raises:
        ValueError: Unknown name, weights or device, a class or channel count that is not a
            positive integer, no weights source given, or ``checkpoint`` is a directory.
        FileNotFoundError: ``checkpoint`` does not exist.
        WeightsError: The weights cannot be read, downloaded, or do not fit the model.
    """
    if name is None and checkpoint is None:
        raise SettingError(f"no model name given: pass a name (known: {', '.join(KNOWN_MODELS)}; "
                           "any timm model name works too), or {checkpoint} (the name is then "
                           "read from the checkpoint)", checkpoint=CHECKPOINT)
    if name is not None and not isinstance(name, str):
        raise ValueError(f"the model name must be a string, got {type(name).__name__}; known: "
                         f"{', '.join(KNOWN_MODELS)} (any timm model name works too)")
    if name is not None:
        found_name = registered_name(name)
        if found_name is None:
            raise ValueError(unknown_name_message(name))
        name = found_name
    _check_count("num_classes", num_classes)
    _check_count("in_chans", in_chans)
    _check_count("num_heads", num_heads)
    if size_mismatch is not None and size_mismatch not in SIZE_MISMATCH_MODES:
        raise SettingError(f"unknown " "{size_mismatch}" f" {size_mismatch!r}; choose one of "
                           f"{', '.join(map(repr, SIZE_MISMATCH_MODES))}",
                           size_mismatch=Setting("size_mismatch"))
    if ema and checkpoint is None:
        raise SettingError("{ema} reads a checkpoint's model_ema weights: pass {checkpoint}",
                           ema=Setting("ema", True), checkpoint=CHECKPOINT)
    device = resolve_device(device)
    if weights is not None and weights not in WEIGHT_CHOICES:
        raise SettingError(f"unknown weights {weights!r}; choose one of "
                           f"{', '.join(map(repr, WEIGHT_CHOICES))}, or " "{checkpoint}",
                           checkpoint=CHECKPOINT)
    if weights is None and checkpoint is None:
        raise SettingError(f"no weights given for {name}: pass " "{weights}" f" (one of "
                           f"{', '.join(map(repr, WEIGHT_CHOICES))}), or " "{checkpoint}",
                           weights=Setting("weights", placeholder="NAME"), checkpoint=CHECKPOINT)
    if weights is not None and checkpoint is not None:
        raise SettingError("pass either {weights} or {checkpoint}, not both",
                           weights=Setting("weights", weights),
                           checkpoint=Setting("checkpoint", str(checkpoint)))

    extra = {} if num_heads is None else {"num_heads": int(num_heads)}
    label = name
    if weights == "random":
        model = _create(name, num_classes, in_chans, **extra)
        source = "random"
    elif weights == "imagenet" and name not in CONFORMER_MODELS:
        if name in EMBEDDED_MODELS:
            raise SettingError(f"{name} has no ImageNet weights; use " "{weights}",
                               weights=Setting("weights", "embedded"))
        model = _timm_pretrained(name, num_classes, in_chans, new_head)
        source = "imagenet"
    else:
        if checkpoint is not None:
            raw_sd, args = read_checkpoint(checkpoint, ema)
            state_dict = convert_state_dict(raw_sd)
            source = f"checkpoint:{os.fspath(checkpoint)}"
            origin = f"checkpoint {os.fspath(checkpoint)}"
            name, label, extra = resolve_checkpoint_model(name, args, state_dict, num_heads,
                                                          origin)
        elif weights == "embedded":
            state_dict = read_embedded(name)
            source = origin = "embedded"
        else:
            check_head_request(name, num_classes, new_head)  # before a long download
            path = imagenet_checkpoint(name)
            state_dict = convert_state_dict(load_state_dict_file(path))
            source, origin = "imagenet", f"ImageNet weights {path}"
        found = infer_checkpoint_config(state_dict, name)
        model = _create(name, num_classes if num_classes is not None else found["num_classes"],
                        in_chans if in_chans is not None else found["in_chans"], **extra)
        fit_and_load(model, name, state_dict, origin, new_head)
    _set_size_mismatch(model, label, size_mismatch)
    model.weights_source = source
    model.model_name = label
    return model.to(device).eval()


def _set_size_mismatch(model: nn.Module, name: str, size_mismatch: str | None) -> None:
    """Set a Conformer's ``size_mismatch`` (refused for other models)."""
    if size_mismatch is None:
        return
    if not isinstance(model, Conformer):
        raise SettingError("{size_mismatch}" f" applies to Conformer models only, not {name}",
                           size_mismatch=Setting("size_mismatch"))
    model.size_mismatch = size_mismatch


def _check_count(what: str, value: object) -> None:
    """Raise ValueError unless ``value`` is None or a positive integer."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer or None (read from the weights), "
                         f"got {value!r}")


def _timm_pretrained(name: str, num_classes: int | None, in_chans: int | None,
                     new_head: bool) -> nn.Module:
    heads, _, pretrained_classes = check_head_request(name, num_classes, new_head)
    if not is_cached(name):
        check_hub_reachable(name)  # offline: fail in one line now, not after a minute of retries
    try:
        with quiet_hub_logs():
            model = _create(name, num_classes, in_chans, pretrained=True)
    except Exception as e:  # timm/huggingface_hub raise many kinds when offline
        raise WeightsError(
            f"cannot load timm's pretrained weights for {name} ({type(e).__name__}: "
            f"{one_line(e, 200)}); if offline, pass " "{checkpoint} with a local copy",
            checkpoint=CHECKPOINT) from e
    if num_classes is not None and num_classes != pretrained_classes:
        skipped = [f"{h}.{p}" for h in heads for p in ("weight", "bias")]
        warnings.warn(f"ImageNet weights of {name}: skipped the head weights "
                      f"({', '.join(skipped)}); the head starts from random initialisation",
                      WeightsWarning, stacklevel=3)
    return model
