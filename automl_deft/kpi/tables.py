"""The KPI of a scored table: an inference CSV or frame (a dataset table plus scores).

Reads the table, checks its ``label`` and score columns with errors that name the
fix, and hands them to :func:`automl_deft.kpi.compute_kpi`;
:func:`judge_scored_frame` also writes the artifacts a phase keeps next to the
number (the scored table, the threshold sweep, the score plot).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from automl_deft.errors import KPIError, first_line
from automl_deft.io import atomic_write_csv, refuse_directory
from automl_deft.kpi.metric import _rows, compute_kpi, write_sweep_csv
from automl_deft.kpi.plots import plot_score_distribution
from automl_deft.kpi.result import KPIResult
from automl_deft.workspace import SCORE_COLUMN

__all__ = [
    "LABEL_COLUMN",
    "judge_scored_frame",
    "kpi_from_csv",
    "kpi_from_frame",
    "read_inference_csv",
]

LABEL_COLUMN = "label"


def _frame_arrays(
    frame: pd.DataFrame, score_column: str, *, source: str
) -> tuple[pd.Series, np.ndarray]:
    """Labels and float scores of an inference frame, with errors that name the fix."""
    if LABEL_COLUMN not in frame.columns:
        raise KPIError(
            f"{source} has no {LABEL_COLUMN!r} column; the KPI needs ground truth: run "
            "inference on a dataset CSV that has one (input_path, golden_path, label, object_name)"
        )
    if score_column not in frame.columns:
        raise KPIError(
            f"{source} has no {score_column!r} column; run inference on it first "
            f"(an inference CSV is the dataset CSV plus {SCORE_COLUMN})"
        )
    labels = frame[LABEL_COLUMN]
    empty = np.flatnonzero(labels.isna().to_numpy() | (labels.astype(str).str.strip() == ""))
    if len(empty):
        raise KPIError(
            f"{source}: {len(empty)} row(s) with an empty {LABEL_COLUMN!r} "
            f"(first at row(s) {_rows(empty)}); fill them in or drop the rows"
        )
    raw = frame[score_column]
    scores = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise KPIError(
            f"{source}: {len(bad)} {score_column!r} value(s) are missing, non-numeric or "
            f"infinite (first at row(s) {_rows(bad)}, e.g. {raw.iloc[bad[0]]!r}); "
            "re-run inference for those rows or drop them"
        )
    return labels, scores


def kpi_from_frame(frame: pd.DataFrame, score_column: str = SCORE_COLUMN) -> KPIResult:
    """:func:`~automl_deft.kpi.compute_kpi` on an inference table (dataset CSV + score column).

    Raises:
        KPIError: a missing ``label`` or score column, empty labels, bad scores.
    """
    labels, scores = _frame_arrays(frame, score_column, source="inference table")
    return compute_kpi(labels, scores)


def judge_scored_frame(
    frame: pd.DataFrame,
    *,
    inference_csv: str | os.PathLike[str] | None = None,
    sweep_csv: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> KPIResult:
    """The KPI of a scored table, writing whichever artifacts are asked for.

    Args:
        frame: a dataset table with ``label`` and ``siamese_score``.
        inference_csv: write the scored table here (atomically).
        sweep_csv: write the threshold sweep here.
        plot: write the score-distribution PNG (threshold marked) here.
        title: what the plot shows (the KPI is appended).

    Raises:
        KPIError: as :func:`kpi_from_frame`.
        UserError: an output path is an existing directory (refused before any work).
    """
    refuse_directory(inference_csv, "the inference CSV path", example="kpi_scores.csv")
    refuse_directory(sweep_csv, "the sweep CSV path", example="kpi_sweep.csv")
    refuse_directory(plot, "the score plot path", example="kpi_scores.png")
    result = kpi_from_frame(frame)
    if inference_csv is not None:
        atomic_write_csv(inference_csv, frame)
    if sweep_csv is not None:
        write_sweep_csv(frame["label"], frame[SCORE_COLUMN], sweep_csv)
    if plot is not None:
        plot_score_distribution(
            frame["label"],
            frame[SCORE_COLUMN],
            plot,
            threshold=result.threshold,
            title=_plot_title(result, title),
        )
    return result


def _plot_title(result: KPIResult, what: str | None) -> str:
    if result.far_pct is None or result.threshold is None:
        kpi = "KPI unavailable"
    else:
        kpi = f"FAR@100% recall {result.far_pct:.2f}% (threshold {result.threshold:.4g})"
    return f"{what}: {kpi}" if what else kpi


def read_inference_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read an inference CSV with every column as text (labels like ``NA`` stay labels)."""
    path = Path(path)
    if not path.is_file():
        raise KPIError(f"inference CSV not found: {path}; run inference first or fix the path")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = first_line(exc)
        raise KPIError(f"inference CSV {path} cannot be parsed ({first}); fix the file") from exc


def kpi_from_csv(path: str | os.PathLike[str], *, score_column: str = SCORE_COLUMN) -> KPIResult:
    """:func:`~automl_deft.kpi.compute_kpi` on an inference CSV file.

    Raises:
        KPIError: missing/unparsable file, missing ``label`` or score column, bad values.
    """
    frame = read_inference_csv(path)
    labels, scores = _frame_arrays(frame, score_column, source=f"inference CSV {path}")
    return compute_kpi(labels, scores)
