"""Whole-workspace validation (``automl-deft validate``): every problem in one pass.

It sits above :mod:`automl_deft.workspace` (the layout, the CSV schema and the
checks) and :mod:`automl_deft.model.spec` (which names each row's files), so
neither of those has to import the other.

The untouched hold-out (``kpi/holdout_set.csv``), when present, gets every check
the other sets get (schema, both classes, images, duplicates) and must share no
row and no tested image with any of them. A missing hold-out is not an error:
:attr:`ValidationReport.has_holdout` lets the caller warn.

:func:`validate_workspace` is also the one check every command that reads a
workspace runs first (``train``, ``automl``, ``deft``, and ``run`` through its
pre-flight): ``csvs`` puts the CSVs a command was given (``--train-csv``,
``--val-csv``, a DEFT run's recorded inputs) in place of the workspace's own, and
``skip`` leaves out a set the command does not read. The KPI test set and the
hold-out are always checked, since every other set must stay clear of them.
Decoding and hashing every image is what makes it slow; the workspace's image
cache (:data:`automl_deft.workspace.HASH_CACHE`) makes a second pass cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from automl_deft.errors import WorkspaceError
from automl_deft.layout import RunLayout
from automl_deft.model.spec import load_spec
from automl_deft.workspace import (
    HOLDOUT_ROLE,
    PASS_LABEL,
    ImageIndex,
    ImageNaming,
    ValidationReport,
    Workspace,
    check_image_locations,
    check_images,
    find_duplicates,
    find_leakage,
    input_content_hashes,
    label_warnings,
    read_dataset_csv,
    refuse_kpi_set,
    summarize,
    suspicious_labels_text,
)

__all__ = ["PROTECTED_ROLES", "guard_workspace", "validate_workspace"]

log = logging.getLogger(__name__)

PROTECTED_ROLES: tuple[str, ...] = ("kpi_test", HOLDOUT_ROLE)
"""Always checked: every other set must share no row and no tested image with them."""

_NOUNS = {"train": "the training set", "validation": "the validation set"}


def _run_dir_of(path: Path) -> Path | None:
    """The DEFT run directory (it holds ``deft_state.json``) a CSV lies in, if any."""
    for directory in path.resolve().parents:
        if RunLayout(directory).state.is_file():
            return directory
    return None


def validate_workspace(
    root: str | os.PathLike[str],
    naming: ImageNaming | None = None,
    *,
    check_image_files: bool = True,
    require_pool: bool = True,
    csvs: Mapping[str, str | os.PathLike[str]] | None = None,
    skip: Collection[str] = (),
    run_dirs: Sequence[str | os.PathLike[str]] = (),
    cache: bool = True,
) -> ValidationReport:
    """Check a whole workspace; raise one :class:`WorkspaceError` listing every problem.

    Args:
        root: the workspace directory.
        naming: lights and extension; read from the workspace spec when omitted.
        check_image_files: decode every image and compare golden/input sizes, and
            check leakage by image content as well as by row key.
        require_pool: treat a missing or empty mining pool as an error.
        csvs: CSVs to check in place of the workspace's own, by role (``train``,
            ``validation``, ``kpi_test``, ``mining_pool``): what a command was given.
            One that *is* the KPI set or the hold-out is refused.
        skip: roles a command does not read (``train``, ``validation``,
            ``mining_pool``); the KPI set and the hold-out are never skipped.
        run_dirs: DEFT run directories whose generated images the CSVs may name
            (with ``..``); a CSV inside a run directory may name that run's images.
        cache: use and update the workspace's image cache (content digests and
            sizes keyed by path, size and mtime).

    Every image path must resolve (symlinks followed) under the workspace root,
    the real images root or one of the run directories. Labels that look like a
    typo or a placeholder are warnings (:attr:`ValidationReport.suspicious_labels`).
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
    roots: list[Path] = [ws.root, ws.images_dir, *(Path(d) for d in run_dirs)]
    given: set[str] = set()
    for role, value in (csvs or {}).items():
        if role not in paths or role == HOLDOUT_ROLE:
            raise ValueError(f"no CSV role {role!r} to replace")
        path = Path(value).resolve()
        if path == paths[role].resolve():
            continue
        paths[role] = path
        given.add(role)
        run_dir = _run_dir_of(path)
        if run_dir is not None:
            roots.append(run_dir)
    frames: dict[str, pd.DataFrame] = {}
    for role, path in paths.items():
        if role in skip and role not in PROTECTED_ROLES:
            continue
        if role == "mining_pool" and not require_pool and not path.exists():
            continue
        if role == HOLDOUT_ROLE and not path.exists():
            continue
        if role in given and role not in PROTECTED_ROLES:
            refused = _protected_path(ws, role, path)
            if refused:
                problems.append(refused)
                continue
        try:
            frames[role] = read_dataset_csv(path, role=role)
        except WorkspaceError as exc:
            problems.extend(exc.problems)

    every = [summarize(f, role=r, path=paths[r]) for r, f in frames.items()]
    for s in every:
        if s.rows == 0:
            if s.role != "mining_pool" or require_pool:
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

    index = ImageIndex.for_workspace(ws.root) if cache else ImageIndex()
    n_files = 0
    content: dict[str, list[str]] | None = None
    try:
        location_problems: list[str] = []
        for role, frame in frames.items():
            location_problems.extend(
                check_image_locations(
                    frame,
                    ws.images_dir,
                    naming,
                    role=role,
                    roots=roots,
                    index=index if check_image_files else None,
                )
            )
        problems.extend(location_problems)
        if check_image_files and ws.images_dir.is_dir():
            image_problems: list[str] = []
            for role, frame in frames.items():
                found, n = check_images(frame, ws.images_dir, naming, role=role, index=index)
                image_problems.extend(found)
                n_files += n
            problems.extend(image_problems)
            if not image_problems and not location_problems:
                content = {
                    role: input_content_hashes(frame, ws.images_dir, naming, index=index)
                    for role, frame in frames.items()
                }
    finally:
        index.save()
    leaks, overlapping = find_leakage(frames, content=content)
    problems.extend(leaks)
    if problems:
        raise WorkspaceError(problems)
    odd = label_warnings(frames)
    return ValidationReport(
        workspace=ws.root,
        summaries=[s for s in every if s.role != HOLDOUT_ROLE],
        images_checked=n_files,
        overlapping_rows=overlapping,
        warnings=[suspicious_labels_text(odd)] if odd else [],
        holdout=next((s for s in every if s.role == HOLDOUT_ROLE), None),
        suspicious_labels=odd,
    )


