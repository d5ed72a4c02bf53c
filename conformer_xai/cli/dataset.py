"""``conformer-xai explain-dataset``: every map of every image of a folder into a Zarr store."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import (
    HEADS,
    METHODS,
    WEIGHTS,
    CliRuntimeError,
    CliUsageError,
    CommaList,
    FailedInputs,
    InputSize,
    api_errors,
    blocks_option,
    check_architecture,
    check_model_name,
    check_weights,
    checkpoint_options,
    debug_option,
    describe,
    device_option,
    echo_json,
    force_option,
    json_option,
    load_model,
    model_or_default,
    no_empty_folder_on_failure,
    note,
    prepare_out_dir,
    report_errors,
    resolve_device,
    weights_notes,
)


@click.command("explain-dataset")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "store", required=True, type=click.Path(path_type=Path),
              help="The Zarr store to write (resumed when it exists).")
@click.option("--model", default=None,
              help="Model name (default: conformer_small_patch16; with --checkpoint the name "
                   "saved in it, else the architecture read from its weights).")
@click.option("--weights", type=click.Choice(WEIGHTS), default=None,
              help="Weights source (default: embedded for the small models, else imagenet).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A checkpoint file (.pth, .pt, .safetensors) instead of --weights.")
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
@click.option("--input-size", type=InputSize(), default=None,
              help="Model input HxW (default: the model's data config).")
@click.option("--no-crop", is_flag=True, help="Resize to --input-size without a centre crop.")
@click.option("--dtype", type=click.Choice(("float16", "float32")), default="float16",
              show_default=True, help="Storage type of the maps.")
@click.option("--bf16", is_flag=True, help="Forward and backward under bfloat16 autocast.")
@click.option("--channels-last", is_flag=True, help="Channels-last memory format (GPU).")
@click.option("--no-resume", is_flag=True,
              help="Refuse to continue an existing store (use --force to start over).")
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
                            heads: tuple[str, ...] | None, input_size: tuple[int, int] | None,
                            no_crop: bool, dtype: str, bf16: bool, channels_last: bool,
                            no_resume: bool, merge: bool, device: str, force: bool,
                            as_json: bool, debug: bool) -> int:
    """Explain every image under DIRECTORY (recursively) into a chunked, resumable Zarr store.

    Maps are stored at grid resolution (float16 by default) with each image's raw range, plus a
    predictions CSV. A killed run resumes where it stopped. Under torchrun each rank writes its
    own shard; `--merge` merges them by index.
    """
    if merge:
        from conformer_xai.batch import merge_shards

        try:
            summary = merge_shards(store)
        except (FileNotFoundError, FileExistsError, ValueError) as exc:
            raise CliRuntimeError(describe(exc)) from exc
        if as_json:
            echo_json({"command": "explain-dataset", "merged": summary})
        else:
            note(f"merged shards into {store}")
        return 0
    if not directory.is_dir():
        raise CliUsageError(f"input folder not found: {directory}")
    if no_crop and input_size is None:
        raise CliUsageError("--no-crop needs --input-size HxW")
    model = model_or_default(model, checkpoint)
    if model is not None:
        check_model_name(model)
    check_weights(model, weights, checkpoint)
    if model is not None:
        check_architecture(model, input_size)
    audio = None
    if audio_config is not None or frames is not None:
        from .explain import resolve_audio_options

        audio = resolve_audio_options(audio_config, frames)
    dev = resolve_device(device)

    from conformer_xai.batch import run_dataset

    with no_empty_folder_on_failure(store):
        if not store.exists():
            prepare_out_dir(store, "store")
        net = load_model(model, weights, checkpoint, device=dev, ema=ema, num_heads=num_heads,
                         size_mismatch=size_mismatch)
        for line in weights_notes(net):
            note(line)
        with api_errors(debug, runtime=(OSError,)):
            summary = run_dataset(
                directory, store, net, batch_size=batch_size, num_workers=num_workers,
                methods=list(methods) if methods else None,
                blocks=list(blocks) if blocks else None, heads=list(heads) if heads else None,
                input_size=input_size, crop=not no_crop, audio_config=audio, device=dev,
                dtype=dtype,
                autocast_dtype="bfloat16" if bf16 else None, channels_last=channels_last,
                resume=not no_resume, force=force)
    summary["weights_source"] = getattr(net, "weights_source", None)
    if as_json:
        echo_json({"command": "explain-dataset", **summary})
    else:
        note(f"{summary.get('processed', 0)} images explained, "
             f"{summary.get('already_done', 0)} already done, {summary.get('failed', 0)} "
             f"failed -> {store}")
    failures = [(f["input"], f["error"] if f["error"].startswith(f["input"])
                 else f"{f['input']}: {f['error']}") for f in summary.get("failures") or []]
    if failures:
        raise FailedInputs(failures)
    return 1 if summary.get("failed") else 0
