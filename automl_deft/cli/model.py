"""Model commands: ``train``, ``infer``, ``kpi``, ``evaluate``, ``zero-shot`` and the
end-to-end ``quickstart``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from automl_deft.cli.options import (
    ANY_PATH,
    EXISTING_DIR,
    EXISTING_FILE,
    examples,
    kpi_options,
    num_epochs_option,
    out_option,
    results_option,
    seed_option,
    spec_option,
    spec_options,
)

if TYPE_CHECKING:
    import pandas as pd

    from automl_deft.kpi import KPIResult
    from automl_deft.model.spec import Spec


@click.command(
    "train",
    epilog=examples(
        "automl-deft train .runs/demo --num-epochs 5 -o .runs/demo/results/train",
        "automl-deft train .runs/demo --num-epochs 5 -o .runs/demo/results/train --no-resume",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@spec_options
@num_epochs_option("Training epochs (the spec's train.num_epochs).")
@seed_option("Training seed (the spec's train.seed).")
@click.option("--train-csv", type=EXISTING_FILE, help="Default: the workspace training set.")
@click.option("--val-csv", type=EXISTING_FILE, help="Default: the workspace validation set.")
@results_option(
    "Checkpoints, history and summary go here (default: WORKSPACE/results/train).",
    aliases=("--out",),
)
@click.option(
    "--resume/--no-resume",
    default=True,
    show_default=True,
    help="Continue the run in DIR from its latest.pt; --no-resume trains from scratch "
    "(the previous run's files are moved to DIR/previous_runs/).",
)
def train_cmd(
    workspace: Path,
    spec_path: Path | None,
    overrides: tuple[str, ...],
    num_epochs: int | None,
    seed: int | None,
    train_csv: Path | None,
    val_csv: Path | None,
    results_dir: Path | None,
    resume: bool,
) -> None:
    """Train the Siamese classifier; keep best-validation and latest checkpoints.

    Validation far_pct (FAR at 100% recall) picks the best checkpoint. An
    interrupted run resumes from DIR/latest.pt, and a finished one is not
    trained again; --no-resume starts over in the same DIR (needed after a
    change of the spec). Warm start from another model with --set
    train.pretrained_model_path=PATH.

    The sets are checked first, as `validate` checks them (schema, images,
    duplicates, leakage by row and by image content): a --val-csv that holds
    any KPI or hold-out row, or their images under other names, is refused.
    """
    from automl_deft.application import metric_value
    from automl_deft.model.spec import load_spec, parse_set_option
    from automl_deft.model.train import train
    from automl_deft.validate import guard_workspace
    from automl_deft.workspace import Workspace, read_dataset_csv

    ws = Workspace.at(workspace)
    tree = parse_set_option(overrides)
    if num_epochs is not None:
        tree["train.num_epochs"] = num_epochs
    if seed is not None:
        tree["train.seed"] = seed
    spec = load_spec(spec_path or ws.spec_path, tree)
    guard_workspace(ws.root, spec.naming(), train_csv=train_csv, val_csv=val_csv)
    out = results_dir or ws.results_dir / "train"
    created = _first_missing(out)
    try:
        result = train(
            spec,
            read_dataset_csv(train_csv or ws.train_csv, role="train"),
            read_dataset_csv(val_csv or ws.val_csv, role="validation"),
            ws.images_dir,
            out,
            resume=resume,
        )
    except BaseException:
        if created is not None:
            _remove_if_empty(created)
        raise
    best = result.best_metrics
    if result.epochs_run == 0:
        click.echo(
            f"{out} already holds this run, trained for {len(result.history)} epochs: nothing to "
            "train (--no-resume trains it again from scratch)"
        )
    click.echo(
        f"best epoch {best.get('epoch')}: val far_pct={_pct(metric_value(best, 'far_pct'))} "
        f"val_loss={best.get('val_loss', float('nan')):.4f}  ({result.seconds:.1f}s, "
        f"{result.images_per_second:.0f} img/s)"
    )
    click.echo(f"best checkpoint:   {result.best_checkpoint}")
    click.echo(f"latest checkpoint: {result.latest_checkpoint}")


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: it exists)."""
    missing = None
    for p in (path.absolute(), *path.absolute().parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_empty(directory: Path) -> None:
    """Remove a folder this command created when a failure left no file in it."""
    import shutil

    if directory.is_dir() and not any(p.is_file() for p in directory.rglob("*")):
        shutil.rmtree(directory, ignore_errors=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}%"


def _images_dir(csv: Path, images_dir: Path | None) -> Path:
    from automl_deft.workspace import find_images_dir

    return images_dir or find_images_dir(csv)


@click.command(
    "infer",
    epilog=examples(
        "automl-deft infer .runs/demo/results/train/best_val.pt "
        ".runs/demo/kpi/testing_set.csv -o scored.csv",
    ),
)
@click.argument("checkpoint", type=EXISTING_FILE)
@click.argument("csv", type=EXISTING_FILE)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@out_option("The scored CSV (default: CSV with _inference.csv).")
@click.option("--batch-size", type=int, help="Default: twice the training batch size.")
def infer_cmd(
    checkpoint: Path,
    csv: Path,
    images_dir: Path | None,
    out: Path | None,
    batch_size: int | None,
) -> None:
    """Score CSV with CHECKPOINT: writes the CSV plus a siamese_score column."""
    from automl_deft.model.infer import infer_csv

    out_csv = out or csv.with_name(csv.stem + "_inference.csv")
    frame = infer_csv(checkpoint, csv, _images_dir(csv, images_dir), out_csv, batch_size=batch_size)
    click.echo(f"wrote {len(frame)} scored rows to {out_csv}")


def report_kpi(
    result: KPIResult, target_text: str | None, as_json: bool, scored: pd.DataFrame | None = None
) -> None:
    """Print the KPI (with its bootstrap interval when the scored rows are given); exit 3
    when ``--target`` is missed (2 stays "bad input")."""
    from automl_deft.errors import EXIT_KPI_MISSED
    from automl_deft.kpi import confusion_matrix_text, format_far, parse_target
    from automl_deft.scorecard import interval_of
    from automl_deft.workspace import SCORE_COLUMN

    target = parse_target(target_text) if target_text else None
    ci95 = (
        interval_of(scored["label"], scored[SCORE_COLUMN])
        if scored is not None and result.far_pct is not None
        else None
    )
    met = target.is_met(result) if target is not None else None
    if as_json:
        payload = result.to_dict()
        payload["far_pct_ci95"] = ci95
        if target is not None:
            payload["target"] = str(target)
            payload["target_met"] = met
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(result.summary())
        if result.recall100 is not None:  # the KPI is available
            click.echo(
                f"far_pct={result.far_pct:.4f} threshold={result.threshold:.6g} "
                f"precision={result.precision:.4f} recall={result.recall:.4f} f1={result.f1:.4f}"
            )
            if ci95 is not None:
                click.echo(f"FAR at 100% recall {format_far(result.far_pct, ci95)} (95% bootstrap)")
            click.echo(confusion_matrix_text(result.recall100))
        if target is not None:
            click.echo(f"target {target}: {'MET' if met else 'NOT MET'}")
    if met is False:
        sys.exit(EXIT_KPI_MISSED)


@click.command(
    "kpi",
    epilog=examples(
        'automl-deft kpi scored.csv --target "FAR < 5% at recall=100%"',
        "automl-deft kpi scored.csv --json --sweep-csv sweep.csv --plot scores.png",
    ),
)
@click.argument("inference_csv", type=EXISTING_FILE)
@kpi_options
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
    report_kpi(result, target, as_json, frame)


@click.command(
    "evaluate",
    epilog=examples(
        "automl-deft evaluate .runs/demo/results/train/best_val.pt "
        '.runs/demo/kpi/testing_set.csv --target "FAR < 5% at recall=100%" --plot scores.png',
    ),
)
@click.argument("checkpoint", type=EXISTING_FILE)
@click.argument("csv", type=EXISTING_FILE)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@out_option("Also write the inference CSV here.")
@kpi_options
def evaluate_cmd(
    checkpoint: Path,
    csv: Path,
    images_dir: Path | None,
    out: Path | None,
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
    result = judge_scored_frame(frame, inference_csv=out, sweep_csv=sweep_csv, plot=plot)
    report_kpi(result, target, as_json, frame)


@click.command(
    "zero-shot",
    epilog=examples(
        "automl-deft zero-shot .runs/demo/kpi/testing_set.csv",
        "automl-deft zero-shot .runs/demo/kpi/testing_set.csv --method feature-distance --json",
    ),
)
@click.argument("csv", type=EXISTING_FILE)
@click.option(
    "--method", default="pixel-diff", show_default=True, help="pixel-diff or feature-distance."
)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the workspace's kpi/images.")
@spec_option("For lights and image size (default: the workspace's spec).")
@out_option("Also write the inference CSV here.")
@kpi_options
def zero_shot_cmd(
    csv: Path,
    method: str,
    images_dir: Path | None,
    spec_path: Path | None,
    out: Path | None,
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
    result = judge_scored_frame(frame, inference_csv=out, sweep_csv=sweep_csv, plot=plot)
    report_kpi(result, target, as_json, frame)


def _workspace_spec(images_dir: Path) -> Spec | None:
    from automl_deft.model.spec import load_spec
    from automl_deft.workspace import IMAGES_DIR, SPEC_FILE

    root = images_dir
    for _ in IMAGES_DIR.split("/"):
        root = root.parent
    spec = root / SPEC_FILE
    return load_spec(spec) if spec.is_file() else None


@click.command(
    "quickstart",
    epilog=examples(
        "automl-deft quickstart .runs/demo",
        "automl-deft quickstart .runs/quick --scale tiny --zero-shot feature-distance",
    ),
)
@click.argument("directory", type=ANY_PATH)
@click.option(
    "--scale", type=click.Choice(["tiny", "small", "medium"]), default="small", show_default=True
)
@seed_option("Seed of the synthetic workspace made when DIRECTORY has none.", default=0)
@click.option("--zero-shot", "zero_shot_method", default="pixel-diff", show_default=True)
def quickstart(directory: Path, scale: str, seed: int, zero_shot_method: str) -> None:
    """The two-minute check: synthetic workspace → validate → one training → FAR
    at 100% recall on the KPI set, vs the zero-shot scorer.

    Reuses the workspace in DIRECTORY if there is one, and resumes an
    interrupted training. `make quickstart` runs it; the whole pipeline (Phase 1
    AutoML → DEFT → Phase 3) is `make run`, i.e. `automl-deft demo-workspace`
    then `automl-deft run`.
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


COMMANDS = (train_cmd, infer_cmd, kpi_cmd, evaluate_cmd, zero_shot_cmd, quickstart)
