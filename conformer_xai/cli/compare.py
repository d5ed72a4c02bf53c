"""``conformer-xai compare``: the paper's feature-map figure for one image across models."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from .checks import (
    check_architecture,
    check_model_name,
    check_weights,
    load_model,
    resolve_device,
    weights_notes,
)
from .errors import CliRuntimeError, CliUsageError, describe, note, report_errors
from .explain_inputs import EMBEDDED_ON_PHOTO, input_kind
from .options import (
    EMBEDDED_IMAGE_MODELS,
    WEIGHTS,
    CommaList,
    debug_option,
    device_option,
    force_option,
    format_option,
    json_option,
)
from .output import check_overwrite, echo_json, prepare_out_dir, write_json

PUBLISHED_MODELS = ("resnet101", "deit_small_patch16_224", "conformer_small_patch16")


@click.command("compare")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--models", type=CommaList(), default=None,
              help=f"Models, comma-separated (default: {', '.join(PUBLISHED_MODELS)}; with "
                   f"--weights embedded: {', '.join(EMBEDDED_IMAGE_MODELS)}).")
@click.option("--weights", type=click.Choice(WEIGHTS), default=None,
              help="Weights source for every model (default: each model's own).")
@click.option("--out", type=click.Path(file_okay=False), default="conformer-xai-out",
              show_default=True, help="Output folder.")
@click.option("--style", type=click.Choice(("overlay", "paper")), default="overlay",
              show_default=True,
              help="overlay: the mean feature map over the image (jet); paper: the paper's "
                   "layout, two single-channel maps per model and depth, stand-alone, "
                   "black-red-yellow, blocky cells.")
@format_option
@device_option
@json_option
@force_option
@debug_option
@report_errors
def compare_command(image: str, models: tuple[str, ...] | None, weights: str | None, out: str,
                    style: str, fmt: str, device: str, as_json: bool, force: bool,
                    debug: bool) -> int:
    """Draw the paper's feature-map figure for IMAGE: a CNN, Conformer's CNN branch, a
    transformer, Conformer's transformer branch, at shallow and deep blocks.

    Writes <out>/<image name>_compare.<format> and a JSON summary beside it.
    """
    started = time.perf_counter()
    if models is None:
        models = EMBEDDED_IMAGE_MODELS if weights == "embedded" else PUBLISHED_MODELS
    for name in models:
        check_weights(name, weights, None)
        check_model_name(name)
    path = Path(image)
    out_dir = Path(out)
    figure = out_dir / f"{path.stem}_compare.{fmt}"
    summary = out_dir / f"{path.stem}_compare.json"
    check_overwrite([figure, summary], force)
    for name in models:
        check_architecture(name)
    prepare_out_dir(out_dir)

    from conformer_xai.data import load_image
    from conformer_xai.explain import Explainer
    from conformer_xai.plot import paper_figure
    from conformer_xai.plot.report import WARNING_COLOUR

    dev = resolve_device(device)
    notes: list[str] = []
    explanations: dict[str, Any] = {}
    display = None
    for name in models:
        net = load_model(name, weights, device=dev)
        notes += weights_notes(net)
        if net.weights_source == "embedded" and input_kind(path) == "photo":
            notes.append(EMBEDDED_ON_PHOTO.format(model=name))
        try:
            x, shown = load_image(path, net)
        except ValueError as exc:
            if debug:
                raise
            raise CliRuntimeError(describe(exc)) from exc
        with Explainer(net) as explainer:
            try:
                exp = explainer.explain(x.to(dev), methods=("features",),
                                        channels=2 if style == "paper" else 0)
            except ValueError as exc:
                raise CliUsageError(f"{name}: {describe(exc)}") from exc
        exp.meta.update({"weights_source": net.weights_source, "input_kind": input_kind(path)})
        explanations[name] = exp
        display = shown if display is None else display
    notes = list(dict.fromkeys(notes))
    for text in notes:
        note(text)
    try:
        fig = paper_figure(display, explanations, style=style)
    except ValueError as exc:  # e.g. two CNN models: the figure has one column per role
        raise CliUsageError(f"--models: {describe(exc)}") from exc
    if notes:  # the figure itself says when its maps carry no meaning
        fig.supxlabel("\n".join(notes), fontsize=9, color=WARNING_COLOUR)
    fig.savefig(figure, format=fmt, dpi=150)
    result = {"command": "compare", "input": str(path), "models": list(models), "style": style,
              "weights": {n: e.meta["weights_source"] for n, e in explanations.items()},
              "notes": notes,
              "files": {"figure": str(figure), "summary": str(summary)},
              "timings_s": {"total": round(time.perf_counter() - started, 4)}}
    write_json(summary, result)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{path} -> {figure}")
    return 0
