"""What :meth:`Explainer.explain` accepts: input, heads, methods, blocks, target and options are
checked here, each error naming the accepted values."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..channels import model_in_chans
from ..errors import Setting, SettingError
from ..registry import REGISTRY
from .methods import DEFAULT_METHODS
from .methods.rollout import RolloutOptions

__all__ = ["ArgumentChecks"]


class ArgumentChecks:
    """The explainer's argument checks (a mixin: reads ``model``, ``adapter``, ``family``,
    ``branches``, ``heads``, ``default_head`` and ``applicable_methods``)."""

    def _check_input(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(f"x must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating-point normalised batch, got dtype {x.dtype}; "
                             "use conformer_xai.load_image or the model's data config")
        if x.shape[0] == 0:
            raise ValueError("x is an empty batch (B = 0)")
        param = next(self.model.parameters(), None)
        if param is not None and x.dtype != param.dtype:
            raise ValueError(f"x is {x.dtype} but the model's parameters are {param.dtype}; "
                             f"pass x.to({param.dtype}) (for mixed precision use autocast_dtype)")
        expected = model_in_chans(self.model)
        mono_ok = self.family == "conformer" and expected == 3 and x.shape[1] == 1
        if expected is not None and x.shape[1] != expected and not mono_ok:
            also = " (or 1, repeated over 3)" if self.family == "conformer" and expected == 3 else ""
            raise ValueError(f"x has {x.shape[1]} channels; the model expects {expected}{also}")
        if x.shape[-2] < 32 or x.shape[-1] < 32:
            raise SettingError("{x} height and width must be >= 32, got "
                               f"{tuple(x.shape[-2:])}", x=Setting("x"))
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite pixels")

    def _check_branch(self, branch: str) -> None:
        if branch not in self.branches:
            raise ValueError(f"unknown branch {branch!r}; accepted: {', '.join(self.branches)}")

    def _resolve_heads(self, head: str | Sequence[str] | None) -> list[str]:
        if head is None:
            return [self.default_head]
        heads = [head] if isinstance(head, str) else list(head)
        if not heads:
            raise ValueError(f"head must name at least one of {', '.join(self.heads)}")
        for h in heads:
            if h not in self.heads:
                raise ValueError(f"unknown head {h!r} for a {self.family} model; accepted: "
                                 f"{', '.join(self.heads)}")
        return list(dict.fromkeys(heads))

    def _resolve_methods(self, methods: Sequence[str] | str | None) -> list[str]:
        applicable = self.applicable_methods()
        if methods is None:
            return [m for m in DEFAULT_METHODS if m in applicable]
        methods = [methods] if isinstance(methods, str) else list(methods)
        if not methods:
            raise ValueError(f"methods must name at least one of {', '.join(REGISTRY)}")
        for m in methods:
            if m not in REGISTRY:
                raise ValueError(f"unknown method {m!r}; accepted: {', '.join(REGISTRY)}")
            if m not in applicable:
                spec = REGISTRY[m]
                needs = (f"a {' or '.join(spec.branches)} branch"
                         if not set(spec.branches) & set(self.branches)
                         else f"a {' or '.join(spec.families)} model")
                raise ValueError(f"method {m!r} needs {needs}; a {self.family} model "
                                 f"accepts: {', '.join(applicable)}")
        return list(dict.fromkeys(methods))

    def _resolve_blocks(self, blocks: Sequence[int] | Mapping[str, Sequence[int]] | None,
                        methods: Sequence[str]) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for branch in self.branches:
            n = len(self.adapter.taps[branch])
            if blocks is None:
                ks = list(range(1, n + 1))
            elif isinstance(blocks, Mapping):
                unknown = set(blocks) - set(self.branches)
                if unknown:
                    raise ValueError(f"unknown branch {sorted(unknown)[0]!r} in blocks; accepted: "
                                     f"{', '.join(self.branches)}")
                ks = list(blocks.get(branch, []))
            elif isinstance(blocks, (str, bytes)):
                raise ValueError(f"blocks must be ints (1-based), not the string {blocks!r}")
            else:
                ks = [blocks] if isinstance(blocks, (int, np.integer)) else list(blocks)
                if not ks:
                    raise ValueError("blocks is empty; name at least one block, or None for all")
            for k in ks:
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
                    raise ValueError(f"block {k!r} out of range for the {branch} branch; "
                                     f"accepted: 1..{n}")
            out[branch] = sorted({int(k) for k in ks})
        return out

    def _resolve_target(self, target: Any, logits: dict[str, torch.Tensor],
                        batch: int) -> torch.Tensor:
        first = logits[self.default_head]
        num_classes = first.shape[-1]
        device = first.device
        if target is None:
            return first.detach().argmax(dim=-1)
        expected = f"target must be None, a class index or {batch} class indices"
        if isinstance(target, (int, np.integer)) and not isinstance(target, (bool, np.bool_)):
            t = torch.full((batch,), int(target), dtype=torch.long, device=device)
        else:
            try:
                values = torch.as_tensor(target)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"{expected}, got {target!r}") from err
            if values.dtype == torch.bool or values.is_floating_point() or values.is_complex():
                raise ValueError(f"{expected} (integers), got {target!r}")
            if values.ndim > 1:
                raise ValueError(f"{expected} (one dimension), got shape {tuple(values.shape)}")
            t = values.to(device=device, dtype=torch.long).flatten()
            if t.numel() != batch:
                raise ValueError(f"target has {t.numel()} entries for a batch of {batch}")
        if (t < 0).any() or (t >= num_classes).any():
            raise ValueError(f"target {t.tolist()} out of range; accepted: 0..{num_classes - 1}")
        return t


def _with_option(option: str, value: Any, given: Mapping[str, Mapping[str, Any]] | None
                 ) -> Any:
    """``given`` with ``value`` as the default of ``option`` for every method that has it (what
    is not a mapping is left for :func:`conformer_xai.registry.check_options` to report)."""
    if given is not None and not isinstance(given, Mapping):
        return given
    out: dict[str, Any] = dict(given or {})
    for m, spec in REGISTRY.items():
        if option in spec.options and isinstance(out.get(m, {}), Mapping):
            out[m] = {option: value, **out.get(m, {})}
    return out


def _rollout_options(options: RolloutOptions | Mapping[str, Any] | None) -> RolloutOptions:
    if isinstance(options, RolloutOptions):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise ValueError(f"rollout_options must be a RolloutOptions or a dict, "
                         f"got {type(options).__name__}")
    accepted = [f.name for f in dataclasses.fields(RolloutOptions)]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise ValueError(f"unknown rollout option {unknown[0]!r}; accepted: {', '.join(accepted)}")
    return RolloutOptions(**dict(options or {}))


def _display_image(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    try:
        array = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    except (TypeError, ValueError) as err:
        raise ValueError(f"image must be an array (B, H, W, C) in [0, 1], got {image!r}") from err
    if array.dtype.kind not in "uif" or array.ndim not in (3, 4):
        raise ValueError(f"image must be a numeric array (H, W, C) or (B, H, W, C), "
                         f"got {array.dtype} with shape {array.shape}")
    return torch.as_tensor(array)