def _protected_path(ws: Workspace, role: str, path: Path) -> str | None:
    """The refusal when a CSV given for ``role`` is the KPI set or the hold-out itself."""
    protected = {ws.kpi_csv.resolve(): "KPI test set"}
    if ws.has_holdout:
        protected[ws.holdout_csv.resolve()] = "untouched hold-out"
    what = protected.get(path)
    if what is None:
        return None
    if role == "validation":
        try:
            refuse_kpi_set(ws, path, used_as=_NOUNS[role])
        except WorkspaceError as exc:
            return str(exc)
    noun = _NOUNS.get(role, f"the {role.replace('_', ' ')}")
    return f"{path} is the {what}; it cannot be {noun} (every other set must stay clear of it)"


def guard_workspace(
    root: str | os.PathLike[str],
    naming: ImageNaming | None = None,
    *,
    train_csv: str | os.PathLike[str] | None = None,
    val_csv: str | os.PathLike[str] | None = None,
    kpi_csv: str | os.PathLike[str] | None = None,
    pool_csv: str | os.PathLike[str] | None = None,
    with_pool: bool = False,
    require_pool: bool = False,
    run_dirs: Sequence[str | os.PathLike[str]] = (),
) -> ValidationReport:
    """The check a command runs first on the workspace it reads (before it trains anything).

    :func:`validate_workspace` on the sets the command reads: the training and
    validation sets (the ones given, else the workspace's), the mining pool when
    ``with_pool``, and always the KPI set and the hold-out they must stay clear of,
    with every image decoded and compared by content (cached). Warnings (labels
    that look like typos) are logged.

    Raises:
        WorkspaceError: every problem found, one line each with the fix.
    """
    given = {"train": train_csv, "validation": val_csv, "kpi_test": kpi_csv}
    if with_pool:
        given["mining_pool"] = pool_csv
    report = validate_workspace(
        root,
        naming,
        require_pool=with_pool and require_pool,
        csvs={role: path for role, path in given.items() if path is not None},
        skip=() if with_pool else ("mining_pool",),
        run_dirs=run_dirs,
    )
    for warning in report.warnings:
        log.warning("warning: %s", warning)
    return report
