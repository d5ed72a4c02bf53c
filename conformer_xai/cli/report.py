"""``conformer-xai report``: a static, offline HTML site of an explain folder or a dataset store.

``explain --report`` and ``explain-dataset --report`` call :func:`write_report` at the end of
their run, after :func:`check_report_out` has refused a clash before any work was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .errors import CliRuntimeError, CliUsageError, describe, note, report_errors
from .options import debug_option, force_option, json_option
from .output import echo_json


def check_report_out(out: Path, force: bool) -> None:
    """Refuse (exit 1) a report folder that exists, unless it is a report and ``force``."""
    from conformer_xai.report.site import check_out

    try:
        check_out(out, force)
    except FileExistsError as exc:
        raise CliRuntimeError(describe(exc)) from exc


def write_report(path: Path, out: Path, *, images: Path | None = None,
                 labels: Sequence[str] | None = None, force: bool = False,
                 title: str | None = None, files: Sequence[Path] | None = None,
                 debug: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Build the site with the library's errors mapped to exit codes (2 usage, 1 runtime)."""
    from conformer_xai.report import build_report

    try:
        summary = build_report(path, out, images=images, labels=labels, force=force,
                               title=title, progress=not quiet, files=files)
    except FileExistsError as exc:
        if debug:
            raise
        raise CliRuntimeError(describe(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        if debug:
            raise
        raise CliUsageError(describe(exc)) from exc
    except OSError as exc:
        if debug:
            raise
        raise CliRuntimeError(f"cannot write the report: {describe(exc)}") from exc
    if not quiet:
        for line in summary["notes"]:
            note(line)
    return summary


@click.command("report")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The site folder to write (open OUT/index.html in a browser).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="For a store: the folder of images the run read (the store holds only the "
                   "maps; without it the pages show the maps alone).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names: a text file with one name per line, or a JSON list/dict "
                   "(default: the names the run recorded).")
@click.option("--title", default=None, help="Page title (default: PATH's folder name).")
@force_option
@json_option
@debug_option
@report_errors
def report_command(path: Path, out: Path, images: Path | None, labels: str | None,
                   title: str | None, force: bool, as_json: bool, debug: bool) -> int:
    """Build a static HTML report of PATH: an explain output folder (written with
    --save-arrays) or an explain-dataset store.

    The site opens from file:// with no server and no network: an index of every image
    (sortable, filterable, paged) and one page per image with its predictions per head, its
    metadata and a map viewer (method, head, branch, block slider, both branches side by side,
    the head-by-branch matrix).
    """
    if not path.is_dir():
        raise CliUsageError(f"{path}: no such folder (give an explain output folder or an "
                            "explain-dataset store)")
    names = None
    if labels is not None:
        from conformer_xai.data import read_labels

        try:
            names = read_labels(labels)
        except (ValueError, OSError) as exc:
            raise CliUsageError(f"--labels {labels}: {describe(exc)}") from exc
    summary = write_report(path, out, images=images, labels=names, force=force, title=title,
                           debug=debug, quiet=as_json)
    if as_json:
        echo_json({"command": "report", **summary})
    else:
        click.echo(f"wrote a report of {summary['images']} image(s) to {out} "
                   f"(open {out / 'index.html'})")
    return 0
