"""The one reader of ``"HxW"`` input sizes (torch-free: the CLI parses options before torch loads).
"""

from __future__ import annotations

import re

__all__ = ["parse_hw"]

_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?")


def parse_hw(text: str) -> tuple[int, int]:
    """``"HxW"`` (or ``"N"`` for a square) as ``(H, W)``; bounds are the caller's to check.

    >>> parse_hw("224x288")
    (224, 288)

    Raises:
        ValueError: ``text`` is not of the form ``HxW`` or ``N`` (digits; whether a side may be 0
            or how large it may be is the caller's bound to check).
    """
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size; write HxW with whole numbers, e.g. "
                         "224x224")
    height = int(match.group(1))
    return height, int(match.group(2) or height)
