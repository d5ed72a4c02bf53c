"""Sanity check: cascading model-parameter randomisation (Adebayo et al. 2018)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from ._tensors import as_maps, minmax
from .agreement import spearman, ssim

ExplainFn = Callable[[nn.Module, torch.Tensor, Any], torch.Tensor]
LayerSpec = str | tuple[str, Sequence[str]]


class RandomisationStep(NamedTuple):
    """Similarity after randomising every layer group up to and including ``layer``."""

    layer: str
    spearman: torch.Tensor
    ssim: torch.Tensor


def cascade_layers(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """The model's layer groups from the top (output) down, for cascading randomisation.

    For a Conformer: ``head`` (both classifiers and ``trans_norm``), ``block_12`` ...
    ``block_2`` (``conv_trans_k``), ``block_1`` (``conv_1``, ``trans_patch_conv``, ``trans_1``,
    ``cls_token``), ``stem``. For other models: the direct children in reverse registration order
    (which is the forward order in timm's models), with ``nn.Sequential``/``nn.ModuleList``
    containers split into their items and the model's own parameters (class token, position
    embedding) added to the bottom group; children without parameters are left out.

    Returns:
        ``[(label, (module or parameter name, ...)), ...]`` from the top.
    """
    if hasattr(model, "cnn_block_module") and hasattr(model, "conv_1"):
        depth = int(model.depth)
        groups: list[tuple[str, tuple[str, ...]]] = [
            ("head", ("conv_cls_head", "trans_cls_head", "trans_norm"))]
        groups += [(f"block_{k}", (f"conv_trans_{k}",)) for k in range(depth, 1, -1)]
        groups += [("block_1", ("conv_1", "trans_patch_conv", "trans_1", "cls_token")),
                   ("stem", ("conv1", "bn1"))]
        return groups
    items: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            items += [(f"{name}.{i}", m) for i, m in child.named_children()]
        else:
            items.append((name, child))
    groups = [(name, (name,)) for name, m in reversed(items)
              if any(True for _ in m.parameters())]
    own = tuple(name for name, _ in model.named_parameters(recurse=False))
    if own:
        if groups:
            label, names = groups[-1]
            groups[-1] = (label, names + own)
        else:
            groups.append(("parameters", own))
    return groups


def randomise_(model: nn.Module, names: Sequence[str]) -> None:
    """Re-initialise the named modules and parameters of ``model`` in place.

    Modules with ``reset_parameters`` (convolutions, linear layers, norms; batch-norm running
    statistics included) use their default initialisation; any other parameter is drawn from a
    truncated normal with std 0.02. Draws come from torch's global generator: seed it, or use
    :func:`randomised_copy`.
    """
    for name in names:
        target = _resolve(model, name)
        if isinstance(target, nn.Parameter):
            with torch.no_grad():
                nn.init.trunc_normal_(target, std=0.02)
            continue
        for module in target.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            with torch.no_grad():
                for p in module.parameters(recurse=False):
                    nn.init.trunc_normal_(p, std=0.02)


def randomised_copy(model: nn.Module, layers: Sequence[LayerSpec] | None = None,
                    seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with the given layer groups (default: all) re-initialised.

    The caller's model and torch's global random state are left untouched.
    """
    steps = resolve_layers(model, layers)
    clone = copy.deepcopy(model)
    with _seeded(clone, seed):
        for _, names in steps:
            randomise_(clone, names)
    return clone


def resolve_layers(model: nn.Module,
                   layers: Sequence[LayerSpec] | None) -> list[tuple[str, tuple[str, ...]]]:
    """Layer specs as ``(label, names)`` groups: a label of :func:`cascade_layers`, a module or
    parameter name, or an explicit ``(label, names)`` pair. ``None`` gives the whole cascade."""
    known = cascade_layers(model)
    if layers is None:
        return known
    if isinstance(layers, str):
        raise ValueError("layers must be a sequence of layer names, not one string")
    by_label = dict(known)
    steps = []
    for spec in layers:
        if isinstance(spec, str):
            names = by_label.get(spec, (spec,))
            label = spec
        else:
            label, names = spec[0], tuple(spec[1])
        for name in names:
            _resolve(model, name, known_labels=list(by_label))
        steps.append((label, tuple(names)))
    if not steps:
        raise ValueError("layers must name at least one layer")
    return steps


def randomisation_test(model: nn.Module, explain_fn: ExplainFn, x: torch.Tensor, target: Any,
                       layers: Sequence[LayerSpec] | None = None,
                       seed: int = 0) -> list[RandomisationStep]:
    """Cascading model-parameter randomisation test.

    Adebayo et al. 2018, "Sanity Checks for Saliency Maps" (NeurIPS), section 3.1: re-initialise
    the layers cumulatively from the top (the head first, then the last block, and so on down)
    and compare each map with the map of the trained model. A method whose maps stay similar as
    the weights are destroyed does not depend on what the model learnt. Similarity is the
    Spearman rank correlation of the maps and their SSIM after min-max scaling each map to
    [0, 1] (``data_range=1``).

    The caller's model is never modified: the cascade runs on one deep copy, under a seeded,
    forked random state.

    Args:
        model: The trained model.
        explain_fn: ``explain_fn(model, x, target) -> maps (B, H, W)``.
        x: Input batch (B, C, H, W).
        target: Passed through to ``explain_fn``.
        layers: Cascade order (default :func:`cascade_layers`): labels such as ``"head"``,
            ``"block_12"``, module or parameter names, or ``(label, names)`` pairs.
        seed: Seed of the re-initialisation.

    Returns:
        One :class:`RandomisationStep` per layer group, each with tensors (B,).
    """
    steps = resolve_layers(model, layers)
    original, _ = as_maps(explain_fn(model, x, target), "explain_fn's output")
    original_01 = minmax(original)
    clone = copy.deepcopy(model)
    results = []
    with _seeded(clone, seed):
        for label, names in steps:
            randomise_(clone, names)
            maps, _ = as_maps(explain_fn(clone, x, target), "explain_fn's output")
            if maps.shape != original.shape:
                raise ValueError(f"explain_fn returned {tuple(maps.shape)} after randomising "
                                 f"{label}, {tuple(original.shape)} before")
            results.append(RandomisationStep(label, spearman(original, maps),
                                             ssim(original_01, minmax(maps))))
    return results


def _resolve(model: nn.Module, name: str,
             known_labels: list[str] | None = None) -> nn.Module | nn.Parameter:
    try:
        return model.get_submodule(name)
    except AttributeError:
        pass
    try:
        return model.get_parameter(name)
    except AttributeError:
        labels = known_labels if known_labels is not None else [
            label for label, _ in cascade_layers(model)]
        raise ValueError(f"unknown layer {name!r}: use one of {labels} or a module or "
                         f"parameter name of the model") from None


@contextlib.contextmanager
def _seeded(model: nn.Module, seed: int) -> Iterator[None]:
    """Fork torch's random state on the model's devices and seed it."""
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
