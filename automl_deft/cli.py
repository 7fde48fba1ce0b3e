"""The ``automl-deft`` command line: a thin door into the library.

Each command parses its options, calls one library function, and prints. Any
:class:`~automl_deft.errors.AutomlDeftError` becomes ``error: <one line>`` on
stderr with exit status 2 (user errors) or 3 (infrastructure); ``--debug`` shows
the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import click

from automl_deft import __version__
from automl_deft.errors import AutomlDeftError, UserError

log = logging.getLogger("automl_deft")


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


EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
ANY_PATH = click.Path(path_type=Path)


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


# --- data -----------------------------------------------------------------------------


@cli.command("demo-workspace")
@click.argument("directory", type=ANY_PATH)
@click.option("--seed", default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option(
    "--scale",
    type=click.Choice(["tiny", "small", "medium"]),
    default="small",
    show_default=True,
    help="tiny for tests, small for `make run`, medium for benchmarks.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing workspace in DIRECTORY.")
def demo_workspace(directory: Path, seed: int, scale: str, force: bool) -> None:
    """Generate a synthetic AOI workspace (the embedded default) in DIRECTORY.

    Bare-board copper patches with benign nuisance and six defect types, split
    into a small PASS-dominant training set, a validation set, a larger KPI
    test set with board families and subtle defects the training set lacks,
    and a labelled mining pool.
    """
    from automl_deft.synth.demo import generate_demo_workspace

    summary = generate_demo_workspace(directory, seed=seed, scale=scale, force=force)
    click.echo(f"wrote {scale} workspace (seed {seed}) to {summary.root} in {summary.seconds:.1f}s")
    for split, n in summary.counts.items():
        click.echo(f"  {split:<12} {n:>6} rows")


@cli.command()
@click.argument("workspace", type=EXISTING_DIR)
@click.option("--no-images", is_flag=True, help="Skip decoding images and content-hash leakage.")
@click.option("--no-pool", is_flag=True, help="Do not require inputs/mining_pool.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(workspace: Path, no_images: bool, no_pool: bool, as_json: bool) -> None:
    """Check a workspace: CSV schema, images, class balance, duplicates, leakage.

    Leakage is checked between train, validation, KPI test (and the mining pool
    against validation and KPI test) by the row key (input_path, golden_path,
    label, object_name, boardname) and by input image content. Exit status 2
    lists every problem, one line each, with the fix.
    """
    from automl_deft.validate import validate_workspace

    report = validate_workspace(
        workspace, check_image_files=not no_images, require_pool=not no_pool
    )
    if as_json:
        payload = {
            "workspace": str(report.workspace),
            "images_checked": report.images_checked,
            "overlapping_rows": report.overlapping_rows,
            "sets": [
                {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(s).items()}
                for s in report.summaries
            ],
        }
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(report.table())
    click.echo(
        f"\nOK: {report.images_checked} image files checked, leakage check: "
        f"{report.overlapping_rows} overlapping rows"
    )


@cli.command("import-deeppcb")
@click.argument("src", type=EXISTING_DIR)
@click.argument("directory", type=ANY_PATH)
@click.option("--crop-size", default=64, show_default=True, help="Crop side in pixels.")
@click.option("--pass-per-image", default=8, show_default=True, help="PASS crops per board image.")
@click.option("--val-fraction", default=0.2, show_default=True, help="Share of trainval pairs.")
@click.option("--pool-fraction", default=0.4, show_default=True, help="Share of trainval pairs.")
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite an existing workspace in DIRECTORY.")
def import_deeppcb_cmd(
    src: Path,
    directory: Path,
    crop_size: int,
    pass_per_image: int,
    val_fraction: float,
    pool_fraction: float,
    seed: int,
    force: bool,
) -> None:
    """Convert a DeepPCB download (SRC holds PCBData/) into a workspace in DIRECTORY.

    Defect crops are centred on the annotated boxes, PASS crops come from
    regions no box touches; DeepPCB's test split becomes the KPI set and its
    trainval pairs are split by board image into train, validation and pool.
    """
    from automl_deft.importers.deeppcb import import_deeppcb

    summary = import_deeppcb(
        src,
        directory,
        crop_size=crop_size,
        pass_per_image=pass_per_image,
        val_fraction=val_fraction,
        pool_fraction=pool_fraction,
        seed=seed,
        force=force,
    )
    click.echo(f"imported DeepPCB into {directory}")
    click.echo(summary.table())
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)


# --- model ----------------------------------------------------------------------------


def _spec_options(fn: Any) -> Any:
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


@cli.command("train")
@click.argument("workspace", type=EXISTING_DIR)
@_spec_options
@click.option("--train-csv", type=EXISTING_FILE, help="Default: the workspace training set.")
@click.option("--val-csv", type=EXISTING_FILE, help="Default: the workspace validation set.")
@click.option("-o", "--out", "out_dir", type=ANY_PATH, help="Default: WORKSPACE/results/train.")
@click.option(
    "--resume/--no-resume", default=True, show_default=True, help="Resume from latest.pt."
)
def train_cmd(
    workspace: Path,
    spec_path: Path | None,
    overrides: tuple[str, ...],
    train_csv: Path | None,
    val_csv: Path | None,
    out_dir: Path | None,
    resume: bool,
) -> None:
    """Train the Siamese classifier; keep best-validation and latest checkpoints.

    Validation far_pct (FAR at 100% recall) picks the best checkpoint. An
    interrupted run resumes from OUT/latest.pt. Warm start from another model
    with --set train.pretrained_model_path=PATH.
    """
    from automl_deft.model.spec import load_spec, parse_set_option
    from automl_deft.model.train import train
    from automl_deft.workspace import Workspace, read_dataset_csv, refuse_kpi_set

    ws = Workspace.at(workspace)
    if val_csv is not None:
        refuse_kpi_set(ws, val_csv, used_as="the validation set")
    spec = load_spec(spec_path or ws.spec_path, parse_set_option(overrides))
    result = train(
        spec,
        read_dataset_csv(train_csv or ws.train_csv, role="train"),
        read_dataset_csv(val_csv or ws.val_csv, role="validation"),
        ws.images_dir,
        out_dir or ws.results_dir / "train",
    )
    best = result.best_metrics
    click.echo(
        f"best epoch {best.get('epoch')}: val far_pct={_pct(best.get('far_pct'))} "
        f"val_loss={best.get('val_loss', float('nan')):.4f}  ({result.seconds:.1f}s, "
        f"{result.images_per_second:.0f} img/s)"
    )
    click.echo(f"best checkpoint:   {result.best_checkpoint}")
    click.echo(f"latest checkpoint: {result.latest_checkpoint}")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _images_dir(csv: Path, images_dir: Path | None) -> Path:
    from automl_deft.workspace import find_images_dir

    return images_dir or find_images_dir(csv)


@cli.command("infer")
@click.argument("checkpoint", type=EXISTING_FILE)
@click.argument("csv", type=EXISTING_FILE)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@click.option("-o", "--out", "out_csv", type=ANY_PATH, help="Default: CSV with _inference.csv.")
@click.option("--batch-size", type=int, help="Default: twice the training batch size.")
def infer_cmd(
    checkpoint: Path,
    csv: Path,
    images_dir: Path | None,
    out_csv: Path | None,
    batch_size: int | None,
) -> None:
    """Score CSV with CHECKPOINT: writes the CSV plus a siamese_score column."""
    from automl_deft.model.infer import infer_csv

    out_csv = out_csv or csv.with_name(csv.stem + "_inference.csv")
    frame = infer_csv(checkpoint, csv, _images_dir(csv, images_dir), out_csv, batch_size=batch_size)
    click.echo(f"wrote {len(frame)} scored rows to {out_csv}")


def _report_kpi(result: Any, target_text: str | None, as_json: bool) -> None:
    from automl_deft.kpi import confusion_matrix_text, parse_target

    target = parse_target(target_text) if target_text else None
    if as_json:
        payload = result.to_dict()
        if target is not None:
            payload["target"] = str(target)
            payload["target_met"] = target.is_met(result)
        click.echo(json.dumps(payload, indent=2))
        return
    click.echo(result.summary())
    if result.available:
        click.echo(
            f"far_pct={result.far_pct:.4f} threshold={result.threshold:.6g} "
            f"precision={result.precision:.4f} recall={result.recall:.4f} f1={result.f1:.4f}"
        )
        click.echo(confusion_matrix_text(result.recall100))
    if target is not None:
        click.echo(f"target {target}: {'MET' if target.is_met(result) else 'NOT MET'}")


def _kpi_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    fn = click.option("--plot", type=ANY_PATH, help="Write a score-distribution PNG here.")(fn)
    fn = click.option("--sweep-csv", type=ANY_PATH, help="Write the threshold sweep CSV here.")(fn)
    return click.option(
        "--target", metavar="TEXT", help='KPI target, e.g. "FAR < 5% at recall=100%".'
    )(fn)


@cli.command("kpi")
@click.argument("inference_csv", type=EXISTING_FILE)
@_kpi_options
def kpi_cmd(
    inference_csv: Path,
    target: str | None,
    sweep_csv: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """FAR at 100% recall of an inference CSV (labels + siamese_score).

    The threshold is the highest candidate that still flags every defect
    (score > threshold = defect); far_pct is the share of PASS rows above it.
    """
    from automl_deft.kpi import judge_scored_frame, read_inference_csv

    frame = read_inference_csv(inference_csv)
    result = judge_scored_frame(frame, sweep_csv=sweep_csv, plot=plot)
    _report_kpi(result, target, as_json)


@cli.command("evaluate")
@click.argument("checkpoint", type=EXISTING_FILE)
@click.argument("csv", type=EXISTING_FILE)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@click.option("-o", "--out", "out_csv", type=ANY_PATH, help="Also write the inference CSV here.")
@_kpi_options
def evaluate_cmd(
    checkpoint: Path,
    csv: Path,
    images_dir: Path | None,
    out_csv: Path | None,
    target: str | None,
    sweep_csv: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Infer CSV with CHECKPOINT and print the KPI (e.g. on WORKSPACE/kpi/testing_set.csv)."""
    from automl_deft.kpi import judge_scored_frame
    from automl_deft.model.infer import infer_frame
    from automl_deft.workspace import read_dataset_csv

    frame = infer_frame(
        checkpoint, read_dataset_csv(csv, role="evaluation"), _images_dir(csv, images_dir)
    )
    result = judge_scored_frame(frame, inference_csv=out_csv, sweep_csv=sweep_csv, plot=plot)
    _report_kpi(result, target, as_json)


