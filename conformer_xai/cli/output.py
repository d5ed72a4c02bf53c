"""What the commands write: output folders, the --force rule, JSON on stdout and on disk."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from ..files import write_json  # noqa: F401  (the commands' JSON writer)
from .errors import CliRuntimeError, describe


def prepare_out_dir(out: str | Path, what: str = "output folder") -> Path:
    """Create the output folder (and parents) or fail with a runtime error naming ``what``."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliRuntimeError(f"cannot create {what} {out}: "
                              f"{exc.strerror or describe(exc)}") from exc
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise CliRuntimeError(f"{what} {out} is not writable")
    return out


@contextlib.contextmanager
def no_empty_folder_on_failure(folder: str | Path) -> Iterator[None]:
    """When the body fails, remove the folders under ``folder`` that this run created and that
    hold no file, so that a failed run leaves no empty output folder behind.

    Only ``folder`` and the parents that did not exist on entry are candidates; a folder that
    existed before, or that holds any file, is kept.
    """
    folder = Path(folder)
    created = list(itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents)))
    try:
        yield
    except BaseException:
        if created:
            for path, _, _ in os.walk(created[-1], topdown=False):  # deepest first
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # fails (and is kept) when not empty
        raise


def check_overwrite(paths: Iterable[Path], force: bool) -> None:
    """Refuse to overwrite existing files unless ``--force`` was given."""
    if force:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CliRuntimeError(f"{existing[0]} exists{more}; pass --force to overwrite")


def echo_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(obj, indent=1, default=str))
