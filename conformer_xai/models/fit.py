"""Fitting a state dict into a model: checks with clear messages, then timm's loading.

A state dict (already in our key names) is checked against the model first, so that a wrong
architecture or a head of another size is refused in one line that says what to do. The
loading itself is timm's :func:`timm.models.load_pretrained`: the stem adapted to the model's
input channels with :func:`timm.models.adapt_input_conv`, the classifier dropped when the class
counts differ, then ``load_state_dict``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import Setting
from .catalog import CONFORMER_MODELS
from .errors import WeightsError, WeightsWarning, one_line
from .variants import CONFORMER_VARIANTS

__all__ = ["model_traits", "infer_checkpoint_config", "plan_heads", "warn_new_heads",
           "fit_and_load", "check_head_request"]

_CONFORMER_HEADS = ("conv_cls_head", "trans_cls_head")
_CONFORMER_STEM = "conv1"
NEW_HEAD = Setting("new_head", True)
"""The setting that lets heads of another size start new."""


def model_traits(name: str) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(classifier module names, stem conv names, pretrained num_classes) of a registered name."""
    if name in CONFORMER_MODELS or name in CONFORMER_VARIANTS:
        return _CONFORMER_HEADS, (_CONFORMER_STEM,), 1000
    import timm  # noqa: F401  (timm's registry, with our names registered)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return (), (), 0
    heads = cfg.classifier or ()
    stems = cfg.first_conv or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    stems = (stems,) if isinstance(stems, str) else tuple(stems)
    return heads, stems, cfg.num_classes or 0


def infer_checkpoint_config(state_dict: Mapping, name: str) -> dict[str, int | None]:
    """Read ``num_classes`` (head rows) and ``in_chans`` (stem input channels) from a state dict.

    Args:
        state_dict: A state dict already in our key names (see
            :func:`conformer_xai.models.loader.convert_state_dict`).
        name: The registered model name whose head and stem names to look at.

    Returns:
        ``dict(num_classes=..., in_chans=...)``; a value is None when the state dict lacks the
        tensor (e.g. a headless checkpoint).
    """
    heads, stems, _ = model_traits(name)
    num_classes = in_chans = None
    for head in heads:
        w = state_dict.get(f"{head}.weight")
        if isinstance(w, torch.Tensor) and w.ndim == 2:
            num_classes = int(w.shape[0])
            break
    for stem in stems:
        w = state_dict.get(f"{stem}.weight")
        if isinstance(w, torch.Tensor) and w.ndim >= 2:
            in_chans = int(w.shape[1])
            break
    return dict(num_classes=num_classes, in_chans=in_chans)


def plan_heads(model: nn.Module, name: str, state_dict: Mapping[str, torch.Tensor], origin: str,
               new_head: bool) -> tuple[list[str], list[str]]:
    """Check that ``state_dict`` fits ``model``, and which head weights cannot be loaded.

    The stem may differ in its input channels (it is adapted) and the heads in their class count.

    Returns:
        ``(skipped, absent)``: the checkpoint's head keys that are not loaded, and the model's
        head keys the checkpoint lacks; both empty when the heads fit.

    Raises:
        WeightsError: The state dict does not fit the architecture, or its heads differ from the
            model's or are absent and ``new_head`` is False.
    """
    heads, stems, _ = model_traits(name)
    target = model.state_dict()
    sd = state_dict

    def is_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    def fits(key: str) -> bool:
        have, want = sd[key].shape, target[key].shape
        if have == want or (is_head(key) and have[1:] == want[1:]):
            return True
        stem = key in {f"{s}.weight" for s in stems} and len(have) == len(want) == 4
        return stem and have[0] == want[0] and have[2:] == want[2:]  # adapted by timm

    missing = [k for k in target if k not in sd and not is_head(k)]
    unexpected = [k for k in sd if k not in target and not is_head(k)]
    mismatched = [k for k in sd if k in target and not fits(k)]
    if missing or unexpected or mismatched:
        raise WeightsError(_mismatch_message(origin, name, sd, target, missing, unexpected,
                                             mismatched))
    head_keys = sorted(k for k in sd if is_head(k))
    differ = [k for k in head_keys if k not in target or sd[k].shape != target[k].shape]
    absent = sorted(k for k in target if is_head(k) and k not in sd)
    if (differ or absent) and not new_head:
        if differ:
            ck = infer_checkpoint_config(sd, name)["num_classes"]
            want = getattr(model, "num_classes", None)
            raise WeightsError(
                f"{origin} has heads for {ck} classes but the model was asked for {want}: pass "
                "{new_head} to start new heads, or {num_classes}", new_head=NEW_HEAD,
                num_classes=Setting("num_classes", ck))
        raise WeightsError(
            f"{origin} has no head weights for {name} ({', '.join(absent)} missing): pass "
            "{new_head} to start new heads", new_head=NEW_HEAD)
    return (head_keys if differ or absent else []), absent


