"""Phase 2 commands: the DEFT loop (``deft``) and its report (``report``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from automl_deft.cli.options import ANY_PATH, EXISTING_DIR, EXISTING_FILE
from automl_deft.errors import UserError

log = logging.getLogger("automl_deft")


@click.command("deft")
@click.argument("workspace", type=EXISTING_DIR)
@click.option("-c", "--config", "config_path", type=EXISTING_FILE, help="DEFT config YAML.")
@click.option(
    "--resume",
    "resume_dir",
    type=EXISTING_DIR,
    help="Continue the run in this results directory (its own config is used).",
)
@click.option(
    "--results",
    "results_dir",
    type=ANY_PATH,
    help="Start (or continue) the run here. Default: WORKSPACE/results/run_<ts>.",
)
@click.option("-s", "--spec", "spec_path", type=EXISTING_FILE, help="Baseline training spec.")
@click.option("--kpi-target", help='Overrides the config, e.g. "FAR < 5% at recall=100%".')
@click.option("--max-iterations", type=int, help="Overrides the config.")
@click.option("--num-epochs", type=int, help="Fine-tuning epochs per iteration.")
@click.option(
    "--acknowledge-regression",
    is_flag=True,
    help="Continue a run the regression gate stopped for review.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def deft_cmd(
    workspace: Path,
    config_path: Path | None,
    resume_dir: Path | None,
    results_dir: Path | None,
    spec_path: Path | None,
    kpi_target: str | None,
    max_iterations: int | None,
    num_epochs: int | None,
    acknowledge_regression: bool,
    as_json: bool,
) -> None:
    """Phase 2 alone: the DEFT loop (RCA → routing → SDG → mining → assemble →
    fine-tune → evaluate on the KPI set), until the KPI is met, max_iterations,
    a hard stop, or the regression gate.

    Every stage is committed to RESULTS/deft_state.json once its outputs exist,
    so a killed run continues with --resume RESULTS. A baseline pre-seeded by
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

    if resume_dir and results_dir:
        raise UserError("use --resume RESULTS or --results RESULTS, not both")
    cfg = load_deft_config(config_path)
    overrides: dict[str, Any] = {}
    if kpi_target is not None:
        overrides["kpi_target"] = kpi_target
    if max_iterations is not None:
        overrides["max_iterations"] = max_iterations
    if num_epochs is not None:
        overrides["num_epochs"] = num_epochs
    cfg = check_config(dataclasses.replace(cfg, **overrides), "options")
    if resume_dir is not None and (config_path or overrides):
        log.warning("resuming: the run's own config is used; -c and overrides are ignored")
    outcome = run_deft(
        workspace,
        cfg,
        results_dir=resume_dir or results_dir,
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


@click.command("report")
@click.argument("results_dir", type=EXISTING_DIR)
def report_cmd(results_dir: Path) -> None:
    """Re-render RESULTS_DIR/DEFT_Loop_Report.html from the state on disk."""
    from automl_deft.deft.report import render_report

    click.echo(str(render_report(results_dir)))


COMMANDS = (deft_cmd, report_cmd)