@cli.command("zero-shot")
@click.argument("csv", type=EXISTING_FILE)
@click.option(
    "--method", default="pixel-diff", show_default=True, help="pixel-diff or feature-distance."
)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@click.option("-s", "--spec", "spec_path", type=EXISTING_FILE, help="For lights and image size.")
@click.option("-o", "--out", "out_csv", type=ANY_PATH, help="Also write the inference CSV here.")
@_kpi_options
def zero_shot_cmd(
    csv: Path,
    method: str,
    images_dir: Path | None,
    spec_path: Path | None,
    out_csv: Path | None,
    target: str | None,
    sweep_csv: Path | None,
    plot: Path | None,
    as_json: bool,
) -> None:
    """Score CSV with a training-free method and print its KPI (the baseline to beat)."""
    from automl_deft.kpi import judge_scored_frame
    from automl_deft.model.spec import Spec, load_spec
    from automl_deft.model.zero_shot import zero_shot_frame
    from automl_deft.workspace import read_dataset_csv

    images = _images_dir(csv, images_dir)
    spec = load_spec(spec_path) if spec_path else _workspace_spec(images) or Spec()
    frame = zero_shot_frame(read_dataset_csv(csv, role="evaluation"), images, spec, method=method)
    result = judge_scored_frame(frame, inference_csv=out_csv, sweep_csv=sweep_csv, plot=plot)
    _report_kpi(result, target, as_json)


