"""Phase 2 commands: the DEFT loop (``deft``) and its report (``report``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from automl_deft.cli.options import (
    EXISTING_DIR,
    config_option,
    examples,
    num_epochs_option,
    results_option,
    seed_option,
    spec_option,
)
from automl_deft.errors import UserError

log = logging.getLogger("automl_deft")


@click.command(
    "deft",
    epilog=examples(
        "automl-deft deft .runs/demo --max-iterations 2 --num-epochs 3 -o .runs/demo/results/deft",
        "automl-deft deft .runs/demo -o .runs/demo/results/deft    # again: resumes that run",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@config_option("DEFT config YAML.")
@results_option(
    "Start the run here, or continue the one in it (with its own config). "
    "Default: WORKSPACE/results/run_<ts>.",
    aliases=("--resume",),
    alias_type=EXISTING_DIR,
)
@spec_option("The training spec of a baseline trained here (default: the workspace's).")
@click.option("--kpi-target", help='Overrides the config, e.g. "FAR < 5% at recall=100%".')
@click.option("--max-iterations", type=int, help="Overrides the config.")
@num_epochs_option("Fine-tuning epochs per iteration; overrides the config.")
@seed_option("Overrides the config's seed.")
@click.option(
    "--acknowledge-regression",
    is_flag=True,
    help="Continue a run the regression gate stopped for review.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def deft_cmd(
    workspace: Path,
    config_path: Path | None,
    results_dir: Path | None,
    spec_path: Path | None,
    kpi_target: str | None,
    max_iterations: int | None,
    num_epochs: int | None,
    seed: int | None,
    acknowledge_regression: bool,
    as_json: bool,
) -> None:
    """Phase 2 alone: the DEFT loop (RCA → routing → SDG → mining → hygiene and
    assemble → fine-tune → evaluate on the KPI set), until the KPI is met,
    max_iterations, a hard stop, or the regression gate.

    SDG makes defect pairs and, for weak PASS rows (false alarms), hard
    negatives: benign variations of clean training pairs, each checked to stay a
    PASS (sdg.hard_negatives). Every new row is screened before it is assembled:
    exact and near duplicates are refused, likely label errors are flagged in
    the report (hygiene.*).

    Every stage is committed to RESULTS/deft_state.json once its outputs exist,
    so a killed run continues when re-run with the same -o/--results DIR. A baseline pre-seeded by
    Phase 1 (iterations.baseline.stage_completed == "train") is not retrained.
    Writes RESULTS/DEFT_Loop_Report.html and best_model.json (the lowest FAR
    over every iteration). Exit status 2 on a hard stop (the reason is printed).

    Before the first stage (before a baseline is trained) the workspace is
    checked as `validate` checks it, and the SDG backend and mining embedder
    names against their registries; a run of another workspace is not resumed.
    """
    import dataclasses

    from automl_deft.deft.config import check_config, load_deft_config
    from automl_deft.deft.loop import run_deft
    from automl_deft.deft.state import DeftState

    cfg = load_deft_config(config_path)
    changes: dict[str, Any] = {}
    if kpi_target is not None:
        changes["kpi_target"] = kpi_target
    if max_iterations is not None:
        changes["max_iterations"] = max_iterations
    if num_epochs is not None:
        changes["num_epochs"] = num_epochs
    if seed is not None:
        changes["seed"] = seed
    cfg = check_config(dataclasses.replace(cfg, **changes), "options")
    resuming = results_dir is not None and DeftState.exists(results_dir)
    if resuming and (config_path or changes or spec_path):
        log.warning(
            "resuming: the run's own config and spec are used; -c, -s and overrides are ignored"
        )
    outcome = run_deft(
        workspace,
        cfg,
        results_dir=results_dir,
        spec_path=spec_path,
        acknowledge_regression=acknowledge_regression,
        status=None if as_json else click.echo,
        check_pool=True,
    )
    if as_json:
        click.echo(json.dumps(outcome.to_json(), indent=2))
    else:
        click.echo(f"results: {outcome.results_dir}")
        if outcome.report:
            click.echo(f"report:  {outcome.report}")
    if outcome.hard_stopped:
        raise UserError(f"DEFT hard-stopped: {outcome.stop_reason}")


@click.command("report", epilog=examples("automl-deft report .runs/demo/results/deft"))
@click.argument("results_dir", type=EXISTING_DIR)
def report_cmd(results_dir: Path) -> None:
    """Re-render RESULTS_DIR/DEFT_Loop_Report.html from the state on disk."""
    from automl_deft.deft.report import render_report

    click.echo(str(render_report(results_dir)))


COMMANDS = (deft_cmd, report_cmd)
