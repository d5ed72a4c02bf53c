"""Input data: image files and raw arrays to model-ready tensors (timm's preprocessing).

* :func:`load_image` reads an image file and applies the model's timm data config (resize,
  centre crop, normalisation) and returns the tensor and the crop the model saw, for plotting.
* :func:`load_array` reads a raw array fed to the model as it is.

Also here, from their own modules: :func:`find_images` and the extensions
(:mod:`conformer_xai.inputs`), :func:`class_names_for` and the class-name readers
(:mod:`conformer_xai.labels`), :func:`model_in_chans` (:mod:`conformer_xai.channels`).

Importing this module is cheap: torch and timm load on first use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .channels import model_in_chans
from .errors import Setting, SettingError
from .inputs import (
    ARRAY_EXTENSIONS,
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    find_images,
    input_kind_of,
)
from .labels import class_names_for, imagenet_class_names, read_labels

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_DATA_CONFIG", "load_image", "resolve_data_config",
    "find_images", "class_names_for", "imagenet_class_names",
    "read_labels", "load_array", "model_in_chans", "ARRAY_EXTENSIONS", "AUDIO_EXTENSIONS", "input_kind_of",
]


#: The smallest height and width the Conformer takes.
MIN_SIDE = 32

#: The data config used when neither a model nor a data config is given (timm's ImageNet default).
DEFAULT_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}

# --------------------------------------------------------------------------- preprocessing
def resolve_data_config(model: Any = None, data_config: dict | None = None,
                        input_size: int | Sequence[int] | None = None) -> dict[str, Any]:
    """The data config :func:`load_image` uses: timm's config for ``model``, then overrides.

    Args:
        model: A timm-style model (its ``pretrained_cfg`` is read with timm's
            ``resolve_data_config``; its input channels from ``model.in_chans`` or its first
            convolution). ``None`` uses :data:`DEFAULT_DATA_CONFIG`.
        data_config: Keys replacing the model's (``input_size``, ``interpolation``, ``mean``,
            ``std``, ``crop_pct``, ``crop_mode``).
        input_size: ``H`` or ``(H, W)`` replacing the config's spatial size.

    Returns:
        A dict with ``input_size`` ``(C, H, W)``, ``interpolation``, ``mean`` and ``std`` (C
        values each), ``crop_pct`` and ``crop_mode``. For a 1-channel model a 3-element mean/std
        is averaged to one element.
    """
    cfg = dict(DEFAULT_DATA_CONFIG)
    chans = None
    if isinstance(model, (str, os.PathLike)):
        raise ValueError(f"model must be a model object, got the name {str(model)!r}; load it "
                         "first with conformer_xai.load_model(name)")
    if model is not None:
        import timm.data

        cfg.update(timm.data.resolve_data_config(model=model))
        chans = model_in_chans(model)
    if data_config:
        unknown = set(data_config) - set(DEFAULT_DATA_CONFIG)
        if unknown:
            raise ValueError(f"unknown data config keys {sorted(unknown)}; accepted: "
                             f"{', '.join(DEFAULT_DATA_CONFIG)}")
        cfg.update({k: v for k, v in data_config.items() if v is not None})
        if "input_size" in data_config and len(data_config["input_size"]) == 3:
            chans = int(data_config["input_size"][0])
    size = tuple(int(v) for v in cfg["input_size"])
    if len(size) == 2:
        size = (chans or 3, *size)
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f"data config input_size must be (C, H, W), got {cfg['input_size']!r}")
    chans = chans or size[0]
    if input_size is not None:
        scalar = isinstance(input_size, (int, np.integer, float, str))
        hw = (input_size,) * 2 if scalar else tuple(input_size)
        if len(hw) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   and v > 0 for v in hw):
            raise ValueError(f"input_size must be H or (H, W) with positive integers, "
                             f"got {input_size!r}")
        size = (size[0], int(hw[0]), int(hw[1]))
    cfg["input_size"] = (chans, size[1], size[2])
    for key in ("mean", "std"):
        cfg[key] = _channel_stats(tuple(float(v) for v in cfg[key]), chans, key)
    _check_data_config(cfg)
    return cfg


#: Resize interpolations and crop modes of timm's eval transform.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")


def _check_data_config(cfg: dict[str, Any]) -> None:
    if cfg["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {cfg['interpolation']!r}; accepted: "
                         f"{', '.join(INTERPOLATIONS)}")
    if cfg["crop_mode"] not in CROP_MODES:
        raise ValueError(f"unknown crop_mode {cfg['crop_mode']!r}; accepted: "
                         f"{', '.join(CROP_MODES)}")
    crop_pct = cfg["crop_pct"]
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) \
            or not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
    if not all(math.isfinite(v) for v in cfg["mean"]):
        raise ValueError(f"data config mean must be finite, got {cfg['mean']}")
    if not all(math.isfinite(v) and v > 0 for v in cfg["std"]):
        raise ValueError(f"data config std must be positive and finite, got {cfg['std']}")


def _channel_stats(values: tuple[float, ...], chans: int, name: str) -> tuple[float, ...]:
    if len(values) == chans:
        return values
    if len(values) == 1:
        return values * chans
    if chans == 1:
        return (float(sum(values) / len(values)),)
    raise ValueError(f"data config {name} has {len(values)} values for a {chans}-channel model")


def load_array(path: str | os.PathLike, model: Any = None) -> tuple[torch.Tensor, np.ndarray]:
    """Read a raw array (``.npy``, or a ``.pt`` tensor) as the model input it is.

    No scaling, normalising, resizing or cropping: a raw log-mel spectrogram in dB goes in as
    the model was trained on it. Shapes ``(H, W)``, ``(1, H, W)`` and ``(C, H, W)`` are taken;
    one channel is repeated to a multi-channel model's channels (what the fork's 3-channel
    Conformer does with a 1-channel input).

    Args:
        path: A ``.npy`` file (read without pickle) or a ``.pt`` file holding one tensor (read
            with ``torch.load(..., weights_only=True)``).
        model: The model, for its input channels; None keeps the array's.

    Returns:
        ``(x, display)``: ``x`` the ``(1, C, H, W)`` float32 input, ``display`` its first
        channel min-max scaled to [0, 1], ``(H, W)`` float32 (for a perceptual colour map).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Unreadable, not numeric, NaN or infinite values, a shape other than the
            above, channels the model does not take, or smaller than 32 x 32.
    """
    import torch

    path = Path(path)
    arr = _read_raw(path)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{path}: a raw array must be (H, W), (1, H, W) or (C, H, W); got shape "
                         f"{tuple(arr.shape)}")
    chans = (model_in_chans(model) if model is not None else None) or arr.shape[0]
    if arr.shape[0] not in (1, chans):
        raise ValueError(f"{path}: the array has {arr.shape[0]} channels (shape "
                         f"{tuple(arr.shape)}) but the model takes {chans} (or 1); save it as "
                         f"(H, W), (1, H, W) or ({chans}, H, W)")
    if min(arr.shape[1:]) < MIN_SIDE:
        raise ValueError(f"{path}: the array is {arr.shape[1]} x {arr.shape[2]}; the model needs "
                         f"at least {MIN_SIDE} x {MIN_SIDE}")
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    x = x.expand(chans, -1, -1).contiguous()[None]
    first = arr[0].astype(np.float32)
    lo, hi = float(first.min()), float(first.max())
    display = (first - lo) / (hi - lo) if hi > lo else np.zeros_like(first)
    return x, display.astype(np.float32)


def _read_raw(path: Path) -> np.ndarray:
    """The numeric, finite, non-empty array of a ``.npy`` or ``.pt`` file."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir() or path.stat().st_size == 0:
        raise ValueError(f"{path}: not an array file ({'a folder' if path.is_dir() else 'empty'})")
    if path.suffix.lower() == ".pt":
        arr = _read_pt(path)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: not a .npy array ({' '.join(str(exc).split())})") from None
    if arr.size == 0 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
            or np.iscomplexobj(arr):
        raise ValueError(f"{path}: a raw array must be non-empty and real-valued, got shape "
                         f"{arr.shape} of {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: the array holds NaN or infinite values")
    return arr


