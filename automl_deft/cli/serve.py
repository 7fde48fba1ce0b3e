"""Commands that take the model out of the run: ``predict`` and ``export``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from automl_deft.cli.options import EXISTING_DIR, examples, out_option
from automl_deft.errors import UserError

EXPORT_FORMATS = ("onnx", "torchscript")
"""The package formats (``automl_deft.serving.ModelFormat``, not imported here: it would load
onnx for every command; a test checks they agree)."""


@click.command(
    "predict",
    epilog=examples(
        "automl-deft predict .runs/demo/results/run1 .runs/demo/kpi/testing_set.csv -o scored.csv",
        "automl-deft predict aoi_model/ --golden g_SolderLight.png --test t_SolderLight.png",
    ),
)
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument(
    "source", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.option(
    "--golden",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="One pair instead of SOURCE: the golden image (repeat once per light, in order).",
)
@click.option(
    "--test",
    "test_images",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="The test image of the pair (repeat once per light, in order).",
)
@click.option("--images-dir", type=EXISTING_DIR, help="Default: the kpi/images above SOURCE.")
@out_option("The scored CSV (default: SOURCE with _predictions.csv).")
@click.option("--threshold", type=float, help="Override the model's decision threshold.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option(
    "--target", metavar="TEXT", help="With labels: KPI target; exit status 3 when it is missed."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict_cmd(
    model: Path,
    source: Path | None,
    golden: tuple[Path, ...],
    test_images: tuple[Path, ...],
    images_dir: Path | None,
    out: Path | None,
    threshold: float | None,
    batch_size: int,
    target: str | None,
    no_progress: bool,
) -> None:
    """Score new pairs with a run's deliverable or an exported package.

    MODEL: a run directory, its best_model.json, an exported package (from
    `automl-deft export`) or a checkpoint (with --threshold). SOURCE: a CSV in
    the workspace format, with or without a label column. Writes the input
    columns plus siamese_score and decision (NO_PASS when siamese_score >
    threshold, else PASS); prints the KPI when every row is labelled.
    """
    from automl_deft.io import atomic_write_csv
    from automl_deft.predict import has_labels, predict_frame, predict_pair, read_source_csv
    from automl_deft.predict import resolve_model as resolve

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    resolved = resolve(model, threshold=threshold)
    if golden or test_images:
        if source is not None:
            raise UserError("pass SOURCE or --golden/--test, not both")
        score, decision = predict_pair(resolved, list(golden), list(test_images))
        click.echo(f"siamese_score={score:.6f} threshold={resolved.threshold:.6g} → {decision}")
        return
    if source is None:
        raise UserError("pass a SOURCE CSV, or one pair with --golden and --test")
    frame = read_source_csv(source)
    scored = predict_frame(
        resolved,
        frame,
        images_dir,
        csv_path=source,
        batch_size=batch_size,
        progress=not no_progress and sys.stderr.isatty(),
    )
    out = out or source.with_name(source.stem + "_predictions.csv")
    atomic_write_csv(out, scored)
    flagged = int((scored["decision"] == "NO_PASS").sum())
    click.echo(
        f"wrote {len(scored)} rows to {out}: {flagged} NO_PASS, {len(scored) - flagged} PASS "
        f"at threshold {resolved.threshold:.6g} ({resolved.scorer.describe()})"
    )
    if has_labels(frame):
        from automl_deft.cli.model import report_kpi
        from automl_deft.kpi import judge_scored_frame

        report_kpi(judge_scored_frame(scored), target, False, scored)
    elif target:
        raise UserError("--target needs labels: SOURCE has no (complete) label column")


@click.command(
    "export",
    epilog=examples(
        "automl-deft export .runs/demo/results/run1 -o aoi_model/",
        "automl-deft export .runs/demo/results/run1 --format torchscript -o aoi_model_ts/",
    ),
)
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="onnx", show_default=True
)
@out_option("The package directory.", required=True)
def export_cmd(run: Path, fmt: str, out: Path) -> None:
    """Export a run's deliverable as a self-contained package for an AOI line.

    RUN: a run directory or its best_model.json. The package holds the model
    (ONNX or TorchScript), package.json (threshold, preprocessing: image size,
    lights, normalisation, registration) and the model card (model_card.json,
    MODEL_CARD.md). `automl-deft predict PACKAGE …` runs it without the
    training checkpoint (onnxruntime or torch).
    """
    from automl_deft.model_card import export_run

    package = export_run(run, fmt, out)
    click.echo(f"exported {fmt} package to {out}")
    click.echo(f"  model:     {out / package.manifest.model_file}")
    click.echo(f"  threshold: {package.manifest.threshold:.6g}")
    click.echo(f"  card:      {out / 'MODEL_CARD.md'}")


COMMANDS = (predict_cmd, export_cmd)
