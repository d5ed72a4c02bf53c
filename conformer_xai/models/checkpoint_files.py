"""Reading checkpoint files safely: format sniffing, weights-only loading, unwrapping.

A file is safetensors when its content says so (whatever the suffix), else it is read with
``torch.load(..., map_location="cpu", weights_only=True)``, which never runs code stored in the
file (an ``argparse.Namespace``, the ``args`` that training scripts save, is the one class
allowed). Errors name the file and say in a few words what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import Setting
from .checkpoints import TRAINING_SAFE_GLOBALS, checkpoint_args
from .errors import WeightsError, one_line

__all__ = ["load_state_dict_file", "read_checkpoint", "unwrap_state_dict", "clean_state_dict"]

_WRAPPER_KEYS = ("model", "state_dict", "model_ema")

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
        raise WeightsError(_READ_ERROR.format(p, e.strerror or one_line(e))) from e
    if not head:
        raise WeightsError(_READ_ERROR.format(p, "the file is empty"))
    raw = _read_safetensors(p) if _is_safetensors(head, p) else _read_torch(p, head)
    args = checkpoint_args(raw)
    if ema:
        inner = raw.get("model_ema") if isinstance(raw, Mapping) else None
        if not (isinstance(inner, Mapping)
                and any(isinstance(v, torch.Tensor) for v in inner.values())):
            found = ", ".join(map(str, list(raw)[:8])) if isinstance(raw, Mapping) else ""
            raise WeightsError(f"{p} holds no model_ema weights (" "{ema}" "); its entries: "
                               f"{found or type(raw).__name__}", ema=Setting("ema", True))
        raw = {"model_ema": inner}
    state_dict = unwrap_state_dict(raw)
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
        raise WeightsError(f"cannot read {p} as a safetensors file: {one_line(e, 150)}") from e


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
        detail = one_line(_weights_only_detail(e), 150)
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


def unwrap_state_dict(raw: object) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) state dict; non-tensor entries are dropped.

    A mapping under ``"model"``, ``"state_dict"`` or ``"model_ema"`` (first found, in that order)
    is taken when it holds tensors.
    """
    if not isinstance(raw, Mapping):
        raise WeightsError(f"expected a state dict (a mapping of names to tensors), got "
                           f"{type(raw).__name__}")
    for key in _WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            raw = inner
            break
    return {str(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def clean_state_dict(state_dict: Mapping) -> dict[str, torch.Tensor]:
    """A state dict's tensors, unwrapped, without DistributedDataParallel's ``module.`` prefix."""
    sd = unwrap_state_dict(state_dict)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
