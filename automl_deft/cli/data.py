"""Data commands: make a workspace (``demo-workspace``, ``import-deeppcb``) and check
one (``validate``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from automl_deft.cli.options import ANY_PATH, EXISTING_DIR


@click.command("demo-workspace")
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


@click.command("validate")
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


@click.command("import-deeppcb")
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


COMMANDS = (demo_workspace, validate, import_deeppcb_cmd)
