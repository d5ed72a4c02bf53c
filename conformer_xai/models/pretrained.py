"""Where ``timm.create_model(conformer, pretrained=True)`` takes its weights from, checked.

timm's builder loads them (``build_model_with_cfg``: the model's ``checkpoint_filter_fn``, the
stem adapted with :func:`timm.models.adapt_input_conv`, heads of another class count dropped);
this module only prepares what it reads: the weights as a state dict in the pretrained config,
read safely from ``pretrained_cfg_overlay=dict(file=...)`` or ``dict(state_dict=...)``, or the
published file from the hash-checked cache (:mod:`conformer_xai.models.hub`), with the class
and channel counts of those weights, so that heads are dropped exactly when they differ.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .checkpoint_files import clean_state_dict, load_state_dict_file
from .fit import infer_checkpoint_config, plan_heads, warn_new_heads
from .hub import imagenet_checkpoint

__all__ = ["prepare_pretrained"]

StateDict = dict[str, torch.Tensor]


def prepare_pretrained(variant: str, kwargs: dict,
                       rename: Callable[[StateDict], StateDict]
                       ) -> tuple[str, Callable[[StateDict, nn.Module], StateDict]]:
    """Put a Conformer's pretrained weights into ``kwargs["pretrained_cfg_overlay"]``.

    Args:
        variant: The registered name being built.
        kwargs: The builder's keyword arguments, changed in place: ``num_classes`` and
            ``in_chans`` default to the registered config's, and the overlay holds the weights
            (``state_dict``), their class count and their input channels.
        rename: The model's ``checkpoint_filter_fn``.

    Returns:
        ``(origin, filter_fn)``: the weights' origin for messages, and the ``pretrained_filter_fn``
        that renames the keys, checks that they fit the model and warns about new heads.

    Raises:
        FileNotFoundError, ValueError, WeightsError: The file cannot be read, the variant has no
            published weights, or they cannot be downloaded.
    """
    from timm.models import get_pretrained_cfg

    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if overlay.get("state_dict"):
        state_dict, origin = clean_state_dict(overlay["state_dict"]), "pretrained_cfg state_dict"
    elif overlay.get("file"):
        state_dict = clean_state_dict(load_state_dict_file(overlay["file"]))
        origin = f"checkpoint {overlay['file']}"
    else:
        path = imagenet_checkpoint(variant)
        state_dict = clean_state_dict(load_state_dict_file(path))
        origin = f"ImageNet weights {path}"
    registered = get_pretrained_cfg(variant)
    kwargs.setdefault("num_classes", registered.num_classes)
    kwargs.setdefault("in_chans", registered.input_size[0])
    found = infer_checkpoint_config(rename(state_dict), variant)
    classes = found["num_classes"]
    overlay.update(state_dict=state_dict, file=None,
                   num_classes=-1 if classes is None else classes,  # -1: no heads to keep
                   input_size=(found["in_chans"] or kwargs["in_chans"],
                               *registered.input_size[1:]))
    kwargs["pretrained_cfg_overlay"] = overlay

    def filter_fn(sd: StateDict, model: nn.Module) -> StateDict:
        sd = rename(sd)
        skipped, absent = plan_heads(model, variant, sd, origin, new_head=True)
        warn_new_heads(origin, variant, skipped, absent, stacklevel=7)
        return sd

    return origin, filter_fn
