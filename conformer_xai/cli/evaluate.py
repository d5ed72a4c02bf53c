"""``conformer-xai evaluate``: localisation, faithfulness and sanity metrics on generated scenes."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..names import FAITHFULNESS
from ._map_options import given_method_options, method_options, reduce_option, tap_option
from .checks import check_architecture, check_model_name, check_weights, load_model, resolve_device
from .errors import CliRuntimeError, CliUsageError, api_errors, note, report_errors
from .options import (
    DEFAULT_AUDIO_MODEL,
    EMBEDDED_IMAGE_MODELS,
    EMBEDDED_MODELS,
    HEADS,
    METHODS,
    CommaList,
    blocks_option,
    debug_option,
    device_option,
    force_option,
    json_option,
    model_options,
)
from .output import check_overwrite, echo_json


@click.command("evaluate")
@model_options(
    model_help="Model name, e.g. conformer_micro_patch16 (required without --audio; with "
               "--audio the default is conformer_micro_audio).",
    weights_help="Weights source (default: embedded, which only the small models have).",
    checkpoint_help="A checkpoint of the model trained on the synthetic scenes (e.g. written "
                    "by train-synthetic) instead of --weights.")
@click.option("--audio", is_flag=True,
              help="Score a spectrogram model on the generated sound scenes (time-frequency "
                   "masks; maps unfolded to mel band x frame) instead of the image scenes.")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Number of generated test scenes (default: 200; 70 with --audio).")
@click.option("--methods", type=CommaList(METHODS), default=None,
              help="Methods, comma-separated (default: the engine's defaults that apply).")
@blocks_option
@click.option("--head", "heads", type=CommaList(HEADS), default=None,
              help="Classifier heads of the gradient methods (default: all of the model's).")
@click.option("--faithfulness", type=click.Choice(FAITHFULNESS), default="last",
              show_default=True,
              help="Maps that get deletion/insertion AUC: the last block of each branch and "
                   "rollout, all maps, or none.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True,
              help="Steps of the deletion and insertion curves (fewer is cheaper).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the scenes and of the randomised model.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per explanation pass (default: 32; 14 with --audio).")
@tap_option
@reduce_option
@method_options
@click.option("--headless-head", type=click.Choice(("own", *HEADS)), default="own",
              show_default=True,
              help="Head that scores deletion/insertion of head-less maps (features, attention, "
                   "rollout): own = the map's own branch's head.")
@click.option("--cascade-n", type=click.IntRange(min=0), default=16, show_default=True,
              help="Scenes of the cascading randomisation curve (0: none; image scenes).")
@click.option("--cascade-figure", type=click.Path(dir_okay=False), default=None,
              help="Write the cascading randomisation curve (one line per method) here "
                   "(.png, .pdf, .svg).")
@device_option
@force_option
@json_option
@debug_option
@report_errors
def evaluate_command(model: str | None, audio: bool, weights: str | None, checkpoint: str | None,
                     n: int | None,
                     methods: tuple[str, ...] | None, blocks: tuple[int, ...] | None,
                     heads: tuple[str, ...] | None,
                     faithfulness: str, steps: int, seed: int, batch_size: int | None,
                     tap: str, reduce: str | int | None, headless_head: str, cascade_n: int,
                     cascade_figure: str | None, device: str, force: bool, as_json: bool,
                     debug: bool) -> int:
    """Score the maps on N generated scenes whose object masks are known.

    Prints one row per method, head, branch and block: pointing game, energy pointing game,
    part/body/off shares, deletion and insertion AUC, randomisation similarity. Deletion and
    insertion (the expensive ones) run on the last block of each branch and on rollout unless
    --faithfulness says otherwise. With --audio: the same scores on generated sound scenes for
    a spectrogram model (default conformer_micro_audio, embedded weights), deletion and
    insertion filling cells with the -100 dB floor.
    """
    if model is None:
        if not audio:
            raise CliUsageError("Missing option '--model' (e.g. conformer_micro_patch16), or "
                                "--audio for the spectrogram model")
        model = DEFAULT_AUDIO_MODEL
    if audio and model in EMBEDDED_IMAGE_MODELS:
        raise CliUsageError(f"--audio scores a spectrogram model of the sound scenes; {model} "
                            f"was trained on the image scenes (use {DEFAULT_AUDIO_MODEL})")
    if not audio and model == DEFAULT_AUDIO_MODEL:
        raise CliUsageError(f"{model} is a spectrogram model of the sound scenes: add --audio")
    n = n if n is not None else (70 if audio else 200)
    method_opts = given_method_options(methods)
    batch_size = batch_size if batch_size is not None else (14 if audio else 32)
    check_model_name(model)
    check_weights(model, weights, checkpoint)
    if weights is None and checkpoint is None:
        embedded = (DEFAULT_AUDIO_MODEL,) if audio else EMBEDDED_IMAGE_MODELS
        if model not in EMBEDDED_MODELS:
            raise CliUsageError(f"evaluate needs a model trained on the synthetic scenes: one "
                                f"with embedded weights ({', '.join(embedded)}) or "
                                f"--checkpoint FILE (e.g. from train-synthetic); {model} has "
                                "no embedded weights")
        weights = "embedded"
    check_architecture(model)
    if audio and (tap != "residual" or reduce is not None or headless_head != "own"
                  or cascade_figure is not None):
        raise CliUsageError("--tap, --reduce, --headless-head and --cascade-figure apply to the "
                            "image scenes, not to --audio")
    if cascade_figure is not None:
        from pathlib import Path

        if cascade_n == 0:
            raise CliUsageError("--cascade-figure needs --cascade-n > 0")
        check_overwrite([Path(cascade_figure)], force)
    dev = resolve_device(device)

    from conformer_xai.metrics.evaluate import evaluate, format_table
    from conformer_xai.metrics.evaluate_audio import evaluate_audio, format_audio_table
    from conformer_xai.models.weights import WeightsError

    subject: Any = model
    if checkpoint is not None:
        subject = load_model(model, None, checkpoint, device=dev)
    from conformer_xai.explain.caveats import warning_messages, weights_warnings

    for text in warning_messages({"warnings": weights_warnings(model, weights,
                                                               "maps and scores")}):
        note(text)
    options: dict[str, Any] = {}
    if methods:
        options["methods"] = list(methods)
    if blocks:
        options["blocks"] = list(blocks)
    if heads:
        options["heads"] = list(heads)
    if method_opts:
        options["method_options"] = method_opts
    table = format_audio_table if audio else format_table
    with api_errors(debug, runtime=(WeightsError,)):
        if audio:
            result = evaluate_audio(subject, weights=weights, n=n, seed=seed,
                                    batch_size=batch_size, faithfulness=faithfulness,
                                    steps=steps, device=dev, progress=sys.stderr.isatty(),
                                    **options)
        else:
            result = evaluate(subject, weights=weights, n=n, seed=seed, batch_size=batch_size,
                              faithfulness=faithfulness, steps=steps, device=dev,
                              progress=sys.stderr.isatty(), tap=tap, reduce=reduce,
                              headless_head=headless_head, cascade_n=cascade_n, **options)
    from conformer_xai.explain.caveats import signed_tap_note

    caveat = signed_tap_note(methods or (), ("transformer",))
    if caveat and result["rows"] and any(r["branch"] == "transformer" for r in result["rows"]):
        note(caveat)
    if cascade_figure is not None and result.get("cascade"):
        from conformer_xai.plot import cascade_figure as draw

        try:
            draw(result).savefig(cascade_figure)
        except (OSError, ValueError) as exc:
            raise CliRuntimeError(f"cannot write --cascade-figure {cascade_figure}: "
                                  f"{exc}") from exc
    if as_json:
        echo_json({"command": "evaluate", **result})
    else:
        click.echo(table(result))
    return 0
