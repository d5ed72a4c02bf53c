"""``conformer-xai explain``: one figure, one JSON summary (and optionally the arrays) per image."""

from __future__ import annotations

import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ._map_options import reduce_option, tap_option
from .checks import (
    check_architecture,
    check_model_name,
    check_weights,
    load_model,
    resolve_device,
    weights_notes,
)
from .errors import CliUsageError, FailedInputs, describe, note, report_errors
from .options import (
    DEFAULT_AUDIO_MODEL,
    HEADS,
    METHODS,
    WEIGHTS,
    CommaList,
    InputSize,
    blocks_option,
    checkpoint_options,
    debug_option,
    device_option,
    force_option,
    format_option,
    json_option,
    model_or_default,
)
from .output import (
    check_overwrite,
    echo_json,
    no_empty_folder_on_failure,
    prepare_out_dir,
    write_json,
)
from .report import check_report_out, write_report

SCENE_NAME = re.compile(r"scene_\d+")
"""File names (without extension) of generated synthetic scenes, as in ``examples/scenes/``."""

EMBEDDED_ON_PHOTO = ("{model} (embedded weights) was trained only on synthetic scenes; on a photo "
                     "its predictions and maps carry no meaning")


def run_caveat(net: Any, methods: tuple[str, ...] | None, blocks: tuple[int, ...] | None
               ) -> str | None:
    """The signed-token-tap note of a run, printed once (not once per batch)."""
    from conformer_xai.explain import Explainer
    from conformer_xai.explain.caveats import signed_tap_note
    from conformer_xai.explain.methods import DEFAULT_METHODS

    try:
        branches = Explainer(net).branches
    except ValueError:
        return None
    return signed_tap_note(methods or DEFAULT_METHODS, branches)


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


@click.command("explain")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...")
@click.option("--model", default=None,
              help="Model name: ours (conformer_*_patch*, *_micro*), the spectrogram fork's "
                   "(Conformer_tinytiny_patch16, any case) or any timm name (default: "
                   "conformer_small_patch16, for audio files only: conformer_micro_audio with its "
                   "embedded weights; with --checkpoint the name saved in it, else the "
                   "architecture read from its weights).")
@click.option("--weights", type=click.Choice(WEIGHTS), default=None,
              help="Weights source (default: the model's own: imagenet for the published "
                   "models, embedded for the small ones). Not needed with --checkpoint.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A .pth/.pt/.safetensors file; class count and input channels are read "
                   "from it.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None,
              help="Number of classes (read from --checkpoint when omitted).")
@click.option("--in-chans", type=click.IntRange(min=1), default=None,
              help="Input channels (read from --checkpoint when omitted).")
@click.option("--input-size", type=InputSize(), default=None,
              help="Model input size HxW (default: the model's data config).")
@click.option("--no-crop", is_flag=True,
              help="Resize to the input size without centre crop (non-square inputs, "
                   "spectrograms).")
@click.option("--new-head", is_flag=True,
              help="Allow a class count other than the weights': the head starts random.")
@checkpoint_options
@click.option("--array-as-image", is_flag=True,
              help="Treat .npy/.pt arrays as grayscale images (min-max, normalise, resize) "
                   "instead of feeding them raw.")
@click.option("--audio-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file of audio front-end settings (torchlibrosa's names: sr, n_fft, "
                   "hop_length, win_length, window, center, pad_mode, n_mels, fmin, fmax, ref, "
                   "amin, top_db; plus freq_ratio, frames).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Pad (with the -100 dB floor) or crop audio to this many frames (448 "
                   "frames: 224x224).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Class names: a text file with one name per line, or a JSON list/dict.")
@click.option("--target", default=None,
              help="Class to explain, as index or name (default: each image's top-1 class).")
@click.option("--head", "heads", type=CommaList(HEADS), default=None,
              help="Classifier heads to explain, comma-separated (default: all of the "
                   "model's).")
@click.option("--methods", type=CommaList(METHODS), default=None,
              help=f"Methods, comma-separated, from: {', '.join(METHODS)} (default: features, "
                   "attention, gradcam, rollout, grad_rollout where they apply).")
@blocks_option
@tap_option
@reduce_option
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per forward pass.")
@click.option("--out", type=click.Path(file_okay=False), default="conformer-xai-out",
              show_default=True, help="Output folder; outputs mirror the inputs' subfolders.")
@format_option
@click.option("--save-arrays", is_flag=True,
              help="Also write every map as <name>.maps.npz (+ .maps.json), readable with "
                   "Explanation.load.")
@click.option("--report", is_flag=True,
              help="Also build the browsable HTML report of this run in OUT/report "
                   "(implies --save-arrays; see `conformer-xai report`).")
