"""What several commands share: click path types, option bundles, the pipeline names.

An option bundle is a decorator that adds the same options, with the same help,
to every command that takes them: each option of the CLI grammar is defined once,
here.

The grammar, one spelling for one thing on every command:

- ``-o/--results DIR``: a run's results directory, on the commands that train,
  search or run a pipeline (``train``, ``automl``, ``deft``, ``run``,
  ``preflight``); re-using one resumes what is in it. "Results" because it is a
  folder of many files a later command reads (``report``, ``predict``, ``export``).
- ``-o/--out PATH``: the one file or package a command writes (``infer``,
  ``evaluate``, ``zero-shot``, ``predict``, ``export``, ``compile``). Both take ``-o``:
  it is always "where this command writes"; the long name says which kind.
- ``-c/--config FILE`` (the command's config YAML), ``-s/--spec FILE`` with
  ``--set KEY=VALUE`` (the training spec), ``--num-epochs N``, ``--max-trials N``,
  ``--seed N``.

Old spellings (``train --out DIR``, ``deft --resume RUN``) stay for one release as
hidden aliases (:func:`deprecated_alias`): they work, and print a one-line warning
naming the new spelling on stderr.

Every command's help ends with ``Examples:`` (:func:`examples`, the click epilog).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from automl_deft.phases import Phase

Decorator = Callable[[Any], Any]

EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
ANY_PATH = click.Path(path_type=Path)

# The pipelines `run`, `preflight`, `submit` and `schedule` know, and the phases each runs.
PIPELINE_NAMES = ("automl-deft", "automl-only", "deft-only")
PIPELINE_PHASES: dict[str, tuple[str, ...]] = {
    "automl-deft": (Phase.PHASE1, Phase.DEFT, Phase.PHASE3),
    "automl-only": (Phase.PHASE1,),
    "deft-only": (Phase.DEFT,),
}
"""The phases each pipeline runs (the one vocabulary, :class:`automl_deft.phases.Phase`)."""


_ALIASED = "automl_deft.aliased"
"""``ctx.meta`` key: ``(old spelling, value)`` given through an old spelling, by parameter.

Click processes the options given first, then the others: an ``old`` given alone is
stored here before ``new``'s callback (:func:`take_alias`) runs and picks it up."""


def examples(*lines: str) -> str:
    """A command's epilog: ``Examples:`` and ``lines`` indented, kept as written.

    Click rewraps help paragraphs; a paragraph whose first line is ``\\b`` is left
    alone, so each example stays on its own line.
    """
    title = "Example:" if len(lines) == 1 else "Examples:"
    return "\b\n" + title + "\n" + "\n".join(f"  {line}" for line in lines)