def _workspace_spec(images_dir: Path) -> Any:
    from automl_deft.model.spec import load_spec
    from automl_deft.workspace import IMAGES_DIR, SPEC_FILE

    root = images_dir
    for _ in IMAGES_DIR.split("/"):
        root = root.parent
    spec = root / SPEC_FILE
    return load_spec(spec) if spec.is_file() else None


# --- AutoML ---------------------------------------------------------------------------


@cli.command("automl")
@click.argument("workspace", type=EXISTING_DIR)
@click.option("-c", "--config", "config_path", type=EXISTING_FILE, help="AutoML config YAML.")
@click.option("--backend", type=click.Choice(["optuna", "katib"]), help="Overrides the config.")
@click.option(
    "--algorithm",
    help="random, grid, tpe, multivariate-tpe, cmaes, sobol, "
    "bayesianoptimization (alias bayesian), hyperband.",
)
@click.option("--max-trials", type=int, help="Overrides the config.")
@click.option(
    "--results",
    "results_dir",
    type=ANY_PATH,
    help="Default: WORKSPACE/results/run_<ts>/automl_phase1 (re-use one to resume).",
)
@click.option("--warm-start", type=EXISTING_FILE, help="Every trial starts from this checkpoint.")
@click.option("--dry-run", is_flag=True, help="katib: print the Experiment YAML and exit.")
def automl_cmd(
    workspace: Path,
    config_path: Path | None,
    backend: Literal["optuna", "katib"] | None,
    algorithm: str | None,
    max_trials: int | None,
    results_dir: Path | None,
    warm_start: Path | None,
    dry_run: bool,
) -> None:
    """Hyperparameter search on the workspace's training set, judged by validation
    FAR@100% recall (the KPI test set is never used).

    Optuna runs here with a resumable study (re-run with the same --results to
    resume; `optuna-dashboard RESULTS/optuna_journal.log` shows it live). With
    --backend katib the trials run as Katib trial Jobs (this process must see the
    cluster and the workspace volume); --dry-run prints the Experiment. The
    winner passes the guards: collapse (single-class predictions are skipped),
    lucky winner (re-trained with a fresh seed), and zero-shot (it must beat the
    training-free scorer).
    """
    import dataclasses

    from automl_deft.hpo.search import automl_search, load_automl_config

    cfg = load_automl_config(config_path)
    cfg = dataclasses.replace(
        cfg,
        backend=backend or cfg.backend,
        algorithm=algorithm or cfg.algorithm,
        max_trials=max_trials or cfg.max_trials,
    )
    if dry_run:
        _katib_dry_run(workspace, cfg, results_dir)
        return
    result = automl_search(workspace, cfg, results_dir=results_dir, warm_start=warm_start)
    best = result.best
    click.echo(
        f"best {best['rec_id']}: {result.metric}={best['metric_value']} "
        f"(far_pct={best['far_pct']}, pred_counts={best['pred_counts']})"
    )
    click.echo(f"checkpoint: {best['checkpoint']}")
    click.echo(f"results:    {result.results_dir}")


