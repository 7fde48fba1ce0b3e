"""What several commands share: click path types, option bundles, the pipeline names.

An option bundle is a decorator that adds the same options, with the same help,
to every command that takes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from automl_deft.phases import Phase

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


def spec_options(fn: Any) -> Any:
    """Add ``-s/--spec`` (a training spec YAML) and repeatable ``--set KEY=VALUE``."""
    fn = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override a spec key, e.g. --set train.num_epochs=5 (repeatable).",
    )(fn)
    return click.option(
        "-s",
        "--spec",
        "spec_path",
        type=EXISTING_FILE,
        help="Training spec YAML (default: WORKSPACE/specs/baseline_spec.yaml).",
    )(fn)


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
            "--config", "config", default="", help="Run config YAML, relative to the workspace."
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
