"""``conformer-xai models``: the models, their weight sources, accuracies and cache state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import click

from .errors import report_errors
from .options import debug_option, json_option
from .output import echo_json


def row_dict(row: Any) -> dict[str, Any]:
    """A row of ``list_models()`` as a plain dict (dicts, dataclasses and named tuples)."""
    if isinstance(row, Mapping):
        return dict(row)
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    if hasattr(row, "_asdict"):
        return dict(row._asdict())
    raise TypeError(f"cannot tabulate a {type(row).__name__}")


def cell(value: Any) -> str:
    """One table cell: lists joined with commas, booleans as yes/no, missing as '-'."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(cell(v) for v in value)
    return str(value)


#: Column titles of the fields of ``list_models()`` rows (other fields keep their name).
TITLES = {"name": "model", "sources": "weights", "top1_paper": "top-1 paper",
          "top1_weights": "top-1 weights", "weights_from": "weights from"}


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table with one column per key (in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    titles = [TITLES.get(c, c) for c in columns]
    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(t)] + [len(r[i]) for r in body]) for i, t in enumerate(titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


@click.command("models")
@json_option
@debug_option
@report_errors
def models_command(as_json: bool, debug: bool) -> int:
    """List the models: family, weight sources, published ImageNet top-1 accuracy (%), and
    whether their default weights are available offline (cached or shipped)."""
    from conformer_xai.models.weights import list_models

    rows = [row_dict(r) for r in list_models()]
    if as_json:
        echo_json({"command": "models", "models": rows})
    else:
        click.echo(table(rows))
    return 0
