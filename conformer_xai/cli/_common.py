"""What every command shares: error reporting, option types, shared options, output checks.

This module imports only click and the standard library, so that usage errors are answered
before torch loads. Everything heavy is imported inside the command functions.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from ..files import write_json  # noqa: F401  (the commands' JSON writer)

PROG = "conformer-xai"

METHODS = ("features", "attention", "gradcam", "gradcam++", "layercam", "hirescam", "eigencam",
           "rollout", "grad_rollout", "transcam", "lrp", "attnlrp", "integrated_gradients",
           "smoothgrad")
HEADS = ("fused", "cnn", "transformer")
OUR_MODELS = ("conformer_tiny_patch16", "conformer_small_patch16", "conformer_small_patch32",
              "conformer_base_patch16", "resnet_micro", "deit_micro_patch16",
              "conformer_micro_patch16", "conformer_micro_audio")
EMBEDDED_MODELS = ("resnet_micro", "deit_micro_patch16", "conformer_micro_patch16",
                   "conformer_micro_audio")
#: The embedded models of the image scenes (``compare --weights embedded``, ``evaluate``).
EMBEDDED_IMAGE_MODELS = ("resnet_micro", "deit_micro_patch16", "conformer_micro_patch16")
#: The embedded spectrogram model: the default for audio inputs without --model/--checkpoint.
DEFAULT_AUDIO_MODEL = "conformer_micro_audio"
WEIGHTS = ("imagenet", "embedded", "random")
DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("png", "pdf", "svg")
MIN_SIDE, MAX_SIDE, MAX_PIXELS = 32, 8192, 16 * 2**20
"""Bounds of --input-size: the explainer needs 32 pixels a side; the upper bounds reject sizes
that could never fit in memory but still allow long spectrograms such as 128x8000."""
MAX_FAILURE_LINES = 20
"""Failed inputs listed one line each; the rest are counted in one more line."""


# --------------------------------------------------------------------------- errors
class CliRuntimeError(click.ClickException):
    """A runtime failure (exit code 1): unreadable input, checkpoint, download, device, output."""

    exit_code = 1


class CliUsageError(click.ClickException):
    """A usage error (exit code 2): bad option value, unknown name, missing input path."""

    exit_code = 2


class FailedInputs(Exception):
    """Some inputs failed while the others were processed (exit code 1).

    Carries ``(path, message)`` pairs; each message names its file and becomes one error line.
    """

    def __init__(self, failures: Sequence[tuple[str, str]]) -> None:
        super().__init__(f"{len(failures)} input(s) failed")
        self.failures = list(failures)


def failure_lines(failures: Sequence[tuple[str, str]]) -> list[str]:
    """One error line per failed input, at most :data:`MAX_FAILURE_LINES` and a count of the
    rest (so that thousands of bad files do not flood the terminal)."""
    lines = [error_line(message) for _, message in failures[:MAX_FAILURE_LINES]]
    if len(failures) > MAX_FAILURE_LINES:
        lines.append(error_line(f"... and {len(failures) - MAX_FAILURE_LINES} more failed "
                                "input(s)"))
    return lines


def one_line(text: str) -> str:
    """Collapse a message onto one line."""
    return " ".join(str(text).split())


def error_line(message: str) -> str:
    return f"{PROG}: error: {one_line(message)}"


def note(message: str) -> None:
    """Print a note on stderr (never on stdout, which ``--json`` keeps for its summary)."""
    click.echo(f"{PROG}: note: {one_line(message)}", err=True)


#: The Python-API names in library messages and the options a CLI user knows them as.
CLI_WORDING = (
    (r"\bnew_head=True\b", "--new-head"),
    (r"\bnum_classes=(\d+)", r"--num-classes \1"),
    (r"\bin_chans=(\d+)", r"--in-chans \1"),
    (r"\bweights='(\w+)'", r"--weights \1"),
    (r"\bcheckpoint=PATH\b", "--checkpoint PATH"),
    (r"\bnum_heads=(?:N\b)?", "--num-heads N"),
    (r"\bema=True\b", "--ema"),
    (r"\bsize_mismatch\b", "--size-mismatch"),
    (r"\bas_image=True\b", "--array-as-image"),
    (r"\bset frames \(--frames\)", "pass --frames N"),
    (r"\b(?:overwrite|force)=True(?: \(--force\)|, --force)?", "--force"),
    (r"\bresume=True\b", "leave out --no-resume"),
    (r"\bextend=True\b", "--extend"),
    (r"\bdevice='(\w+)'", r"--device \1"),
    (r"\b(?:x|input) height and width must be", "the input height and width (--input-size) "
                                               "must be"),
)


def cli_wording(text: str) -> str:
    """A library message with its Python-API names replaced by the CLI's options."""
    for pattern, replacement in CLI_WORDING:
        text = re.sub(pattern, replacement, text)
    return text


