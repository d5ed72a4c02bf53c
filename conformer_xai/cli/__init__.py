"""The ``conformer-xai`` command line: a thin click layer over the public API.

Each subcommand lives in its own module and is added to :data:`main` below. Modules here import
only click and the standard library at import time; torch and the rest of ``conformer_xai``
load inside the command functions, after the arguments have been checked, so that usage errors
answer at once.

Exit codes: 0 success, 1 runtime error, 2 usage error; errors are one line on stderr
(``conformer-xai: error: ...``), with a traceback only under ``--debug``.
"""

from __future__ import annotations

import click

from conformer_xai import __version__

from .compare import compare_command
from .dataset import explain_dataset_command
from .errors import PROG, CliGroup
from .evaluate import evaluate_command
from .explain import explain_command
from .models import models_command
from .report import report_command
from .train import train_synthetic_command

__all__ = ["main"]


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name=PROG,
                      message="%(prog)s %(version)s")
def main() -> None:
    """Explain both branches of the Conformer vision model (and CNNs and ViTs beside it).

    \b
    conformer-xai explain photo.jpg --model conformer_small_patch16 --weights imagenet
    conformer-xai explain examples/scenes --model conformer_micro_patch16 --weights embedded
    conformer-xai compare photo.jpg
    conformer-xai models
    conformer-xai report conformer-xai-out --out site/

    Run `conformer-xai COMMAND --help` for the options of a command.
    """


for _command in (explain_command, compare_command, models_command, evaluate_command,
                 train_synthetic_command, explain_dataset_command, report_command):
    main.add_command(_command)