@json_option
@force_option
@debug_option
@report_errors
def explain_command(inputs: tuple[str, ...], model: str | None, weights: str | None,
                    checkpoint: str | None, num_classes: int | None, in_chans: int | None,
                    new_head: bool, ema: bool, num_heads: int | None,
                    size_mismatch: str | None, array_as_image: bool, audio_config: str | None,
                    frames: int | None, input_size: tuple[int, int] | None, no_crop: bool,
                    labels: str | None, target: str | None, heads: tuple[str, ...] | None,
                    methods: tuple[str, ...] | None, blocks: tuple[int, ...] | None,
                    tap: str, reduce: str | int | None, device: str, batch_size: int, out: str,
                    fmt: str, save_arrays: bool, report: bool, as_json: bool, force: bool,
                    debug: bool) -> int:
    """Explain images: per image a figure, a JSON summary and (--save-arrays) the maps.

    IMAGE_OR_FOLDER... are image files, raw arrays (.npy, .pt: fed as they are), audio files
    (.wav, .flac, .ogg: the spectrogram fork's log-mel front end), folders (searched recursively
    by image extension) or glob patterns. Arrays and audio get the time-frequency figure. Each output mirrors its input's path relative to the folder given; files
    inside --out are skipped. A file that cannot be read is listed at the end (exit code 1)
    after every other image has been written.
    """
    started = time.perf_counter()
    out_dir = Path(out)
    images = discover_inputs(inputs, out_dir)
    if model is None and checkpoint is None and images and all(
            input_kind(path) == "audio" for path, _ in images):
        model = DEFAULT_AUDIO_MODEL  # audio without a model: the embedded spectrogram model
    model = model_or_default(model, checkpoint)
    save_arrays = save_arrays or report  # the report is built from the arrays
    check_weights(model, weights, checkpoint)
    if (ema or num_heads) and checkpoint is None:
        raise CliUsageError(f"{'--ema' if ema else '--num-heads'} applies to --checkpoint files")
    if model is not None:
        check_model_name(model)
    jobs = plan_jobs(images, out_dir, fmt, save_arrays)
    check_raw_options(jobs, input_size, no_crop, array_as_image,
                      audio_config is not None or frames is not None)
    audio = resolve_audio_options(audio_config, frames)
    check_overwrite([f for job in jobs for f in job.outputs()], force)
    if report:
        check_report_out(out_dir / "report", force)
    if model is not None:
        check_architecture(model, input_size)

    from conformer_xai.data import class_names_for

    with no_empty_folder_on_failure(out_dir):
        prepare_out_dir(out_dir)
        dev = resolve_device(device)
        t = time.perf_counter()
        net = load_model(model, weights, checkpoint, num_classes, in_chans, new_head, dev,
                         ema=ema, num_heads=num_heads, size_mismatch=size_mismatch)
        model = getattr(net, "model_name", None) or model
        model_load_s = time.perf_counter() - t
        source = net.weights_source
        notes = weights_notes(net)
        photos = sum(input_kind(job.path) == "photo" for job in jobs)
        if source == "embedded" and photos:
            notes.append(EMBEDDED_ON_PHOTO.format(model=model)
                         + f" ({photos} photo(s) given)")
        for text in notes:
            note(text)
        try:
            class_names = class_names_for(net, labels)
        except (ValueError, OSError) as exc:
            where = f"--labels {labels}: " if labels else ""
            raise CliUsageError(f"{where}{describe(exc)}") from exc
        options: dict[str, Any] = {
            "target": resolve_target(target, class_names, getattr(net, "num_classes", None)),
            "blocks": list(blocks) if blocks else None, "tap": tap}
        if reduce is not None:
            options["reduce"] = reduce
        if methods:
            options["methods"] = methods
        caveat = run_caveat(net, methods, blocks)
        if caveat:
            notes.append(caveat)
            note(caveat)

        batch_run = BatchRun(net=net, model=model, source=source, device=dev,
                             fmt=fmt, input_size=input_size, crop=not no_crop, force=force,
                             debug=debug, quiet=as_json, array_as_image=array_as_image,
                             audio_config=audio)
        batch_run.run(jobs, batch_size, class_names, heads, options)
        run = {"command": "explain", "model": model, "weights": source,
               "checkpoint": checkpoint, "ema": ema,
               "size_mismatch": getattr(net, "size_mismatch", None), "device": dev,
               "out": str(out_dir), "notes": notes,
               "images": batch_run.summaries,
               "failed": [{"input": p, "error": e} for p, e in batch_run.failures],
               "timings_s": {"model_load": round(model_load_s, 4),
                             "total": round(time.perf_counter() - started, 4)}}
        if report and batch_run.summaries:
            write_report(out_dir, out_dir / "report", force=force, debug=debug, quiet=as_json,
                         files=[Path(s["files"]["arrays"]) for s in batch_run.summaries])
            run["report"] = str(out_dir / "report" / "index.html")
        if as_json:
            echo_json(run)
        else:
            click.echo(f"wrote {len(batch_run.summaries)} of {len(jobs)} image(s) to "
                       f"{out_dir}")
            if "report" in run:
                click.echo(f"report: {run['report']}")
        if batch_run.failures:
            raise FailedInputs(batch_run.failures)
        return 0


