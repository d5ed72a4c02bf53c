"""Markdown tables for the README from ``conformer-xai evaluate --json`` outputs.

``python -m benchmarks.evaluate_tables RESULT.json [...] [--blocks 6,12] [--cascade]`` prints
one row per map: pointing game with its 95 % bootstrap interval, energy pointing game, the
chance level of both (the object's area share), part / body / off shares, deletion and
insertion AUC each beside the AUC of a random map under the same head, the randomisation
Spearman, and the row's n with its count of constant maps. ``--cascade`` prints the cascading
randomisation curves per method instead; ``--faithful`` the maps that have deletion and
insertion scores, sorted by deletion AUC per model, each with its 95 % intervals, then per model
the most faithful map and the maps whose deletion interval overlaps its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def rows_table(results: list[dict[str, Any]], blocks: set[int] | None = None,
               label: str | None = None) -> list[str]:
    """The per-map rows of every result (``blocks``: keep only these blocks and block-less
    maps)."""
    lines = []
    for result in results:
        model = result["meta"]["model"]
        extra = label or ""
        for row in result["rows"]:
            if blocks is not None and row["block"] is not None and row["block"] not in blocks:
                continue
            ci = row["ci95"]["pointing_game"]
            pg = _f(row["pointing_game"]) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            shares = " / ".join(_f(row[k]) for k in ("part_share", "body_share", "off_share"))
            ch = row["chance"]
            dele = (f"{_f(row['deletion_auc'], 3)} ({_f(ch['deletion_auc'], 3)})"
                    if row["deletion_auc"] is not None else "–")
            ins = (f"{_f(row['insertion_auc'], 3)} ({_f(ch['insertion_auc'], 3)})"
                   if row["insertion_auc"] is not None else "–")
            const = max(row["n_constant"].values())
            method = row["method"] + (f" ({extra})" if extra else "")
            lines.append(
                f"| `{model}` | {method} | {row['head'] or '–'} | {row['branch']} | "
                f"{row['block'] or '–'} | {pg} | {_f(row['energy_pointing_game'])} | "
                f"{_f(ch['pointing_game'])} | {shares} | {dele} | {ins} | "
                f"{_f(row['randomisation_spearman'])} | {row['n']} / {const} |")
    return lines


HEADER = ["| model | map | head | branch | block | pointing game [95 % CI] | energy PG | "
          "PG/EPG chance | part / body / off | deletion AUC ↓ (random map) | "
          "insertion AUC ↑ (random map) | randomisation ρ | n / constant |",
          "|---|---|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]


def cascade_table(results: list[dict[str, Any]]) -> list[str]:
    """Mean Spearman per method after each cumulative randomisation step."""
    lines = []
    for result in results:
        cascade = result.get("cascade")
        if not cascade:
            continue
        layers = cascade["layers"]
        lines.append(f"`{result['meta']['model']}` (n = {cascade['n']}): "
                     + ", ".join(layers))
        lines.append("")
        lines.append("| method | " + " | ".join(layers) + " |")
        lines.append("|---|" + "---:|" * len(layers))
        for method, curves in cascade["methods"].items():
            lines.append(f"| {method} | " + " | ".join(_f(v) for v in curves["spearman"]) + " |")
        lines.append("")
    return lines


FAITHFUL_HEADER = [
    "| model | map | head | branch | block | deletion AUC ↓ [95 % CI] (random map) | "
    "insertion AUC ↑ [95 % CI] (random map) | pointing game [95 % CI] | energy PG | "
    "part / body / off | randomisation ρ | n / constant |",
    "|---|---|---|---|---|---|---|---|---:|---|---:|---:|"]


def _with_ci(row: dict[str, Any], name: str, digits: int = 2) -> str:
    ci = row["ci95"][name]
    return _f(row[name], digits) + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def _branch(row: dict[str, Any]) -> str:
    """The branch column: ``input`` for the input-resolution maps (IG, SmoothGrad, LRP's
    pixel relevance), whose key has a head and no branch."""
    return "input" if row["head"] is not None and row["block"] is None and \
        row["method"] in ("lrp", "attnlrp", "integrated_gradients", "smoothgrad") \
        else row["branch"]


def _label(row: dict[str, Any]) -> str:
    block = f"/{row['block']}" if row["block"] is not None else ""
    return f"{row['method']} ({_branch(row)}{block})"


def faithful_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows with a deletion AUC, lowest (most faithful) first."""
    return sorted((r for r in result["rows"] if r["deletion_auc"] is not None),
                  key=lambda r: r["deletion_auc"])


