"""Who makes the false alarms: defect type × step and board × step, on both sets.

At 100% recall the threshold sits just below the lowest-scored defect, so every
false alarm is *forced* by some defect type: the PASS rows scoring at or above a
type's lowest defect are the false alarms that catching every defect of that type
costs (:func:`forced_false_alarms`). The type with the most sets the step's FAR.
By board, the false alarms at the step's operating point split into the boards
their PASS rows come from (:func:`false_alarms_by`). On the untouched hold-out the
same tables are drawn at the hold-out's own recall-100 threshold, plus the defects
each type loses at the threshold the step ships with (:func:`missed_by`), chosen
on the steering set.

Every table is visible (no collapsed section); the per-label RCA detail stays in
the defect-type analysis below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automl_deft.deft.report.html import Num, na, table
from automl_deft.deft.report.load import ReportRun
from automl_deft.errors import KPIError
from automl_deft.kpi import compute_kpi
from automl_deft.workspace import SCORE_COLUMN, defect_mask, normalize_label

__all__ = [
    "BOARD_COLUMN",
    "Count",
    "contributions",
    "false_alarms_by",
    "forced_false_alarms",
    "missed_by",
    "operating_threshold",
]

BOARD_COLUMN = "boardname"
"""The board-family column of the workspace CSVs (optional)."""
SETS_THRESHOLD = "◆"
"""Marks the cell that sets the step's recall-100 threshold."""


@dataclass(frozen=True)
class Count:
    """``part`` of ``whole`` rows (e.g. false alarms of the PASS rows)."""

    part: int
    whole: int

    @property
    def pct(self) -> float | None:
        return None if not self.whole else 100.0 * self.part / self.whole


def _scores(frame: pd.DataFrame) -> np.ndarray:
    return frame[SCORE_COLUMN].to_numpy(dtype=np.float64)


def forced_false_alarms(frame: pd.DataFrame) -> dict[str, Count]:
    """Per defect type: the PASS rows scoring at or above its lowest-scored defect.

    That is the false alarms (out of all PASS rows) a threshold that catches every
    defect of the type must raise; the largest is the set's FAR at 100% recall.
    """
    scores = _scores(frame)
    is_defect = defect_mask(frame["label"])
    pass_scores = scores[~is_defect]
    names = frame["label"].map(normalize_label).to_numpy(dtype=object)
    out = {}
    for name in sorted(set(names[is_defect])):
        lowest = scores[is_defect & (names == name)].min()
        out[str(name)] = Count(int((pass_scores >= lowest).sum()), len(pass_scores))
    return out


def false_alarms_by(frame: pd.DataFrame, threshold: float, column: str) -> dict[str, Count]:
    """Per value of ``column``: its PASS rows flagged (``score > threshold``) of its PASS rows."""
    scores = _scores(frame)
    is_pass = ~defect_mask(frame["label"])
    values = frame[column].astype(str).to_numpy(dtype=object)
    out = {}
    for value in sorted(set(values[is_pass])):
        mine = is_pass & (values == value)
        out[str(value) or "(empty)"] = Count(int((scores[mine] > threshold).sum()), int(mine.sum()))
    return out


def missed_by(frame: pd.DataFrame, threshold: float) -> dict[str, Count]:
    """Per defect type: its defects not flagged (``score <= threshold``) of its defects."""
    scores = _scores(frame)
    is_defect = defect_mask(frame["label"])
    names = frame["label"].map(normalize_label).to_numpy(dtype=object)
    out = {}
    for name in sorted(set(names[is_defect])):
        mine = is_defect & (names == name)
        out[str(name)] = Count(int((scores[mine] <= threshold).sum()), int(mine.sum()))
    return out


def operating_threshold(frame: pd.DataFrame) -> float | None:
    """The set's own recall-100 threshold (None when the KPI is undefined on it)."""
    try:
        return compute_kpi(frame["label"], _scores(frame)).threshold
    except KPIError:
        return None


# ------------------------------------------------------------------------------ section