@dataclass
class BatchRun:
    """Explains the jobs batch by batch and writes each image's outputs.

    A file that cannot be read or written is recorded in :attr:`failures` and the run goes on
    (with ``debug`` the error is raised instead); an option the explainer rejects stops the run
    as a usage error.
    """

    net: Any
    model: str
    source: str
    device: str
    fmt: str
    input_size: tuple[int, int] | None
    crop: bool
    force: bool
    debug: bool
    quiet: bool
    array_as_image: bool = False
    audio_config: dict[str, Any] | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def run(self, jobs: list[ImageJob], batch_size: int, class_names: list[str] | None,
            heads: tuple[str, ...] | None, options: dict[str, Any]) -> None:
        from tqdm import tqdm

        from conformer_xai.explain import Explainer

        try:
            explainer = Explainer(self.net, class_names=class_names)
        except ValueError as exc:  # a model family without an adapter
            raise CliUsageError(f"--model {self.model}: {describe(exc)}") from exc
        quiet_bar = len(jobs) < 2 or not sys.stderr.isatty()  # no bar mixed into a log file
        with explainer, tqdm(total=len(jobs), unit="image", file=sys.stderr, disable=quiet_bar,
                             leave=False) as bar:
            options = {**options, "head": heads or tuple(explainer.heads)}
            for start in range(0, len(jobs), batch_size):
                loaded = []
                for job in jobs[start:start + batch_size]:
                    item = self.load(job)
                    if item is None:
                        bar.update(1)
                    else:
                        loaded.append(item)
                for group in _same_shape_groups(loaded):
                    for job, exp in self.explain(explainer, group, options):
                        if self.write(job, exp) and not self.quiet:
                            bar.write(_human_line(job, exp))
                        bar.update(1)

    def fail(self, job: ImageJob, exc: BaseException, what: str = "") -> None:
        """Record that ``job`` failed (with ``debug``: raise the error instead)."""
        if self.debug:
            raise exc
        message = f"{what}{describe(exc)}"
        if not message.startswith(str(job.path)):
            message = f"{job.path}: {message}"
        self.failures.append((str(job.path), message))

    def load(self, job: ImageJob) -> tuple[ImageJob, Any, Any] | None:
        from conformer_xai.data import load_image

        t = time.perf_counter()
        kind = input_kind(job.path, self.array_as_image)
        try:
            if kind == "audio":
                from conformer_xai.audio import load_audio

                x, image, job.meta = load_audio(job.path, self.net, self.audio_config,
                                                with_meta=True)
            elif kind == "array":
                x, image = load_image(job.path, self.net)
            else:
                x, image = load_image(job.path, self.net, input_size=self.input_size,
                                      crop=self.crop, as_image=self.array_as_image)
        except Exception as exc:  # any unreadable input is that file's failure, not the run's
            self.fail(job, exc)
            return None
        job.timings["load_s"] = time.perf_counter() - t
        return job, x, image

    def explain(self, explainer: Any, group: list[tuple[ImageJob, Any, Any]],
                options: dict[str, Any]) -> list[tuple[ImageJob, Any]]:
        """Explain one group of same-shape inputs, their display images passed along once."""
        import numpy as np
        import torch

        x = torch.cat([item[1] for item in group]).to(self.device)
        t = time.perf_counter()
        from conformer_xai.explain.caveats import SignedTapWarning

        try:
            with warnings.catch_warnings():  # printed once as a note: line (run_caveat)
                warnings.simplefilter("ignore", SignedTapWarning)
                exp = explainer.explain(x, image=np.stack([np.asarray(item[2], dtype=np.float32)
                                                           for item in group]), **options)
        except ValueError as exc:
            if self.debug:
                raise
            raise CliUsageError(describe(exc)) from exc
        per_image = (time.perf_counter() - t) / len(group)
        out = []
        for i, (job, _, _) in enumerate(group):
            job.timings["explain_s"] = per_image
            one = exp.select(i)
            kind = input_kind(job.path, self.array_as_image)
            one.meta.update({"weights_source": self.source, "input_kind": kind,
                             "input": str(job.path), "notes": self.image_notes(one.meta, kind),
                             "size_mismatch": getattr(self.net, "size_mismatch", None),
                             **job.meta})
            out.append((job, one))
        return out

    def image_notes(self, meta: dict[str, Any], kind: str) -> list[str]:
        """The notes that concern one image: the explanation's warnings (random weights); an
        embedded model on a photo."""
        from conformer_xai.explain.caveats import warning_messages

        notes = warning_messages(meta)
        if self.source == "embedded" and kind == "photo":
            notes.append(EMBEDDED_ON_PHOTO.format(model=self.model))
        return notes

    def write(self, job: ImageJob, exp: Any) -> bool:
        """Write the figure, the arrays (when asked) and the JSON summary of one image."""
        from conformer_xai.plot import explanation_figure, spectrogram_figure

        try:
            t = time.perf_counter()
            job.figure.parent.mkdir(parents=True, exist_ok=True)
            spectro = exp.meta["input_kind"] in SPECTRO_KINDS and exp.blocks("gradcam", "cnn")
            draw = spectrogram_figure if spectro else explanation_figure
            draw(exp).savefig(job.figure, format=self.fmt, dpi=150 if not spectro else 110)
            job.timings["figure_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if job.arrays is not None:
                exp.save(job.arrays, overwrite=self.force)
            summary = self.summary(job, exp)
            job.timings["write_s"] = time.perf_counter() - t
            summary["timings_s"] = {k: round(v, 4) for k, v in job.timings.items()}
            write_json(job.summary, summary)
        except OSError as exc:
            self.fail(job, exc, "cannot write outputs: ")
            return False
        self.summaries.append(summary)
        return True

    def summary(self, job: ImageJob, exp: Any) -> dict[str, Any]:
        target = int(exp.target[0])
        return {
            "input": str(job.path), "model": self.model, "weights": self.source,
            "input_kind": exp.meta["input_kind"], "device": self.device,
            "input_size": list(exp.input_size), "heads": list(exp.heads),
            "tap": exp.meta.get("tap"), "reduce": exp.meta.get("reduce"),
            "methods": exp.methods, "maps": exp.keys(),
            "target": {"index": target, "name": exp.class_name(target)},
            "predictions": exp.predictions(), "notes": exp.meta["notes"],
            "size_mismatch": exp.meta.get("size_mismatch"),
            **({"audio": exp.meta["audio"], "fold": exp.meta["fold"]}
               if "audio" in exp.meta else {}),
            **relevance_summary(exp),
            "files": {"figure": str(job.figure), "summary": str(job.summary),
                      "arrays": None if job.arrays is None else str(job.arrays)},
        }


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


def _same_shape_groups(loaded: list[tuple[ImageJob, Any, Any]]
                       ) -> list[list[tuple[ImageJob, Any, Any]]]:
    """Images of one batch grouped by tensor and display shape (sizes differ only with
    --no-crop; inputs of different kinds may share a tensor shape)."""
    import numpy as np

    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], list[tuple[ImageJob, Any, Any]]] = {}
    for item in loaded:
        groups.setdefault((tuple(item[1].shape[1:]), np.shape(item[2])), []).append(item)
    return list(groups.values())


