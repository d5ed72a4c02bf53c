"""``explain``'s inputs: what kind each file is, the jobs and their output files, the target
class and the audio settings, checked before any model loads."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CliUsageError, describe

SCENE_NAME = re.compile(r"scene_\d+")
"""File names (without extension) of generated synthetic scenes, as in ``examples/scenes/``."""

EMBEDDED_ON_PHOTO = ("{model} (embedded weights) was trained only on synthetic scenes; on a photo "
                     "its predictions and maps carry no meaning")


def input_kind(path: Path, array_as_image: bool = False) -> str:
    """``"array"`` (.npy/.pt fed raw), ``"audio"`` (.wav/.flac/.ogg), ``"scene"`` for a
    generated synthetic scene, ``"photo"`` for any other image.

    The rule for images: an image is a scene when its file name starts with ``scene_<number>``
    (how ``examples/scenes/`` names the generated scenes); every other image counts as a photo.
    """
    from conformer_xai.data import input_kind_of

    kind = input_kind_of(path)
    if kind == "audio" or (kind == "array" and not array_as_image):
        return kind
    return "scene" if SCENE_NAME.match(path.stem) else "photo"


SPECTRO_KINDS = ("array", "audio")
"""Input kinds drawn on the time-frequency plane (the figure of ``plot.spectrogram_figure``)."""


def check_raw_options(jobs: list[ImageJob], input_size: Any, no_crop: bool,
                      array_as_image: bool, audio: bool) -> None:
    """Usage errors: resizing options given for raw arrays or audio, which are fed as they are."""
    kinds = {input_kind(job.path, array_as_image) for job in jobs}
    raw = [k for k in ("array", "audio") if k in kinds]
    given = [o for o, v in (("--input-size", input_size), ("--no-crop", no_crop)) if v]
    if raw and given:
        what = " and ".join("raw arrays" if k == "array" else "audio" for k in raw)
        hint = (" (or --array-as-image to treat arrays as images)" if "array" in raw else "")
        raise CliUsageError(f"{' and '.join(given)}: {what} are fed to the model at their own "
                            f"size; leave the option out{hint}")
    if audio and "audio" not in kinds:
        raise CliUsageError("--audio-config and --frames apply to audio inputs (.wav, .flac, "
                            ".ogg); none given")


@dataclass
class ImageJob:
    """One input image and the files it produces."""

    path: Path
    stem: str
    figure: Path
    summary: Path
    arrays: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> list[Path]:
        files = [self.figure, self.summary]
        if self.arrays is not None:
            files += [self.arrays, self.arrays.with_suffix(".json")]
        return files


def discover_inputs(inputs: tuple[str, ...], out: Path) -> list[tuple[Path, str]]:
    """Files, folders (recursive, by image extension) and globs -> ``(path, output stem)``.

    Stems are the paths relative to the folder given, made unique by ``data.find_images``.
    Files inside the output folder are left out (so that a rerun does not explain its own
    figures). A path that does not exist, a glob that matches nothing and a folder without
    images are usage errors.
    """
    from conformer_xai.data import find_images

    try:
        found = [(Path(p), str(stem)) for p, stem in find_images(list(inputs))]
    except (FileNotFoundError, ValueError) as exc:
        raise CliUsageError(describe(exc)) from exc
    out = out.resolve()
    kept = [(p, stem) for p, stem in found if out not in p.resolve().parents]
    if not kept:
        raise CliUsageError(f"no images to explain: every input is inside the output folder "
                            f"{out}")
    return kept


def plan_jobs(images: list[tuple[Path, str]], out: Path, fmt: str, save_arrays: bool
              ) -> list[ImageJob]:
    """Output files mirror each input's path relative to the folder given.

    Two inputs whose outputs would be the same file (``foo.png`` with --save-arrays writes
    ``foo.maps.json``, the summary of ``foo.maps.png``) are a usage error naming both.
    """
    jobs = [ImageJob(path=p, stem=s, figure=out / f"{s}.{fmt}", summary=out / f"{s}.json",
                     arrays=out / f"{s}.maps.npz" if save_arrays else None)
            for p, s in images]
    writer: dict[Path, ImageJob] = {}
    for job in jobs:
        for file in job.outputs():
            first = writer.setdefault(file, job)
            if first is not job:
                raise CliUsageError(f"{first.path} and {job.path} would both write {file}; "
                                    "rename one of them or explain them in separate runs")
    return jobs


def resolve_target(target: str | None, class_names: list[str] | None,
                   num_classes: int | None) -> int | None:
    """``--target`` as a class index: a number, or a class name (exact, then case-insensitive)."""
    if target is None:
        return None
    if re.fullmatch(r"\d+", target.strip()):
        index = int(target)
        count = len(class_names) if class_names else num_classes
        if count is not None and index >= count:
            raise CliUsageError(f"--target {index} is out of range: the model has {count} "
                                f"classes (0-{count - 1})")
        return index
    if not class_names:
        raise CliUsageError(f"--target {target!r}: this model has no class names; give a class "
                            "index or a --labels file")
    wanted = target.strip().lower()
    for rule in (lambda n: n == target.strip(), lambda n: n.lower() == wanted):
        hits = [i for i, n in enumerate(class_names) if rule(n)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise CliUsageError(f"--target {target!r} is ambiguous: classes "
                                f"{', '.join(f'{i} ({class_names[i]})' for i in hits[:5])}")
    shown = ", ".join(class_names[:8]) + (", ..." if len(class_names) > 8 else "")
    raise CliUsageError(f"--target {target!r} is not a class name of this model ({shown})")


def resolve_audio_options(audio_config: str | None, frames: int | None) -> dict[str, Any] | None:
    """The audio front end's settings from ``--audio-config`` and ``--frames`` (usage errors)."""
    if audio_config is None and frames is None:
        return None
    from conformer_xai.audio import resolve_audio_config

    try:
        cfg = resolve_audio_config(audio_config)
        return resolve_audio_config({**cfg, "frames": frames} if frames is not None else cfg)
    except (OSError, ValueError) as exc:
        where = f"--audio-config {audio_config}: " if audio_config else "--frames: "
        raise CliUsageError(f"{where}{describe(exc)}") from exc