def contributions(run: ReportRun) -> str:
    """The section: the tables on the KPI (steering) set, then on the untouched hold-out."""
    kpi = {lab: f for lab in run.labels if (f := run.scored(lab)) is not None}
    if not kpi:
        return na("FAR contributions: not yet available (no scored KPI set on disk).")
    out = [
        "<h3>KPI (steering) set</h3>",
        _tables(run, kpi, "kpi", shipped=False),
    ]
    held = {lab: f for lab in run.labels if (f := run.holdout_scored(lab)) is not None}
    out.append("<h3>Untouched hold-out</h3>")
    if held:
        out.append(_tables(run, held, "holdout", shipped=True))
    elif run.summary is None:
        out.append(na("No hold-out scores: finalize has not run (or this is a DEFT-only run)."))
    else:
        out.append(na(f"No hold-out scores ({run.summary.holdout_note or 'none recorded'})."))
    out.append(
        f'<p class="meta">{SETS_THRESHOLD}: the defect type, or the board of the defect, that sets '
        "the step's recall-100 threshold. Forced false "
        "alarms: PASS rows scoring at or above the defect type's lowest-scored defect, i.e. "
        "what catching every defect of that type costs; the largest is the step's FAR. "
        "By board: false alarms at the step's operating point (its own recall-100 threshold on "
        "that set). Missed at the shipped threshold: the threshold chosen on the steering set, "
        "applied to boards that steered nothing.</p>"
    )
    return "".join(out)


def _tables(run: ReportRun, frames: dict[str, pd.DataFrame], key: str, *, shipped: bool) -> str:
    labels = list(frames)
    heads = [run.name(lab) for lab in labels]
    forced = {lab: forced_false_alarms(f) for lab, f in frames.items()}
    out = [
        "<h4>False alarms each defect type forces at 100% recall</h4>",
        _matrix(
            "defect type",
            heads,
            labels,
            forced,
            setter=lambda lab: _max_key(forced[lab]),
            table_id=f"defect-phase-{key}",
        ),
    ]
    if all(BOARD_COLUMN in f.columns for f in frames.values()):
        by_board, setter_board = {}, {}
        for lab, f in frames.items():
            thr = operating_threshold(f)
            by_board[lab] = {} if thr is None else false_alarms_by(f, thr, BOARD_COLUMN)
            setter_board[lab] = _setter_board(f)
        out += [
            f"<h4>False alarms by board (<code>{BOARD_COLUMN}</code>) at the operating point</h4>",
            _matrix(
                "board",
                heads,
                labels,
                by_board,
                setter=lambda lab: setter_board[lab],
                table_id=f"board-phase-{key}",
            ),
        ]
    else:
        out.append(na(f"No {BOARD_COLUMN} column: no board × step table."))
    if shipped:
        missed = {}
        for lab, f in frames.items():
            thr = run.threshold(lab)
            missed[lab] = {} if thr is None else missed_by(f, thr)
        out += [
            "<h4>Defects missed at the shipped threshold (chosen on the steering set)</h4>",
            _matrix(
                "defect type",
                heads,
                labels,
                missed,
                setter=None,
                table_id=f"missed-phase-{key}",
                show_pct=False,
            ),
        ]
    return "".join(out)


def _max_key(counts: dict[str, Count]) -> str | None:
    return max(counts, key=lambda k: (counts[k].part, k), default=None) if counts else None


def _setter_board(frame: pd.DataFrame) -> str | None:
    """The board of the lowest-scored defect (whose score sets the threshold)."""
    is_defect = defect_mask(frame["label"])
    if not is_defect.any():
        return None
    scores = np.where(is_defect, _scores(frame), np.inf)
    return str(frame[BOARD_COLUMN].astype(str).iloc[int(np.argmin(scores))]) or "(empty)"


def _matrix(
    what: str,
    heads: Sequence[str],
    labels: Sequence[str],
    counts: dict[str, dict[str, Count]],
    *,
    setter: Callable[[str], str | None] | None,
    table_id: str,
    show_pct: bool = True,
) -> str:
    keys = sorted({k for per in counts.values() for k in per})
    marked = {lab: setter(lab) if setter else None for lab in labels}
    rows = []
    for k in keys:
        row: list[object] = [k]
        for lab in labels:
            c = counts[lab].get(k)
            row.append(Num(_cell(c, show_pct) + (f" {SETS_THRESHOLD}" if marked[lab] == k else "")))
        rows.append(row)
    return table([what, *heads], rows, table_id=table_id)


def _cell(count: Count | None, show_pct: bool) -> str:
    if count is None:
        return "—"
    if not show_pct:
        return f"{count.part}/{count.whole}"
    pct = count.pct
    return f"{count.part}/{count.whole}" + (f" ({pct:.1f}%)" if pct is not None else "")
