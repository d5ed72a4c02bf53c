"""Weights: every source (local file, ImageNet download, embedded, random), key conversion, cache.

Sources, all through :func:`load_model`:

* a local checkpoint (``.pth``/``.pt``/``.bin`` read with ``torch.load(..., weights_only=True)``,
  or safetensors, recognised by content whatever the suffix): flat, or wrapped under
  ``"model"``, ``"state_dict"`` or ``"model_ema"``;
  a DistributedDataParallel ``module.`` prefix is stripped and OpenMMLab's key names are renamed;
* ``weights="imagenet"``: the published Conformer weights, downloaded from OpenMMLab's mirror
  (base URL overridable with the environment variable ``CONFORMER_XAI_BASE_URL``), checked
  against the sha256 prefix in the file name and written atomically into torch.hub's cache
  (``$TORCH_HOME/hub/checkpoints``). The hash is verified when the file is downloaded; a file
  already in the cache is trusted as it was verified when it was written. For timm's own models
  (``resnet101``, ``deit_small_patch16_224``, ...) timm's pretrained download is used, after one
  quick request without retries that fails at once when the Hugging Face Hub cannot be reached;
* ``weights="embedded"``: the small models trained on synthetic scenes, shipped as package data;
* ``weights="random"``: explicit random initialisation.

A checkpoint's class count and input channels are read from its tensors, so a fine-tuned
3-class, 1-channel checkpoint loads with just ``checkpoint=path``. A 3-channel stem loads into a
model with other ``in_chans`` through timm's :func:`timm.models.adapt_input_conv`; heads of
another size, or none in the checkpoint, start new only with ``new_head=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import numbers
import os
import pickle
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ..devices import resolve_device
from ..names import EMBEDDED_MODELS, WEIGHTS
from .checkpoints import TRAINING_SAFE_GLOBALS, checkpoint_args, resolve_checkpoint_model

__all__ = [
    "IMAGENET_BASE_URL", "IMAGENET_FILES", "IMAGENET_URLS", "BASE_URL_ENV", "EMBEDDED_MODELS",
    "CONFORMER_MODELS", "COMPARISON_MODELS", "KNOWN_MODELS", "WEIGHT_CHOICES", "PUBLISHED_TOP1",
    "PublishedAccuracy", "ModelRow", "WeightsError", "DownloadError", "WeightsWarning",
    "load_model", "load_pretrained", "load_state_dict_file", "read_checkpoint",
    "convert_state_dict", "SIZE_MISMATCH_MODES",
    "infer_checkpoint_config", "load_embedded_state_dict", "download_checkpoint", "imagenet_url", "imagenet_checkpoint",
    "cached_imagenet_path", "is_cached", "list_models",
]

logger = logging.getLogger(__name__)

IMAGENET_BASE_URL = "https://download.openmmlab.com/mmclassification/v0/conformer/"
IMAGENET_FILES = {
    "conformer_tiny_patch16": "conformer-tiny-p16_3rdparty_8xb128_in1k_20211206-f6860372.pth",
    "conformer_small_patch16": "conformer-small-p16_3rdparty_8xb128_in1k_20211206-3065dcf5.pth",
    "conformer_small_patch32": "conformer-small-p32_8xb128_in1k_20211206-947a0816.pth",
    "conformer_base_patch16": "conformer-base-p16_3rdparty_8xb128_in1k_20211206-bfdf8637.pth",
}
IMAGENET_URLS = {name: IMAGENET_BASE_URL + f for name, f in IMAGENET_FILES.items()}
#: Environment variable that replaces :data:`IMAGENET_BASE_URL` (mirrors, tests).
BASE_URL_ENV = "CONFORMER_XAI_BASE_URL"

CONFORMER_MODELS = tuple(IMAGENET_FILES)
COMPARISON_MODELS = ("resnet101", "deit_small_patch16_224")
KNOWN_MODELS = CONFORMER_MODELS + COMPARISON_MODELS + EMBEDDED_MODELS
WEIGHT_CHOICES = WEIGHTS
_FAMILIES = {**{n: "conformer" for n in CONFORMER_MODELS}, "resnet101": "resnet",
             "deit_small_patch16_224": "vit", "resnet_micro": "resnet",
             "deit_micro_patch16": "vit", "conformer_micro_patch16": "conformer",
             "conformer_micro_audio": "conformer"}

_CONFORMER_HEADS = ("conv_cls_head", "trans_cls_head")
_CONFORMER_STEM = "conv1"
_WRAPPER_KEYS = ("model", "state_dict", "model_ema")
_OPENMMLAB_RENAMES = (
    (".ln1.", ".norm1."),
    (".ln2.", ".norm2."),
    (".ffn.layers.0.0.", ".mlp.fc1."),
    (".ffn.layers.1.", ".mlp.fc2."),
)
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")


class PublishedAccuracy(NamedTuple):
    """Published ImageNet-1k top-1 accuracy (%) of a model and of its downloadable weights."""

    paper: float | None
    weights: float | None
    weights_from: str


#: Top-1 accuracy in the paper and of the file that ``weights="imagenet"`` loads.
PUBLISHED_TOP1: dict[str, PublishedAccuracy] = {
    "conformer_tiny_patch16": PublishedAccuracy(
        81.3, 81.31, "OpenMMLab (converted from the official file)"),
    "conformer_small_patch16": PublishedAccuracy(
        83.4, 83.32, "OpenMMLab (converted from the official file)"),
    "conformer_small_patch32": PublishedAccuracy(None, 81.96, "OpenMMLab (own training)"),
    "conformer_base_patch16": PublishedAccuracy(
        84.1, 83.82, "OpenMMLab (converted from the official file)"),
    "resnet101": PublishedAccuracy(None, 82.8, "timm (resnet101.a1h_in1k)"),
    "deit_small_patch16_224": PublishedAccuracy(79.8, None, "timm (deit_small_patch16_224.fb_in1k)"),
}


class ModelRow(NamedTuple):
    """One row of :func:`list_models`."""

    name: str
    family: str
    sources: tuple[str, ...]
    top1_paper: float | None
    top1_weights: float | None
    weights_from: str
    cached: bool


class WeightsError(ValueError):
    """A checkpoint or download cannot be used (corrupt, wrong architecture, offline, hash)."""


class DownloadError(WeightsError):
    """The network request for a weights file failed; ``reason`` says why in a few words."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class WeightsWarning(UserWarning):
    """Weights were loaded with an adaptation the user should know about (e.g. skipped heads)."""


# --------------------------------------------------------------------------- reading files
_READ_ERROR = "cannot read {} as a PyTorch checkpoint (.pth/.pt) or safetensors file: {}"
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_state_dict_file(path: str | os.PathLike, ema: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its flat state dict (keys not yet converted).

    safetensors files (recognised by their content, whatever the suffix) are read with
    safetensors; anything else with ``torch.load(..., map_location="cpu", weights_only=True)``,
    which never runs code stored in the file (an ``argparse.Namespace``, the ``args`` that
    training scripts save, is the one class allowed). A dict wrapped under ``"model"``,
    ``"state_dict"`` or ``"model_ema"`` is unwrapped; ``ema=True`` takes ``"model_ema"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory or not a regular file.
        WeightsError: The file is empty, corrupt, not a checkpoint, holds Python objects other
            than tensors, or holds no tensors.
    """
    return read_checkpoint(path, ema)[0]


def read_checkpoint(path: str | os.PathLike, ema: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A checkpoint's flat state dict (keys not yet converted) and its training ``args``.

    Like :func:`load_state_dict_file`; the second value is the training run's options (the
    ``args`` Namespace that DeiT-style training scripts save, as a dict), or None.

    Raises:
        FileNotFoundError, ValueError, WeightsError: As :func:`load_state_dict_file`; with
            ``ema=True`` also when the file holds no ``model_ema``.
    """
    p = Path(path)
    _check_file(p)
    try:
        with p.open("rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise WeightsError(_READ_ERROR.format(p, e.strerror or _one_line(e))) from e
    if not head:
        raise WeightsError(_READ_ERROR.format(p, "the file is empty"))
    raw = _read_safetensors(p) if _is_safetensors(head, p) else _read_torch(p, head)
    args = checkpoint_args(raw)
    if ema:
        inner = raw.get("model_ema") if isinstance(raw, Mapping) else None
        if not (isinstance(inner, Mapping)
                and any(isinstance(v, torch.Tensor) for v in inner.values())):
            found = ", ".join(map(str, list(raw)[:8])) if isinstance(raw, Mapping) else ""
            raise WeightsError(f"{p} holds no model_ema weights (ema=True); its entries: "
                               f"{found or type(raw).__name__}")
        raw = {"model_ema": inner}
    state_dict = _unwrap(raw)
    if not state_dict:
        raise WeightsError(f"{p} holds no tensors; expected a state dict")
    return state_dict, args


def _check_file(p: Path) -> None:
    """Raise FileNotFoundError or ValueError unless ``p`` is an existing regular file."""
    if p.is_file():
        return
    if p.is_dir():
        raise ValueError(f"checkpoint {p} is a directory; expected a checkpoint file "
                         f"(.pth, .pt, .bin or .safetensors)")
    if p.exists():
        raise ValueError(f"checkpoint {p} is not a regular file; expected a checkpoint file "
                         f"(.pth, .pt, .bin or .safetensors)")
    raise FileNotFoundError(f"checkpoint not found: {p}")


def _is_safetensors(head: bytes, p: Path) -> bool:
    """Whether a file is safetensors: by content, or by suffix unless it looks like torch's."""
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= p.stat().st_size - 8 and head[8:9] == b"{":
            return True
    looks_torch = head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO
    return p.suffix.lower() == ".safetensors" and not looks_torch


def _read_safetensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ...
        raise WeightsError(f"cannot read {p} as a safetensors file: {_one_line(e, 150)}") from e


def _read_torch(p: Path, head: bytes) -> object:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter
            with p.open("rb") as f, torch.serialization.safe_globals(
                    list(TRAINING_SAFE_GLOBALS)):  # a training script's args, nothing more
                # a file object: torch 2.x reads *.safetensors paths itself
                return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = _UNSAFE_GLOBAL.search(str(e))
        if found and not _is_broken_name(found.group(1)):
            raise WeightsError(
                f"refused to load {p}: it holds Python objects other than tensors "
                f"({found.group(1)}), which weights_only loading does not run; save just the "
                f"state dict (torch.save(model.state_dict(), path)) or a safetensors file") from e
        raise WeightsError(_READ_ERROR.format(p, _not_a_checkpoint(head, e))) from e
    except Exception as e:  # torch's loaders raise KeyError, RuntimeError, EOFError, ...
        raise WeightsError(_READ_ERROR.format(p, _not_a_checkpoint(head, e))) from e


def _is_broken_name(name: str) -> bool:
    """Whether ``module.attr`` names a loaded module that lacks ``attr`` (a truncated file).

    Only ``sys.modules`` is looked at: nothing named by the file is imported.
    """
    module, _, attr = name.rpartition(".")
    loaded = sys.modules.get(module)
    return loaded is not None and not hasattr(loaded, attr)


def _not_a_checkpoint(head: bytes, e: BaseException) -> str:
    """A few words on why torch could not parse a file whose first bytes are ``head``."""
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTO:
        detail = _one_line(_weights_only_detail(e), 150)
        return f"corrupt or truncated ({detail})" if detail else "corrupt or truncated"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        return f"it is a text file (starts with {text[:20].strip()!r})"
    return f"unknown format (starts with {head[:8]!r})"


def _weights_only_detail(e: BaseException) -> str:
    """The gist of torch's error, without its advice (never re-run with weights_only=False)."""
    text = " ".join(str(e).split())
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\s*Check the documentation|$)", text)
    if m:
        text = m.group(1)
    elif "weights_only" in text:  # torch's long advice without a WeightsUnpickler part
        return ""
    text = re.sub(r"^PytorchStreamReader ", "", text).split(". ")[0].strip()
    return text or type(e).__name__


def _one_line(e: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(raw: object) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) state dict; non-tensor entries are dropped."""
    if not isinstance(raw, Mapping):
        raise WeightsError(f"expected a state dict (a mapping of names to tensors), got "
                           f"{type(raw).__name__}")
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            raw = inner
            break
    return {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def convert_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """Bring a state dict to our key names.

    Unwraps ``"model"``/``"state_dict"``/``"model_ema"``, strips a ``module.`` prefix, and renames
    OpenMMLab's Conformer keys (``backbone.`` prefix, ``head.conv_cls_head``/``head.trans_cls_head``,
    ``ln1``/``ln2`` -> ``norm1``/``norm2``, ``ffn.layers.0.0``/``ffn.layers.1`` -> ``mlp.fc1``/
    ``mlp.fc2``). Other key names pass through unchanged.
    """
    sd = _unwrap(state_dict)
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if any(k.startswith(("backbone.", "head.conv_cls_head.", "head.trans_cls_head."))
           for k in sd):
        sd = {_openmmlab_key(k): v for k, v in sd.items()}
    return sd


def _openmmlab_key(key: str) -> str:
    if key.startswith("backbone."):
        key = key[len("backbone."):]
    elif key.startswith(("head.conv_cls_head.", "head.trans_cls_head.")):
        key = key[len("head."):]
    key = "." + key
    for old, new in _OPENMMLAB_RENAMES:
        key = key.replace(old, new)
    return key[1:]


# --------------------------------------------------------------------------- model traits
def _timm():
    """timm, with our names registered (importing this module imported ``conformer_xai.models``)."""
    import timm

    return timm


def _traits(name: str) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(classifier module names, stem conv names, pretrained num_classes) of a registered name."""
    from .conformer import CONFORMER_VARIANTS

    if name in CONFORMER_MODELS or name in CONFORMER_VARIANTS:
        return _CONFORMER_HEADS, (_CONFORMER_STEM,), 1000
    _timm()
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
        state_dict: A state dict already in our key names (see :func:`convert_state_dict`).
        name: The registered model name whose head and stem names to look at.

    Returns:
        ``dict(num_classes=..., in_chans=...)``; a value is None when the state dict lacks the
        tensor (e.g. a headless checkpoint).
    """
    heads, stems, _ = _traits(name)
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


# --------------------------------------------------------------------------- fitting a model
def _fit_and_load(model: nn.Module, name: str, state_dict: dict[str, torch.Tensor], origin: str,
                  new_head: bool) -> list[str]:
    """Adapt the stem and heads of ``state_dict`` to ``model`` and load it strictly.

    Returns the head keys that start from random initialisation (empty when none). Raises
    WeightsError when the state dict does not fit the architecture, or its heads differ from the
    model's or are absent and ``new_head`` is False.
    """
    from timm.models import adapt_input_conv

    heads, stems, _ = _traits(name)
    target = model.state_dict()
    sd = dict(state_dict)
    for stem in stems:
        key = f"{stem}.weight"
        if key in sd and key in target and sd[key].ndim == 4 and target[key].ndim == 4:
            want, have = target[key].shape[1], sd[key].shape[1]
            if want != have and sd[key].shape[0] == target[key].shape[0]:
                sd[key] = adapt_input_conv(want, sd[key], base_chans=have)
                logger.info("adapted %s from %d to %d input channels", key, have, want)

    def is_head(key: str) -> bool:
        return any(key.startswith(f"{h}.") for h in heads)

    missing = [k for k in target if k not in sd and not is_head(k)]
    unexpected = [k for k in sd if k not in target and not is_head(k)]
    mismatched = [k for k in sd if k in target and sd[k].shape != target[k].shape
                  and not (is_head(k) and sd[k].shape[1:] == target[k].shape[1:])]
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
                f"new_head=True to start new heads, or num_classes={ck}")
        raise WeightsError(
            f"{origin} has no head weights for {name} ({', '.join(absent)} missing): pass "
            f"new_head=True to start new heads")
    skipped = head_keys if differ or absent else []
    for k in skipped:
        del sd[k]
    try:
        model.load_state_dict(sd, strict=not (differ or absent))  # other keys checked above
    except RuntimeError as e:
        raise WeightsError(f"{origin} does not fit {name}: {_one_line(e)}") from e
    if differ or absent:
        parts = [f"skipped the checkpoint's head weights ({', '.join(skipped)})"] if skipped else []
        if absent:
            parts.append(f"the checkpoint has no head weights ({', '.join(absent)})")
        warnings.warn(f"{origin}: {' and '.join(parts)}; the heads of {name} start from random "
                      f"initialisation", WeightsWarning, stacklevel=3)
    return sorted(set(skipped) | set(absent))


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
    from .conformer import CONFORMER_VARIANTS

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


# --------------------------------------------------------------------------- download + cache
def imagenet_url(name: str) -> str:
    """Download URL of a Conformer's ImageNet weights (honours ``CONFORMER_XAI_BASE_URL``)."""
    _check_conformer(name)
    base = os.environ.get(BASE_URL_ENV) or IMAGENET_BASE_URL
    return base.rstrip("/") + "/" + IMAGENET_FILES[name]


