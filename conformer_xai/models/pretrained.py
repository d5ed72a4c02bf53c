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
from typing import NamedTuple

import torch
from torch import nn

from .checkpoint_files import clean_state_dict, load_state_dict_file
from .fit import infer_checkpoint_config, plan_heads, warn_new_heads
from .hub import imagenet_checkpoint

__all__ = ["PretrainedLoad", "prepare_pretrained", "finish_pretrained"]

StateDict = dict[str, torch.Tensor]


class PretrainedLoad(NamedTuple):
    """What :func:`prepare_pretrained` hands to the builder, and how to tidy up after it."""

    origin: str
    filter_fn: Callable[[StateDict, nn.Module], StateDict]
    #: The registered config's entries the overlay changed: put back in ``model.pretrained_cfg``.
    restore: dict


def finish_pretrained(model: nn.Module, load: PretrainedLoad) -> None:
    """Drop the weights from ``model.pretrained_cfg`` and put back the registered entries."""
    model.pretrained_cfg.pop("state_dict", None)
    model.pretrained_cfg.update(load.restore)


def prepare_pretrained(variant: str, kwargs: dict,
                       rename: Callable[[StateDict], StateDict]) -> PretrainedLoad:
    """Put a Conformer's pretrained weights into ``kwargs["pretrained_cfg_overlay"]``.

    Args:
        variant: The registered name being built.
        kwargs: The builder's keyword arguments, changed in place: ``num_classes`` and
            ``in_chans`` default to the registered config's, and the overlay holds the weights
            (``state_dict``), their class count and their input channels.
        rename: The model's ``checkpoint_filter_fn``.

    Returns:
        The weights' origin for messages, the ``pretrained_filter_fn`` that renames the keys,
        checks that they fit the model and warns about new heads, and the config entries to put
        back after the build (:func:`finish_pretrained`).

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

    return PretrainedLoad(origin, filter_fn, dict(num_classes=registered.num_classes,
                                                  input_size=registered.input_size))
