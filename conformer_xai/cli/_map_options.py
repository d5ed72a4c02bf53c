"""Options that choose what a map reads: ``--tap``, ``--reduce`` and the methods' own options
(``--lrp-composite``, ``--ig-steps``, ...: one flag per option their specs give a CLI flag)."""

from __future__ import annotations

from typing import Any

import click

from ..names import DEFAULT_REDUCE, REDUCTIONS, TAPS
from ..registry import REGISTRY, Option


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



reduce_option = click.option(
    "--reduce", "reduce", type=Reduction(), default=None,
    help=f"Channel reduction of the feature maps: {', '.join(REDUCTIONS)}, or a channel index "
         f"(default: {DEFAULT_REDUCE}; README: Channel reductions).")


# --------------------------------------------------------------------------- method options
def _flags() -> dict[str, tuple[Option, list[tuple[str, str]]]]:
    """``--flag -> (option, [(method, option name), ...])`` from the method registry."""
    flags: dict[str, tuple[Option, list[tuple[str, str]]]] = {}
    for method, spec in REGISTRY.items():
        for name, opt in spec.options.items():
            if opt.cli:
                flags.setdefault(opt.cli, (opt, []))[1].append((method, name))
    return flags


def _click_type(opt: Option) -> click.ParamType:
    if opt.choices:
        return click.Choice(opt.choices)
    if opt.integer:
        return click.IntRange(min=opt.minimum)
    return click.FloatRange(min=opt.minimum, min_open=True)


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        ctx.meta.setdefault("method_options", {})[param.opts[0]] = value


def method_options(command: Any) -> Any:
    """The options every method spec declares a CLI flag for (``--lrp-composite``,
    ``--ig-steps``, ``--smoothgrad-samples``, ``--smoothgrad-noise``), read back with
    :func:`given_method_options`."""
    for flag, (opt, users) in reversed(_flags().items()):
        methods = ", ".join(dict.fromkeys(m for m, _ in users))
        command = click.option(
            flag, type=_click_type(opt), default=None, expose_value=False, callback=_store,
            help=f"{opt.help[:1].upper()}{opt.help[1:]}; for {methods} (default: {opt.default}).",
        )(command)
    return command


def given_method_options(methods: tuple[str, ...] | None) -> dict[str, dict[str, Any]]:
    """``method -> {option: value}`` of the flags given on the command line.

    Raises:
        CliUsageError: A flag given for methods the run does not include.
    """
    from .errors import CliUsageError

    given = click.get_current_context().meta.get("method_options", {})
    out: dict[str, dict[str, Any]] = {}
    for flag, value in given.items():
        users = [(m, n) for m, n in _flags()[flag][1] if m in (methods or ())]
        if not users:
            names = " or ".join(dict.fromkeys(m for m, _ in _flags()[flag][1]))
            raise CliUsageError(f"{flag} applies to {names}; add it to --methods")
        for method, name in users:
            out.setdefault(method, {})[name] = value
    return out