def _katib_dry_run(workspace: Path, cfg: Any, results_dir: Path | None) -> None:
    from automl_deft.hpo import katib_manifest as km
    from automl_deft.hpo.search import default_results_dir

    if cfg.backend != "katib":
        raise UserError("--dry-run prints a Katib Experiment: use it with --backend katib")
    out = results_dir or default_results_dir(workspace, "phase1")
    settings = km.KatibSettings(
        **{"algorithm": cfg.algorithm, "max_trials": cfg.max_trials, **cfg.katib}
    )
    exp = km.build_experiment(
        "automl-deft-dry-run",
        cfg.space(),
        settings,
        problem_path=str(Path(out) / "search_problem.json"),
    )
    km.validate_experiment(exp)
    click.echo(km.experiment_yaml(exp), nl=False)


# --- phase 2 ----------------------------------------------------------------------------


@cli.command("deft")
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
    )
    if as_json:
        click.echo(json.dumps(outcome.to_dict(), indent=2))
    else:
        click.echo(f"results: {outcome.results_dir}")
        if outcome.report:
            click.echo(f"report:  {outcome.report}")
    if outcome.hard_stopped:
        raise UserError(f"DEFT hard-stopped: {outcome.stop_reason}")


@cli.command("report")
@click.argument("results_dir", type=EXISTING_DIR)
def report_cmd(results_dir: Path) -> None:
    """Re-render RESULTS_DIR/DEFT_Loop_Report.html from the state on disk."""
    from automl_deft.deft.report import render_report

    click.echo(str(render_report(results_dir)))


# --- the pipeline ----------------------------------------------------------------------

