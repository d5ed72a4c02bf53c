"""``conformer-xai explain-dataset``: every map of every image of a folder into a Zarr store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
from .errors import (
    CliRuntimeError,
    CliUsageError,
    FailedInputs,
    api_errors,
    describe,
    note,
    report_errors,
)
from .options import (
    DEFAULT_AUDIO_MODEL,
    HEADS,
    METHODS,
    CommaList,
    InputSize,
    blocks_option,
    checkpoint_options,
    debug_option,
    device_option,
    force_option,
    json_option,
    model_options,
    model_or_default,
)
from .output import echo_json, no_empty_folder_on_failure
from .report import check_report_out, write_report


def report_folder(store: Path) -> Path:
    """Where ``explain-dataset --report`` writes the site: ``<store>-report`` beside the store
    (the store folder itself holds only what the Zarr layout names)."""
    return store.parent / f"{store.name}-report"


@click.command("explain-dataset")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "store", required=True, type=click.Path(path_type=Path),
              help="The Zarr store to write (resumed when it exists).")
@model_options(
    model_help="Model name (default: conformer_small_patch16, or conformer_micro_audio for a "
               "folder of audio clips; with --checkpoint the name saved in it, else the "
               "architecture read from its weights).",
    weights_help="Weights source (default: embedded for the small models, else imagenet).",
    checkpoint_help="A checkpoint file (.pth, .pt, .safetensors) instead of --weights.")
@checkpoint_options
@click.option("--audio-config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file of audio front-end settings (as for explain).")
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Pad or crop every audio clip to this many frames (one common size).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per explanation pass.")
@click.option("--num-workers", type=click.IntRange(min=0), default=4, show_default=True,
              help="DataLoader worker processes decoding images.")
@click.option("--methods", type=CommaList(METHODS), default=None,
              help="Methods, comma-separated (default: the engine's full set).")
@blocks_option
@click.option("--head", "heads", type=CommaList(HEADS), default=None,
              help="Classifier heads of the gradient methods (default: fused, or the only one).")
@tap_option
@reduce_option
@method_options
@click.option("--input-size", type=InputSize(), default=None,
              help="Model input HxW (default: the model's data config).")
@click.option("--no-crop", is_flag=True, help="Resize to --input-size without a centre crop.")
@click.option("--dtype", type=click.Choice(("float16", "float32")), default="float16",
              show_default=True, help="Storage type of the maps.")
@click.option("--bf16", is_flag=True, help="Forward and backward under bfloat16 autocast.")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format (GPU).")
@click.option("--no-resume", is_flag=True,
              help="Refuse to continue an existing store (use --force to start over).")
@click.option("--extend", is_flag=True,
              help="On resume, add the images the store does not hold yet (else refused).")
@click.option("--report", is_flag=True,
              help="Also build the browsable HTML report of the store in STORE-report/ "
                   "(see `conformer-xai report`).")
@click.option("--merge", is_flag=True,
              help="Merge the per-rank shards of a finished multi-GPU run and exit.")
@device_option
@force_option
@json_option
@debug_option
@report_errors
def explain_dataset_command(directory: Path, store: Path, model: str | None,
                            weights: str | None, checkpoint: str | None, ema: bool,
                            num_heads: int | None, size_mismatch: str | None,
                            audio_config: str | None, frames: int | None,
                            batch_size: int, num_workers: int,
                            methods: tuple[str, ...] | None, blocks: tuple[int, ...] | None,
                            heads: tuple[str, ...] | None, tap: str, reduce: str | int | None,
                            input_size: tuple[int, int] | None,
                            no_crop: bool, dtype: str, bf16: bool, channels_last: bool,
                            no_resume: bool, extend: bool, report: bool, merge: bool,
                            device: str, force: bool, as_json: bool, debug: bool) -> int:
    """Explain every image under DIRECTORY (recursively) into a chunked, resumable Zarr store.

    Maps are stored at grid resolution (float16 by default) with each image's raw range, plus a
    predictions CSV. A killed or interrupted run resumes where it stopped; one run writes a
    store at a time; a resume explains again the images whose content changed. Under torchrun
    each rank writes its own shard; `--merge` merges them by index.
    """
    from conformer_xai.batch.lock import StoreBusyError

    if merge:
        from conformer_xai.batch import merge_shards

        try:
            summary = merge_shards(store)
        except StoreBusyError as exc:
            raise CliUsageError(describe(exc)) from exc
        except (OSError, ValueError) as exc:
            raise CliRuntimeError(describe(exc)) from exc
        if as_json:
            echo_json({"command": "explain-dataset", "merged": summary})
        elif summary["already_merged"]:
            note(f"{store} is already merged ({summary['images']} images); nothing to do")
        else:
            note(f"merged {summary['shards']} shards ({summary['images']} images) into {store}")
        return 0
    if not directory.is_dir():
        raise CliUsageError(f"input folder not found: {directory}")
    if no_crop and input_size is None:
        raise CliUsageError("--no-crop needs --input-size HxW")
    method_opts = given_method_options(methods)
    if model is None and checkpoint is None and _only_audio(directory):
        model = DEFAULT_AUDIO_MODEL  # as explain: audio without a model, the spectrogram model
    model = model_or_default(model, checkpoint)
    if model is not None:
        check_model_name(model)
    check_weights(model, weights, checkpoint)
    if model is not None:
        check_architecture(model, input_size)
    audio = None
    if audio_config is not None or frames is not None:
        from .explain_inputs import resolve_audio_options

        audio = resolve_audio_options(audio_config, frames)
    site = report_folder(store)
    if report:
        check_report_out(site, force)
    dev = resolve_device(device)

    from conformer_xai.batch import run_dataset

    with no_empty_folder_on_failure(store):
        check_store_path(store)
        net = load_model(model, weights, checkpoint, device=dev, ema=ema, num_heads=num_heads,
                         size_mismatch=size_mismatch)
        for line in weights_notes(net):
            note(line)
        with api_errors(debug, runtime=(OSError,), usage=(StoreBusyError,)):
            summary = run_dataset(
                directory, store, net, batch_size=batch_size, num_workers=num_workers,
                methods=list(methods) if methods else None,
                blocks=list(blocks) if blocks else None, heads=list(heads) if heads else None,
                tap=tap, reduce=reduce, input_size=input_size, crop=not no_crop,
                audio_config=audio, device=dev, dtype=dtype,
                autocast_dtype="bfloat16" if bf16 else None, channels_last=channels_last,
                resume=not no_resume, force=force, extend=extend,
                method_options=method_opts or None)
    summary["weights_source"] = getattr(net, "weights_source", None)
    if report and summary.get("predictions"):  # the store is complete
        from conformer_xai.data import class_names_for

        built = write_report(store, site, images=directory, labels=class_names_for(net),
                             force=force, debug=debug, quiet=as_json)
        summary["report"] = str(site / "index.html")
        if not as_json:
            note(f"report of {built['images']} images: {summary['report']}")
    if as_json:
        echo_json({"command": "explain-dataset", **summary})
    elif summary.get("merged") and not summary.get("processed"):
        note(f"{store} already holds the merged store of this run; nothing to do")
    else:
        failed_now = summary["processed"] - summary["explained"]
        note(f"{summary['explained']} images explained, {failed_now} failed, "
             f"{summary['already_done']} already done ({summary['failed'] or 0} failed in all) "
             f"-> {store}")
    failures = [(f["input"], f["error"] if f["error"].startswith(f["input"])
                 else f"{f['input']}: {f['error']}") for f in summary.get("failures") or []]
    if failures:
        raise FailedInputs(failures)
    return 1 if summary.get("failed") else 0


def check_store_path(store: Path) -> None:
    """Fail early, as a runtime error naming the store, when a missing store could not be
    created (its parent cannot be created or written). Creates the missing parents only: the
    store itself is created by the run, in a temporary sibling renamed into place."""
    if store.exists() or store.is_symlink():
        return
    parent = store.absolute().parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True)
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=f".{store.absolute().name}.probe-"))
    except OSError as exc:
        raise CliRuntimeError(f"cannot create store {store}: "
                              f"{exc.strerror or describe(exc)}") from exc


def _only_audio(directory: Path) -> bool:
    """Whether every input under ``directory`` is an audio clip (False when it holds none)."""
    from conformer_xai.inputs import find_images, input_kind_of

    try:
        found = find_images(directory)
    except (OSError, ValueError):  # no inputs: the run reports it
        return False
    return all(input_kind_of(path) == "audio" for path, _ in found)
