"""``conformer-xai train-synthetic``: train a small model on the generated scenes."""

from __future__ import annotations

from pathlib import Path

import click

from .errors import CliRuntimeError, CliUsageError, api_errors, describe, report_errors
from .options import EMBEDDED_MODELS, PositiveFloat, debug_option, force_option, json_option
from .output import echo_json, no_empty_folder_on_failure


@click.command("train-synthetic")
@click.option("--model", default=None, type=click.Choice(EMBEDDED_MODELS),
              help="The small model to train (required without --audio).")
@click.option("--audio", is_flag=True,
              help="Train the spectrogram model conformer_micro_audio on the sound scenes.")
@click.option("--steps", type=click.IntRange(min=1), required=True,
              help="Optimiser steps; each sees --batch-size new scenes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the initialisation and of the training scenes.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder for <model>.safetensors (float16) and <model>.json (the model card "
                   "data).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Scenes per step (default: the training script's, 32).")
@click.option("--lr", type=PositiveFloat(), default=None,
              help="Peak AdamW learning rate (default: the model's own).")
@click.option("--eval-n", type=click.IntRange(min=0), default=None,
              help="Held-out scenes for the reported accuracy (default: the script's; 0 skips).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="DataLoader processes generating the training data (default 0: in the "
                   "training process).")
@json_option
@force_option
@debug_option
@report_errors
def train_synthetic_command(model: str | None, audio: bool, steps: int, seed: int, out: str,
                            batch_size: int | None, lr: float | None, eval_n: int | None,
                            threads: int | None, workers: int | None, as_json: bool,
                            force: bool, debug: bool) -> int:
    """Train a small model on freshly generated synthetic scenes and report its held-out
    accuracy. Progress goes to stderr; the result (also in <out>/<model>.json) to stdout.

    With --audio: conformer_micro_audio on the generated sound scenes (1-channel log-mel
    spectrograms, 224 x 224 after the fold)."""
    from conformer_xai.synthetic.sound_train import AUDIO_MODEL

    if model is None and not audio:
        raise CliUsageError("Missing option '--model' (one of "
                            f"{', '.join(m for m in EMBEDDED_MODELS if m != AUDIO_MODEL)}), or "
                            "--audio for the spectrogram model")
    if audio and model not in (None, AUDIO_MODEL):
        raise CliUsageError(f"--audio trains {AUDIO_MODEL}; {model} is an image model (drop "
                            "--audio)")
    audio = audio or model == AUDIO_MODEL
    options = {k: v for k, v in {"batch_size": batch_size, "lr": lr, "eval_n": eval_n,
                                 "threads": threads, "num_workers": workers}.items()
               if v is not None}
    try:
        with no_empty_folder_on_failure(out), api_errors(debug, runtime=(FileExistsError,)):
            say = lambda line: click.echo(line, err=True)  # noqa: E731
            if audio:
                from conformer_xai.synthetic.sound_train import train_audio_model

                result = train_audio_model(steps, seed=seed, out=Path(out), force=force, log=say,
                                           **options)
            else:
                from conformer_xai.synthetic.train import train_model

                result = train_model(model, steps, seed=seed, out=Path(out), force=force,
                                     log=say, **options)
    except OSError as exc:
        raise CliRuntimeError(f"cannot write to {out}: {describe(exc)}") from exc
    if as_json:
        echo_json(result)
    else:
        for key, value in result.items():
            if not isinstance(value, (dict, list)):
                click.echo(f"{key}: {value}")
    return 0