def relevance_summary(exp: Any) -> dict[str, Any]:
    """The JSON fields of the LRP variants (one image): conservation, branch shares, flows."""
    out: dict[str, Any] = {}
    for variant in ("lrp", "attnlrp"):
        cons = exp.meta.get(f"{variant}_conservation")
        if cons:
            out[variant] = {h: {k: v[0] for k, v in c.items()} for h, c in cons.items()}
    if exp.flows:
        out["branch_share"] = {h: v[0] for h, v in exp.meta.get("branch_share", {}).items()}
        out["flows"] = {h: [{k: v if k == "block" else v[0] for k, v in row.items()}
                            for row in rows] for h, rows in exp.flows.items()}
    return out


def _human_line(job: ImageJob, exp: Any) -> str:
    tops = [f"{head}: {top[0]['name']} {top[0]['prob']:.2f}"
            for head, top in exp.predictions(k=1).items()]
    line = f"{job.path} -> {job.figure}  ({'; '.join(tops)})"
    shares = exp.meta.get("branch_share") if exp.flows else None
    if shares:
        parts = [f"{h} head {s[0]['cnn']:.0%} CNN / {s[0]['transformer']:.0%} patch embedding"
                 for h, s in shares.items()]
        line += "\n  LRP relevance reaching the stem through each branch's input path: " + \
            "; ".join(parts)
    return line