def faithful_table(results: list[dict[str, Any]]) -> list[str]:
    """Rows with deletion and insertion scores, sorted by deletion AUC per model."""
    lines = []
    for result in results:
        model = result["meta"]["model"]
        for row in faithful_rows(result):
            ch = row["chance"]
            shares = " / ".join(_f(row[k]) for k in ("part_share", "body_share", "off_share"))
            lines.append(
                f"| `{model}` | {row['method']} | {row['head'] or '–'} | {_branch(row)} | "
                f"{row['block'] or '–'} | {_with_ci(row, 'deletion_auc', 3)} "
                f"({_f(ch['deletion_auc'], 3)}) | {_with_ci(row, 'insertion_auc', 3)} "
                f"({_f(ch['insertion_auc'], 3)}) | {_with_ci(row, 'pointing_game')} | "
                f"{_f(row['energy_pointing_game'])} | {shares} | "
                f"{_f(row['randomisation_spearman'])} | {row['n']} / "
                f"{max(row['n_constant'].values())} |")
    return lines


def most_faithful(results: list[dict[str, Any]]) -> list[str]:
    """Per model: the lowest deletion AUC, the maps whose deletion interval overlaps it (not
    separable at this n), and the highest insertion AUC."""
    lines = ["| model | n | lowest deletion AUC [95 % CI] | not separable from it (deletion "
             "intervals overlap) | highest insertion AUC [95 % CI] |",
             "|---|---:|---|---|---|"]
    for result in results:
        rows = faithful_rows(result)
        if not rows:
            continue
        best = rows[0]
        lo_hi = best["ci95"]["deletion_auc"] or [best["deletion_auc"]] * 2
        tied = [r for r in rows[1:] if r["ci95"]["deletion_auc"]
                and r["ci95"]["deletion_auc"][0] <= lo_hi[1]]
        top_ins = max(rows, key=lambda r: r["insertion_auc"]
                      if r["insertion_auc"] is not None else float("-inf"))
        lines.append(
            f"| `{result['meta']['model']}` | {result['meta']['n']} | {_label(best)}: "
            f"{_with_ci(best, 'deletion_auc', 3)} | "
            f"{', '.join(_label(r) for r in tied) or 'none'} ({len(tied)} of {len(rows) - 1}) | "
            f"{_label(top_ins)}: {_with_ci(top_ins, 'insertion_auc', 3)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--blocks", default=None, help="comma-separated blocks to keep")
    parser.add_argument("--label", default=None, help="text added to each map's name")
    parser.add_argument("--cascade", action="store_true", help="print the cascade curves")
    parser.add_argument("--faithful", action="store_true",
                        help="print the maps sorted by deletion AUC and the most faithful per "
                             "model")
    parser.add_argument("--no-header", action="store_true")
    args = parser.parse_args(argv)
    results = [json.loads(p.read_text()) for p in args.results]
    if args.cascade:
        lines = cascade_table(results)
    elif args.faithful:
        lines = ([] if args.no_header else FAITHFUL_HEADER) + faithful_table(results)
        lines += [""] + most_faithful(results)
    else:
        blocks = None if args.blocks is None else {int(b) for b in args.blocks.split(",")}
        lines = ([] if args.no_header else HEADER) + rows_table(results, blocks, args.label)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
