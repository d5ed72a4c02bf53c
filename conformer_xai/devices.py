"""Devices and floating-point dtypes by name, checked once for the whole package."""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "resolve_dtype", "DTYPES"]

#: Accepted names of floating-point dtypes (for stored maps and for autocast).
DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}

_ACCEPTED_DEVICES = "accepted: cpu, cuda, cuda:<n>, mps (where present)"


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch floating-point dtype from a name ("float16", "bf16", ...) or a dtype; None stays."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on; "cuda" under torchrun means this process's ``LOCAL_RANK`` GPU.

    Args:
        device: "cpu", "cuda", "cuda:<n>", "mps", a :class:`torch.device`, or None for the GPU
            when there is one, else the CPU.

    Raises:
        ValueError: The name is unknown, or names an accelerator this machine does not have.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; {_ACCEPTED_DEVICES}") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA GPU is available here; use 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) "
                             f"here; {_ACCEPTED_DEVICES}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available here; "
                             f"{_ACCEPTED_DEVICES}")
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}; {_ACCEPTED_DEVICES}")
    return dev
