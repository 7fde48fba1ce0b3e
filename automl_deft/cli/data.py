"""Data commands: make a workspace (``demo-workspace``, ``import-deeppcb``), check one
(``validate``), and set an untouched hold-out aside (``split-holdout``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from automl_deft.cli.options import ANY_PATH, EXISTING_DIR, examples, seed_option


@click.command(
    "demo-workspace",
    epilog=examples(
        "automl-deft demo-workspace .runs/demo",
        "automl-deft demo-workspace /tmp/smt --kind smt --scale tiny",
        "automl-deft demo-workspace /tmp/smt224 --kind smt --size 224 --force",
    ),
)
@click.argument("directory", type=ANY_PATH)
@click.option(
    "--kind",
    type=click.Choice(["pcb", "smt"]),
    default="pcb",
    show_default=True,
    help="pcb: greyscale bare-board copper, one light, PNG; smt: colour SMT components "
    "under four lights, JPEG.",
)
@seed_option("Random seed (same seed, same bytes).", default=0)
@click.option(
    "--scale",
    type=click.Choice(["tiny", "small", "medium"]),
    default="small",
    show_default=True,
    help="tiny for tests, small for `make run`, medium for benchmarks.",
)
@click.option(
    "--size",
    type=int,
    metavar="PX",
    help="Image side in pixels [default: 64 for pcb, 128 for smt (128-224)].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing workspace in DIRECTORY.")
def demo_workspace(
    directory: Path, kind: str, seed: int, scale: str, size: int | None, force: bool
) -> None:
    """Generate a synthetic AOI workspace (the embedded default) in DIRECTORY.

    Both kinds are split into a small PASS-dominant training set, a validation
    set, a larger KPI test set with board families and subtle defects the
    training set lacks, an untouched hold-out from the KPI distribution
    (kpi/holdout_set.csv, 30% of it), and a labelled mining pool.

    --kind pcb (the default, what `make run` uses): greyscale bare-board copper
    patches, one light (SolderLight PNG), six defect types (open, short,
    mousebite, spur, copper, pin-hole).

    --kind smt: colour, component-level AOI in the TAO layout: chip resistors
    and capacitors, diodes, SOT-23 and SOIC parts on five board designs, four
    RGB JPEG lights per side (LowAngleLight, SolderLight, UniformLight,
    WhiteLight), seven defect types (missing, shift, tombstone, bridge,
    insufficient, excess, polarity) with severity, and the metadata columns
    real workspaces carry (comp_type_1, comp_name, part_type, number_of_pins,
    project).
    """
    if kind == "smt":
        from automl_deft.synth.smt import DEFAULT_SMT_SIZE, generate_smt_workspace

        summary = generate_smt_workspace(
            directory, seed=seed, scale=scale, force=force, size=size or DEFAULT_SMT_SIZE
        )
    else:
        from automl_deft.synth.demo import generate_demo_workspace
        from automl_deft.synth.render import DEFAULT_SIZE

        summary = generate_demo_workspace(
            directory, seed=seed, scale=scale, force=force, size=size or DEFAULT_SIZE
        )
    click.echo(
        f"wrote {scale} {kind} workspace (seed {seed}) to {summary.root} in {summary.seconds:.1f}s"
    )
    for split, n in summary.counts.items():
        click.echo(f"  {split:<12} {n:>6} rows")


@click.command(
    "validate",
    epilog=examples(
        "automl-deft validate .runs/demo",
        "automl-deft validate .runs/demo --no-images --json",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@click.option("--no-images", is_flag=True, help="Skip decoding images and content-hash leakage.")
@click.option("--no-pool", is_flag=True, help="Do not require inputs/mining_pool.csv.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def validate(workspace: Path, no_images: bool, no_pool: bool, as_json: bool) -> None:
    """Check a workspace: CSV schema, images, class balance, duplicates, leakage.

    Leakage is checked between train, validation, KPI test (and the mining pool
    against validation and KPI test; the hold-out, when there is one, against
    every set) by the row key (input_path, golden_path, label, object_name,
    boardname) and by input image content. Exit status 2 lists every problem,
    one line each, with the fix. Image paths must stay inside the workspace (no
    `..` or symlink out of it). A workspace without kpi/holdout_set.csv passes
    with a warning, and so do labels that look like a typo or a placeholder
    (nan, none, null, or a label only one row has): marked (!) in the table.
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
            "sets": [_summary_json(s) for s in report.summaries],
            "holdout": _summary_json(report.holdout) if report.holdout else None,
            "suspicious_labels": report.suspicious_labels,
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(report.table())
        click.echo(
            f"\nOK: {report.images_checked} image files checked, leakage check: "
            f"{report.overlapping_rows} overlapping rows"
        )
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not report.has_holdout:
        from automl_deft.holdout import NO_HOLDOUT_WARNING

        click.echo(f"warning: {NO_HOLDOUT_WARNING}", err=True)


def _summary_json(summary: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(summary).items()}


@click.command(
    "split-holdout",
    epilog=examples(
        "automl-deft import-deeppcb DeepPCB .runs/deeppcb --holdout-fraction 0",
        "automl-deft split-holdout .runs/deeppcb --fraction 0.3 --group-by source_image",
    ),
)
@click.argument("workspace", type=EXISTING_DIR)
@click.option(
    "--fraction",
    default=0.3,
    show_default=True,
    help="Share of the KPI set's rows moved to the hold-out, in (0, 1).",
)
@seed_option("Random seed of the split.", default=0)
@click.option(
    "--group-by",
    metavar="COLUMN",
    help="Keep rows with one value of COLUMN on one side (e.g. source_image for crops "
    "of one board image).",
)
def split_holdout_cmd(workspace: Path, fraction: float, seed: int, group_by: str | None) -> None:
    """Move a share of WORKSPACE's KPI test set into an untouched hold-out.

    The KPI set (kpi/testing_set.csv) steers the workflow, so its FAR is
    optimistic; the hold-out (kpi/holdout_set.csv) is read by no phase, only
    the final step scores it. The split is stratified by label and board
    family (boardname) and every stratum of two or more rows keeps rows on
    both sides. Run it once, before the first run: it refuses when a hold-out
    exists (the message says how to undo it) and finishes an interrupted split.
    """
    from automl_deft.holdout import split_holdout

    result = split_holdout(workspace, fraction=fraction, seed=seed, group_by=group_by)
    if result.resumed:
        click.echo(f"finished an interrupted split in {result.workspace} (existing hold-out kept)")
    else:
        click.echo(
            f"held out {result.n_holdout} of {result.n_before} KPI rows "
            f"(fraction {fraction:g}, seed {seed}) in {result.workspace}"
        )
    click.echo(result.table())


@click.command(
    "import-deeppcb",
    epilog=examples(
        "automl-deft import-deeppcb DeepPCB .runs/deeppcb    # DeepPCB: a clone holding PCBData/",
        "automl-deft import-deeppcb DeepPCB .runs/deeppcb128 --crop-size 128 --force",
    ),
)
@click.argument("src", type=EXISTING_DIR)
@click.argument("directory", type=ANY_PATH)
@click.option("--crop-size", default=64, show_default=True, help="Crop side in pixels.")
@click.option(
    "--pass-per-image",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="PASS crops per board image (1 or more: every set needs PASS rows).",
)
@click.option("--val-fraction", default=0.2, show_default=True, help="Share of trainval pairs.")
@click.option("--pool-fraction", default=0.4, show_default=True, help="Share of trainval pairs.")
@click.option(
    "--holdout-fraction",
    default=0.3,
    show_default=True,
    help="Share of test pairs set aside as the untouched hold-out (0: none).",
)
@seed_option("Random seed of the crops and the splits.", default=0)
@click.option("--force", is_flag=True, help="Overwrite an existing workspace in DIRECTORY.")
def import_deeppcb_cmd(
    src: Path,
    directory: Path,
    crop_size: int,
    pass_per_image: int,
    val_fraction: float,
    pool_fraction: float,
    holdout_fraction: float,
    seed: int,
    force: bool,
) -> None:
    """Convert a DeepPCB download (SRC holds PCBData/) into a workspace in DIRECTORY.

    Defect crops are centred on the annotated boxes, PASS crops come from
    regions no box touches; DeepPCB's test split becomes the KPI set and the
    untouched hold-out (split by board image, stratified by group), and its
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
        holdout_fraction=holdout_fraction,
        seed=seed,
        force=force,
    )
    click.echo(f"imported DeepPCB into {directory}")
    click.echo(summary.table())
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)


COMMANDS = (demo_workspace, validate, import_deeppcb_cmd, split_holdout_cmd)
