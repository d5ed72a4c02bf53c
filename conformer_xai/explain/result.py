"""The result of one explanation call: maps at input resolution, raw grids, logits, targets."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Setting, SettingExistsError
from ..files import atomic_write, atomic_write_text, jsonable
from ..registry import REGISTRY, SIDE_KEYS, head_for, parse_key

__all__ = ["Explanation", "parse_key", "normalise_per_image", "is_constant",
           "upsample_grid"]

#: The ``format`` field of the JSON sidecar :meth:`Explanation.save` writes.
SAVE_FORMAT = "conformer-xai explanation v1"
#: Methods whose keys carry no classifier head: <method>/<branch>[/<k>] (from the registry).
HEADLESS_METHODS = (*(m for m, s in REGISTRY.items() if not s.per_head), *SIDE_KEYS)
#: Methods with an input-resolution map per head: <method>/<head> (and, for LRP, per-tap maps
#: <method>/<head>/<branch>/<k>).
INPUT_METHODS = tuple(m for m, s in REGISTRY.items() if s.input_map)


def _range(flat: torch.Tensor, rtol: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lo, span, varies)`` per row of (B, N) maps, NaN entries ignored: a row varies when
    its span is non-zero relative to its magnitude (``span > rtol * max|map|``)."""
    nan = torch.isnan(flat)
    lo = flat.masked_fill(nan, float("inf")).min(dim=1, keepdim=True).values
    hi = flat.masked_fill(nan, float("-inf")).max(dim=1, keepdim=True).values
    finite = torch.isfinite(lo) & torch.isfinite(hi)  # False for an all-NaN row
    lo, hi = torch.where(finite, lo, 0.0), torch.where(finite, hi, 0.0)
    span = hi - lo
    varies = finite & (span > rtol * torch.maximum(hi.abs(), lo.abs())) & (span > 0)
    return lo, span, varies


