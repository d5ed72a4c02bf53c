"""The engine: one forward pass with recorders on every tap, one ``autograd.grad`` per head."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import model_in_chans
from ..devices import resolve_dtype
from ..errors import Setting, SettingError
from .attention_capture import attention_from_qkv, attention_grad, supports_recompute
from .caveats import SignedTapWarning, signed_tap_note, weights_warnings
from .methods import CAM_METHODS, DEFAULT_METHODS, METHODS, class_token_attention, eigencam
from .methods.features import DEFAULT_REDUCE, check_reduce, reduce_channels, top_channels
from .methods.rollout import RolloutOptions, attention_rollout, gradient_rollout
from .methods.transcam import transcam
from .own_pass import check_composite, run_own_passes
from .result import Explanation, normalise_per_image, parse_key, upsample_grid
from .taps import ModelAdapter, Tap, adapter_for, check_tap_kind

__all__ = ["Explainer"]

HEAD_NAMES = ("fused", "cnn", "transformer")


class Explainer:
    """Explains a Conformer, a timm ResNet or a timm ViT/DeiT: every map from one forward pass.

    Hooks live only for the duration of :meth:`explain` (removed in ``finally``); used as a context
    manager the explainer also removes any hook left by the interop helpers on exit.

    Args:
        model: The model (its ``forward`` returns logits).
        class_names: Optional class names, stored on each :class:`Explanation`.

    Example:
        >>> with Explainer(model) as explainer:                      # doctest: +SKIP
        ...     exp = explainer.explain(x, head=("cnn", "transformer"))
        >>> exp.get("gradcam", "transformer", 12, head="cnn")         # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str] | None = None) -> None:
        self.model = model
        self.adapter: ModelAdapter = adapter_for(model)
        self.class_names = list(class_names) if class_names is not None else None

    # ------------------------------------------------------------------ context management
    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook this explainer still holds (the interop helpers' included)."""
        self.adapter.remove_hooks()

    # ------------------------------------------------------------------ description
    @property
    def family(self) -> str:
        """"conformer", "resnet" or "vit"."""
        return self.adapter.family

    @property
    def branches(self) -> tuple[str, ...]:
        """Branches of the model ("cnn", "transformer" or both)."""
        return self.adapter.branches

    @property
    def heads(self) -> tuple[str, ...]:
        """Classifier heads: ("fused", "cnn", "transformer") for Conformer, else the only one."""
        return self.adapter.heads

    @property
    def default_head(self) -> str:
        return "fused" if "fused" in self.heads else self.heads[0]

    def num_blocks(self, branch: str) -> int:
        """Number of blocks of a branch."""
        self._check_branch(branch)
        return len(self.adapter.taps[branch])

    def applicable_methods(self) -> tuple[str, ...]:
        """Methods this model supports."""
        has_trans = "transformer" in self.branches
        return tuple(m for m, s in METHODS.items() if (has_trans or not s.transformer_only)
                     and (not s.families or self.family in s.families))

    # ------------------------------------------------------------------ the engine
    def explain(
        self,
        x: torch.Tensor,
        target: int | Sequence[int] | torch.Tensor | None = None,
        head: str | Sequence[str] | None = None,
        methods: Sequence[str] | str | None = None,
        blocks: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        reduce: str | int = DEFAULT_REDUCE,
        tap: str = "residual",
        rollout_options: RolloutOptions | Mapping[str, Any] | None = None,
        attn_heads: bool = False,
        channels: int = 0,
        autocast_dtype: torch.dtype | None = None,
        image: torch.Tensor | np.ndarray | None = None,
        meta: Mapping[str, Any] | None = None,
        upsample: bool = True,
        lrp_composite: str = "epsilon",
    ) -> Explanation:
        """Compute every requested map for a batch in one forward pass.

        The attention methods keep the model's fused attention kernel: the probabilities and
        their gradients are recomputed from each block's ``qkv`` output and the gradient at its
        ``proj`` input (``meta["attention_path"]`` says so; attention modules of unknown form
        fall back to the explicit path).

        Args:
            x: Normalised input batch (B, C, H, W), floating point.
            target: Class per image; None = each image's top-1 class of the fused head (or of the
                only head); an int for all images; a sequence/tensor of B ints.
            head: Classifier head(s) for the gradient methods: "fused", "cnn", "transformer", or a
                sequence of them (they share the forward pass). Default: "fused", or the only head.
            methods: Subset of ``features, attention, gradcam, gradcam++, layercam, hirescam,
                eigencam, rollout, grad_rollout, transcam, lrp, attnlrp, integrated_gradients,
                smoothgrad``. Default: features, attention, gradcam, rollout, grad_rollout (those
                that apply to the model). ``lrp`` and ``attnlrp`` run one modified backward per
                head in a pass of their own; ``integrated_gradients`` and ``smoothgrad`` run
                about 50 passes each (:mod:`conformer_xai.explain.own_pass`).
            blocks: 1-based blocks for the per-block methods (the same for every branch, or a
                mapping branch -> blocks); None = all.
            reduce: Channel reduction of "features": "mean", "abs_mean", "l2", "max", "pca"
                (first principal component, sign fixed) or a channel index.
            tap: Where the gradient methods read a transformer block: "residual" (default; the
                block's output tokens, and at the last block the block's input, whose output
                patch tokens get no gradient) or "attention_input" (the block's ``norm1``
                output). CNN taps are the same for both. ``meta["tap"]`` records it.
            rollout_options: :class:`RolloutOptions` or a dict with ``head_fusion``,
                ``discard_ratio``, ``start_block``.
            attn_heads: Also keep every attention head's class-token row as
                ``raw["attention_heads/transformer/<k>"]`` (B, A, h, w).
            channels: With "features", also keep the ``channels`` single-channel maps of each
                block chosen by :func:`~conformer_xai.explain.methods.features.top_channels`
                (largest spatial standard deviation, per image) as
                ``raw["feature_channels/<branch>/<k>"]`` (B, channels, h, w); their channel
                indices go to ``meta["feature_channels"]``. What the paper-style figure shows.
            autocast_dtype: Run forward and backward under autocast (e.g. ``torch.bfloat16``);
                maps are computed in float32.
            image: Optional display image(s) stored on the result for plotting.
            meta: Extra metadata stored on the result.
            upsample: Compute ``maps`` (upsampled, normalised); False leaves ``maps`` empty and
                returns only ``raw`` (what batch runs that store grids need).
            lrp_composite: Rules of ``lrp`` / ``attnlrp`` on conv layers, in zennit's terms:
                "epsilon" (everywhere; the default) or "epsilon_gamma_box" (gamma 0.25 on conv
                layers whose input is non-negative, the bounded rule at the input layer).

        Returns:
            An :class:`Explanation`.

        Raises:
            ValueError: Bad input, target, method, head or block (the message names the accepted
                values).
        """
        self._check_input(x)
        heads = self._resolve_heads(head)
        methods = self._resolve_methods(methods)
        block_map = self._resolve_blocks(blocks, methods)
        rollout_options = _rollout_options(rollout_options)
        check_reduce(reduce)
        check_composite(lrp_composite)
        check_tap_kind(tap)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
            raise ValueError(f"channels must be an int >= 0, got {channels!r}")
        autocast_dtype = resolve_dtype(autocast_dtype)
        if meta is not None and not isinstance(meta, Mapping):
            raise ValueError(f"meta must be a mapping (dict), got {type(meta).__name__}")
        img = None if image is None else _display_image(image)

        specs = [METHODS[m] for m in methods]
        need_grads = any(s.needs_gradients for s in specs)
        need_attention = any(s.needs_attention for s in specs)
        feature_methods = [m for m in methods if m in ("features", "eigencam")]
        cam_methods = [m for m in methods if m in CAM_METHODS]

        recorded: dict[Any, torch.Tensor] = {}
        wanted: dict[Any, nn.Module] = {}
        wanted_inputs: dict[Any, nn.Module] = {}
        grad_keys: dict[tuple[str, int], Any] = {}
        for branch, ks in block_map.items():
            for k in ks:
                t = self.adapter.tap(branch, k)
                if feature_methods:
                    wanted[id(t.feature_module)] = t.feature_module
                if cam_methods:
                    module, reads_input = t.gradient_source(tap)
                    if reads_input:
                        grad_keys[branch, k] = ("input", id(module))
                        wanted_inputs[grad_keys[branch, k]] = module
                    else:
                        grad_keys[branch, k] = id(module)
                        wanted[id(module)] = module
        if "transcam" in methods:
            last_cnn = self.adapter.tap("cnn", self.num_blocks("cnn")).feature_module
            wanted[id(last_cnn)] = last_cnn
        attn_modules = self.adapter.attention_modules if need_attention else []
        # attention from the fused kernel's qkv (and proj input for its gradient) when the
        # module allows it; otherwise the explicit path's probabilities at attn_drop
        recompute = bool(attn_modules) and all(supports_recompute(a) for a in attn_modules)
        for attn in attn_modules:
            if recompute:
                wanted[id(attn.qkv)] = attn.qkv
                if "grad_rollout" in methods:
                    wanted_inputs[id(attn.proj)] = attn.proj
            else:
                wanted[id(attn.attn_drop)] = attn.attn_drop
        attn_grad_module = [a.proj if recompute else a.attn_drop for a in attn_modules]

        height, width = x.shape[-2:]
        with self._model_state(explicit_attention=need_attention and not recompute), \
                self._recording(wanted, recorded, wanted_inputs):
            x_in = x.detach().requires_grad_(need_grads)
            amp = (torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype
                   else contextlib.nullcontext())
            with torch.set_grad_enabled(need_grads), amp:
                logits = self.adapter.forward(x_in)
            target_t = self._resolve_target(target, logits, x.shape[0])
            grads: dict[str, dict[Any, torch.Tensor | None]] = {}
            if need_grads:
                grad_ids = list(grad_keys.values())
                if "grad_rollout" in methods:
                    grad_ids += [id(m) for m in attn_grad_module]
                grad_ids = list(dict.fromkeys(grad_ids))
                tensors = [recorded[i] for i in grad_ids]
                for n, h in enumerate(heads):
                    score = logits[h].float().gather(1, target_t[:, None]).sum()
                    with amp:
                        g = torch.autograd.grad(score, tensors, retain_graph=n < len(heads) - 1,
                                                allow_unused=True)
                    grads[h] = {i: (None if gi is None else gi.detach())
                                for i, gi in zip(grad_ids, g)}
            recorded = {i: t.detach() for i, t in recorded.items()}
            logits = {h: v.detach().float() for h, v in logits.items()}

        raw: dict[str, torch.Tensor] = {}
        chosen: dict[str, list[list[int]]] = {}
        grid = self._grid_fn(height, width)
        for branch, ks in block_map.items():
            for k in ks:
                t = self.adapter.tap(branch, k)
                if feature_methods:
                    act = grid(t, recorded[id(t.feature_module)]).float()
                    if "features" in methods:
                        raw[f"features/{branch}/{k}"] = reduce_channels(act, reduce)
                        if channels:
                            key = f"feature_channels/{branch}/{k}"
                            raw[key], chosen[key] = top_channels(act, channels)
                    if "eigencam" in methods:
                        raw[f"eigencam/{branch}/{k}"] = eigencam(act)
                for m in cam_methods:
                    act = grid(t, recorded[grad_keys[branch, k]]).float()
                    for h in heads:
                        g = grads[h].get(grad_keys[branch, k])
                        g = torch.zeros_like(act) if g is None else grid(t, g).float()
                        raw[f"{m}/{h}/{branch}/{k}"] = CAM_METHODS[m](act, g)
        if need_attention:
            if recompute:
                attns = [attention_from_qkv(a, recorded[id(a.qkv)]) for a in attn_modules]
            else:
                attns = [recorded[id(a.attn_drop)].float() for a in attn_modules]
            npt = self.adapter.num_prefix_tokens

            def to_grid(v: torch.Tensor, block: int = 1) -> torch.Tensor:
                # each block's own token grid; rollouts end on the first block's grid
                tap = self.adapter.tap("transformer", block)
                gh, gw = (tap.grid or self.adapter.token_grid)(height, width)
                return v.reshape(*v.shape[:-1], gh, gw)

            if "attention" in methods:
                for k in block_map.get("transformer", []):
                    a = attns[k - 1]
                    raw[f"attention/transformer/{k}"] = to_grid(class_token_attention(a, npt), k)
                    if attn_heads:
                        raw[f"attention_heads/transformer/{k}"] = to_grid(
                            class_token_attention(a, npt, fusion="none"), k)
            if "rollout" in methods:
                raw["rollout/transformer"] = to_grid(attention_rollout(attns, npt, rollout_options))
            if "grad_rollout" in methods:
                for h in heads:
                    g = [grads[h].get(id(m)) for m in attn_grad_module]
                    if recompute:
                        g = [None if gi is None else attention_grad(a, recorded[id(a.qkv)], gi)
                             for a, gi in zip(attn_modules, g)]
                    raw[f"grad_rollout/{h}/transformer"] = to_grid(gradient_rollout(attns, g, npt))
            if "transcam" in methods:
                if len({a.shape[-1] for a in attns}) > 1:
                    raise ValueError("transcam sums attention over blocks, which needs one token "
                                     "grid for every block; this input's grid changes between "
                                     "blocks (size_mismatch='resize'): use size_mismatch='pad' "
                                     "or an input whose sides are multiples of 32")
                head_weight = self.model.conv_cls_head.weight.detach()
                first = self.adapter.tap("transformer", 1)
                raw["transcam/cnn"] = transcam(recorded[id(last_cnn)], head_weight, target_t,
                                               attns, (first.grid or self.adapter.token_grid)(
                                                   height, width), npt)

        raw, maps, geometry = self._finish(raw, height, width, upsample)
        flows, own_meta = {}, {}
        if any(METHODS[m].own_pass for m in methods):
            own_raw, own_maps, flows, own_meta = run_own_passes(
                self, x, target_t, heads, methods, block_map, upsample, lrp_composite)
            raw.update(own_raw)
            maps.update(own_maps)
            geometry.update(own_meta.pop("geometry"))
        caveat = signed_tap_note(methods, [b for b, ks in block_map.items() if ks])
        if caveat:
            warnings.warn(caveat, SignedTapWarning, stacklevel=2)
        info = {"weights_source": getattr(self.model, "weights_source", None),
                "family": self.family, "reduce": reduce, "tap": tap, "geometry": geometry,
                "caveats": [caveat] if caveat else [],
                "warnings": weights_warnings(self._model_name(),
                                             getattr(self.model, "weights_source", None)),
                **({"feature_channels": chosen} if chosen else {}),
                "num_blocks": {b: len(t) for b, t in self.adapter.taps.items()},
                "rollout_options": vars(rollout_options), "methods": list(methods),
                "attention_path": None if not need_attention
                else ("fused, recomputed from qkv" if recompute else "explicit")}
        if getattr(self.model, "size_mismatch", None) is not None:
            info["size_mismatch"] = self.model.size_mismatch
        info.update(own_meta)
        info.update(meta or {})
        if not bool(torch.stack([torch.isfinite(v).all() for v in logits.values()]).all()):
            raise ValueError("the model's logits are NaN or infinite: check its weights "
                             "(a checkpoint holding NaN, say)")
        return Explanation(
            maps=maps, raw=raw, logits=logits, target=target_t.cpu(), heads=tuple(heads),
            input_size=(int(height), int(width)), model_name=self._model_name(),
            class_names=self.class_names, image=img, meta=info, flows=flows)

    def __call__(self, x: torch.Tensor, **kwargs: Any) -> Explanation:
        return self.explain(x, **kwargs)

    # ------------------------------------------------------------------ interop
    def head_fn(self, head: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function ``x -> logits of one head`` for captum's attribution classes."""
        from .interop import head_fn

        return head_fn(self.adapter, self._resolve_heads(head)[0])

    def head_module(self, head: str | None = None) -> nn.Module:
        """An ``nn.Module`` returning one head's logits (for pytorch-grad-cam)."""
        from .interop import HeadModule

        return HeadModule(self.adapter, self._resolve_heads(head)[0])

    def nchw_tap(self, branch: str, block: int, tap: str = "residual"):
        """Context manager giving a module whose output is the tap in NCHW form (for captum).

        Transformer taps are tokens; inside this context the tap's tokens (those :meth:`explain`
        reads with the same ``tap``) are passed through an identity module as a (B, D, h, w)
        map, so that captum's ``LayerGradCam`` (which reads dim 1 as channels) works on it. CNN
        taps are returned as they are.
        """
        from .interop import nchw_tap

        return nchw_tap(self.adapter, branch, block, tap)

    def pytorch_grad_cam(self, method_class: type, x: torch.Tensor, branch: str, block: int,
                         head: str | None = None, target: int | Sequence[int] | None = None,
                         tap: str = "residual", **cam_kwargs: Any) -> np.ndarray:
        """Run any pytorch-grad-cam method on one tap, head and target; returns (B, H, W).

        ``tap`` is :meth:`explain`'s (the same tensor the engine's gradient methods read).
        """
        from .interop import run_pytorch_grad_cam

        return run_pytorch_grad_cam(self.adapter, method_class, x, branch, block,
                                    self._resolve_heads(head)[0], target, tap=tap, **cam_kwargs)

    # ------------------------------------------------------------------ internals
    def _model_name(self) -> str:
        name = getattr(self.model, "model_name", None)
        if name:
            return str(name)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return str(cfg.get("architecture") or type(self.model).__name__)

    def _grid_fn(self, height: int, width: int) -> Callable[[Tap, torch.Tensor], torch.Tensor]:
        def grid(tap: Tap, value: torch.Tensor) -> torch.Tensor:
            if tap.tokens:
                return self.adapter.tokens_to_grid(value, height, width, tap)
            return value

        return grid

    def _finish(self, raw: dict[str, torch.Tensor], height: int, width: int,
                upsample: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                dict[str, dict[str, list[int]]]]:
        """Crop cells past the input, upsample each grid by its own stride, normalise per image.

        Returns the cropped raw grids, the maps and each key's geometry (``stride`` and
        ``grid``, see :func:`conformer_xai.explain.result.upsample_grid`). Where no cell covers
        an input pixel (a Conformer in ``size_mismatch="resize"`` mode, whose token grids floor)
        the map is NaN, never stretched over those pixels.
        """
        cropped, maps, geometry = {}, {}, {}
        uncovered = "nan" if self.adapter.uncovered_nan() else "edge"
        for key, r in raw.items():
            info = parse_key(key)
            stride = self.adapter.stride_of(info["branch"], info["block"])
            if stride is not None:
                vh = min(r.shape[-2], math.ceil(height / stride[0]))
                vw = min(r.shape[-1], math.ceil(width / stride[1]))
                r = r[..., :vh, :vw]
                geometry[key] = {"stride": list(stride), "grid": [vh, vw]}
            cropped[key] = r
            if not upsample or key.startswith(("attention_heads/", "feature_channels/")):
                continue
            maps[key] = normalise_per_image(upsample_grid(r, (height, width), stride,
                                                          uncovered=uncovered))
        return cropped, maps, geometry

    @contextlib.contextmanager
    def _recording(self, wanted: dict[Any, nn.Module], store: dict[Any, torch.Tensor],
                   wanted_inputs: dict[Any, nn.Module] | None = None) -> Iterator[None]:
        """Record the output of each module in ``wanted`` (the first input of each module in
        ``wanted_inputs``) into ``store`` under the given key."""
        handles = []

        def make_hook(key: Any):
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                store[key] = output[0] if isinstance(output, tuple) else output

            return hook

        def make_pre_hook(key: Any):
            def pre_hook(module: nn.Module, args: Any) -> None:
                store[key] = args[0]

            return pre_hook

        try:
            for key, module in wanted.items():
                handles.append(module.register_forward_hook(make_hook(key)))
            for key, module in (wanted_inputs or {}).items():
                handles.append(module.register_forward_pre_hook(make_pre_hook(key)))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def _model_state(self, explicit_attention: bool) -> Iterator[None]:
        """Eval mode, frozen parameters, explicit attention when needed; all restored after."""
        model = self.model
        # Only what differs is changed and restored: model.eval() / model.train() visit every
        # module (milliseconds per call on a Conformer, the batch-1 budget on a GPU).
        training = [m for m in model.modules() if m.training]
        unfrozen = [p for p in model.parameters() if p.requires_grad]
        attn_flags = [(a, a.fused_attn) for a in self.adapter.attention_modules]
        try:
            for m in training:
                m.training = False
            for p in unfrozen:
                p.requires_grad_(False)
            if explicit_attention:
                for a, _ in attn_flags:
                    a.fused_attn = False
            yield
        finally:
            for a, flag in attn_flags:
                a.fused_attn = flag
            for p in unfrozen:
                p.requires_grad_(True)
            for m in training:
                m.training = True

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
            raise ValueError(f"methods must name at least one of {', '.join(METHODS)}")
        for m in methods:
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; accepted: {', '.join(METHODS)}")
            if m not in applicable:
                raise ValueError(f"method {m!r} needs a transformer branch; a {self.family} model "
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
