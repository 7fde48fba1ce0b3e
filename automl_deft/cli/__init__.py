"""The ``automl-deft`` command line: a thin door into the library.

Each command parses its options, calls one library function, and prints. Any
:class:`~automl_deft.errors.AutomlDeftError` becomes ``error: <one line>`` on
stderr with exit status 2 (user errors) or 3 (infrastructure); so does a file
system refusal (an ``OSError`` naming a file: a read-only or full results
directory, an output path that is a file or a directory), exit status 2, with
the fix named (:func:`os_error_line`). ``--debug`` shows the traceback instead.

The commands live one group per module (``data``, ``model``, ``automl``, ``deft``,
``pipeline``); the options they share are in ``options``. ``python -m
automl_deft.cli`` runs :func:`main` (see ``__main__.py``).
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from automl_deft import __version__
from automl_deft.cli import automl, data, deft, model, pipeline, serve
from automl_deft.cli.options import examples
from automl_deft.errors import EXIT_USER_ERROR, AutomlDeftError

__all__ = ["cli", "main", "os_error_line"]

_ELSEWHERE = "choose another output directory with -o/--results"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_line(exc: OSError) -> str | None:
    """One line for a file system refusal, naming the path and the fix.

    None for an ``OSError`` that names no file (a network error, a broken pipe) or
    carries no errno (a library's message), except a full disk or a read-only file
    system, which are clear without a file name.
    """
    code = exc.errno
    name = None if isinstance(exc.filename, int) else exc.filename  # an fd names no path
    if code is None or (name is None and code not in (*_FULL, errno.EROFS)):
        return None
    reason = exc.strerror or os.strerror(code)
    path = None if name is None else Path(os.fsdecode(name))
    where = f" {path}" if path is not None else ""
    if code in _FULL:
        return (
            f"cannot write{where}: {reason} (free space on that disk or {_ELSEWHERE}; "
            "files written before are intact: re-run, or --resume a DEFT run, once there is room)"
        )
    if code == errno.EROFS:
        return f"cannot write{where}: {reason} (the disk is mounted read-only: {_ELSEWHERE})"
    assert path is not None
    if code in (errno.EACCES, errno.EPERM):
        if path.exists() and not os.access(path, os.R_OK):
            return f"cannot read {path}: {reason} (make it readable for this user, e.g. chmod u+r)"
        folder = path if path.is_dir() else path.parent
        return (
            f"cannot write {path}: {reason} (make {folder} writable for this user, "
            f"e.g. chmod u+w {folder}, or {_ELSEWHERE})"
        )
    if code == errno.EEXIST and path.exists() and not path.is_dir():
        return (
            f"cannot create the directory {path}: a file of that name exists "
            f"(remove it or {_ELSEWHERE})"
        )
    if code == errno.ENOTDIR:
        return f"cannot use {path}: a part of it is a file, not a directory ({_ELSEWHERE})"
    if code == errno.EISDIR:
        return f"cannot write {path}: it is a directory (give a file path instead)"
    if code == errno.ENOENT:
        return f"{path}: {reason} (fix the path)"
    return f"cannot access {path}: {reason}"


class _Group(click.Group):
    """Maps project errors and file system refusals to one line on stderr and the right
    exit status (``--debug``: the traceback instead)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutomlDeftError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            for line in str(exc).splitlines() or [type(exc).__name__]:
                click.echo(f"error: {line}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            refusal = os_error_line(exc)
            if refusal is None or (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"error: {refusal}", err=True)
            ctx.exit(EXIT_USER_ERROR)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples(
        "automl-deft demo-workspace .runs/demo",
        "automl-deft run .runs/demo -c configs/embedded.yaml --yes    # these two are `make run`",
    ),
)
@click.version_option(__version__, prog_name="automl-deft")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and results.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """AutoML + DEFT for PCB optical inspection (golden vs test image classifiers).

    Judged by FAR at 100% recall: the share of good boards flagged when every
    defect must be caught. Start with `make run` (a synthetic workspace, then
    all three phases: Phase 1 AutoML → DEFT → Phase 3 AutoML), i.e.
    `automl-deft demo-workspace DIR` then `automl-deft run DIR`;
    `automl-deft quickstart DIR` is the two-minute check (one training vs the
    zero-shot scorer).

    Flags mean the same on every command: -o/--results DIR (a run's results
    directory; re-using one resumes), -o/--out PATH (the file or package
    written), -c/--config, -s/--spec, --num-epochs, --max-trials, --seed.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["quiet"] = quiet
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