def warn_new_heads(origin: str, name: str, skipped: list[str], absent: list[str],
                   stacklevel: int = 3) -> None:
    """Warn (:class:`WeightsWarning`) that heads start new, naming the keys; silent otherwise."""
    if not (skipped or absent):
        return
    parts = [f"skipped the checkpoint's head weights ({', '.join(skipped)})"] if skipped else []
    if absent:
        parts.append(f"the checkpoint has no head weights ({', '.join(absent)})")
    warnings.warn(f"{origin}: {' and '.join(parts)}; the heads of {name} start from random "
                  f"initialisation", WeightsWarning, stacklevel=stacklevel + 1)


def fit_and_load(model: nn.Module, name: str, state_dict: dict[str, torch.Tensor], origin: str,
                 new_head: bool) -> list[str]:
    """Check ``state_dict`` against ``model`` and load it with timm's ``load_pretrained``.

    Returns the head keys that start from random initialisation (empty when none); a
    :class:`WeightsWarning` names them.

    Raises:
        WeightsError: As :func:`plan_heads`, or when torch's ``load_state_dict`` refuses.
    """
    from timm.models import load_pretrained

    skipped, absent = plan_heads(model, name, state_dict, origin, new_head)
    heads, stems, _ = model_traits(name)
    target = model.state_dict()
    found = infer_checkpoint_config(state_dict, name)
    own = infer_checkpoint_config(target, name)
    in_chans = own["in_chans"] or 3
    new_heads = bool(skipped or absent)
    cfg = dict(state_dict=dict(state_dict), first_conv=stems or None, classifier=heads or None,
               num_classes=-1 if new_heads else (own["num_classes"] or 0),  # -1: heads dropped
               input_size=(found["in_chans"] or in_chans, 0, 0))
    try:
        load_pretrained(model, pretrained_cfg=cfg, num_classes=own["num_classes"] or 0,
                        in_chans=in_chans, strict=not new_heads)
    except RuntimeError as e:
        raise WeightsError(f"{origin} does not fit {name}: {one_line(e)}") from e
    warn_new_heads(origin, name, skipped, absent, stacklevel=3)
    return sorted(set(skipped) | set(absent))


def check_head_request(name: str, num_classes: int | None,
                       new_head: bool) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """Refuse a class count other than the pretrained one unless ``new_head`` (before a download).

    Returns:
        :func:`model_traits` of ``name``.
    """
    traits = model_traits(name)
    pretrained_classes = traits[2]
    if num_classes is not None and num_classes != pretrained_classes and not new_head:
        raise WeightsError(
            f"the ImageNet weights of {name} have {pretrained_classes} classes but the model was "
            f"asked for {num_classes}: pass " "{new_head} to start new heads, or {num_classes}",
            new_head=NEW_HEAD, num_classes=Setting("num_classes", pretrained_classes))
    return traits


def _mismatch_message(origin: str, name: str, sd: Mapping, target: Mapping, missing: list[str],
                      unexpected: list[str], mismatched: list[str]) -> str:
    parts = []
    if mismatched:
        k = mismatched[0]
        parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: checkpoint "
                     f"{tuple(sd[k].shape)}, model {tuple(target[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    msg = f"{origin} does not fit {name}: " + "; ".join(parts)
    guess = _guess_conformer_variant(sd)
    if guess and guess != name:
        msg += f"; it looks like a {guess} checkpoint"
    return msg


def _guess_conformer_variant(sd: Mapping) -> str | None:
    try:
        patch = int(sd["trans_patch_conv.weight"].shape[-1]) * 4
        embed = int(sd["cls_token"].shape[-1])
        ratio = int(sd["conv_1.conv3.weight"].shape[0]) / 64
    except (KeyError, IndexError):
        return None
    for variant, args in CONFORMER_VARIANTS.items():
        if (args["patch_size"], args["embed_dim"], args["channel_ratio"]) == (patch, embed, ratio):
            return variant
    return None
