"""What a reader looks at instead of reading numbers: the score plot and the 2x2 table."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from automl_deft.io import atomic_path, refuse_directory
from automl_deft.kpi.metric import _as_arrays
from automl_deft.kpi.result import OperatingPoint, format_threshold
from automl_deft.workspace import SCORE_COLUMN

__all__ = ["confusion_matrix_text", "plot_score_distribution"]


def confusion_matrix_text(point: OperatingPoint) -> str:
    """A 2x2 text table (rows: actual class, columns: predicted class)."""
    cells = [str(v) for v in (point.tn, point.fp, point.fn, point.tp)]
    width = max(len("pred defect"), *(len(c) for c in cells))
    head = f"{'':<13}  {'pred PASS':>{width}}  {'pred defect':>{width}}"
    return "\n".join(
        [
            head,
            f"{'actual PASS':<13}  {cells[0]:>{width}}  {cells[1]:>{width}}",
            f"{'actual defect':<13}  {cells[2]:>{width}}  {cells[3]:>{width}}",
        ]
    )


def plot_score_distribution(
    labels: Iterable[object],
    scores: Iterable[float],
    path: str | os.PathLike[str],
    *,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """Histogram of PASS vs defect scores as a PNG, with the threshold marked.

    The y axis is logarithmic when one class outnumbers the other tenfold (AOI
    data is PASS-dominant, so the defects would otherwise be invisible).

    Returns:
        ``path``, written atomically.

    Raises:
        KPIError: as :func:`~automl_deft.kpi.compute_kpi`.
        UserError: ``path`` is an existing directory (refused before any drawing).
    """
    refuse_directory(path, "the score plot path", example="kpi_scores.png")
    # Figure + Agg canvas directly: no pyplot, so the process-wide backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    is_defect, values = _as_arrays(labels, scores)
    n_defect = int(is_defect.sum())
    n_pass = len(values) - n_defect
    lo, hi = float(values.min()), float(values.max())
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 51).tolist()

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(values[~is_defect], bins=bins, alpha=0.6, color="tab:blue", label=f"PASS ({n_pass})")
    ax.hist(values[is_defect], bins=bins, alpha=0.6, color="tab:red", label=f"defect ({n_defect})")
    if max(n_pass, n_defect) >= 10 * max(1, min(n_pass, n_defect)):
        ax.set_yscale("log")
    if threshold is not None:
        ax.axvline(
            threshold,
            color="black",
            linestyle="--",
            label=f"threshold {format_threshold(threshold)}",
        )
    ax.set_xlabel(f"{SCORE_COLUMN} (defect when > threshold)")
    ax.set_ylabel("rows")
    ax.set_title(title or "Score distribution")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
