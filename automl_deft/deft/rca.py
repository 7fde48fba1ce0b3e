"""Root-cause analysis (RCA) of a scored KPI set: which rows keep the KPI from being met.

The original workflow's RCA is vague ("a signed per-row weakness, positive =
misclassified"); this module pins it down. Everything is judged at one threshold:

* ``t`` is the threshold of the *recall-100 operating point* of
  :func:`automl_deft.kpi.compute_kpi` (a row is predicted defect when
  ``score > t``). When the KPI is unavailable (no defect rows, no PASS rows, or no
  threshold reaching recall 100%) the result is *unreachable*: there is no ``t``,
  no row is weak, :func:`write_rca` writes ``unreachable_kpi.txt`` with the reason,
  and routing is skipped.
* PASS rows: ``weakness = score - t``. Positive means a false alarm at ``t``
  (misclassified); the magnitude is the margin.
* Defect rows: at ``t`` no defect is missed (by construction), so
  ``weakness = t - score`` is always negative; closer to 0 means barely caught.
  Each defect also gets ``forced_far_pct`` = 100 × the share of PASS rows with
  ``score >= `` its score: the FAR this one defect forces on its own (catching it
  needs a threshold below its score, which flags every PASS row at or above it).
  The largest ``forced_far_pct`` equals the KPI's ``far_pct``, so this column
  says which defects drive the FAR.
* Weak rows (what routing, SDG and mining target), per label at most
  ``top_k_per_label`` of them:

  - PASS rows with ``weakness > 0`` (false alarms at ``t``), highest weakness first;
  - defect rows whose ``forced_far_pct`` alone violates the target (for the usual
    ``<``/``<=`` targets: :meth:`~automl_deft.kpi.KPITarget.is_met` is False for it,
    so ``FAR < 5%`` makes a defect forcing exactly 5% weak), highest
    ``forced_far_pct`` first. When the target is already met there are no weak
    defect rows (false alarms are still listed).

  Ties are broken by weakness (higher first), then by row order.
* ``need[label]`` = the number of weak rows of the label (labels with none are left out).
* Per-label stats: ``n``, ``weak``, ``fn_at_best_f1`` (false negatives at the
  best-F1 operating point of the same :class:`~automl_deft.kpi.KPIResult`),
  ``fp_at_t`` (PASS only), mean/min/max weakness, ``max_forced_far_pct``
  (defects only). Labels are ranked by ``fn_at_best_f1`` (desc), then the
  false-positive rate at ``t`` for PASS or ``max_forced_far_pct / 100`` for a
  defect label (desc), then name. ``target_defects`` are the ranked defect
  labels with weak rows, ``target_labels`` the same including PASS.
* Metadata breakdown (beyond the original): for each metadata column
  (``RCAConfig.metadata_columns``, or every column that is not required, not a
  score and not ``bbox`` with 2–30 distinct non-empty values) and each of its
  values (an empty cell counts as ``(empty)``): rows, PASS, defects, false alarms
  at ``t``, FAR within the value, weak rows, share of all rows, share of weak rows
  and lift = weak share / row share. A value with lift >= 2 and at least 3 weak
  rows becomes a finding line, e.g. ``weak rows concentrate on boardname=E: 62% of
  weak rows vs 17% of all rows (lift 3.7)``.

Labels are normalised with :func:`automl_deft.workspace.normalize_label` in every
summary; the weak rows keep the dataset's own label strings.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from automl_deft.deft.config import RCAConfig
from automl_deft.errors import KPIError, StageError
from automl_deft.io import atomic_path, atomic_write_csv, atomic_write_json, atomic_write_text
from automl_deft.jsontypes import JSONObject
from automl_deft.kpi import KPIResult, KPITarget, kpi_from_frame
from automl_deft.layout import RcaFiles
from automl_deft.workspace import (
    PASS_LABEL,
    REQUIRED_COLUMNS,
    SCORE_COLUMN,
    ImageNaming,
    is_pass,
    normalize_label,
    resolve_image_path,
)

__all__ = [
    "BREAKDOWN_FILE",
    "GAPS_FILE",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "THRESHOLD_FILE",
    "UNREACHABLE_FILE",
    "WEAK_FILE",
    "BreakdownEntry",
    "LabelStat",
    "RCAResult",
    "analyse",
    "load_weak",
    "write_rca",
]

GAPS_FILE = RcaFiles.GAPS
WEAK_FILE = RcaFiles.WEAK
THRESHOLD_FILE = RcaFiles.THRESHOLD
METRICS_FILE = RcaFiles.METRICS
BREAKDOWN_FILE = RcaFiles.BREAKDOWN
SUMMARY_FILE = RcaFiles.SUMMARY
UNREACHABLE_FILE = RcaFiles.UNREACHABLE

WEAKNESS_COLUMN = "weakness"
FORCED_FAR_COLUMN = "forced_far_pct"
FILEPATH_COLUMN = "filepath"
IS_WEAK_COLUMN = "is_weak"
FLOAT_COLUMNS: tuple[str, ...] = (SCORE_COLUMN, WEAKNESS_COLUMN, FORCED_FAR_COLUMN)
"""The columns of ``weak_samples.csv`` that are numbers; the rest are text."""

AUTO_MIN_VALUES = 2
AUTO_MAX_VALUES = 30
"""An auto-picked metadata column has this many distinct non-empty values (inclusive)."""
EXCLUDED_METADATA: tuple[str, ...] = ("bbox",)
"""Columns never broken down automatically (per-row geometry, not a category)."""
EMPTY_VALUE = "(empty)"
FINDING_MIN_LIFT = 2.0
FINDING_MIN_WEAK = 3
SUMMARY_TOP_ROWS = 10

_DERIVED_COLUMNS = frozenset(
    {SCORE_COLUMN, WEAKNESS_COLUMN, FORCED_FAR_COLUMN, FILEPATH_COLUMN, IS_WEAK_COLUMN}
)


class LabelStat(TypedDict):
    """One label's row of :attr:`RCAResult.label_stats` (``per_label`` of ``metrics.json``).

    A typed dict, not a record: it is the JSON entry itself, which the report reads
    back from ``metrics.json`` as a mapping.
    """

    label: str
    kind: str
    """``pass`` or ``defect``."""
    n: int
    weak: int
    fn_at_best_f1: int | None
    fp_at_t: int | None
    mean_weakness: float | None
    min_weakness: float | None
    max_weakness: float | None
    max_forced_far_pct: float | None


BreakdownEntry = TypedDict(
    "BreakdownEntry",
    {
        "value": str,
        "rows": int,
        "pass": int,
        "defects": int,
        "false_alarms": int,
        "far_pct": float | None,
        "weak": int,
        "row_share": float,
        "weak_share": float | None,
        "lift": float | None,
    },
)
"""One metadata value's row of :attr:`RCAResult.breakdown` (an entry of ``breakdown.json``;
``pass`` is a Python keyword, hence the functional form)."""


@dataclass
class RCAResult:
    """What :func:`analyse` found; see the module docstring for every definition.

    Attributes:
        reachable: False when the KPI is unavailable (then nothing is weak).
        threshold: ``t``, the recall-100 threshold; None when unreachable.
        kpi: the :func:`~automl_deft.kpi.compute_kpi` result the analysis is based on.
        gaps: every row: ``filepath``, ``object_name``, ``label`` (normalised),
            ``siamese_score``, ``weakness``, ``forced_far_pct`` (NaN for PASS),
            ``is_weak``, then the metadata columns; sorted by label rank, then
            weakness (desc).
        weak: the weak rows with the dataset's columns (text) plus
            ``siamese_score``, ``weakness`` and ``forced_far_pct``; in label rank order.
        label_stats: one dict per label, ranked.
        target_defects: ranked defect labels (normalised) with weak rows.
        target_labels: ranked labels with weak rows, PASS included.
        need: weak rows per label, for labels that have any, in rank order.
        breakdown: metadata column -> one dict per value.
        findings: human-readable lines (concentrations, skipped columns).
        reason: why the KPI is unreachable; None when reachable.
        target: the KPI target the weak defects were judged against.
    """

    reachable: bool
    threshold: float | None
    kpi: KPIResult
    gaps: pd.DataFrame
    weak: pd.DataFrame
    label_stats: list[LabelStat] = field(default_factory=list)
    target_defects: list[str] = field(default_factory=list)
    target_labels: list[str] = field(default_factory=list)
    need: dict[str, int] = field(default_factory=dict)
    breakdown: dict[str, list[BreakdownEntry]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    reason: str | None = None
    target: KPITarget | None = None

    def target_met(self) -> bool | None:
        """Whether the KPI meets :attr:`target`; None when no target was recorded."""
        return None if self.target is None else self.target.is_met(self.kpi)

    def to_dict(self) -> JSONObject:
        """A JSON-ready summary (no frames; NaN written as None)."""
        return _json_safe(
            {
                "reachable": self.reachable,
                "threshold": self.threshold,
                "reason": self.reason,
                "kpi_target": None if self.target is None else str(self.target),
                "kpi_met": self.target_met(),
                "kpi": self.kpi.to_dict(),
                "n_rows": len(self.gaps),
                "n_weak": len(self.weak),
                "label_stats": self.label_stats,
                "target_defects": self.target_defects,
                "target_labels": self.target_labels,
                "need": self.need,
                "breakdown": self.breakdown,
                "findings": self.findings,
            }
        )


# -------------------------------------------------------------------------- analysis


def analyse(
    scored: pd.DataFrame,
    target: KPITarget,
    config: RCAConfig | None = None,
    *,
    images_dir: str | os.PathLike[str] | None = None,
    naming: ImageNaming | None = None,
) -> RCAResult:
    """Root-cause analysis of a scored KPI set against a KPI target.

    Args:
        scored: the KPI dataset (text columns) plus ``siamese_score``.
        target: the KPI target; its FAR bound decides which defects are weak.
        config: ``top_k_per_label`` and the metadata columns; None: the defaults.
        images_dir: the images root used for the ``filepath`` column; None leaves
            the paths relative to it.
        naming: the image naming; ``filepath`` is the first light's input image.

    Returns:
        The analysis; ``reachable`` is False (and nothing weak) when the KPI is unavailable.

    Raises:
        KPIError: a missing required or score column, empty labels, or
            NaN/infinite/non-numeric scores.
    """
    config = config or RCAConfig()
    naming = naming or ImageNaming()
    missing = [c for c in REQUIRED_COLUMNS if c not in scored.columns]
    if missing:
        raise KPIError(
            f"scored KPI table lacks column(s) {', '.join(missing)}; pass the KPI dataset CSV "
            f"({', '.join(REQUIRED_COLUMNS)}) plus {SCORE_COLUMN}"
        )
    kpi = kpi_from_frame(scored)
    frame = scored.reset_index(drop=True)
    scores = pd.to_numeric(frame[SCORE_COLUMN]).to_numpy(dtype=np.float64)
    labels = frame["label"].map(normalize_label)
    passes = frame["label"].map(is_pass).to_numpy(dtype=bool)
    metadata = [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in _DERIVED_COLUMNS]

    root = "." if images_dir is None else images_dir
    light = naming.lights[0]
    filepath = [
        str(resolve_image_path(root, rel, obj, light, naming.ext))
        for rel, obj in zip(frame["input_path"], frame["object_name"], strict=True)
    ]
    threshold = kpi.threshold
    weakness = np.full(len(frame), np.nan)
    forced = np.full(len(frame), np.nan)
    is_weak = np.zeros(len(frame), dtype=bool)
    if threshold is not None:
        weakness = np.where(passes, scores - threshold, threshold - scores)
        forced = _forced_far_pct(scores, passes)
        is_weak = _select_weak(labels, passes, weakness, forced, target, kpi, config)

    gaps = pd.DataFrame(
        {
            FILEPATH_COLUMN: filepath,
            "object_name": frame["object_name"].astype(str),
            "label": labels,
            SCORE_COLUMN: scores,
            WEAKNESS_COLUMN: weakness,
            FORCED_FAR_COLUMN: forced,
            IS_WEAK_COLUMN: is_weak,
        }
    )
    for column in metadata:
        gaps[column] = frame[column]

    stats = _label_stats(gaps, kpi)
    rank = {s["label"]: i for i, s in enumerate(stats)}
    order_key = gaps["label"].map(rank).to_numpy()
    sort_weakness = np.where(np.isnan(weakness), -np.inf, weakness)
    # Row order breaks ties: lexsort is stable and its last key is the primary one.
    order = np.lexsort((np.arange(len(gaps)), -sort_weakness, order_key))

    weak = frame.loc[is_weak].copy()
    weak[SCORE_COLUMN] = scores[is_weak]
    weak[WEAKNESS_COLUMN] = weakness[is_weak]
    weak[FORCED_FAR_COLUMN] = forced[is_weak]
    weak_rank = np.lexsort(
        (
            np.flatnonzero(is_weak),
            -np.nan_to_num(weakness[is_weak], nan=-np.inf),
            -np.nan_to_num(forced[is_weak], nan=-np.inf),
            order_key[is_weak],
        )
    )
    weak = weak.iloc[weak_rank].reset_index(drop=True)

    with_weak = [s for s in stats if s["weak"] > 0]
    findings: list[str] = []
    breakdown = (
        _breakdown(gaps, passes, scores, threshold, config, metadata, findings)
        if threshold is not None
        else {}
    )
    return RCAResult(
        reachable=kpi.available,
        threshold=threshold,
        kpi=kpi,
        gaps=gaps.iloc[order].reset_index(drop=True),
        weak=weak,
        label_stats=stats,
        target_defects=[s["label"] for s in with_weak if s["label"] != PASS_LABEL],
        target_labels=[s["label"] for s in with_weak],
        need={s["label"]: int(s["weak"]) for s in with_weak},
        breakdown=breakdown,
        findings=findings,
        reason=kpi.reason,
        target=target,
    )


def _forced_far_pct(scores: np.ndarray, passes: np.ndarray) -> np.ndarray:
    """Per defect row, 100 × share of PASS rows scoring at or above it; NaN for PASS rows."""
    pass_sorted = np.sort(scores[passes])
    at_or_above = len(pass_sorted) - np.searchsorted(pass_sorted, scores, side="left")
    return np.where(passes, np.nan, at_or_above / len(pass_sorted) * 100)


def _violates(target: KPITarget, far_pct: float) -> bool:
    """Whether a FAR alone fails the target (lower FAR is never worse, whatever the operator)."""
    if target.op in ("<", "<="):
        return not target.is_met(far_pct)
    return far_pct > target.value_pct


def _select_weak(
    labels: pd.Series,
    passes: np.ndarray,
    weakness: np.ndarray,
    forced: np.ndarray,
    target: KPITarget,
    kpi: KPIResult,
    config: RCAConfig,
) -> np.ndarray:
    """The weak-row mask: false alarms and KPI-violating defects, top-k per label."""
    met = target.is_met(kpi)
    candidate = np.where(
        passes,
        weakness > 0,
        np.array([not met and _violates(target, f) for f in forced], dtype=bool),
    )
    # Per label, the candidates by (forced FAR, weakness) desc, then row order.
    primary = np.where(passes, weakness, forced)
    order = np.lexsort((np.arange(len(labels)), -weakness, -primary))
    ranked = pd.Series(labels.to_numpy()[order], index=order)
    ranked = ranked[candidate[order]]
    within = ranked.groupby(ranked, sort=False).cumcount()
    mask = np.zeros(len(labels), dtype=bool)
    mask[within.index[within.to_numpy() < config.top_k_per_label]] = True
    return mask


def _label_stats(gaps: pd.DataFrame, kpi: KPIResult) -> list[LabelStat]:
    """One dict per label, ranked (see the module docstring)."""
    best = kpi.best_f1
    stats: list[LabelStat] = []
    for label, rows in gaps.groupby("label", sort=True):
        name = str(label)
        good = name == PASS_LABEL
        weakness = rows[WEAKNESS_COLUMN]
        scores = rows[SCORE_COLUMN]
        fp_at_t = None
        fn_at_best = None
        max_forced = None
        if kpi.threshold is not None:
            fp_at_t = int((scores > kpi.threshold).sum()) if good else None
            max_forced = None if good else float(rows[FORCED_FAR_COLUMN].max())
        if best is not None:
            fn_at_best = 0 if good else int((scores <= best.threshold).sum())
        stats.append(
            {
                "label": name,
                "kind": "pass" if good else "defect",
                "n": len(rows),
                "weak": int(rows[IS_WEAK_COLUMN].sum()),
                "fn_at_best_f1": fn_at_best,
                "fp_at_t": fp_at_t,
                "mean_weakness": _float_or_none(weakness.mean()),
                "min_weakness": _float_or_none(weakness.min()),
                "max_weakness": _float_or_none(weakness.max()),
                "max_forced_far_pct": max_forced,
            }
        )

    def rate(s: LabelStat) -> float:
        if s["kind"] == "pass":
            return (s["fp_at_t"] or 0) / s["n"]
        return (s["max_forced_far_pct"] or 0.0) / 100

    return sorted(stats, key=lambda s: (-(s["fn_at_best_f1"] or 0), -rate(s), s["label"]))


def _metadata_values(values: pd.Series) -> pd.Series:
    """Text values with empty or missing cells as :data:`EMPTY_VALUE`."""
    text = values.astype(object).where(values.notna(), "").astype(str)
    return text.where(text.str.strip() != "", EMPTY_VALUE)


def _breakdown(
    gaps: pd.DataFrame,
    passes: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    config: RCAConfig,
    metadata: list[str],
    findings: list[str],
) -> dict[str, list[BreakdownEntry]]:
    """Weak-row concentration per metadata value; appends finding lines to ``findings``."""
    if config.metadata_columns is None:
        columns = []
        for column in metadata:
            if column in EXCLUDED_METADATA:
                continue
            distinct = _metadata_values(gaps[column])
            n_values = distinct[distinct != EMPTY_VALUE].nunique()
            if AUTO_MIN_VALUES <= n_values <= AUTO_MAX_VALUES:
                columns.append(column)
    else:
        columns = []
        for column in config.metadata_columns:
            if column in gaps.columns and column not in _DERIVED_COLUMNS:
                columns.append(column)
            else:
                findings.append(f"metadata column {column!r} is not in the KPI set (skipped)")

    n_rows = len(gaps)
    is_weak = gaps[IS_WEAK_COLUMN].to_numpy()
    n_weak = int(is_weak.sum())
    false_alarm = passes & (scores > threshold)
    table = pd.DataFrame(
        {"pass": passes, "defect": ~passes, "false_alarm": false_alarm, "weak": is_weak}
    )
    out: dict[str, list[BreakdownEntry]] = {}
    concentrations: list[tuple[float, str]] = []
    for column in columns:
        counts = table.groupby(_metadata_values(gaps[column]).to_numpy(), sort=True).agg(
            rows=("pass", "size"),
            n_pass=("pass", "sum"),
            defects=("defect", "sum"),
            false_alarms=("false_alarm", "sum"),
            weak=("weak", "sum"),
        )
        entries: list[BreakdownEntry] = []
        for value, c in counts.iterrows():
            rows, n_pass, weak = int(c["rows"]), int(c["n_pass"]), int(c["weak"])
            row_share = rows / n_rows
            weak_share = weak / n_weak if n_weak else None
            lift = None if weak_share is None else weak_share / row_share
            entries.append(
                {
                    "value": str(value),
                    "rows": rows,
                    "pass": n_pass,
                    "defects": int(c["defects"]),
                    "false_alarms": int(c["false_alarms"]),
                    "far_pct": int(c["false_alarms"]) / n_pass * 100 if n_pass else None,
                    "weak": weak,
                    "row_share": row_share,
                    "weak_share": weak_share,
                    "lift": lift,
                }
            )
            if lift is not None and lift >= FINDING_MIN_LIFT and weak >= FINDING_MIN_WEAK:
                concentrations.append(
                    (
                        lift,
                        f"weak rows concentrate on {column}={value}: {weak_share:.0%} of weak "
                        f"rows vs {row_share:.0%} of all rows (lift {lift:.1f})",
                    )
                )
        entries.sort(key=lambda e: (-int(e["weak"]), -int(e["rows"]), str(e["value"])))
        out[column] = entries
    # Strongest concentration first; the sort is stable, so equal lifts keep column order.
    findings.extend(line for _, line in sorted(concentrations, key=lambda c: -c[0]))
    return out


# ---------------------------------------------------------------------------- files


def write_rca(result: RCAResult, out_dir: Path, *, title: str = "") -> dict[str, Path]:
    """Write the RCA artifacts into ``out_dir``, each atomically.

    Files: ``kpi_gaps.parquet`` (:attr:`RCAResult.gaps`), ``weak_samples.csv``
    (:attr:`RCAResult.weak`), ``threshold.txt`` (``repr`` of ``t``, reachable
    only), ``metrics.json``, ``breakdown.json``, ``rca_summary.md`` and, when
    unreachable, ``unreachable_kpi.txt`` (the reason). A stale ``threshold.txt``
    or ``unreachable_kpi.txt`` from an earlier run into the same folder is removed,
    so the folder always tells one story.

    Args:
        result: what :func:`analyse` returned.
        out_dir: the RCA folder (created when missing).
        title: what was analysed (e.g. ``iter2``), used in the markdown heading.

    Returns:
        File name -> path of every file written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def target(name: str) -> Path:
        paths[name] = out_dir / name
        return paths[name]

    with atomic_path(target(GAPS_FILE)) as tmp:
        result.gaps.to_parquet(tmp, index=False)
    atomic_write_csv(target(WEAK_FILE), result.weak)
    if result.reachable and result.threshold is not None:
        atomic_write_text(target(THRESHOLD_FILE), f"{result.threshold!r}\n")
        (out_dir / UNREACHABLE_FILE).unlink(missing_ok=True)
    else:
        atomic_write_text(
            target(UNREACHABLE_FILE),
            f"KPI unreachable: {result.reason}\nRouting, SDG and mining are skipped.\n",
        )
        (out_dir / THRESHOLD_FILE).unlink(missing_ok=True)
    atomic_write_json(target(METRICS_FILE), _metrics(result))
    atomic_write_json(target(BREAKDOWN_FILE), _json_safe(result.breakdown))
    atomic_write_text(target(SUMMARY_FILE), _summary_markdown(result, title))
    return paths


