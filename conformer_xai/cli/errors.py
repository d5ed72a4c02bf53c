"""How the commands report errors: one line ``conformer-xai: error: ...``, exit codes 1 and 2.

Library errors that name Python settings (:class:`conformer_xai.errors.SettingError`) are shown
with the CLI's option names (:func:`option_spelling`). This module imports only click and the
standard library, so that usage errors are answered before torch loads.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from ..errors import Setting, SettingMessage

PROG = "conformer-xai"
MAX_FAILURE_LINES = 20
"""Failed inputs listed one line each; the rest are counted in one more line."""


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


#: The CLI's option for each Python setting a library message may name.
OPTION_NAMES = {"new_head": "--new-head", "num_classes": "--num-classes",
                "in_chans": "--in-chans", "weights": "--weights", "checkpoint": "--checkpoint",
                "num_heads": "--num-heads", "ema": "--ema", "size_mismatch": "--size-mismatch",
                "as_image": "--array-as-image", "frames": "--frames", "overwrite": "--force",
                "force": "--force", "extend": "--extend", "device": "--device",
                "x": "--input-size", "input": "--input-size"}
#: Settings that the CLI says in words rather than as one option.
OPTION_PHRASES = {("resume", True): "leave out --no-resume",
                  ("x", None): "the input (--input-size)",
                  ("input", None): "the input (--input-size)"}


def option_spelling(setting: Setting) -> str:
    """A setting as the CLI user gives it: ``--new-head``, ``--weights embedded``,
    ``--checkpoint PATH``."""
    key = (setting.name, setting.value if setting.has_value else None)
    if key in OPTION_PHRASES:
        return OPTION_PHRASES[key]
    option = OPTION_NAMES.get(setting.name, "--" + setting.name.replace("_", "-"))
    if setting.has_value:
        return option if setting.value is True else f"{option} {setting.value}"
    return f"{option} {setting.placeholder}" if setting.placeholder else option


def cli_message(exc: BaseException | Warning | str) -> str:
    """The message of a library error or warning in the CLI's words: a :class:`SettingMessage`
    rendered with :func:`option_spelling`, anything else as it is."""
    if isinstance(exc, SettingMessage):
        return exc.render(option_spelling)
    return str(exc)


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


def describe(exc: BaseException) -> str:
    """The message of an exception, without a traceback, on one line, in the CLI's words.

    An ``OSError`` from the system reads ``<file>: <reason>`` (no ``[Errno N]``).
    """
    if isinstance(exc, SettingMessage):
        return one_line(exc.render(option_spelling))
    text = one_line(str(exc))
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = one_line(str(exc.args[0]))
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return text or type(exc).__name__


def warning_note(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    """``warnings.showwarning`` for the CLI: a warning is one note line, without its source."""
    note(cli_message(message))


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
