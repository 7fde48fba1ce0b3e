"""Assemble and validate an iteration's training set.

``train_combined_iter<N>.csv`` = the previous iteration's training CSV + this
iteration's new rows (mined and synthetic). Growth is monotonic: rows are never
removed, the base set is never re-added, and a new row whose leakage key is
already present is skipped, so a resumed stage cannot duplicate rows. Every row
is listed in ``train_combined_iter<N>_provenance.csv`` with its source
(``base_train``, ``previous_iter_train``, ``mining_pool``, ``sdg``).

Validation is a hard stop: every referenced file must exist and decode, and no
row may share its leakage key (or its input image content) with the validation
or KPI test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from automl_deft.errors import StageError
from automl_deft.io import atomic_write_csv
from automl_deft.layout import RunLayout
from automl_deft.workspace import (
    REQUIRED_COLUMNS,
    ImageNaming,
    check_images,
    find_leakage,
    input_content_hashes,
    leakage_keys,
    normalize_label,
)

SOURCES = ("base_train", "previous_iter_train", "mining_pool", "sdg")
PROVENANCE_ONLY = ("mined_for", "mined_similarity", "sdg_backend", "sdg_source", "sdg_check")
PROVENANCE_COLUMNS = (
    "object_name",
    "input_path",
    "golden_path",
    "label",
    "source",
    "iteration_added",
    *PROVENANCE_ONLY,
)


combined_name = RunLayout.combined_name
provenance_name = RunLayout.provenance_name


@dataclass
class Assembled:
    """An assembled training set and where its rows came from."""

    frame: pd.DataFrame
    provenance: pd.DataFrame
    previous_rows: int
    sdg_rows: int
    mined_rows: int
    skipped_duplicates: int

    @property
    def added_rows(self) -> int:
        return self.sdg_rows + self.mined_rows


def _as_str(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(str).reset_index(drop=True)


def assemble(
    previous: pd.DataFrame,
    previous_provenance: pd.DataFrame | None,
    *,
    sdg_rows: pd.DataFrame | None,
    mined_rows: pd.DataFrame | None,
    iteration: int,
) -> Assembled:
    """Previous rows + new rows (no files written).

    Args:
        previous: the previous training set (the workspace's for iteration 1).
        previous_provenance: its provenance (None: every row is ``base_train``).
        sdg_rows: generated rows (dataset columns + ``sdg_backend``, ``sdg_source``).
        mined_rows: mined pool rows (pool columns + ``mined_for``, ``mined_similarity``).
        iteration: N, recorded as ``iteration_added`` for the new rows.
    """
    prev = _as_str(previous)
    if previous_provenance is None:
        prov_prev = pd.DataFrame(
            {
                "object_name": prev["object_name"],
                "input_path": prev["input_path"],
                "golden_path": prev["golden_path"],
                "label": prev["label"].map(normalize_label),
                "source": "base_train",
                "iteration_added": "0",
            }
        )
    else:
        prov_prev = _as_str(previous_provenance)
        prov_prev["source"] = prov_prev["source"].where(
            prov_prev["source"] == "base_train", "previous_iter_train"
        )
    seen = set(leakage_keys(prev))
    parts: list[pd.DataFrame] = []
    prov_parts: list[pd.DataFrame] = [prov_prev]
    counts = {"sdg": 0, "mining_pool": 0}
    skipped = 0
    for source, rows in (("sdg", sdg_rows), ("mining_pool", mined_rows)):
        if rows is None or rows.empty:
            continue
        rows = _as_str(rows)
        keys = leakage_keys(rows)
        fresh = ~keys.isin(seen) & ~keys.duplicated(keep="first")
        skipped += int((~fresh).sum())
        rows, keys = rows[fresh.to_numpy()], keys[fresh]
        seen.update(keys)
        counts[source] = len(rows)
        prov = pd.DataFrame(
            {c: rows[c] if c in rows.columns else "" for c in PROVENANCE_COLUMNS if c != "source"}
        )
        prov["label"] = prov["label"].map(normalize_label)
        prov["source"] = source
        prov["iteration_added"] = str(iteration)
        prov_parts.append(prov)
        parts.append(rows.drop(columns=[c for c in PROVENANCE_ONLY if c in rows.columns]))
    frame = pd.concat([prev, *parts], ignore_index=True).fillna("")
    frame["label"] = frame["label"].map(normalize_label)
    ordered = list(REQUIRED_COLUMNS) + [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    provenance = pd.concat(prov_parts, ignore_index=True).fillna("")
    provenance = provenance[[c for c in PROVENANCE_COLUMNS if c in provenance.columns]]
    return Assembled(
        frame=frame[ordered],
        provenance=provenance,
        previous_rows=len(prev),
        sdg_rows=counts["sdg"],
        mined_rows=counts["mining_pool"],
        skipped_duplicates=skipped,
    )


def validate_training_set(
    frame: pd.DataFrame,
    *,
    val_frame: pd.DataFrame,
    kpi_frame: pd.DataFrame,
    images_dir: Path,
    naming: ImageNaming,
    check_rows: pd.DataFrame | None = None,
    where: str = "training set",
) -> None:
    """Hard-stop checks: files exist and no leakage into the validation or KPI set.

    Args:
        frame: the whole training set (checked by leakage key).
        val_frame: the validation set.
        kpi_frame: the KPI test set.
        images_dir: the images root.
        naming: image file naming.
        check_rows: rows whose files and image content are checked (default: all).
        where: how to name the set in messages (e.g. the CSV path).

    Raises:
        StageError: missing/unreadable files, or leakage (message says which and how many).
    """
    rows = frame if check_rows is None else check_rows
    problems, _ = check_images(rows, images_dir, naming, role=where)
    if problems:
        raise StageError(f"{where}: {problems[0]}")
    sets = {"train": frame, "validation": val_frame, "kpi_test": kpi_frame}
    pairs = (("train", "validation"), ("train", "kpi_test"))
    leaks, n = find_leakage(sets, pairs=pairs)
    if not leaks and len(rows):
        content = {
            "train": input_content_hashes(rows, images_dir, naming),
            "validation": input_content_hashes(val_frame, images_dir, naming),
            "kpi_test": input_content_hashes(kpi_frame, images_dir, naming),
        }
        leaks, n = find_leakage(
            {"train": rows, "validation": val_frame, "kpi_test": kpi_frame},
            content=content,
            pairs=pairs,
        )
    if leaks:
        raise StageError(f"leakage in {where} ({n} row(s)): {leaks[0]}")


def write_assembled(assembled: Assembled, out_dir: Path, iteration: int) -> tuple[Path, Path]:
    """Write the combined CSV and its provenance atomically; returns both paths."""
    csv_path = out_dir / combined_name(iteration)
    prov_path = out_dir / provenance_name(iteration)
    atomic_write_csv(prov_path, assembled.provenance)
    atomic_write_csv(csv_path, assembled.frame)
    return csv_path, prov_path