PIPELINE_NAMES = ("automl-deft", "automl-only", "deft-only")
PIPELINE_PHASES = {
    "automl-deft": ("automl", "deft", "phase3"),
    "automl-only": ("automl",),
    "deft-only": ("deft",),
}


def _pipelines() -> dict[str, Any]:
    try:
        from pipelines import PIPELINES
    except ImportError as exc:  # pragma: no cover - a broken install
        raise UserError(
            "the pipelines package is not installed; reinstall automl-deft (pip install -e .)"
        ) from exc
    return dict(PIPELINES)


def _abs_config(config_path: Path | None) -> str:
    return str(config_path.resolve()) if config_path else ""


@cli.command("preflight")
@click.argument("workspace", type=EXISTING_DIR)
@click.option("-c", "--config", "config_path", type=EXISTING_FILE, help="Run config YAML.")
@click.option("--results", "results_dir", type=ANY_PATH, help="The run's results directory.")
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


@cli.command("run")
@click.argument("workspace", type=EXISTING_DIR)
@click.option("-c", "--config", "config_path", type=EXISTING_FILE, help="Run config YAML.")
@click.option(
    "--results",
    "results_dir",
    type=ANY_PATH,
    help="Default: WORKSPACE/results/run_<ts> (an existing one resumes).",
)
@click.option(
    "--pipeline",
    "pipeline_name",
    type=click.Choice(PIPELINE_NAMES),
    default="automl-deft",
    show_default=True,
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask; proceed after the pre-flight.")
@click.option("--no-images", is_flag=True, help="Pre-flight: skip decoding images.")
def run_cmd(
    workspace: Path,
    config_path: Path | None,
    results_dir: Path | None,
    pipeline_name: str,
    yes: bool,
    no_images: bool,
) -> None:
    """Run the pipeline here (the embedded default): pre-flight, one question, then
    every phase through kfp.local, with Optuna and a local results directory.

    The same pipeline function a cluster runs: nothing is compiled and no
    cluster is needed. After the single confirmation nothing asks again; only
    the hard safety gates named in the pre-flight can stop the run. Prints the
    trajectory (Phase 1 → DEFT iterations → Phase 3, FAR on the KPI set), the
    deliverable and the report. Re-run with --results RESULTS to resume.
    """
    from automl_deft.cluster.local_run import KFP_ROOT, run_local
    from automl_deft.preflight import build_preflight
    from automl_deft.run_config import load_run_config
    from automl_deft.steps import SUMMARY_FILE, resolve_results_dir

    root = resolve_results_dir(
        workspace.resolve(), str(results_dir.resolve() if results_dir else "")
    )
    pre = build_preflight(
        workspace,
        load_run_config(config_path),
        results_dir=root,
        phases=PIPELINE_PHASES[pipeline_name],
        check_images=not no_images,
    )
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
        "results_dir": str(root),
        "config": _abs_config(config_path),
    }
    if pipeline_name != "deft-only":
        args["hpo_backend"] = "optuna"
    run = run_local(_pipelines()[pipeline_name], args, pipeline_root=root / KFP_ROOT)
    click.echo("")
    summary_path = root / SUMMARY_FILE
    if summary_path.is_file():
        _print_trajectory(json.loads(summary_path.read_text(encoding="utf-8")))
    click.echo(f"pipeline:    {pipeline_name} in {run.seconds / 60:.1f} min (kfp.local)")
    click.echo(f"results:     {root}")
    for name in ("best_model.json", "DEFT_Loop_Report.html"):
        if (root / name).is_file():
            click.echo(f"{'deliverable' if name.endswith('json') else 'report':<12} {root / name}")


def _print_trajectory(summary: dict[str, Any]) -> None:
    click.echo(f"Trajectory on the KPI test set (target {summary.get('kpi_target')}):")
    for s in summary.get("trajectory", []):
        far = s.get("far_pct")
        shown = "n/a" if far is None else f"{far:6.2f}%"
        rows = f"  {s['train_rows']} training rows" if s.get("train_rows") else ""
        click.echo(f"  {s['phase']:<7} {s['step']:<13} FAR {shown}{rows}")
    best = summary.get("best")
    if best:
        kept = (
            ""
            if summary.get("phase3_kept") or not summary.get("phase3_ran")
            else (" (Phase 3 did not beat it: kept the DEFT winner)")
        )
        click.echo(f"best: {best['iteration']} at FAR {best['far_pct']:.2f}%{kept}")


