"""``conformer-xai explain``: one figure, one JSON summary (and optionally the arrays) per image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ._map_options import given_method_options, method_options, reduce_option, tap_option
from .checks import (
    check_architecture,
    check_model_name,
    check_weights,
    load_model,
    resolve_device,
    weights_notes,
)
from .errors import CliUsageError, FailedInputs, describe, note, report_errors
from .explain_inputs import (
    EMBEDDED_ON_PHOTO,
    check_raw_options,
    discover_inputs,
    input_kind,
    plan_jobs,
    resolve_audio_options,
    resolve_target,
)
from .explain_run import BatchRun
from .options import (
    DEFAULT_AUDIO_MODEL,
    DEFAULT_METHODS,
    HEADS,
    METHODS,
    CommaList,
    InputSize,
    blocks_option,
    checkpoint_options,
    debug_option,
    device_option,
    force_option,
    format_option,
    json_option,
    model_options,
    model_or_default,
)
from .output import (
    check_overwrite,
    echo_json,
    no_empty_folder_on_failure,
    prepare_out_dir,
)
from .report import check_report_out, write_report


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


@click.command("explain")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_FOLDER...")
@model_options(
    model_help="Model name: ours (conformer_*_patch*, *_micro*), the spectrogram fork's "
               "(Conformer_tinytiny_patch16, any case) or any timm name (default: "
               "conformer_small_patch16, for audio files only: conformer_micro_audio with its "
               "embedded weights; with --checkpoint the name saved in it, else the "
               "architecture read from its weights).",
    weights_help="Weights source (default: the model's own: imagenet for the published "
                 "models, embedded for the small ones). Not needed with --checkpoint.",
    checkpoint_help="A .pth/.pt/.safetensors file; class count and input channels are read "
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
              help=f"Methods, comma-separated, from: {', '.join(METHODS)} (default: "
                   f"{', '.join(DEFAULT_METHODS)} where they apply).")
@blocks_option
@tap_option
@reduce_option
@method_options
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
    method_opts = given_method_options(methods)
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
        if method_opts:
            options["method_options"] = method_opts
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
