"""Writing files safely: atomic replacement, JSON files, JSON-ready values.

Torch-free (the CLI imports it before torch loads). Every writer of the package goes through
:func:`atomic_write`, so that a reader never sees a half-written file and a failed write leaves
no temporary file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["UMASK", "atomic_write", "atomic_write_text", "write_json", "jsonable"]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process umask at import (read once: os.umask can only be read by setting it).
UMASK = _read_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write ``path`` through ``write(temporary path)`` in the same folder, then rename.

    The file gets the permissions of a newly created file (``0o666`` less the umask); on any
    failure the temporary file is removed and the error raised, leaving ``path`` as it was.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (flushed to disk before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 1) -> None:
    """Write ``obj`` as a JSON file atomically (values JSON cannot hold are written as text)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")


def jsonable(obj: Any) -> Any:
    """``obj`` with mappings, sequences, numpy scalars and arrays and torch tensors turned into
    plain JSON values; anything else JSON cannot hold becomes its ``str``."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return jsonable(obj.tolist())
    return str(obj)