def _metrics(result: RCAResult) -> JSONObject:
    kpi = result.kpi
    return _json_safe(
        {
            "reachable": result.reachable,
            "reason": result.reason,
            "kpi_target": None if result.target is None else str(result.target),
            "kpi_met": result.target_met(),
            "precision": kpi.precision,
            "recall": kpi.recall,
            "f1": kpi.f1,
            "tp": kpi.tp,
            "fp": kpi.fp,
            "tn": kpi.tn,
            "fn": kpi.fn,
            "far_pct": kpi.far_pct,
            "threshold": result.threshold,
            "n_pass": kpi.n_pass,
            "n_defect": kpi.n_defect,
            "best_f1": None if kpi.best_f1 is None else kpi.best_f1.to_dict(),
            "n_weak": len(result.weak),
            "per_label": result.label_stats,
            "target_defects": result.target_defects,
            "target_labels": result.target_labels,
            "need": result.need,
            "findings": result.findings,
        }
    )


def _summary_markdown(result: RCAResult, title: str) -> str:
    lines = [f"# RCA{': ' + title if title else ''}", "", f"**KPI:** {result.kpi.summary()}"]
    if result.target is not None:
        gap = result.target.gap_pp(result.kpi)
        status = (
            "MET"
            if result.target_met()
            else "unavailable"
            if gap is None
            else f"{gap:.2f} pp from target"
        )
        lines += ["", f"**Target:** {result.target} ({status})"]
    lines.append("")
    if not result.reachable:
        lines += ["Routing, SDG and mining are skipped.", ""]
    lines += [
        f"Weak rows: {len(result.weak)}; target defects: "
        f"{', '.join(result.target_defects) or 'none'}",
        "",
        "## Labels",
        "",
        "| label | n | weak | FN@best-F1 | FP@t | mean weakness | max forced FAR |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result.label_stats:
        lines.append(
            f"| {s['label']} | {s['n']} | {s['weak']} | {_cell(s['fn_at_best_f1'])} "
            f"| {_cell(s['fp_at_t'])} | {_cell(s['mean_weakness'], '.4f')} "
            f"| {_cell(s['max_forced_far_pct'], '.2f', '%')} |"
        )
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in result.findings] or ["- none"]
    lines += ["", f"## Top {SUMMARY_TOP_ROWS} weak rows", ""]
    if result.weak.empty:
        lines.append("none")
    else:
        lines += [
            "| label | object_name | input_path | score | weakness | forced FAR |",
            "|---|---|---|---:|---:|---:|",
        ]
        for row in result.weak.head(SUMMARY_TOP_ROWS).itertuples(index=False):
            r = row._asdict()
            lines.append(
                f"| {normalize_label(r['label'])} | {r['object_name']} | {r['input_path']} "
                f"| {r[SCORE_COLUMN]:.4f} | {r[WEAKNESS_COLUMN]:+.4f} "
                f"| {_cell(r[FORCED_FAR_COLUMN], '.2f', '%')} |"
            )
    return "\n".join(lines) + "\n"


def _cell(value: Any, spec: str = "", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:{spec}}{suffix}"


def load_weak(out_dir: Path) -> pd.DataFrame:
    """Read ``weak_samples.csv`` back: text columns, the score columns as floats.

    Raises:
        StageError: the file is missing (RCA has not run into ``out_dir``).
    """
    path = Path(out_dir) / WEAK_FILE
    if not path.is_file():
        raise StageError(f"{path} not found; run the RCA stage first (write_rca)")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in FLOAT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].replace("", np.nan).astype(np.float64)
    return frame


# ---------------------------------------------------------------------------- helpers


def _float_or_none(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _json_safe(obj: Any) -> Any:
    """Plain Python types with NaN/inf as None (``json.dumps`` would write invalid JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