def normalise_per_image(maps: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """Min-max normalise each (H, W) map of a (B, H, W) batch to [0, 1]; constant maps become 0.

    Scale-free: a map is constant only when its span is zero relative to its magnitude
    (``span <= rtol * max|map|``, which includes an all-zero map), so that multiplying a model's
    logits (or a map) by any positive factor leaves the normalised map unchanged (within float32
    range). ``rtol`` sits above float32 rounding, so a map that is constant up to rounding stays
    constant. NaN pixels (input no grid cell covers) are ignored and stay NaN.
    """
    flat = maps.flatten(1).float()
    lo, span, varies = _range(flat, rtol)
    out = torch.where(varies, (flat - lo) / torch.where(varies, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.masked_fill(torch.isnan(flat), float("nan")).view_as(maps)


def is_constant(maps: torch.Tensor, rtol: float = 1e-6) -> torch.Tensor:
    """(B,) bool: which maps of a (B, ...) batch are constant in :func:`normalise_per_image`'s
    sense (span zero relative to magnitude; NaN pixels ignored, an all-NaN map is constant)."""
    return ~_range(maps.flatten(1).float(), rtol)[2][:, 0]


def upsample_grid(raw: torch.Tensor, size: tuple[int, int],
                  stride: tuple[int, int] | Sequence[int] | None,
                  uncovered: str = "edge") -> torch.Tensor:
    """Upsample (B, h, w) grids to the input ``size`` (H, W) by the grid's own stride.

    Cell ``i`` covers input rows ``[i * stride, (i + 1) * stride)`` (its centre at
    ``(i + 0.5) * stride``): the grid is upsampled bilinearly (align_corners=False) to
    ``(h * stride_h, w * stride_w)``, then cropped to ``size``; input rows past the last cell
    (a ViT whose patches do not tile the input) repeat the edge, or are NaN with
    ``uncovered="nan"`` (a Conformer in ``size_mismatch="resize"`` mode, where no token covers
    them). ``stride=None`` resizes the
    grid to ``size`` (the convention of pytorch-grad-cam). The stride and grid of every map are
    in ``Explanation.meta["geometry"]`` and in a dataset store's attributes.
    """
    if stride is None:
        up = F.interpolate(raw[:, None].float(), size=tuple(size), mode="bilinear",
                           align_corners=False)
        return up[:, 0]
    height, width = size
    gh, gw = raw.shape[-2:]
    up = F.interpolate(raw[:, None].float(), size=(gh * int(stride[0]), gw * int(stride[1])),
                       mode="bilinear", align_corners=False)[:, :, :height, :width]
    pad_h, pad_w = height - up.shape[-2], width - up.shape[-1]
    if pad_h > 0 or pad_w > 0:
        pad = (0, max(pad_w, 0), 0, max(pad_h, 0))
        up = (F.pad(up, pad, value=float("nan")) if uncovered == "nan"
              else F.pad(up, pad, mode="replicate"))
    return up[:, 0]


@dataclass
class Explanation:
    """Every map from one forward pass, for a batch of B images.

    Attributes:
        maps: ``key -> (B, H, W)`` float tensors at input resolution, min-max normalised per image.
        raw: The same keys at grid resolution, before upsampling and normalisation (gradient
            methods after their ReLU; features keep their sign; ``attention_heads/<branch>/<k>``
            keys have an extra attention-head axis).
        logits: ``head -> (B, num_classes)`` logits of every classifier head of the model.
        target: ``(B,)`` class explained for each image.
        heads: The classifier heads the gradient methods were computed for.
        input_size: ``(H, W)`` of the model input.
        model_name: Registered name of the model (or its class name).
        class_names: Optional class names, indexable by class index.
        image: Optional ``(B, H, W, C)`` display image in [0, 1] (what the model saw).
        meta: Metadata: weights source and options, ``tap`` (where transformer gradient maps
            read), and ``geometry``: ``key -> {"stride": [sh, sw], "grid": [h, w]}``, the input
            pixels per cell of each raw grid (pass it to :func:`upsample_grid`).
        flows: ``head -> rows`` of the Conformer's branch-flow table when ``lrp`` was computed:
            one row per block with the fields of :data:`conformer_xai.explain.lrp.FLOW_FIELDS`,
            each value a list with one float per image (``block`` an int).
    """

    maps: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    target: torch.Tensor
    heads: tuple[str, ...] = ()
    input_size: tuple[int, int] = (0, 0)
    model_name: str = ""
    class_names: list[str] | None = None
    image: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    flows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.target.shape[0])

    def __iter__(self) -> Iterator[str]:
        return iter(self.maps)

    def keys(self) -> list[str]:
        """All map keys, in the order they were computed."""
        return list(self.maps)

    @property
    def probs(self) -> dict[str, torch.Tensor]:
        """Softmax probabilities per classifier head."""
        return {h: v.float().softmax(dim=-1) for h, v in self.logits.items()}

    @property
    def methods(self) -> list[str]:
        """Methods present, in order of appearance."""
        return list(dict.fromkeys(parse_key(k)["method"] for k in self.maps))

    def find(self, method: str, branch: str | None = None, block: int | None = None,
             head: str | None = None) -> list[str]:
        """Keys matching the given parts (None matches anything)."""
        out = []
        for key in self.maps:
            p = parse_key(key)
            if p["method"] != method:
                continue
            if branch is not None and p["branch"] != branch:
                continue
            if block is not None and p["block"] != block:
                continue
            if head is not None and p["head"] is not None and p["head"] != head:
                continue
            out.append(key)
        return out

    def blocks(self, method: str, branch: str, head: str | None = None) -> list[int]:
        """Blocks (1-based) available for a method and branch."""
        return sorted({parse_key(k)["block"] for k in self.find(method, branch, None, head)
                       if parse_key(k)["block"] is not None})

    def get(self, method: str, branch: str | None = None, block: int | None = None,
            head: str | None = None, raw: bool = False) -> torch.Tensor:
        """One map ``(B, H, W)`` (or its raw grid with ``raw=True``).

        Args:
            method: e.g. "gradcam", "features", "rollout".
            branch: "cnn" or "transformer"; may be omitted when only one matches, or to get the
                input-resolution map of ``lrp``, ``attnlrp``, ``integrated_gradients`` or
                ``smoothgrad``.
            block: 1-based block; may be omitted when only one matches.
            head: Classifier head for gradient methods; defaults to the first explained head.

        Raises:
            KeyError: No map or several maps match; the message lists what is available.
        """
        head = head_for(method, head, self.heads)
        keys = self.find(method, branch, block, head)
        if len(keys) > 1 and branch is None and block is None:
            # the input-resolution map of a method that also has per-tap maps (lrp/<head>)
            keys = [k for k in keys if parse_key(k)["branch"] is None] or keys
        if len(keys) != 1:
            what = "no map" if not keys else f"{len(keys)} maps"
            avail = ", ".join(self.find(method)) or ", ".join(self.maps)
            raise KeyError(f"{what} for method={method!r} branch={branch!r} block={block!r} "
                           f"head={head!r}; available: {avail}")
        return (self.raw if raw else self.maps)[keys[0]]

    def unfolded(self, method: str, branch: str | None = None, block: int | None = None,
                 head: str | None = None) -> torch.Tensor:
        """One map ``(B, n_mels, frames)`` on the (mel band, frame) plane of an audio input.

        Unfolds the folded image with ``meta["fold"]`` (recorded by the CLI, or stored from
        ``conformer_xai.load_audio(..., with_meta=True)``): row ``r * n_mels + f`` and column
        ``t`` of the map hold band ``f`` of frame ``r * W + t``. Arguments as :meth:`get`.

        Raises:
            ValueError: The explanation records no fold (not an audio input).
        """
        fold = self.meta.get("fold")
        if not fold:
            raise ValueError("this explanation records no fold in meta['fold'] (not an audio "
                             "input); store load_audio(..., with_meta=True)'s meta in it")
        from ..audio import unfold

        return unfold(self.get(method, branch, block, head), fold["n_mels"],
                      fold["freq_ratio"], fold.get("frames"))

    def top_classes(self, head: str | None = None, k: int = 5) -> list[list[tuple[int, float]]]:
        """Top-k (class index, probability) per image for a head (default: the first logits)."""
        head = head or next(iter(self.logits))
        p, i = self.probs[head].topk(min(k, self.logits[head].shape[-1]), dim=-1)
        return [list(zip(ii.tolist(), pp.tolist())) for ii, pp in zip(i, p)]

    def predictions(self, k: int = 5, index: int = 0) -> dict[str, list[dict[str, Any]]]:
        """Top-``k`` predictions of image ``index`` per head: ``{head: [{"index", "name",
        "prob"}, ...]}``, most probable first (probabilities rounded to 6 digits)."""
        return {head: [{"index": i, "name": self.class_name(i), "prob": round(p, 6)}
                       for i, p in self.top_classes(head, k=k)[index]]
                for head in self.logits}

    def class_name(self, index: int) -> str:
        """Name of a class index (the index itself when no names are known)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def select(self, i: int) -> Explanation:
        """The explanation of image ``i`` alone (a batch of one); negative ``i`` counts back.

        Raises:
            ValueError: ``i`` is not an image of the batch.
        """
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise ValueError(f"image {i!r} out of range for a batch of {n}; accepted: "
                             f"0..{n - 1} (or -{n}..-1)")
        i = int(i) % n
        sl = slice(i, i + 1)
        return Explanation(
            maps={k: v[sl] for k, v in self.maps.items()},
            raw={k: v[sl] for k, v in self.raw.items()},
            logits={k: v[sl] for k, v in self.logits.items()},
            target=self.target[sl], heads=self.heads, input_size=self.input_size,
            model_name=self.model_name, class_names=self.class_names,
            image=None if self.image is None else self.image[sl], meta=dict(self.meta),
            flows={h: [{f: v if f == "block" else v[sl] for f, v in row.items()} for row in rows]
                   for h, rows in self.flows.items()})

    # ------------------------------------------------------------------ conversion and I/O
    def to_numpy(self) -> dict[str, np.ndarray]:
        """All maps as numpy arrays, plus ``raw/<key>``, ``logits/<head>`` and ``target``."""
        out = {k: v.detach().cpu().numpy() for k, v in self.maps.items()}
        out.update({f"raw/{k}": v.detach().cpu().numpy() for k, v in self.raw.items()})
        out.update({f"logits/{h}": v.detach().cpu().float().numpy()
                    for h, v in self.logits.items()})
        out["target"] = self.target.detach().cpu().numpy()
        if self.image is not None:
            out["image"] = self.image.detach().cpu().float().numpy()
        return out

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path`` (.npz with every array) and a JSON sidecar with the metadata.

        Raises:
            FileExistsError: The file exists and ``overwrite`` is False.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        sidecar = path.with_suffix(".json")
        existing = [p for p in (path, sidecar) if p.exists()]
        if not overwrite and existing:
            raise SettingExistsError(f"{existing[0]} exists; pass " "{overwrite} to replace it",
                                     overwrite=Setting("overwrite", True))
        arrays = self.to_numpy()

        def write_arrays(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: numpy adds no second suffix
                np.savez_compressed(f, **arrays)

        atomic_write(path, write_arrays)
        atomic_write_text(sidecar, json.dumps({
            "format": SAVE_FORMAT,
            "heads": list(self.heads), "input_size": list(self.input_size),
            "model_name": self.model_name, "class_names": self.class_names,
            "map_keys": list(self.maps), "raw_keys": list(self.raw),
            "logit_heads": list(self.logits), "meta": jsonable(self.meta),
            "flows": jsonable(self.flows),
        }, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Explanation:
        """Read an explanation written by :meth:`save`."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        sidecar = path.with_suffix(".json")
        for p in (path, sidecar):
            if not p.is_file():
                raise FileNotFoundError(f"no explanation at {path}: {p} is missing")
        try:
            meta = json.loads(sidecar.read_text())
            if meta.get("format") != SAVE_FORMAT:
                raise ValueError(f"{sidecar} is not the sidecar Explanation.save writes")
            with np.load(path) as data:
                arrays = {k: torch.from_numpy(data[k]) for k in data.files}
            return cls(
                maps={k: arrays[k] for k in meta["map_keys"]},
                raw={k: arrays[f"raw/{k}"] for k in meta["raw_keys"]},
                logits={h: arrays[f"logits/{h}"] for h in meta["logit_heads"]},
                target=arrays["target"], heads=tuple(meta["heads"]),
                input_size=tuple(meta["input_size"]), model_name=meta["model_name"],
                class_names=meta["class_names"], image=arrays.get("image"), meta=meta["meta"],
                flows=meta.get("flows", {}))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: not an explanation written by Explanation.save "
                             f"({type(err).__name__}: {err})") from None
