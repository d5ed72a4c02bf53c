"""Which files are inputs: image, array and audio extensions, input kinds, and the expansion of
files, folders and globs into input files with collision-free output stems.

Standard library only.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["IMAGE_EXTENSIONS", "ARRAY_EXTENSIONS", "AUDIO_EXTENSIONS", "input_kind_of",
           "find_images"]

#: File extensions recognised as images when a folder or glob is expanded (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Raw arrays accepted by :func:`load_image` (fed to the model as they are; see
#: :func:`load_array`).
ARRAY_EXTENSIONS = (".npy", ".pt")
#: Audio files accepted by the CLI (see :func:`conformer_xai.audio.load_audio`).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")


def input_kind_of(path: str | os.PathLike) -> str:
    """``"array"`` (.npy, .pt), ``"audio"`` (.wav, .flac, .ogg) or ``"image"``, by extension."""
    suffix = Path(path).suffix.lower()
    if suffix in ARRAY_EXTENSIONS:
        return "array"
    return "audio" if suffix in AUDIO_EXTENSIONS else "image"


def find_images(paths: str | os.PathLike | Iterable[str | os.PathLike]
                ) -> list[tuple[Path, str]]:
    """Expand files, folders (recursively) and glob patterns into input files.

    A file named directly is kept whatever its extension (reading it reports a non-image file);
    folders and globs keep files with an image extension (:data:`IMAGE_EXTENSIONS`), raw arrays
    (:data:`ARRAY_EXTENSIONS`) and audio files (:data:`AUDIO_EXTENSIONS`). Hidden files and folders (name starting with ".") inside a folder are skipped.

    Each file gets an output stem: its path relative to the folder given (or to the glob's
    non-pattern prefix), without the extension (``sub/cat``); a file named directly gets its own
    stem. Stems that still collide are made unique with the parent folders that differ, then
    with the extension (``cat_png``). The same file given twice is listed once.

    Returns:
        ``[(path, stem), ...]`` in the order given, each folder's files sorted.

    Raises:
        FileNotFoundError: A path does not exist, or a glob matches nothing.
        ValueError: A folder (or glob) holds no image files; no paths given.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise ValueError("no input paths given")
    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if path.is_file():
            entries = [(path, path.with_suffix("").name)]
        elif path.is_dir():
            entries = _walk_folder(path)
            if not entries:
                raise ValueError(f"{path}: folder holds no image files (looked for "
                                 f"{', '.join(IMAGE_EXTENSIONS + ARRAY_EXTENSIONS)} and audio "
                                 f"{', '.join(AUDIO_EXTENSIONS)})")
        elif _has_magic(text):
            entries = _expand_glob(text)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
        for file, stem in entries:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append((file, stem))
    return _unique_stems(found)


_MAGIC = re.compile(r"[*?[]")


def _has_magic(text: str) -> bool:
    return _MAGIC.search(text) is not None


def _is_image_name(name: str, arrays: bool = False) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return suffix in IMAGE_EXTENSIONS or (arrays and suffix in ARRAY_EXTENSIONS + AUDIO_EXTENSIONS)


def _walk_folder(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not _is_image_name(name, arrays=True):
                continue
            file = Path(root) / name
            out.append((file, file.relative_to(folder).with_suffix("").as_posix()))
    return out


def _expand_glob(pattern: str) -> list[tuple[Path, str]]:
    matches = sorted(glob.glob(pattern, recursive=True))
    if not matches:
        raise FileNotFoundError(f"{pattern}: no files match this pattern")
    prefix = Path(*_until_magic(Path(pattern).parts))
    out = []
    for match in matches:
        path = Path(match)
        if path.is_dir():
            out.extend((f, _relative_stem(f, prefix)) for f, _ in _walk_folder(path))
        elif _is_image_name(path.name, arrays=True):
            out.append((path, _relative_stem(path, prefix)))
    if not out:
        raise ValueError(f"{pattern}: the pattern matches no image files (looked for "
                         f"{', '.join(IMAGE_EXTENSIONS + ARRAY_EXTENSIONS + AUDIO_EXTENSIONS)})")
    return out


def _until_magic(parts: Sequence[str]) -> list[str]:
    out = []
    for part in parts[:-1]:
        if _has_magic(part):
            break
        out.append(part)
    return out or ["."]


def _relative_stem(path: Path, prefix: Path) -> str:
    try:
        rel = path.relative_to(prefix) if str(prefix) not in ("", ".") else path
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def _unique_stems(found: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """Make output stems unique: first with the differing parent folders, then the extension."""
    stems = [stem for _, stem in found]
    for step in ("parents", "extension", "counter"):
        groups: dict[str, list[int]] = {}
        for i, stem in enumerate(stems):
            groups.setdefault(stem, []).append(i)
        for idx in (g for g in groups.values() if len(g) > 1):
            files = [found[i][0].resolve() for i in idx]
            common = Path(os.path.commonpath([f.parent for f in files]))
            for n, (i, file) in enumerate(zip(idx, files)):
                if step == "parents":
                    stems[i] = file.relative_to(common).with_suffix("").as_posix()
                elif step == "extension":
                    stems[i] = f"{stems[i]}_{file.suffix.lstrip('.').lower()}"
                elif n > 0:
                    stems[i] = f"{stems[i]}_{n + 1}"
    return [(file, stem) for (file, _), stem in zip(found, stems)]
