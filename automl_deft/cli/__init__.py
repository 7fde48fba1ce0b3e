"""The ``automl-deft`` command line: a thin door into the library.

Each command parses its options, calls one library function, and prints. Any
:class:`~automl_deft.errors.AutomlDeftError` becomes ``error: <one line>`` on
stderr with exit status 2 (user errors) or 3 (infrastructure); ``--debug`` shows
the traceback instead.

The commands live one group per module (``data``, ``model``, ``automl``, ``deft``,
``pipeline``); the options they share are in ``options``. ``python -m
automl_deft.cli`` runs :func:`main` (see ``__main__.py``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from automl_deft import __version__
from automl_deft.cli import automl, data, deft, model, pipeline, serve
from automl_deft.errors import AutomlDeftError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Maps project errors to one line on stderr and the right exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutomlDeftError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            for line in str(exc).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="automl-deft")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and results.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """AutoML + DEFT for PCB optical inspection (golden vs test image classifiers).

    Judged by FAR at 100% recall: the share of good boards flagged when every
    defect must be caught. Start with `automl-deft quickstart DIR`.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


# `--help` lists them sorted by name (click's default), whatever the order here.
for _module in (data, model, automl, deft, pipeline, serve):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``automl-deft`` and ``python -m automl_deft.cli``)."""
    cli.main(args=argv, prog_name="automl-deft")