@cli.command("compile")
@click.option("--out", "out_dir", type=ANY_PATH, default=Path("manifests"), show_default=True)
@click.option("--image", help="Component image (default: the release image).")
@click.option("--namespace", default="kubeflow-user", show_default=True)
@click.option("--service-account", default="automl-deft", show_default=True)
@click.option("--pvc-name", default="automl-deft-workspace", show_default=True)
@click.option("--pvc-size", default="50Gi", show_default=True)
@click.option("--storage-class", help="Default: the cluster's default StorageClass.")
def compile_cmd(
    out_dir: Path,
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
    import os

    from automl_deft.cluster.compile import IMAGE_ENV, CompileOptions, compile_all

    if image:
        os.environ[IMAGE_ENV] = image
    written = compile_all(
        _pipelines(),
        out_dir,
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


def _cluster_options(fn: Any) -> Any:
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


def _package_and_args(
    pipeline_name: str, package: Path | None, workspace: str, config: str, params: tuple[str, ...]
) -> tuple[Path, dict[str, Any]]:
    import tempfile

    from automl_deft.cluster.compile import ir_yaml
    from automl_deft.io import atomic_write_text
    from automl_deft.model.spec import parse_set_option

    args: dict[str, Any] = {"workspace": workspace, "config": config}
    args.update(parse_set_option(list(params)))
    if package is None:
        package = Path(tempfile.mkdtemp(prefix="automl-deft-")) / f"{pipeline_name}.yaml"
        atomic_write_text(package, ir_yaml(_pipelines()[pipeline_name], pipeline_name))
    return package, args


@cli.command("submit")
@_cluster_options
@click.option("--run-name", help="Default: <pipeline>-<timestamp>.")
def submit_cmd(
    host: str,
    pipeline_name: str,
    package: Path | None,
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

    package, args = _package_and_args(pipeline_name, package, workspace, config, params)
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


@cli.command("schedule")
@_cluster_options
@click.option(
    "--cron", required=True, help='Six fields, seconds first: "0 0 2 * * *" = 02:00 daily.'
)
@click.option("--job-name", help="Default: <pipeline>-recurring.")
@click.option("--max-concurrency", default=1, show_default=True)
def schedule_cmd(
    host: str,
    pipeline_name: str,
    package: Path | None,
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
    package, args = _package_and_args(pipeline_name, package, workspace, config, params)
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


# --- end to end -----------------------------------------------------------------------


@cli.command()
@click.argument("directory", type=ANY_PATH)
@click.option(
    "--scale", type=click.Choice(["tiny", "small", "medium"]), default="small", show_default=True
)
@click.option("--seed", default=0, show_default=True)
@click.option("--zero-shot", "zero_shot_method", default="pixel-diff", show_default=True)
def quickstart(directory: Path, scale: str, seed: int, zero_shot_method: str) -> None:
    """Synthetic workspace → validate → train → KPI on the KPI set, vs zero-shot.

    Reuses the workspace in DIRECTORY if there is one, and resumes an
    interrupted training. This is what `make run` runs.
    """
    from automl_deft.quickstart import quickstart as run_quickstart

    result = run_quickstart(directory, scale=scale, seed=seed, zero_shot_method=zero_shot_method)
    click.echo(result.validation.table())
    click.echo("")
    click.echo(f"KPI test set: {result.trained.n_pass} PASS, {result.trained.n_defect} defect rows")
    click.echo(f"  trained model   {result.trained.summary()}")
    click.echo(f"  zero-shot ({zero_shot_method})  {result.zero_shot.summary()}")
    trained, zero = result.trained.far_pct, result.zero_shot.far_pct
    if trained is not None and zero is not None:
        ratio = trained / max(zero, 1e-12)
        click.echo(
            f"FAR@100% recall: trained {trained:.2f}% vs zero-shot {zero:.2f}% (ratio {ratio:.2f})"
        )
    click.echo(f"outputs: {result.out_dir}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="automl-deft")


if __name__ == "__main__":  # pragma: no cover
    main()