def describe(exc: BaseException) -> str:
    """The message of an exception, without a traceback, on one line, in the CLI's words.

    An ``OSError`` from the system reads ``<file>: <reason>`` (no ``[Errno N]``).
    """
    text = one_line(str(exc))
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = one_line(str(exc.args[0]))
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return cli_wording(text) or type(exc).__name__


def warning_note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: a warning is one note line, without its source."""
    note(cli_wording(str(message)))


class CliGroup(click.Group):
    """A click group that reports every error as one line ``conformer-xai: error: ...``.

    Exit codes: 0 success, 1 runtime error, 2 usage error. Tracebacks appear only with
    ``--debug``, which makes the command re-raise the original exception.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args, prog_name or PROG, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(error_line(exc.format_message()), err=True)
            sys.exit(exc.exit_code)
        except FailedInputs as exc:
            for line in failure_lines(exc.failures):
                click.echo(line, err=True)
            sys.exit(1)
        except click.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # click's wrapping of Ctrl-C
                click.echo(error_line("interrupted"), err=True)
                sys.exit(130)
            click.echo(error_line("aborted"), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(error_line("interrupted"), err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def report_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command body; without ``--debug`` an unexpected exception becomes one error line
    and a warning one note line (``--debug`` keeps Python's traceback and warning format).

    The command must take a ``debug`` keyword (see :func:`debug_option`).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = kwargs.get("debug", False)
        try:
            with warnings.catch_warnings():
                if not debug:
                    warnings.showwarning = warning_note
                return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, FailedInputs):
            raise
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            if debug:
                raise
            raise CliRuntimeError(f"{type(exc).__name__}: {describe(exc)}") from exc

    return wrapper


# --------------------------------------------------------------------------- option types
class CommaList(click.ParamType):
    """A comma-separated list; with ``choices``, every item must be one of them."""

    name = "list"

    def __init__(self, choices: Sequence[str] | None = None) -> None:
        self.choices = tuple(choices) if choices else None

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        items = tuple(v.strip() for v in str(value).split(",") if v.strip())
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        if self.choices:
            bad = [v for v in items if v not in self.choices]
            if bad:
                self.fail(f"unknown {', '.join(map(repr, bad))}; choose from "
                          f"{', '.join(self.choices)}", param, ctx)
        return tuple(dict.fromkeys(items))


class BlockList(click.ParamType):
    """Comma-separated 1-based block numbers or ranges: ``1,6,12`` or ``1-4,12``."""

    name = "blocks"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        blocks: list[int] = []
        for item in (v.strip() for v in str(value).split(",")):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
            if not m:
                self.fail(f"{item!r} is not a block number or range (e.g. 1,6,12 or 1-12)",
                          param, ctx)
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo < 1 or hi < lo:
                self.fail(f"{item!r}: blocks are numbered from 1 and ranges go upwards",
                          param, ctx)
            blocks.extend(range(lo, hi + 1))
        return tuple(dict.fromkeys(blocks))


class InputSize(click.ParamType):
    """``HxW`` (e.g. ``128x512``) or one number for a square input, within the bounds
    :data:`MIN_SIDE`, :data:`MAX_SIDE` and :data:`MAX_PIXELS`."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(value))
        if not m:
            self.fail(f"{value!r} is not a size; write HxW with positive integers, e.g. 224x224",
                      param, ctx)
        h, w = int(m.group(1)), int(m.group(2) or m.group(1))
        if min(h, w) < MIN_SIDE:
            self.fail(f"{h}x{w} is too small: height and width must be at least {MIN_SIDE}",
                      param, ctx)
        if max(h, w) > MAX_SIDE or h * w > MAX_PIXELS:
            self.fail(f"{h}x{w} is too large: at most {MAX_SIDE} pixels a side and "
                      f"{MAX_PIXELS // 2**20} megapixels in all (e.g. 128x8000)", param, ctx)
        return h, w


class PositiveFloat(click.ParamType):
    """A finite number > 0 (``inf`` and ``nan`` are refused)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r} is not a finite number > 0", param, ctx)
        return number


@contextlib.contextmanager
def api_errors(debug: bool, runtime: tuple[type[BaseException], ...] = (),
               usage: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Map the exceptions of a public-API call to exit codes.

    ``runtime`` classes become runtime errors (1); ``usage`` classes and any other ValueError
    (options that do not fit together) become usage errors (2), re-raised as they are under
    ``--debug``.
    """
    try:
        yield
    except runtime as exc:
        raise CliRuntimeError(describe(exc)) from exc
    except usage as exc:
        raise CliUsageError(describe(exc)) from exc
    except ValueError as exc:
        if debug:
            raise
        raise CliUsageError(describe(exc)) from exc


def check_model_name(name: str) -> None:
    """Raise a usage error unless ``name`` is one of ours or a timm model name.

    Our names are checked without importing anything; other names import timm.
    """
    if name in OUR_MODELS:
        return
    import timm

    import conformer_xai  # noqa: F401  (registers our names with timm)

    if not (timm.is_model(name) or timm.is_model(name.lower())):  # fork names: Conformer_...
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5] if name else []
        hint = f"; similar timm names: {', '.join(close)}" if close else ""
        raise CliUsageError(f"unknown model {name!r}; ours are {', '.join(OUR_MODELS)}, "
                            f"or give any timm model name{hint}")


def check_architecture(name: str, input_size: tuple[int, int] | None = None) -> None:
    """Usage errors that the model's architecture shows before any weights load: a model family
    the explainer has no adapter for (``--model``) and an ``--input-size`` the model cannot take.

    The model is built on the meta device (no weights, no memory, no download). A model that
    cannot be built there is left to the real load to report.
    """
    import timm
    import torch

    import conformer_xai  # noqa: F401  (registers our names with timm)
    from conformer_xai.explain.taps import adapter_for

    try:
        with torch.device("meta"):
            net = timm.create_model(name, pretrained=False)
    except Exception:  # noqa: BLE001  (any failure here is the real load's to report)
        return
    try:
        adapter = adapter_for(net)
    except ValueError as exc:
        raise CliUsageError(f"--model {name}: {describe(exc)}") from exc
    embed = getattr(net, "patch_embed", None)
    if input_size is None or adapter.family != "vit" or getattr(embed, "img_size", None) is None:
        return  # Conformer pads its input; a CNN takes any size the explainer accepts
    (h, w), (ph, pw) = input_size, embed.patch_size
    if embed.strict_img_size and tuple(embed.img_size) != (h, w):
        fixed = "x".join(map(str, embed.img_size))
        raise CliUsageError(f"--input-size {h}x{w}: {name} takes only {fixed} (its patch "
                            "embedding has a fixed input size)")
    if not embed.dynamic_img_pad and (h % ph or w % pw):
        near = f"{-(-h // ph) * ph}x{-(-w // pw) * pw}"  # rounded up
        raise CliUsageError(f"--input-size {h}x{w}: {name} takes heights that are multiples of "
                            f"{ph} and widths that are multiples of {pw} (its patch size), e.g. "
                            f"{near}")


def check_weights(model: str | None, weights: str | None, checkpoint: str | None) -> None:
    """Usage checks on the weights options that need no import."""
    if weights is not None and checkpoint is not None:
        raise CliUsageError("give either --weights or --checkpoint, not both (a checkpoint file "
                            "needs no --weights)")
    if weights == "embedded" and model not in EMBEDDED_MODELS:
        raise CliUsageError(f"--weights embedded exists only for {', '.join(EMBEDDED_MODELS)}; "
                            f"not for {model!r}")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise CliUsageError(f"--checkpoint {checkpoint}: no such file")


def default_weights(model: str | None, weights: str | None, checkpoint: str | None
                    ) -> str | None:
    """The weights source when none is given: a checkpoint needs none; the small models use
    their embedded weights; every other model its published ImageNet weights."""
    if weights is not None or checkpoint is not None:
        return weights
    return "embedded" if model in EMBEDDED_MODELS else "imagenet"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; ``cuda`` without a GPU fails."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CliRuntimeError("--device cuda: no CUDA GPU is available here (use --device cpu "
                              "or auto)")
    return device


def load_model(name: str | None, weights: str | None, checkpoint: str | None = None,
               num_classes: int | None = None, in_chans: int | None = None,
               new_head: bool = False, device: str = "cpu", **options: Any) -> Any:
    """``conformer_xai.load_model`` with its errors mapped to exit codes.

    ``name`` may be None with a checkpoint (the name comes from the file); ``options`` are
    ``ema``, ``num_heads`` and ``size_mismatch``.

    ``WeightsError`` (checkpoint and download problems) is a runtime error (1); any other
    ``ValueError`` means the options do not fit together, a usage error (2).
    """
    from conformer_xai.models.weights import WeightsError
    from conformer_xai.models.weights import load_model as _load_model

    try:
        return _load_model(name, weights=default_weights(name, weights, checkpoint),
                           checkpoint=checkpoint, num_classes=num_classes, in_chans=in_chans,
                           new_head=new_head, device=device, **options)
    except WeightsError as exc:
        raise CliRuntimeError(describe(exc)) from exc
    except FileNotFoundError as exc:
        raise CliRuntimeError(describe(exc)) from exc
    except ValueError as exc:
        raise CliUsageError(describe(exc)) from exc
    except (OSError, RuntimeError) as exc:
        raise CliRuntimeError(f"cannot load {name or checkpoint}: {describe(exc)}") from exc


def weights_notes(model: Any) -> list[str]:
    """Notes that must accompany every output of a model with random weights."""
    if getattr(model, "weights_source", "") == "random":
        return [f"{getattr(model, 'model_name', 'the model')} has random weights: its maps and "
                "predictions carry no meaning"]
    return []


# --------------------------------------------------------------------------- outputs
def prepare_out_dir(out: str | Path, what: str = "output folder") -> Path:
    """Create the output folder (and parents) or fail with a runtime error naming ``what``."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliRuntimeError(f"cannot create {what} {out}: "
                              f"{exc.strerror or describe(exc)}") from exc
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise CliRuntimeError(f"{what} {out} is not writable")
    return out


@contextlib.contextmanager
def no_empty_folder_on_failure(folder: str | Path) -> Iterator[None]:
    """When the body fails, remove the folders under ``folder`` that this run created and that
    hold no file, so that a failed run leaves no empty output folder behind.

    Only ``folder`` and the parents that did not exist on entry are candidates; a folder that
    existed before, or that holds any file, is kept.
    """
    folder = Path(folder)
    created = list(itertools.takewhile(lambda p: not p.exists(), (folder, *folder.parents)))
    try:
        yield
    except BaseException:
        if created:
            for path, _, _ in os.walk(created[-1], topdown=False):  # deepest first
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # fails (and is kept) when not empty
        raise


def check_overwrite(paths: Iterable[Path], force: bool) -> None:
    """Refuse to overwrite existing files unless ``--force`` was given."""
    if force:
        return
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CliRuntimeError(f"{existing[0]} exists{more}; pass --force to overwrite")


def echo_json(obj: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(json.dumps(obj, indent=1, default=str))


# --------------------------------------------------------------------------- shared options
def debug_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--debug", is_flag=True,
                        help="Show the full traceback of an error (re-raise it).")(func)


def force_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--force", is_flag=True,
                        help="Overwrite existing output files.")(func)