def cached_imagenet_path(name: str) -> Path:
    """Where the ImageNet weights of a Conformer live in torch.hub's cache (may not exist)."""
    _check_conformer(name)
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[name]


def _check_conformer(name: str) -> None:
    if name not in IMAGENET_FILES:
        raise ValueError(f"no OpenMMLab ImageNet weights for {name!r}; available for: "
                         f"{', '.join(CONFORMER_MODELS)}")


def _hash_prefix(filename: str) -> str:
    m = _HASH_IN_NAME.search(filename)
    if not m:
        raise ValueError(f"file name {filename!r} carries no sha256 prefix (expected "
                         f"'...-<hex>.<ext>')")
    return m.group(1)


def download_checkpoint(url: str, expected_sha256_prefix: str, dest_dir: str | os.PathLike,
                        timeout: float = 60.0) -> Path:
    """Download ``url`` into ``dest_dir`` atomically, verifying its sha256.

    The file is streamed to a temporary file in ``dest_dir`` while hashed, and moved to its final
    name (the URL's last component) with :func:`os.replace` only when its sha256 starts with
    ``expected_sha256_prefix``. On any failure the temporary file is removed.

    Raises:
        DownloadError: The request failed (offline, refused, HTTP error, incomplete body).
        WeightsError: The content's sha256 does not start with the expected prefix.
    """
    filename = Path(urllib.parse.urlparse(url).path).name
    if not filename:
        raise ValueError(f"URL has no file name: {url}")
    expected = expected_sha256_prefix.lower()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DownloadError(f"cannot download {url}: {_reason(e)}", _reason(e)) from e
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        total = response.headers.get("Content-Length")
        with response, os.fdopen(fd, "wb") as f, _ProgressBar(total, filename) as bar:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except (OSError, ValueError) as e:
                    raise DownloadError(f"download of {url} broke off: {_reason(e)}",
                                        f"broke off: {_reason(e)}") from e
                except Exception as e:  # http.client.IncompleteRead and friends
                    raise DownloadError(f"download of {url} broke off: {_one_line(e)}",
                                        f"broke off: {_one_line(e)}") from e
                if not chunk:
                    break
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
                bar.update(len(chunk))
        if total is not None and size != int(total):
            raise DownloadError(f"download of {url} is incomplete: {size} of {total} bytes",
                                f"incomplete: {size} of {total} bytes")
        actual = digest.hexdigest()
        if not actual.startswith(expected):
            raise WeightsError(
                f"sha256 of {url} is {actual[:16]}..., but its name promises {expected}...: the "
                f"download is corrupt or not the published file; nothing was written to "
                f"{dest_dir}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    return _one_line(reason if reason is not None else e)


class _ProgressBar:
    """A tqdm progress bar on stderr for a download (silent when stderr is not a terminal)."""

    def __init__(self, total: str | None, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=desc, disable=None, leave=False)

    def __enter__(self):
        return self._bar

    def __exit__(self, *exc) -> None:
        self._bar.close()


def imagenet_checkpoint(name: str) -> Path:
    """Path of a Conformer's ImageNet weights in the cache, downloading them when missing.

    A file already in the cache is used without network and without re-hashing (it was
    verified when it was written there).

    Raises:
        WeightsError: Offline with nothing cached (one line naming the URL, the cache path and
            the ``--checkpoint PATH`` alternative), or the download's sha256 does not match.
    """
    path = cached_imagenet_path(name)
    if path.is_file():
        return path
    url = imagenet_url(name)
    try:
        return download_checkpoint(url, _hash_prefix(IMAGENET_FILES[name]), path.parent)
    except DownloadError as e:
        raise WeightsError(
            f"cannot download the ImageNet weights of {name} from {url} ({e.reason}) and none are "
            f"cached at {path}; put the file there or pass --checkpoint PATH with a local copy"
        ) from e


def is_cached(name: str) -> bool:
    """Whether the default pretrained weights of ``name`` are available without network.

    Conformers: the OpenMMLab file in torch.hub's cache. Embedded models: the shipped file.
    timm models: timm's Hugging Face or torch.hub cache.
    """
    if name in CONFORMER_MODELS:
        return cached_imagenet_path(name).is_file()
    if name in EMBEDDED_MODELS:
        return _embedded_resource(name).is_file()
    timm = _timm()
    if not timm.is_model(name):
        raise ValueError(_unknown_name_message(name))
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return True
    if cfg.url:
        filename = Path(urllib.parse.urlparse(cfg.url).path).name
        return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()
    return False


# --------------------------------------------------------------------------- embedded weights
def _embedded_resource(name: str, root=None):
    root = resources.files("conformer_xai") / "weights" if root is None else root
    return root / f"{name}.safetensors"


def load_embedded_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The shipped state dict of an embedded model (package data), cast to float32.

    Raises:
        ValueError: ``name`` is not one of :data:`EMBEDDED_MODELS`.
        WeightsError: The file is missing from the installed package or unreadable.
    """
    return _read_embedded(name)


def _read_embedded(name: str, root=None) -> dict[str, torch.Tensor]:
    """The shipped fp16 state dict of an embedded model, cast to float32.

    ``root`` (a directory) replaces the package's ``weights/`` folder; None reads package data.
    """
    if name not in EMBEDDED_MODELS:
        raise ValueError(f"weights='embedded' exists only for {', '.join(EMBEDDED_MODELS)}; "
                         f"got {name!r}")
    resource = _embedded_resource(name, None if root is None else Path(root))
    if not resource.is_file():
        raise WeightsError(f"the embedded weights of {name} are missing from the installed "
                           f"package ({resource}); reinstall conformer-xai")
    from safetensors.torch import load

    try:
        raw = load(resource.read_bytes())
    except Exception as e:
        raise WeightsError(f"cannot read the embedded weights {resource}: {_one_line(e)}") from e
    return {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}


# --------------------------------------------------------------------------- public loaders
def _unknown_name_message(name: str) -> str:
    return (f"unknown model {name!r}; known: {', '.join(KNOWN_MODELS)} "
            f"(any timm model name works too)")


def _create(name: str, num_classes: int | None, in_chans: int | None, **kwargs) -> nn.Module:
    args = {k: v for k, v in dict(num_classes=num_classes, in_chans=in_chans).items()
            if v is not None}
    return _timm().create_model(name, **args, **kwargs)


#: How a Conformer meets feature maps of the two branches that do not line up (see the model).
SIZE_MISMATCH_MODES = ("pad", "resize")


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
        raise ValueError(f"no model name given: pass a name (known: {', '.join(KNOWN_MODELS)}; "
                         f"any timm model name works too), or checkpoint=PATH (the name is then "
                         f"read from the checkpoint)")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"the model name must be a string, got {type(name).__name__}; known: "
                         f"{', '.join(KNOWN_MODELS)} (any timm model name works too)")
    from .checkpoints import registered_name

    if name is not None:
        found_name = registered_name(name)
        if found_name is None:
            raise ValueError(_unknown_name_message(name))
        name = found_name
    _check_count("num_classes", num_classes)
    _check_count("in_chans", in_chans)
    _check_count("num_heads", num_heads)
    if size_mismatch is not None and size_mismatch not in SIZE_MISMATCH_MODES:
        raise ValueError(f"unknown size_mismatch {size_mismatch!r}; choose one of "
                         f"{', '.join(map(repr, SIZE_MISMATCH_MODES))}")
    if ema and checkpoint is None:
        raise ValueError("ema=True reads a checkpoint's model_ema weights: pass checkpoint=PATH")
    device = resolve_device(device)
    if weights is not None and weights not in WEIGHT_CHOICES:
        raise ValueError(f"unknown weights {weights!r}; choose one of "
                         f"{', '.join(map(repr, WEIGHT_CHOICES))}, or checkpoint=PATH")
    if weights is None and checkpoint is None:
        raise ValueError(f"no weights given for {name}: pass weights= one of "
                         f"{', '.join(map(repr, WEIGHT_CHOICES))}, or checkpoint=PATH")
    if weights is not None and checkpoint is not None:
        raise ValueError(f"pass either weights={weights!r} or checkpoint={str(checkpoint)!r}, "
                         f"not both")

    extra = {} if num_heads is None else {"num_heads": int(num_heads)}
    label = name
    if weights == "random":
        model = _create(name, num_classes, in_chans, **extra)
        source = "random"
    elif weights == "imagenet" and name not in CONFORMER_MODELS:
        if name in EMBEDDED_MODELS:
            raise ValueError(f"{name} has no ImageNet weights; use weights='embedded'")
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
            state_dict = _read_embedded(name)
            source = origin = "embedded"
        else:
            _check_head_request(name, num_classes, new_head)  # before a long download
            path = imagenet_checkpoint(name)
            state_dict = convert_state_dict(load_state_dict_file(path))
            source, origin = "imagenet", f"ImageNet weights {path}"
        found = infer_checkpoint_config(state_dict, name)
        model = _create(name, num_classes if num_classes is not None else found["num_classes"],
                        in_chans if in_chans is not None else found["in_chans"], **extra)
        _fit_and_load(model, name, state_dict, origin, new_head)
    _set_size_mismatch(model, label, size_mismatch)
    model.weights_source = source
    model.model_name = label
    return model.to(device).eval()


def _set_size_mismatch(model: nn.Module, name: str, size_mismatch: str | None) -> None:
    """Set a Conformer's ``size_mismatch`` (refused for other models)."""
    from .conformer import Conformer

    if size_mismatch is None:
        return
    if not isinstance(model, Conformer):
        raise ValueError(f"size_mismatch applies to Conformer models only, not {name}")
    model.size_mismatch = size_mismatch


def _check_count(what: str, value: object) -> None:
    """Raise ValueError unless ``value`` is None or a positive integer."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{what} must be a positive integer or None (read from the weights), "
                         f"got {value!r}")


def _check_head_request(name: str, num_classes: int | None,
                        new_head: bool) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    traits = _traits(name)
    pretrained_classes = traits[2]
    if num_classes is not None and num_classes != pretrained_classes and not new_head:
        raise WeightsError(
            f"the ImageNet weights of {name} have {pretrained_classes} classes but the model was "
            f"asked for {num_classes}: pass new_head=True to start new heads, "
            f"or num_classes={pretrained_classes}")
    return traits


def _timm_pretrained(name: str, num_classes: int | None, in_chans: int | None,
                     new_head: bool) -> nn.Module:
    heads, _, pretrained_classes = _check_head_request(name, num_classes, new_head)
    if not is_cached(name):
        _check_hub_reachable(name)  # offline: fail in one line now, not after a minute of retries
    try:
        with _quiet_hub_logs():
            model = _create(name, num_classes, in_chans, pretrained=True)
    except Exception as e:  # timm/huggingface_hub raise many kinds when offline
        raise WeightsError(
            f"cannot load timm's pretrained weights for {name} ({type(e).__name__}: "
            f"{_one_line(e, 200)}); if offline, pass --checkpoint PATH with a local copy") from e
    if num_classes is not None and num_classes != pretrained_classes:
        skipped = [f"{h}.{p}" for h in heads for p in ("weight", "bias")]
        warnings.warn(f"ImageNet weights of {name}: skipped the head weights "
                      f"({', '.join(skipped)}); the head starts from random initialisation",
                      WeightsWarning, stacklevel=3)
    return model


#: Seconds to wait for the Hugging Face Hub before deciding it cannot be reached.
_HUB_PROBE_TIMEOUT = 10.0


def _check_hub_reachable(name: str) -> None:
    """Raise WeightsError when the Hugging Face Hub holding ``name``'s weights cannot be reached.

    One request without retries (huggingface_hub would otherwise retry each file five times with
    backoff, logging every attempt). A reply of any HTTP status counts as reachable; the download
    then goes its normal way. Nothing is checked in offline mode (``HF_HUB_OFFLINE``) or for
    weights not hosted on the Hub.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return
    import huggingface_hub
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import HfHubHTTPError

    if getattr(hub_constants, "HF_HUB_OFFLINE", False):
        return
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision or None)
    kwargs: dict[str, object] = {"timeout": _HUB_PROBE_TIMEOUT}
    if "retry_on_errors" in inspect.signature(huggingface_hub.get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    try:
        with _quiet_hub_logs():
            huggingface_hub.get_hf_file_metadata(url, **kwargs)
    except HfHubHTTPError:
        return  # the Hub answered (e.g. 404 for a .bin-only repo): let timm go on
    except Exception as e:  # connection refused, name resolution, timeout, proxy, TLS
        host = urllib.parse.urlparse(url).netloc
        raise WeightsError(
            f"cannot load timm's pretrained weights for {name}: {host} cannot be reached "
            f"({type(e).__name__}: {_one_line(e, 150)}) and they are not cached; pass "
            f"checkpoint=PATH with a local copy") from e


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """Silence huggingface_hub's warnings (per-retry chatter) while in the block."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def load_pretrained(model: nn.Module, variant: str) -> None:
    """Load a Conformer's pretrained weights for ``timm.create_model(variant, pretrained=True)``.

    Follows timm's conventions: ``pretrained_cfg_overlay=dict(file=path)`` loads a local file,
    otherwise the ImageNet weights are downloaded (or taken from the cache); the stem adapts to
    the model's ``in_chans``, and heads of another size than the model's are skipped.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("state_dict"):
        state_dict, origin = convert_state_dict(cfg["state_dict"]), "pretrained_cfg state_dict"
    elif cfg.get("file"):
        state_dict = convert_state_dict(load_state_dict_file(cfg["file"]))
        origin = f"checkpoint {cfg['file']}"
    else:
        path = imagenet_checkpoint(variant)
        state_dict = convert_state_dict(load_state_dict_file(path))
        origin = f"ImageNet weights {path}"
    _fit_and_load(model, variant, state_dict, origin, new_head=True)


def list_models() -> list[ModelRow]:
    """The models this toolkit documents, their weight sources, published accuracy, cache state."""
    rows = []
    for name in KNOWN_MODELS:
        if name in EMBEDDED_MODELS:
            sources = ("embedded", "checkpoint", "random")
            acc = PublishedAccuracy(None, None, "conformer-xai (trained on synthetic scenes)")
        else:
            sources = ("imagenet", "checkpoint", "random")
            acc = PUBLISHED_TOP1[name]
        rows.append(ModelRow(name, _FAMILIES[name], sources, acc.paper, acc.weights,
                             acc.weights_from, is_cached(name)))
    return rows
