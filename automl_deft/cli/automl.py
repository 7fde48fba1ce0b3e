"""The ``automl`` command: Phase 1 hyperparameter search (Optuna here, or Katib)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from automl_deft.cli.options import (
    EXISTING_DIR,
    EXISTING_FILE,
    config_option,
    examples,
    max_trials_option,
    num_epochs_option,
    results_option,
    seed_option,
    spec_options,
)
from automl_deft.errors import UserError

if TYPE_CHECKING:
    from automl_deft.hpo.search import AutomlConfig
    from automl_deft.model.spec import Spec


@click.command(
    "automl",
    epilog=examples(
        "automl-deft automl .runs/demo --max-trials 4 --num-epochs 3 -o .runs/demo/results/hpo",
        "automl-deft automl .runs/demo --backend katib --dry-run",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@config_option("AutoML config YAML.")
@spec_options
@click.option("--backend", type=click.Choice(["optuna", "katib"]), help="Overrides the config.")
@click.option(
    "--algorithm",
    help="random, grid, tpe, multivariate-tpe, cmaes, sobol, "
    "bayesianoptimization (alias bayesian), hyperband.",
)
@max_trials_option("Overrides the config.")
@num_epochs_option("Epochs per trial; overrides the config.")
@seed_option("Sampler seed (which trials are drawn); overrides the config.")
@results_option("Default: WORKSPACE/results/run_<ts>/automl_phase1 (re-use one to resume).")
@click.option("--warm-start", type=EXISTING_FILE, help="Every trial starts from this checkpoint.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="katib: print exactly the Experiment the search would submit (YAML) and exit.",
)
def automl_cmd(
    workspace: Path,
    config_path: Path | None,
    spec_path: Path | None,
    overrides: tuple[str, ...],
    backend: Literal["optuna", "katib"] | None,
    algorithm: str | None,
    max_trials: int | None,
    num_epochs: int | None,
    seed: int | None,
    results_dir: Path | None,
    warm_start: Path | None,
    dry_run: bool,
) -> None:
    """Hyperparameter search on the workspace's training set, judged by validation
    FAR@100% recall (the KPI test set is never used).

    Optuna runs here with a resumable study (re-run with the same -o/--results
    DIR to resume; `optuna-dashboard RESULTS/optuna_journal.log` shows it live). With
    --backend katib the trials run as Katib trial Jobs (this process must see the
    cluster and the workspace volume); --dry-run prints the Experiment. Trials
    start from the training spec (-s/--spec and --set; default: the workspace's)
    with the searched keys replaced. The winner passes the guards: collapse
    (single-class predictions are skipped), lucky winner (re-trained with a
    fresh seed), and zero-shot (it must beat the training-free scorer).

    Before any trial the workspace is checked as `validate` checks it (both
    classes in the training and validation sets, every image, no row or image
    shared with the KPI set or the hold-out): a problem is one line, exit 2.
    """
    import dataclasses

    from automl_deft.hpo.algorithms import canonical
    from automl_deft.hpo.search import automl_search, load_automl_config
    from automl_deft.validate import guard_workspace

    cfg = load_automl_config(config_path)
    cfg = dataclasses.replace(
        cfg,
        backend=backend or cfg.backend,
        algorithm=algorithm or cfg.algorithm,
        max_trials=cfg.max_trials if max_trials is None else max_trials,
        num_epochs=cfg.num_epochs if num_epochs is None else num_epochs,
        seed=cfg.seed if seed is None else seed,
    )
    canonical(cfg.algorithm)  # an unknown algorithm fails here, before the workspace check
    base_spec = _base_spec(workspace, spec_path, overrides)
    guard_workspace(workspace)
    if dry_run:
        if base_spec is not None:
            raise UserError(
                "--dry-run shows the Experiment for the workspace's spec: drop -s/--spec "
                "and --set to print it"
            )
        _katib_dry_run(workspace, cfg, results_dir, warm_start)
        return
    result = automl_search(
        workspace, cfg, results_dir=results_dir, warm_start=warm_start, base_spec=base_spec
    )
    best = result.best
    click.echo(
        f"best {best.rec_id}: {result.metric}={best.metric_value} "
        f"(far_pct={best.far_pct}, pred_counts={best.pred_counts})"
    )
    click.echo(f"checkpoint: {best.checkpoint}")
    click.echo(f"results:    {result.results_dir}")


def _base_spec(workspace: Path, spec_path: Path | None, overrides: tuple[str, ...]) -> Spec | None:
    """The spec trials start from; None (the search's default: the workspace spec) when
    neither -s nor --set is given."""
    if spec_path is None and not overrides:
        return None
    from automl_deft.model.spec import load_spec, parse_set_option
    from automl_deft.workspace import Workspace

    return load_spec(spec_path or Workspace.at(workspace).spec_path, parse_set_option(overrides))


def _katib_dry_run(
    workspace: Path, cfg: AutomlConfig, results_dir: Path | None, warm_start: Path | None
) -> None:
    from automl_deft.hpo.katib_backend import dry_run_experiment

    text = dry_run_experiment(workspace, cfg, results_dir=results_dir, warm_start=warm_start)
    click.echo(text, nl=False)


COMMANDS = (automl_cmd,)