def _read_pt(path: Path) -> np.ndarray:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights-only errors of many kinds
        detail = " ".join(str(exc).split())[:160]
        raise ValueError(f"{path}: not a .pt tensor file torch reads safely ({detail})") from None
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, torch.Tensor)]
        obj = tensors[0] if len(tensors) == 1 else obj
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: a .pt input must hold one tensor, got {type(obj).__name__}")
    return obj.detach().cpu().float().numpy() if obj.is_floating_point() else obj.numpy()


def load_image(path: str | os.PathLike, model: Any = None,
               input_size: int | Sequence[int] | None = None, crop: bool = True,
               data_config: dict | None = None, as_image: bool = False
               ) -> tuple[torch.Tensor, np.ndarray]:
    """Read an image file and preprocess it as timm does for ``model``.

    The pipeline is timm's eval transform built from the model's data config
    (``timm.data.create_transform``): resize the shorter side to ``size / crop_pct`` with the
    config's interpolation, centre-crop to ``size``, normalise with the config's mean and std.
    With ``crop=False`` the image is resized to exactly the input size instead (no crop, aspect
    ratio not kept), for non-square inputs such as spectrograms.

    Accepted inputs: every format Pillow reads (EXIF orientation applied; grayscale, palette,
    RGBA/LA composited on white, 16-bit grayscale scaled from 0..65535, 32-bit float images
    min-max scaled unless already in [0, 1]). Colour images become grayscale (ITU-R 601 luma)
    for 1-channel models; grayscale images are replicated for 3-channel models.

    Raw arrays (``.npy``, ``.pt``) are model inputs as they are (:func:`load_array`): no
    scaling, normalising, resizing or cropping, so ``input_size``, ``crop=False`` and
    ``data_config`` are refused for them. With ``as_image=True`` a 2-D array is instead
    min-max scaled to [0, 1] and treated as a grayscale image (the image pipeline above).

    Args:
        path: Image file.
        model: The model (for its data config and input channels); ``None`` uses ImageNet
            defaults (3 channels, 224x224, bicubic, crop 0.875).
        input_size: ``H`` or ``(H, W)`` overriding the config's input size.
        crop: Centre crop (timm's eval transform); ``False`` resizes to the input size exactly.
        data_config: Overrides of the model's data config (see :func:`resolve_data_config`).
        as_image: Treat a ``.npy``/``.pt`` array as a grayscale image (min-max, normalise,
            resize) instead of a raw model input.

    Returns:
        ``(x, image)``: ``x`` the normalised ``(1, C, H, W)`` float32 tensor; ``image`` the
        ``(H, W, C)`` float32 display image in [0, 1], exactly the crop the model saw (C = 1 for
        1-channel models). For a raw array: see :func:`load_array`.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is empty, unreadable or not an image; a bad size or config.
    """
    import torch

    if not as_image and Path(path).suffix.lower() in ARRAY_EXTENSIONS:
        given = [name for name, value in (("input_size", input_size), ("crop=False", not crop),
                                           ("data_config", data_config)) if value]
        if given:
            raise SettingError(f"{path}: a raw array is fed to the model as it is, so "
                               f"{' and '.join(given)} do not apply; pass " "{as_image} to "
                               "treat it as an image", as_image=Setting("as_image", True))
        return load_array(path, model)
    cfg = resolve_data_config(model, data_config, input_size)
    chans, height, width = cfg["input_size"]
    pil = _read_image(Path(path), chans)
    pixels = _geometric_transform(cfg, crop)(pil).to(torch.float32)  # (c, H, W), 0..255
    pixels = pixels.clamp_(0.0, 255.0).div_(255.0)
    if pixels.shape[0] != chans:
        pixels = pixels.expand(chans, -1, -1).contiguous()
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(-1, 1, 1)
    x = ((pixels - mean) / std).unsqueeze(0)
    display = pixels.permute(1, 2, 0).numpy().astype(np.float32, copy=True)
    return x, display


def _geometric_transform(cfg: dict[str, Any], crop: bool):
    """Resize (+ centre crop) then convert to a tensor without scaling: timm's eval geometry."""
    import timm.data
    from timm.data.transforms import MaybePILToTensor, str_to_interp_mode
    from torchvision import transforms

    size = tuple(cfg["input_size"][1:])
    if crop:
        return timm.data.create_transform(
            input_size=size, interpolation=cfg["interpolation"], mean=cfg["mean"],
            std=cfg["std"], crop_pct=cfg["crop_pct"], crop_mode=cfg.get("crop_mode"),
            is_training=False, use_prefetcher=True)
    return transforms.Compose([
        transforms.Resize(size, interpolation=str_to_interp_mode(cfg["interpolation"])),
        MaybePILToTensor(),
    ])


def _read_image(path: Path, chans: int) -> Image.Image:
    """Open ``path`` as a PIL image in mode RGB, L or F (F holds values in 0..255)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: not an image file (it is a folder)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: not an image file (empty file)")
    if path.suffix.lower() in ARRAY_EXTENSIONS:
        return _array_to_pil(_read_array(path), path)
    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise ValueError(f"{path}: an audio file, not an image; read it with "
                         f"conformer_xai.load_audio")
    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file (unknown or unsupported image format)"
                         ) from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path}: not an image file (too large: {exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: not an image file (unreadable: {exc})") from None
    img = _to_standard_mode(img, path)
    if img.mode == "F":
        return img
    return img.convert("L" if chans == 1 else "RGB")


def _to_standard_mode(img: Image.Image, path: Path) -> Image.Image:
    from PIL import Image

    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "I;32"):
        arr = np.asarray(img).astype(np.float32)
        return Image.fromarray(np.clip(arr, 0, 65535) * np.float32(255.0 / 65535.0), mode="F")
    if mode == "F":
        return _array_to_pil(np.asarray(img, dtype=np.float32), path)
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode == "1":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    return img


def _read_array(path: Path) -> np.ndarray:
    try:
        arr = _read_raw(path) if path.suffix.lower() == ".pt" else np.load(path,
                                                                           allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: not an image file (unreadable array: {exc})") from None
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or arr.size == 0 or not (np.issubdtype(arr.dtype, np.number)
                                              or arr.dtype == bool):
        raise ValueError(f"{path}: not an image file (an array read as an image must hold a "
                         f"non-empty 2-D "
                         f"numeric array, got shape {arr.shape} of {arr.dtype})")
    return arr.astype(np.float32)


def _array_to_pil(arr: np.ndarray, path: Path) -> Image.Image:
    """A 2-D float array as an F-mode image in 0..255 (kept if in [0, 1], else min-max)."""
    from PIL import Image

    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: not an image file (the array holds NaN or infinite values)")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.ascontiguousarray(arr * 255.0, dtype=np.float32), mode="F")
