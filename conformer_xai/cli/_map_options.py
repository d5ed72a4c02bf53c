"""Options that choose what a map reads: ``--tap`` and ``--reduce`` (shared by the commands)."""

from __future__ import annotations

from typing import Any

import click

TAPS = ("residual", "attention_input")
REDUCTIONS = ("mean", "abs_mean", "l2", "max", "pca")


class Reduction(click.ParamType):
    """A channel reduction name or a channel index (an int >= 0)."""

    name = "reduction"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if text in REDUCTIONS:
            return text
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is not a reduction; accepted: {', '.join(REDUCTIONS)} or a "
                  "channel index (an int >= 0)", param, ctx)


tap_option = click.option(
    "--tap", type=click.Choice(TAPS), default="residual", show_default=True,
    help="Where the gradient methods read a transformer block: residual (the block's output "
         "tokens; at the last block its input) or attention_input (the block's norm1).")


#: The library's default reduction (conformer_xai.explain.methods.features.DEFAULT_REDUCE; a
#: test keeps the two equal), named here so that --help needs no torch import.
DEFAULT_REDUCE = "pca"

reduce_option = click.option(
    "--reduce", "reduce", type=Reduction(), default=None,
    help=f"Channel reduction of the feature maps: {', '.join(REDUCTIONS)}, or a channel index "
         f"(default: {DEFAULT_REDUCE}; README: Channel reductions).")