def deprecated_alias(
    old: str, new: str, name: str, type: click.ParamType | None = None
) -> Decorator:
    """Accept ``old`` (hidden from ``--help``) as a spelling of the option ``new``, whose
    parameter is ``name``, for one release; a use prints one warning line on stderr.

    Declare the option ``new`` with ``callback=take_alias`` (:func:`option`
    does) so that a value given as ``old`` reaches ``name`` whatever order click
    processes the two in; both spellings with different values are refused.
    """

    def take(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        click.echo(
            f"warning: {old} is an old spelling, going in the next release: use {new}", err=True
        )
        given = ctx.params.get(name)
        if given is not None and given != value:
            raise _disagree(new, old, given, value)
        ctx.meta.setdefault(_ALIASED, {})[name] = (old, value)

    return click.option(
        old,
        f"{name}_alias_{old.lstrip('-').replace('-', '_')}",
        type=type,
        hidden=True,
        expose_value=False,
        callback=take,
    )


def take_alias(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """The ``callback`` of an option with :func:`deprecated_alias` spellings."""
    old, given = ctx.meta.get(_ALIASED, {}).get(param.name, (None, None))
    if given is not None and value is not None and value != given:
        raise _disagree("/".join(param.opts), old, value, given)
    return value if value is not None else given


def _disagree(new: str, old: str, value: Any, old_value: Any) -> click.UsageError:
    return click.UsageError(
        f"{new} {value} and {old} {old_value} (its old spelling) disagree: pass {new} once"
    )


def option(
    *decls: str, aliases: tuple[str, ...] = (), alias_type: Any = None, **attrs: Any
) -> Decorator:
    """``click.option(*decls, **attrs)`` plus the hidden old spellings ``aliases``
    (:func:`deprecated_alias`; their type: ``alias_type``, default the option's)."""
    name = decls[-1]
    flag = "/".join(d for d in decls[:-1])

    def decorate(fn: Any) -> Any:
        for old in aliases:
            fn = deprecated_alias(old, flag, name, alias_type or attrs.get("type"))(fn)
        callback = take_alias if aliases else None
        return click.option(*decls, callback=callback, **attrs)(fn)

    return decorate


def results_option(
    help: str, *, aliases: tuple[str, ...] = (), alias_type: Any = None
) -> Decorator:
    """``-o/--results DIR`` (parameter ``results_dir``): a run's results directory."""
    return option(
        "-o",
        "--results",
        "results_dir",
        type=ANY_PATH,
        metavar="DIR",
        help=help,
        aliases=aliases,
        alias_type=alias_type,
    )


def out_option(help: str, **attrs: Any) -> Decorator:
    """``-o/--out PATH`` (parameter ``out``): the one file or package a command writes."""
    attrs.setdefault("type", ANY_PATH)
    return click.option("-o", "--out", "out", metavar="PATH", help=help, **attrs)


def config_option(help: str) -> Decorator:
    """``-c/--config FILE`` (parameter ``config_path``): the command's config YAML."""
    return click.option("-c", "--config", "config_path", type=EXISTING_FILE, help=help)


def num_epochs_option(help: str) -> Decorator:
    """``--num-epochs N`` (parameter ``num_epochs``, None: not given)."""
    return click.option("--num-epochs", type=click.IntRange(min=1), metavar="N", help=help)


def max_trials_option(help: str) -> Decorator:
    """``--max-trials N`` (parameter ``max_trials``, None: not given)."""
    return click.option("--max-trials", type=click.IntRange(min=1), metavar="N", help=help)


def seed_option(help: str, default: int | None = None) -> Decorator:
    """``--seed N`` (parameter ``seed``); ``default`` None: not given, the config's."""
    return click.option(
        "--seed",
        type=int,
        default=default,
        show_default=default is not None,
        metavar="N",
        help=help,
    )


def spec_options(fn: Any) -> Any:
    """Add ``-s/--spec`` (a training spec YAML) and repeatable ``--set KEY=VALUE``."""
    fn = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a spec key, e.g. --set train.num_epochs=5 (repeatable).",
    )(fn)
    return spec_option("Training spec YAML (default: WORKSPACE/specs/baseline_spec.yaml).")(fn)


def spec_option(help: str) -> Decorator:
    """``-s/--spec FILE`` alone (parameter ``spec_path``), for commands without ``--set``."""
    return click.option("-s", "--spec", "spec_path", type=EXISTING_FILE, help=help)


def kpi_options(fn: Any) -> Any:
    """Add ``--target``, ``--sweep-csv``, ``--plot`` and ``--json``: how a KPI is reported."""
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    fn = click.option("--plot", type=ANY_PATH, help="Write a score-distribution PNG here.")(fn)
    fn = click.option("--sweep-csv", type=ANY_PATH, help="Write the threshold sweep CSV here.")(fn)
    return click.option(
        "--target",
        metavar="TEXT",
        help='KPI target, e.g. "FAR < 5% at recall=100%"; exit status 3 when it is missed.',
    )(fn)


def cluster_options(fn: Any) -> Any:
    """Add what ``submit`` and ``schedule`` need to reach a cluster and fill a run."""
    options = [
        click.option(
            "--host",
            required=True,
            help="KFP API endpoint, e.g. https://kubeflow.example.com/pipeline",
        ),
        click.option(
            "--pipeline",
            "pipeline_name",
            type=click.Choice(PIPELINE_NAMES),
            default="automl-deft",
            show_default=True,
        ),
        click.option(
            "--package",
            type=EXISTING_FILE,
            help="A compiled IR YAML (default: compile --pipeline now).",
        ),
        click.option(
            "--workspace",
            default="/workspace",
            show_default=True,
            help="The workspace path inside the pods (the PVC mount).",
        ),
        click.option(
            "-c",
            "--config",
            "config",
            default="",
            help="Run config YAML, relative to the workspace.",
        ),
        click.option(
            "--param",
            "params",
            multiple=True,
            help="Pipeline parameter KEY=VALUE (YAML value), repeatable.",
        ),
        click.option("--experiment", default="automl-deft", show_default=True),
        click.option("--namespace", help="Kubeflow profile namespace (multi-user clusters)."),
        click.option(
            "--service-account", help="Run pods as this service account (needs the RBAC for Katib)."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn
