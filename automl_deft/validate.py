"""Whole-workspace validation (``automl-deft validate``): every problem in one pass.

It sits above :mod:`automl_deft.workspace` (the layout, the CSV schema and the
checks) and :mod:`automl_deft.model.spec` (which names each row's files), so
neither of those has to import the other.

The untouched hold-out (``kpi/holdout_set.csv``), when present, gets every check
the other sets get (schema, both classes, images, duplicates) and must share no
row and no tested image with any of them. A missing hold-out is not an error:
:attr:`ValidationReport.has_holdout` lets the caller warn.
"""

from __future__ import annotations

import os

import pandas as pd

from automl_deft.errors import WorkspaceError
from automl_deft.model.spec import load_spec
from automl_deft.workspace import (
    HOLDOUT_ROLE,
    PASS_LABEL,
    ImageNaming,
    ValidationReport,
    Workspace,
    check_images,
    find_duplicates,
    find_leakage,
    input_content_hashes,
    read_dataset_csv,
    summarize,
)

__all__ = ["validate_workspace"]


def validate_workspace(
    root: str | os.PathLike[str],
    naming: ImageNaming | None = None,
    *,
    check_image_files: bool = True,
    require_pool: bool = True,
) -> ValidationReport:
    """Check a whole workspace; raise one :class:`WorkspaceError` listing every problem.

    Args:
        root: the workspace directory.
        naming: lights and extension; read from the workspace spec when omitted.
        check_image_files: decode every image and compare golden/input sizes, and
            check leakage by image content as well as by row key.
        require_pool: treat a missing mining pool as an error.

    The hold-out is checked when its file exists; its counts are
    :attr:`ValidationReport.holdout` (None when absent), not in ``summaries``.
    """
    ws = Workspace.at(root)
    if not ws.root.is_dir():
        raise WorkspaceError(f"workspace {ws.root} does not exist; create it or fix the path")
    problems: list[str] = []
    if naming is None:
        if not ws.spec_path.is_file():
            problems.append(
                f"spec not found: {ws.spec_path}; write one (automl-deft demo-workspace shows "
                "an example)"
            )
            naming = ImageNaming()
        else:
            naming = load_spec(ws.spec_path).naming()
    if not ws.images_dir.is_dir():
        problems.append(f"images root not found: {ws.images_dir}; put the images there")

    paths = ws.csvs(include_holdout=True)
    frames: dict[str, pd.DataFrame] = {}
    for role, path in paths.items():
        if role == "mining_pool" and not require_pool and not path.exists():
            continue
        if role == HOLDOUT_ROLE and not path.exists():
            continue
        try:
            frames[role] = read_dataset_csv(path, role=role)
        except WorkspaceError as exc:
            problems.extend(exc.problems)

    every = [summarize(f, role=r, path=paths[r]) for r, f in frames.items()]
    for s in every:
        if s.rows == 0:
            problems.append(f"{s.role} CSV {s.path} has no rows; add samples")
        elif s.role in ("train", "validation", "kpi_test", HOLDOUT_ROLE) and (
            s.n_pass == 0 or s.n_defect == 0
        ):
            only = PASS_LABEL if s.n_defect == 0 else "defect"
            problems.append(
                f"{s.role} set has a single class (only {only} rows); it needs both PASS "
                "and defect rows"
            )
    for role, frame in frames.items():
        problems.extend(find_duplicates(frame, role=role))

    n_files = 0
    content: dict[str, list[str]] | None = None
    if check_image_files and ws.images_dir.is_dir():
        image_problems: list[str] = []
        for role, frame in frames.items():
            found, n = check_images(frame, ws.images_dir, naming, role=role)
            image_problems.extend(found)
            n_files += n
        problems.extend(image_problems)
        if not image_problems:
            content = {
                role: input_content_hashes(frame, ws.images_dir, naming)
                for role, frame in frames.items()
            }
    leaks, overlapping = find_leakage(frames, content=content)
    problems.extend(leaks)
    if problems:
        raise WorkspaceError(problems)
    return ValidationReport(
        workspace=ws.root,
        summaries=[s for s in every if s.role != HOLDOUT_ROLE],
        images_checked=n_files,
        overlapping_rows=overlapping,
        holdout=next((s for s in every if s.role == HOLDOUT_ROLE), None),
    )
