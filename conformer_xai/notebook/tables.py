"""Markdown tables for notebook output (no pandas, no IPython needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "–"


@dataclass(frozen=True)
class MarkdownText:
    """Markdown that Jupyter renders (``_repr_markdown_``); ``str()`` gives the source."""

    text: str

    def _repr_markdown_(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   digits: int = 3) -> MarkdownText:
    """Rows (dicts) as a Markdown table with the given columns.

    Floats get ``digits`` decimals; NaN, None and missing keys show as an en dash.

    Raises:
        ValueError: No columns.
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c), digits) for c in columns) + " |"
              for row in rows]
    return MarkdownText("\n".join(lines))

