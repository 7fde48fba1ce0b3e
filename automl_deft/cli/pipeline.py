"""Pipeline commands: the gate (``preflight``), a local run through kfp.local
(``run``), and the cluster side (``compile``, ``submit``, ``schedule``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from automl_deft.cli.options import (
    EXISTING_DIR,
    PIPELINE_NAMES,
    PIPELINE_PHASES,
    cluster_options,
    config_option,
    examples,
    out_option,
    results_option,
)
from automl_deft.errors import UserError

LOCAL_BACKEND = "optuna"
"""The search backend of a local run (Katib needs a cluster)."""

if TYPE_CHECKING:
    from automl_deft.records import PipelineSummary


def _build(name: str, *, image: str | None = None, retries: bool = True) -> Any:
    """The pipeline ``name`` from the source tree (``image`` None: the release image)."""
    from automl_deft.cluster.pipeline_source import load_pipelines
    from automl_deft.run_config import DEFAULT_IMAGE

    return load_pipelines().build(name, image=image or DEFAULT_IMAGE, retries=retries)


def _image_option(fn: Any) -> Any:
    """``--image`` for the commands that may compile the pipeline first."""
    return click.option(
        "--image", help="Component image, when compiling now (default: the release image)."
    )(fn)


def _abs_config(config_path: Path | None) -> str:
    return str(config_path.resolve()) if config_path else ""


@click.command(
    "preflight",
    epilog=examples(
        "automl-deft preflight .runs/demo -c configs/embedded.yaml",
        "automl-deft preflight .runs/demo --pipeline deft-only --no-images --json",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@config_option("Run config YAML.")
@results_option("The run's results directory (default: a new WORKSPACE/results/run_<ts>).")
@click.option(
    "--pipeline",
    "pipeline_name",
    type=click.Choice(PIPELINE_NAMES),
    default="automl-deft",
    show_default=True,
    help="Which phases to check.",
)
@click.option("--backend", type=click.Choice(["optuna", "katib"]), help="Phase 1/3 backend.")
@click.option("--no-images", is_flag=True, help="Skip decoding images (faster).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def preflight_cmd(
    workspace: Path,
    config_path: Path | None,
    results_dir: Path | None,
    pipeline_name: str,
    backend: str | None,
    no_images: bool,
    as_json: bool,
) -> None:
    """The single gate: print the nine-section pre-flight of a run, change nothing.

    Sections, in order: workspace & platform, credentials (SET/UNSET, never
    values), container images, datasets with the leakage check, Phase 1, 2 and 3
    configs, the compute estimate (job counts; minutes only with
    compute.per_job_minutes), and the confirmation line. Exit status 2 when a
    blocking problem (leakage, missing data, KPI set as validation set) is found.
    """
    from automl_deft.preflight import build_preflight
    from automl_deft.run_config import load_run_config

    pre = build_preflight(
        workspace,
        load_run_config(config_path),
        results_dir=results_dir,
        phases=PIPELINE_PHASES[pipeline_name],
        hpo_backend=backend,
        check_images=not no_images,
    )
    click.echo(json.dumps(pre.to_dict(), indent=2) if as_json else pre.text())
    if pre.blocking:
        raise UserError(f"pre-flight blocked: {pre.blocking[0]}")


@click.command(
    "run",
    epilog=examples(
        "automl-deft run .runs/demo -c configs/embedded.yaml --yes    # what `make run` runs",
        "automl-deft run .runs/demo -c configs/embedded.yaml -o .runs/demo/results/run1 --yes",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@config_option("Run config YAML.")
@results_option("Default: WORKSPACE/results/run_<ts> (an existing one resumes).")
@click.option(
    "--pipeline",
    "pipeline_name",
    type=click.Choice(PIPELINE_NAMES),
    default="automl-deft",
    show_default=True,
)
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Do not ask; proceed after the pre-flight (printed in brief; the whole text goes "
    "to RUN/logs/preflight.txt).",
)
@click.option("--no-images", is_flag=True, help="Pre-flight: skip decoding images.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Show everything kfp.local and the tasks print (RUN/logs/<task>.log always has it).",
)
@click.option(
    "--fail-on-kpi-miss",
    is_flag=True,
    help="Exit 3 when the deliverable misses the run config's KPI target (a CI/GitOps gate): "
    "on the untouched hold-out when the workspace has one, else on the KPI set.",
)
def run_cmd(
    workspace: Path,
    config_path: Path | None,
    results_dir: Path | None,
    pipeline_name: str,
    yes: bool,
    no_images: bool,
    verbose: bool,
    fail_on_kpi_miss: bool,
) -> None:
    """Run the pipeline here (the embedded default): pre-flight, one question, then
    every phase through kfp.local, with Optuna and a local results directory.

    The same pipeline function a cluster runs: nothing is compiled and no
    cluster is needed. After the single confirmation nothing asks again; only
    the hard safety gates named in the pre-flight can stop the run. Prints the
    trajectory (Phase 1 → DEFT iterations → Phase 3, FAR on the KPI set), the
    deliverable and the report. Re-run with the same -o/--results DIR to resume.
    """
    from automl_deft.cluster.local_run import Verbosity, run_local
    from automl_deft.io import atomic_write_text
    from automl_deft.layout import RunLayout
    from automl_deft.preflight import build_preflight
    from automl_deft.records import PipelineSummary
    from automl_deft.run_config import load_run_config
    from automl_deft.steps import resolve_results_dir

    root = resolve_results_dir(
        workspace.resolve(), str(results_dir.resolve() if results_dir else "")
    )
    # kfp.local runs the searches in-process: the approved summary names that backend.
    backend = None if pipeline_name == "deft-only" else LOCAL_BACKEND
    pre = build_preflight(
        workspace,
        load_run_config(config_path),
        results_dir=root,
        phases=PIPELINE_PHASES[pipeline_name],
        hpo_backend=backend,
        check_images=not no_images,
    )
    layout = RunLayout(root)
    if yes and not verbose and not pre.blocking:
        # Nobody is asked: a few lines here, the whole text where the task logs go.
        full = layout.logs / "preflight.txt"
        atomic_write_text(full, pre.text())
        click.echo(pre.brief(str(full)))
    else:
        click.echo(pre.text())
    if pre.blocking:
        raise UserError(f"pre-flight blocked: {pre.blocking[0]}")
    if not yes:
        if not sys.stdin.isatty():
            raise UserError("no terminal to confirm on: pass --yes to run after the pre-flight")
        if not click.confirm("Proceed?", default=False):
            raise click.Abort()
    args: dict[str, Any] = {
        "workspace": str(workspace.resolve()),
        "config": _abs_config(config_path),
    }
    if pipeline_name != "deft-only":
        args["hpo_backend"] = LOCAL_BACKEND
    # No retries here: a local failure is a real error, and re-running resumes.
    quiet = (click.get_current_context().obj or {}).get("quiet", False)
    compute = next(s for s in pre.sections if s.title == "Compute estimate")
    run = run_local(
        _build(pipeline_name, retries=False),
        args,
        results_dir=root,
        verbosity=Verbosity.VERBOSE if verbose else Verbosity.QUIET if quiet else Verbosity.SUMMARY,
        jobs=(compute.data.get("total") or {}).get("trainings"),
    )
    click.echo("")
    summary = PipelineSummary.read(layout.summary) if layout.summary.is_file() else None
    if summary is not None:
        _print_trajectory(summary)
    click.echo(f"pipeline:    {pipeline_name} in {run.seconds / 60:.1f} min (kfp.local)")
    click.echo(f"results:     {root}")
    for what, path in (("deliverable", layout.deliverable), ("report", layout.report)):
        if path.is_file():
            click.echo(f"{what:<12} {path}")
    from automl_deft.steps import kpi_gate, kpi_verdict

    met = kpi_gate(summary) if summary is not None else None
    if summary is not None and met is not None:
        click.echo(kpi_verdict(summary))
        if fail_on_kpi_miss and not met:
            from automl_deft.errors import EXIT_KPI_MISSED

            sys.exit(EXIT_KPI_MISSED)


def _print_trajectory(summary: PipelineSummary) -> None:
    from automl_deft.kpi import format_far

    click.echo(f"Trajectory (target {summary.kpi_target}), FAR at 100% recall [95% interval]:")
    click.echo(f"  {'phase':<7} {'step':<13} {'KPI (steering) set':<24} untouched hold-out")
    for s in summary.trajectory:
        held = "—" if s.holdout is None else format_far(s.holdout.far_pct, s.holdout.ci95)
        rows = f"  {s.train_rows} training rows" if s.train_rows else ""
        steering = format_far(s.far_pct, s.far_pct_ci95)
        click.echo(f"  {s.phase:<7} {s.step:<13} {steering:<24} {held}{rows}")
    best = summary.best
    if best:
        kept = (
            ""
            if summary.phase3_kept or not summary.phase3_ran
            else (" (Phase 3 did not beat it: kept the DEFT winner)")
        )
        held = (
            ""
            if summary.holdout is None
            else f", hold-out {format_far(summary.holdout.far_pct, summary.holdout.ci95)}"
        )
        click.echo(
            f"best: {best.iteration} at KPI-set FAR "
            f"{format_far(best.far_pct, summary.far_pct_ci95)}{held}{kept}"
        )
    for note in summary.notes:
        click.echo(f"note: {note}")


@click.command(
    "compile",
    epilog=examples(
        "automl-deft compile",
        "automl-deft compile -o manifests --image ghcr.io/<org>/automl-deft:0.1.0 "
        "--namespace kubeflow-user",
    ),
)
@out_option("The folder the files go to.", default=Path("manifests"), show_default=True)
@click.option("--image", help="Component image (default: the release image).")
@click.option("--namespace", default="kubeflow-user", show_default=True)
@click.option("--service-account", default="automl-deft", show_default=True)
@click.option("--pvc-name", default="automl-deft-workspace", show_default=True)
@click.option("--pvc-size", default="50Gi", show_default=True)
@click.option("--storage-class", help="Default: the cluster's default StorageClass.")
def compile_cmd(
    out: Path,
    image: str | None,
    namespace: str,
    service_account: str,
    pvc_name: str,
    pvc_size: str,
    storage_class: str | None,
) -> None:
    """Write the deployable files: pipeline IR YAML (manifests/pipelines/), and a
    kustomize base (manifests/base/) with Kubernetes-native Pipeline and
    PipelineVersion objects, the RBAC a run needs (Katib experiments, trials,
    jobs), a workspace PVC and a ScheduledWorkflow example for recurring runs.
    """
    from automl_deft.cluster.compile import CompileOptions, compile_all
    from automl_deft.cluster.pipeline_source import load_pipelines

    written = compile_all(
        {name: _build(name, image=image) for name in load_pipelines().NAMES},
        out,
        CompileOptions(
            namespace=namespace,
            service_account=service_account,
            pvc_name=pvc_name,
            pvc_size=pvc_size,
            storage_class=storage_class,
        ),
    )
    for path in written:
        click.echo(str(path))


def _package_and_args(
    pipeline_name: str,
    package: Path | None,
    image: str | None,
    workspace: str,
    config: str,
    params: tuple[str, ...],
) -> tuple[Path, dict[str, Any]]:
    import tempfile

    from automl_deft.cluster.compile import ir_yaml
    from automl_deft.io import atomic_write_text
    from automl_deft.model.spec import parse_set_option

    if package is not None and image:
        raise UserError(
            "--image is for compiling the pipeline now; --package is already compiled: "
            "pass one of them"
        )
    args: dict[str, Any] = {"workspace": workspace, "config": config}
    args.update(parse_set_option(list(params)))
    if package is None:
        package = Path(tempfile.mkdtemp(prefix="automl-deft-")) / f"{pipeline_name}.yaml"
        pipeline = _build(pipeline_name, image=image)
        atomic_write_text(package, ir_yaml(pipeline, pipeline_name))
    return package, args


@click.command(
    "submit",
    epilog=examples(
        "automl-deft submit --host https://kubeflow.example.com/pipeline "
        "--namespace kubeflow-user --param gpus=2",
    ),
)
@cluster_options
@_image_option
@click.option("--run-name", help="Default: <pipeline>-<timestamp>.")
def submit_cmd(
    host: str,
    pipeline_name: str,
    package: Path | None,
    image: str | None,
    workspace: str,
    config: str,
    params: tuple[str, ...],
    experiment: str,
    namespace: str | None,
    service_account: str | None,
    run_name: str | None,
) -> None:
    """Start one run on a Kubeflow cluster from this laptop (kfp.Client) and print its URL.

    The token comes from KF_PIPELINES_TOKEN when set, else from kfp's own
    kubeconfig / in-cluster credentials; it is never printed.
    """
    from datetime import UTC, datetime

    from automl_deft.cluster.client import connect, submit

    package, args = _package_and_args(pipeline_name, package, image, workspace, config, params)
    client = connect(host, namespace=namespace)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    run = submit(
        client,
        package,
        arguments=args,
        run_name=run_name or f"{pipeline_name}-{stamp}",
        experiment_name=experiment,
        namespace=namespace,
        service_account=service_account,
    )
    click.echo(f"run {run.run_id}: {run.url}")


@click.command(
    "schedule",
    epilog=examples(
        "automl-deft schedule --host https://kubeflow.example.com/pipeline "
        '--cron "0 0 2 * * *" --namespace kubeflow-user',
    ),
)
@cluster_options
@_image_option
@click.option(
    "--cron", required=True, help='Six fields, seconds first: "0 0 2 * * *" = 02:00 daily.'
)
@click.option("--job-name", help="Default: <pipeline>-recurring.")
@click.option("--max-concurrency", default=1, show_default=True)
def schedule_cmd(
    host: str,
    pipeline_name: str,
    package: Path | None,
    image: str | None,
    workspace: str,
    config: str,
    params: tuple[str, ...],
    experiment: str,
    namespace: str | None,
    service_account: str | None,
    cron: str,
    job_name: str | None,
    max_concurrency: int,
) -> None:
    """Create a recurring run (the cron is checked before anything is sent).

    For GitOps, `automl-deft compile` writes manifests/base/scheduled-run.example.yaml
    (a ScheduledWorkflow) to apply instead.
    """
    from automl_deft.cluster.client import connect, schedule
    from automl_deft.cluster.manifests import validate_cron

    validate_cron(cron)
    package, args = _package_and_args(pipeline_name, package, image, workspace, config, params)
    client = connect(host, namespace=namespace)
    job = schedule(
        client,
        package,
        cron=cron,
        job_name=job_name or f"{pipeline_name}-recurring",
        experiment_name=experiment,
        arguments=args,
        namespace=namespace,
        service_account=service_account,
        max_concurrency=max_concurrency,
    )
    click.echo(f"recurring run {job.recurring_run_id}: {job.url}")


COMMANDS = (preflight_cmd, run_cmd, compile_cmd, submit_cmd, schedule_cmd)
