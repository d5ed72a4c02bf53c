"""The engine: one forward pass with recorders on every tap, one ``autograd.grad`` per head."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..devices import resolve_dtype
from ..names import HEADS
from ..registry import REGISTRY, SIDE_KEYS, check_options
from .arguments import ArgumentChecks, _display_image, _rollout_options, _with_option
from .caveats import SignedTapWarning, signed_tap_note, weights_warnings
from .main_pass import Context, compute_maps, plan_main_pass
from .methods.features import DEFAULT_REDUCE, check_reduce
from .methods.rollout import RolloutOptions
from .own_pass import OwnPassRun, check_composite, run_own_passes
from .result import Explanation, normalise_per_image, parse_key, upsample_grid
from .taps import ModelAdapter, Tap, adapter_for, check_tap_kind

__all__ = ["Explainer"]

HEAD_NAMES = HEADS


class Explainer(ArgumentChecks):
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
        return tuple(m for m, s in REGISTRY.items() if s.applies_to(self.family, self.branches))

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
        lrp_composite: str | None = None,
        method_options: Mapping[str, Mapping[str, Any]] | None = None,
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
            methods: Names from :data:`conformer_xai.names.METHODS` (one
                :class:`~conformer_xai.registry.MethodSpec` each in the method registry; the
                README lists them). Default: the registry's default set, features, attention,
                gradcam, rollout, grad_rollout (those that apply to the model). ``lrp`` and
                ``attnlrp`` run one modified backward per head in a pass of their own;
                ``integrated_gradients`` and ``smoothgrad`` run 50 passes each by default
                (:mod:`conformer_xai.explain.own_pass`). When only such methods are asked
                for, there is no main pass: the logits and the target come from their pass.
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
                layers whose input is non-negative, the bounded rule at the input layer); the
                same as ``method_options={"lrp": {"composite": ...}}`` for both variants.
            method_options: Options of the methods, ``method -> {option: value}``, as their
                specs declare them: ``integrated_gradients``: ``steps`` (int >= 1, default 50);
                ``smoothgrad``: ``samples`` (int >= 1, default 50) and ``noise`` (> 0, default
                0.15 of the value range); ``lrp`` / ``attnlrp``: ``composite``. The values used
                for the run's methods go to ``meta["method_options"]``.

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
        if lrp_composite is not None:
            check_composite(lrp_composite)
            method_options = _with_option("composite", lrp_composite, method_options)
        options = check_options(method_options)
        check_tap_kind(tap)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 0:
            raise ValueError(f"channels must be an int >= 0, got {channels!r}")
        autocast_dtype = resolve_dtype(autocast_dtype)
        if meta is not None and not isinstance(meta, Mapping):
            raise ValueError(f"meta must be a mapping (dict), got {type(meta).__name__}")
        img = None if image is None else _display_image(image)

        specs = [REGISTRY[m] for m in methods]
        main_specs = [s for s in specs if not s.own_pass]
        own_specs = [s for s in specs if s.own_pass]
        height, width = x.shape[-2:]
        raw: dict[str, torch.Tensor] = {}
        maps: dict[str, torch.Tensor] = {}
        geometry: dict[str, Any] = {}
        side_meta: dict[str, Any] = {}
        plan = plan_main_pass(self, main_specs, block_map, tap)
        target_t = None
        if main_specs:
            logits, target_t = plan.run(self, x, target, heads, autocast_dtype)
            ctx = Context(self, plan, heads, target_t, height, width, {"reduce": reduce},
                          channels, attn_heads, rollout_options, options)
            raw, maps, geometry = self._finish(compute_maps(ctx), height, width, upsample)
            side_meta = ctx.meta
        flows, own_meta = {}, {}
        if own_specs:
            # without a main pass, the first own pass's forward gives the logits and the target
            run = OwnPassRun(self, x, heads, block_map, requested=target, target=target_t)
            own_raw, own_maps, flows, own_meta = run_own_passes(run, own_specs, options,
                                                                upsample)
            raw.update(own_raw)
            maps.update(own_maps)
            geometry.update(own_meta.pop("geometry"))
            if target_t is None:
                logits, target_t = run.logits, run.target
        caveat = signed_tap_note(methods, [b for b, ks in block_map.items() if ks])
        if caveat:
            warnings.warn(caveat, SignedTapWarning, stacklevel=2)
        info = {"weights_source": getattr(self.model, "weights_source", None),
                "family": self.family, "reduce": reduce, "tap": tap, "geometry": geometry,
                "caveats": [caveat] if caveat else [],
                "warnings": weights_warnings(self._model_name(),
                                             getattr(self.model, "weights_source", None)),
                **side_meta,
                "num_blocks": {b: len(t) for b, t in self.adapter.taps.items()},
                "rollout_options": vars(rollout_options), "methods": list(methods),
                "attention_path": plan.attention_path,
                "method_options": {s.name: options[s.name] for s in specs if s.options}}
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
            if not upsample or info["method"] in SIDE_KEYS:
                continue
            maps[key] = normalise_per_image(upsample_grid(r, (height, width), stride,
                                                          uncovered=uncovered))
        return cropped, maps, geometry

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