def device_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--device", type=click.Choice(DEVICES), default="auto",
                        show_default=True,
                        help="Where to run: auto picks cuda when a GPU is present.")(func)


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="png",
                        show_default=True, help="Figure file format.")(func)


def blocks_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--blocks", type=BlockList(), default=None,
                        help="Blocks, 1-based, comma-separated or ranges: 1,6,12 or 1-12 "
                             "(default: all).")(func)


def checkpoint_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--ema``, ``--num-heads`` and ``--size-mismatch``: how a checkpoint becomes a model."""
    func = click.option("--size-mismatch", type=click.Choice(("pad", "resize")), default=None,
                        help="Conformer inputs whose branches' maps do not line up (widths not "
                             "a multiple of 32): pad (default, OpenMMLab's) or resize (the "
                             "spectrogram fork's).")(func)
    func = click.option("--num-heads", type=click.IntRange(min=1), default=None,
                        help="Attention heads, when the checkpoint names no model (default: "
                             "embed_dim // 64, with a note).")(func)
    return click.option("--ema", is_flag=True,
                        help="Load the checkpoint's model_ema weights instead of model.")(func)


DEFAULT_MODEL = "conformer_small_patch16"
"""The model of ``--model`` when neither it nor ``--checkpoint`` is given."""


def model_or_default(model: str | None, checkpoint: str | None) -> str | None:
    """``--model``, or with a checkpoint None (its name comes from the file), else the default."""
    if model is not None or checkpoint is not None:
        return model
    return DEFAULT_MODEL


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one machine-readable JSON summary on stdout.")(func)
