"""The options the commands share: names they accept, option types, option decorators.

Imports only click, the standard library and the torch-free names module
(:mod:`conformer_xai.names`), so that usage errors come before torch loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..names import (  # noqa: F401  (the commands import these names from here)
    DEFAULT_AUDIO_MODEL,
    DEFAULT_METHODS,
    EMBEDDED_IMAGE_MODELS,
    EMBEDDED_MODELS,
    HEADS,
    METHODS,
    OUR_MODELS,
    WEIGHTS,
)

DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("png", "pdf", "svg")
MIN_SIDE, MAX_SIDE, MAX_PIXELS = 32, 8192, 16 * 2**20
"""Bounds of --input-size: the explainer needs 32 pixels a side; the upper bounds reject sizes
that could never fit in memory but still allow long spectrograms such as 128x8000."""


class CommaList(click.ParamType):
    """A comma-separated list; with ``choices``, every item must be one of them."""

    name = "list"

    def __init__(self, choices: Sequence[str] | None = None) -> None:
        self.choices = tuple(choices) if choices else None

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        if self.choices:
            bad = [v for v in items if v not in self.choices]
            if bad:
                self.fail(f"unknown {', '.join(map(repr, bad))}; choose from "
                          f"{', '.join(self.choices)}", param, ctx)
        return tuple(dict.fromkeys(items))


class BlockList(click.ParamType):
    """Comma-separated 1-based block numbers or ranges: ``1,6,12`` or ``1-4,12``."""

    name = "blocks"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        blocks: list[int] = []
        for item in (v.strip() for v in str(value).split(",")):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if not m:
                self.fail(f"{item!r} is not a block number or range (e.g. 1,6,12 or 1-12)",
                          param, ctx)
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo < 1 or hi < lo:
                self.fail(f"{item!r}: blocks are numbered from 1 and ranges go upwards",
                          param, ctx)
            blocks.extend(range(lo, hi + 1))
        return tuple(dict.fromkeys(blocks))


class InputSize(click.ParamType):
    """``HxW`` (e.g. ``128x512``) or one number for a square input, within the bounds
    :data:`MIN_SIDE`, :data:`MAX_SIDE` and :data:`MAX_PIXELS`."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        from ..sizes import parse_hw

        try:
            h, w = parse_hw(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if min(h, w) < MIN_SIDE:
            self.fail(f"{h}x{w} is too small: height and width must be at least {MIN_SIDE}",
                      param, ctx)
        if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
            self.fail(f"{h}x{w} is too large: at most {MAX_SIDE} pixels a side and "
                      f"{MAX_PIXELS // 2**20} megapixels in all (e.g. 128x8000)", param, ctx)
        return h, w


class PositiveFloat(click.ParamType):
    """A finite number > 0 (``inf`` and ``nan`` are refused)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a finite number > 0", param, ctx)
        return number


def debug_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--debug", is_flag=True,
                        help="Show the full traceback of an error (re-raise it).")(func)


def force_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--force", is_flag=True,
                        help="Overwrite existing output files.")(func)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", type=click.Choice(DEVICES), default="auto",
                        show_default=True,
                        help="Where to run: auto picks cuda when a GPU is present.")(func)


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="png",
                        show_default=True, help="Figure file format.")(func)


def blocks_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--blocks", type=BlockList(), default=None,
                        help="Blocks, 1-based, comma-separated or ranges: 1,6,12 or 1-12 "
                             "(default: all).")(func)


def checkpoint_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ema``, ``--num-heads`` and ``--size-mismatch``: how a checkpoint becomes a model."""
    func = click.option("--size-mismatch", type=click.Choice(("pad", "resize")), default=None,
                        help="Conformer inputs whose branches' maps do not line up (widths not "
                             "a multiple of 32): pad (default, OpenMMLab's) or resize (the "
                             "spectrogram fork's).")(func)
    func = click.option("--num-heads", type=click.IntRange(min=1), default=None,
                        help="Attention heads, when the checkpoint names no model (default: "
                             "embed_dim // 64, with a note).")(func)
    return click.option("--ema", is_flag=True,
                        help="Load the checkpoint's model_ema weights instead of model.")(func)


DEFAULT_MODEL = "conformer_small_patch16"
"""The model of ``--model`` when neither it nor ``--checkpoint`` is given."""


def model_or_default(model: str | None, checkpoint: str | None) -> str | None:
    """``--model``, or with a checkpoint None (its name comes from the file), else the default."""
    if model is not None or checkpoint is not None:
        return model
    return DEFAULT_MODEL


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one machine-readable JSON summary on stdout.")(func)


def model_options(model_help: str, weights_help: str, checkpoint_help: str
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--model``, ``--weights`` and ``--checkpoint``, each with the command's own help."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
                            help=checkpoint_help)(func)
        func = click.option("--weights", type=click.Choice(WEIGHTS), default=None,
                            help=weights_help)(func)
        return click.option("--model", default=None, help=model_help)(func)

    return decorate
