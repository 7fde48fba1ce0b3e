"""``DEFT_Loop_Report.html``: the loop's story on one self-contained page.

The page is rendered from what is on disk only (``deft_state.json``,
``loop_log.jsonl`` and the per-iteration files), so the loop re-renders it after
every iteration and a user can re-render it for any results directory, running,
finished or half-written. Nothing on disk is modified except the report itself
(written atomically).

Self-contained on purpose: every plot and thumbnail is an inline PNG (matplotlib
on the Agg canvas), the style sheet is inline, and there is no script, so the
page works offline, as a mailed attachment, and in the Kubeflow UI's sandboxed
HTML viewer.

Sections, in order: header, KPI banner, problem statement, KPI dataset
characteristics, approach, progress, per-iteration results, augmentation, RCA
score distribution, defect-type analysis, sample of generated data,
per-iteration details, recommendations, final status. A section whose inputs do
not exist yet says "not yet available"; a section that cannot be rendered from a
malformed file says so and the rest of the page is still written.

Example::

    from automl_deft.deft.report import render_report

    path = render_report("ws/results/run_20261126_140208")
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl_deft.deft.rca import (
    BREAKDOWN_FILE,
    GAPS_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    UNREACHABLE_FILE,
)
from automl_deft.deft.state import (
    BASELINE,
    FINAL_AUTOML,
    HARD_STOPPED,
    IN_PROGRESS,
    LOG_FILE,
    NEEDS_REVIEW,
    STATE_FILE,
    STATE_VERSION,
    iteration_label,
    iteration_number,
    now_iso,
    read_log,
    stages_of,
)
from automl_deft.errors import AutomlDeftError, UserError
from automl_deft.io import atomic_write_text
from automl_deft.kpi import (
    KPITarget,
    format_threshold,
    parse_target,
    plot_score_distribution,
    threshold_sweep,
)
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
    "RECALL_LEVELS",
    "REPORT_FILE",
    "SECTION_TITLES",
    "render_report",
    "report_html",
    "report_path",
    "write_report",
]

log = logging.getLogger(__name__)

REPORT_FILE = "DEFT_Loop_Report.html"

SECTION_TITLES: tuple[str, ...] = (
    "Problem statement",
    "KPI dataset characteristics",
    "Approach",
    "Progress",
    "Per-iteration results",
    "Augmentation",
    "RCA score distribution",
    "Defect-type analysis",
    "Sample of generated data",
    "Per-iteration details",
    "Recommendations",
    "Final status",
)
"""The ``<h2>`` headings of the page, in order (the header and KPI banner come first)."""

RECALL_LEVELS: tuple[float, ...] = (100.0, 99.0, 95.0, 90.0)
"""Recall levels (percent) of the recall-vs-FAR table."""

NOT_YET = "Not yet available"

MAX_SAMPLES_PER_ITERATION = 8
"""Generated rows shown as thumbnails per iteration (half SDG, half mined when both exist)."""
THUMB_PX = 128
"""Longest side of a thumbnail; keeps the page small whatever the image size."""
MAX_METADATA_VALUES = 30
"""A metadata column with more distinct values than this is an identifier, not a category."""
MAX_BREAKDOWN_ROWS = 10
"""Values shown per breakdown column (the highest lift first)."""
LARGE_GAP_PP = 5.0
"""A gap this large after the last iteration rarely closes with one more iteration."""

BEST_BUNDLE_FILE = "best_model.json"
SCORES_FILE = "inference/kpi_scores.csv"
RCA_DIR = "rca_results"

_SOURCE_NOTES = {
    "automl_phase1": "AutoML Phase 1 winner, reused",
    "trained_here": "trained by the loop",
    "deft": "DEFT fine-tune",
    "automl_phase3": "AutoML Phase 3 (warm-started)",
}
_PROVENANCE_SDG = "sdg"
_PROVENANCE_MINED = "mining_pool"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;
max-width:72em;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff8dc}
.meta{color:#555;font-size:.9em}.na{color:#777;font-style:italic}
.good{color:#16803c}.bad{color:#b42318}
.banner{padding:.8em 1em;border-radius:6px;font-size:1.25em;font-weight:600;margin:1em 0}
.banner small{display:block;font-size:.7em;font-weight:400;margin-top:.3em}
.banner.met{background:#dcfce7;border:1px solid #16a34a}
.banner.gap{background:#fef3c7;border:1px solid #d97706}
.banner.progress{background:#dbeafe;border:1px solid #2563eb}
.banner.stopped{background:#fee2e2;border:1px solid #dc2626}
.banner.review{background:#ffedd5;border:1px solid #ea580c}
img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:.8em;white-space:pre-wrap}code{font-size:.9em}
.flex{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
.samples figure{margin:0 0 1em}figcaption{font-size:.75em;color:#444}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
""".strip()


# --------------------------------------------------------------------------- API


def report_path(results_dir: str | os.PathLike[str]) -> Path:
    """Where the report of ``results_dir`` lives."""
    return Path(results_dir) / REPORT_FILE


def render_report(results_dir: str | os.PathLike[str]) -> Path:
    """Render ``DEFT_Loop_Report.html`` from what is on disk and write it atomically.

    Args:
        results_dir: the run's results directory (holds ``deft_state.json``).

    Returns:
        The report's path.

    Raises:
        UserError: ``deft_state.json`` is missing or is not a JSON object. Every
            other missing or malformed file only makes its section say so.
    """
    path = report_path(results_dir)
    atomic_write_text(path, report_html(results_dir))
    return path


write_report = render_report
"""Alias of :func:`render_report`."""


def report_html(results_dir: str | os.PathLike[str]) -> str:
    """The report as an HTML string (what :func:`render_report` writes).

    Raises:
        UserError: as :func:`render_report`.
    """
    run = _load_run(Path(results_dir))
    body = [
        f"<header><h1>DEFT loop report</h1>{_guard('header', _header, run)}</header>",
        _guard("KPI banner", _banner, run),
    ]
    for title, builder in zip(SECTION_TITLES, _BUILDERS, strict=True):
        body.append(f"<section><h2>{escape(title)}</h2>\n{_guard(title, builder, run)}</section>")
    if run.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
        body.append(
            '<p class="meta">Problems reading the results directory:</p>'
            f'<ul class="meta">{items}</ul>'
        )
    body.append(
        f'<p class="meta">Rendered {escape(run.generated)} from {escape(str(run.root))} '
        "(re-rendered after every iteration).</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>DEFT loop report: {escape(run.root.name)}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# ----------------------------------------------------------------------- reading


@dataclass
class _Run:
    """Everything read from one results directory (files are read lazily, once)."""

    root: Path
    state: dict[str, Any]
    log: list[dict[str, Any]]
    generated: str
    problems: list[str] = field(default_factory=list)
    _scored: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _provenance: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _kpi_set: list[pd.DataFrame | None] = field(default_factory=list)
    _naming: list[ImageNaming] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return _dict(self.state.get("config"))

    @property
    def paths(self) -> dict[str, Any]:
        return _dict(self.config.get("paths"))

    @property
    def iterations(self) -> dict[str, Any]:
        return _dict(self.state.get("iterations"))

    @property
    def target_text(self) -> str:
        return str(self.state.get("kpi_target") or self.config.get("kpi_target") or "?")

    @property
    def target(self) -> KPITarget | None:
        try:
            return parse_target(self.target_text)
        except AutomlDeftError:
            return None

    @property
    def status(self) -> str:
        return str(self.state.get("status") or IN_PROGRESS)

    @property
    def labels(self) -> list[str]:
        """Phases in loop order: baseline, iter1.., final_automl, then anything else."""

        def key(label: str) -> tuple[int, int, str]:
            n = iteration_number(label)
            if n is not None:
                return (0, n, label)
            return (1 if label == FINAL_AUTOML else 2, 0, label)

        return sorted(self.iterations, key=key)

    def rec(self, label: str) -> dict[str, Any]:
        return _dict(self.iterations.get(label))

    def far(self, label: str) -> float | None:
        rec = self.rec(label)
        far = _num(rec.get("far_pct"))
        if far is None:
            far = _num(_dict(rec.get("kpi")).get("far_pct"))
        return far

    def threshold(self, label: str) -> float | None:
        rec = self.rec(label)
        thr = _num(rec.get("threshold"))
        if thr is None:
            thr = _num(_dict(rec.get("kpi")).get("threshold"))
        return thr

    def best(self) -> tuple[str, float, float | None, str | None] | None:
        """(label, far_pct, threshold, checkpoint) of the best phase so far."""
        saved = _dict(self.state.get("best"))
        label = saved.get("label")
        far = _num(saved.get("far_pct"))
        if isinstance(label, str) and far is not None:
            thr = _num(saved.get("threshold"))
            ckpt = saved.get("best_ckpt_path") or self.rec(label).get("best_ckpt_path")
            return label, far, thr, None if ckpt is None else str(ckpt)
        scored = [
            (f, i, lab) for i, lab in enumerate(self.labels) if (f := self.far(lab)) is not None
        ]
        if not scored:
            return None
        far, _, label = min(scored)
        ckpt = self.rec(label).get("best_ckpt_path")
        return label, far, self.threshold(label), None if ckpt is None else str(ckpt)

    def findings(self, label: str) -> list[str]:
        """RCA's finding lines: the state's copy, else ``metrics.json``'s."""
        found = _list(self.rec(label).get("findings"))
        if not found:
            metrics = self.read_json(self.root / label / RCA_DIR / METRICS_FILE)
            found = _list(_dict(metrics).get("findings"))
        return [str(f) for f in found]

    def note(self, problem: str) -> None:
        """Record a file that could not be read (once)."""
        if problem not in self.problems:
            self.problems.append(problem)

    def file(self, label: str, rel: str) -> Path:
        return self.root / label / rel

    def scored(self, label: str) -> pd.DataFrame | None:
        """The scored KPI set of ``label`` with numeric scores (None when not there yet)."""
        if label not in self._scored:
            path = self.file(label, SCORES_FILE)
            alt = self.rec(label).get("inference_csv")
            if not path.is_file() and isinstance(alt, str) and Path(alt).is_file():
                path = Path(alt)
            frame = self.read_csv(path)
            if frame is not None:
                if "label" not in frame.columns or SCORE_COLUMN not in frame.columns:
                    self.note(f"{path}: no 'label' or {SCORE_COLUMN!r} column")
                    frame = None
                else:
                    frame = frame.copy()
                    frame[SCORE_COLUMN] = pd.to_numeric(frame[SCORE_COLUMN], errors="coerce")
                    finite = np.isfinite(frame[SCORE_COLUMN].to_numpy(dtype=np.float64))
                    if not finite.all():
                        self.note(
                            f"{path}: {int((~finite).sum())} row(s) without a numeric score "
                            "left out"
                        )
                    frame = frame[finite].reset_index(drop=True)
                    if frame.empty:
                        frame = None
            self._scored[label] = frame
        return self._scored[label]

    def provenance(self, label: str) -> pd.DataFrame | None:
        if label not in self._provenance:
            path = self.file(label, f"dataset/train_combined_{label}_provenance.csv")
            frame = self.read_csv(path)
            if frame is not None and "source" not in frame.columns:
                self.note(f"{path}: no 'source' column")
                frame = None
            self._provenance[label] = frame
        return self._provenance[label]

    def kpi_set(self) -> pd.DataFrame | None:
        """The KPI test set: ``config.paths.kpi_csv``, else the first scored copy of it."""
        if not self._kpi_set:
            frame = None
            kpi_csv = self.paths.get("kpi_csv")
            if isinstance(kpi_csv, str) and kpi_csv:
                frame = self.read_csv(Path(kpi_csv))
            if frame is None or "label" not in frame.columns:
                frame = next(
                    (f for lab in self.labels if (f := self.scored(lab)) is not None), None
                )
            self._kpi_set.append(frame)
        return self._kpi_set[0]

    @property
    def images_dir(self) -> Path | None:
        raw = self.paths.get("images_dir")
        if not isinstance(raw, str) or not raw:
            return None
        path = Path(raw)
        workspace = self.paths.get("workspace")
        if not path.is_absolute() and isinstance(workspace, str) and workspace:
            path = Path(workspace) / path
        return path

    @property
    def naming(self) -> ImageNaming:
        if not self._naming:
            naming = ImageNaming()
            spec = self.paths.get("spec")
            if isinstance(spec, str) and spec:
                from automl_deft.model.spec import load_spec

                try:
                    naming = load_spec(spec).naming()
                except (AutomlDeftError, OSError, ValueError) as exc:
                    self.note(f"{spec}: {exc} (using the default image naming)")
            self._naming.append(naming)
        return self._naming[0]

    def read_csv(self, path: Path) -> pd.DataFrame | None:
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.note(f"{path}: {_first_line(exc)}")
            return None

    def read_json(self, path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.note(f"{path}: {_first_line(exc)}")
            return None

    def read_parquet(self, path: Path) -> pd.DataFrame | None:
        if not path.is_file():
            return None
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types for a torn file
            self.note(f"{path}: {_first_line(exc)}")
            return None

    def read_text(self, path: Path) -> str | None:
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.note(f"{path}: {_first_line(exc)}")
            return None


def _load_run(root: Path) -> _Run:
    """Read ``deft_state.json`` without touching anything (no log reconciliation).

    Raises:
        UserError: the state is missing or is not a JSON object.
    """
    path = root / STATE_FILE
    if not path.is_file():
        raise UserError(
            f"no {STATE_FILE} in {root}; pass the results directory of a DEFT run "
            "(<workspace>/results/run_<ts>)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not valid JSON ({exc.__class__.__name__}); restore it or re-run the loop "
            "into a new results directory"
        ) from exc
    if not isinstance(data, dict):
        raise UserError(
            f"{path} is not a JSON object; restore it or re-run the loop into a new results "
            "directory"
        )
    run = _Run(root=root, state=data, log=[], generated=now_iso())
    try:
        run.log = [e for e in read_log(root / LOG_FILE) if isinstance(e, dict)]
    except (OSError, UnicodeDecodeError) as exc:
        run.note(f"{root / LOG_FILE}: {_first_line(exc)}")
    if data.get("version") != STATE_VERSION:
        run.problems.append(
            f"{path}: state version {data.get('version')!r}, this tool writes {STATE_VERSION}; "
            "sections may be incomplete"
        )
    return run


def _guard(title: str, builder: Callable[[_Run], str], run: _Run) -> str:
    # The report is re-rendered inside the loop: a malformed file must cost one section,
    # never the iteration that asked for the report.
    try:
        return builder(run)
    except Exception as exc:
        log.warning("report section %r could not be rendered: %s", title, exc, exc_info=True)
        return _na(f"This section could not be rendered: {_first_line(exc)}")


# ---------------------------------------------------------------------- sections


def _header(run: _Run) -> str:
    state = run.state
    iters = [lab for lab in run.labels if (iteration_number(lab) or 0) > 0]
    current = _int(state.get("current_iteration"))
    done = current if current is not None else len(iters)
    facts = [
        ("Generated", run.generated),
        ("KPI target", run.target_text),
        ("Iterations", f"{done}/{_fmt(state.get('max_iterations'))}"),
        ("Status", run.status.replace("_", " ")),
        ("Started", _fmt(state.get("started_at"))),
        ("Updated", _fmt(state.get("updated_at"))),
        ("Results", str(state.get("results_dir") or run.root)),
    ]
    items = " · ".join(f"<b>{escape(k)}</b>: {escape(v)}" for k, v in facts)
    return f'<p class="meta">{items}</p><p><code>{escape(_status_line(run))}</code></p>'


def _status_line(run: _Run) -> str:
    """The one-line status, e.g. ``[iter 2/3 · train] FAR 6.34% → 3.11% (target …) · 11m``."""
    current = _int(run.state.get("current_iteration")) or 0
    label = iteration_label(current)
    rec = run.rec(label)
    stage = rec.get("stage_completed") or "start"
    where = (
        "baseline" if current == 0 else f"iter {current}/{_fmt(run.state.get('max_iterations'))}"
    )
    parts = [f"[{where} · {stage}]"]
    base, best = run.far(BASELINE), run.best()
    if base is not None:
        parts.append(
            f"FAR {base:.2f}%" + (f" → {best[1]:.2f}%" if best and best[0] != BASELINE else "")
        )
    parts.append(f"(target {run.target_text})")
    total = sum(_num(e.get("duration_sec")) or 0.0 for e in run.log)
    if total:
        parts.append(f"· {_duration(total)}")
    if run.status == IN_PROGRESS:
        order = stages_of(label)
        after = order.index(stage) + 1 if stage in order else 0
        nxt = order[after] if after < len(order) else None
        if nxt is None and current < (_int(run.state.get("max_iterations")) or 0):
            nxt = f"{iteration_label(current + 1)} routing"
        if nxt:
            parts.append(f"· next: {nxt}")
    else:
        parts.append(f"· {run.status.replace('_', ' ')}")
    return " ".join(parts)


def _banner(run: _Run) -> str:
    target, best = run.target, run.best()
    far = None if best is None else best[1]
    reason = str(run.state.get("stop_reason") or "no reason recorded")
    detail = "no KPI measured yet" if best is None else f"best FAR {far:.2f}% ({best[0]})"
    detail += f" · target {run.target_text}"
    if run.status == HARD_STOPPED:
        css, text = "stopped", f"HARD STOPPED: {reason}"
    elif run.status == NEEDS_REVIEW:
        css, text = "review", f"NEEDS REVIEW: {reason}"
    elif target is not None and target.is_met(far):
        css, text = "met", "MET"
    elif run.status == IN_PROGRESS:
        css, text = "progress", "IN PROGRESS"
        gap = None if target is None else target.gap_pp(far)
        if gap is not None:
            detail += f" · {gap:.1f} pp to go"
    else:
        gap = None if target is None else target.gap_pp(far)
        css = "gap"
        text = "KPI unavailable" if gap is None else f"{gap:.1f} pp from target"
    return (
        f'<div class="banner {css}" id="kpi-banner">KPI: {escape(text)}'
        f"<small>{escape(detail)}</small></div>"
    )


def _problem(run: _Run) -> str:
    base = run.far(BASELINE)
    target = run.target
    text = (
        "<p>An automated optical inspection (AOI) classifier compares a test image of a "
        "board region with its golden (defect-free) reference and emits a defect score "
        f"(<code>{SCORE_COLUMN}</code>, higher = more likely defective). A row is flagged "
        "when its score is above the decision threshold. The KPI is the false-alarm rate "
        "(FAR: the share of good, PASS rows that get flagged) at the threshold that still "
        "catches <em>every</em> defect of the KPI test set (100% recall).</p>"
        f"<p>Target: <b>{escape(run.target_text)}</b>.</p>"
    )
    if base is None:
        return text + _na("Baseline FAR: " + NOT_YET.lower() + ".")
    gap = None if target is None else target.gap_pp(base)
    where = (
        "which already meets the target"
        if gap == 0
        else f"{gap:.1f} pp from the target"
        if gap is not None
        else "the target could not be parsed"
    )
    source = _SOURCE_NOTES.get(str(run.rec(BASELINE).get("source")), "")
    return text + (
        f"<p>The baseline{', the ' + escape(source) + ',' if source else ''} has a FAR of "
        f"<b>{base:.2f}%</b>, {escape(where)}. DEFT (data-enhanced fine-tuning) adds "
        "training data aimed at the samples the model gets wrong until the KPI is met or "
        "the iteration budget is spent.</p>"
    )


def _dataset(run: _Run) -> str:
    frame = run.kpi_set()
    if frame is None or "label" not in frame.columns:
        return _na(f"KPI test set: {NOT_YET.lower()} (no KPI CSV or scored copy on disk).")
    labels = frame["label"].astype(str)
    passes = labels.map(is_pass)
    n, n_pass = len(frame), int(passes.sum())
    n_def = n - n_pass
    ratio = f"{n_pass / n_def:.0f} PASS per defect" if n_def else "no defects"
    out = [
        f"<p><b>{n}</b> rows: <b>{n_pass}</b> PASS ({_share(n_pass, n)}), <b>{n_def}</b> defect "
        f"({_share(n_def, n)}); {escape(ratio)}.</p>"
    ]
    counts = labels.map(normalize_label).value_counts()
    blocks = [
        "<div><h3>Label distribution</h3>"
        + _table(
            ["label", "rows", "share"],
            [[lab, _Num(int(c)), _Num(_share(int(c), n))] for lab, c in counts.items()],
        )
        + "</div>"
    ]
    configured = _dict(run.config.get("rca")).get("metadata_columns")
    columns = (
        [c for c in configured if c in frame.columns]
        if isinstance(configured, list)
        else [c for c in frame.columns if _is_category(frame[c])]
    )
    for col in columns:
        values = frame[col].astype(str)
        rows = []
        for value, total in sorted(values.value_counts().items(), key=lambda v: (-v[1], v[0])):
            defects = int((~passes[values == value]).sum())
            rows.append(
                [value or "(empty)", _Num(int(total)), _Num(int(total) - defects), _Num(defects)]
            )
        blocks.append(
            f"<div><h3>By <code>{escape(col)}</code></h3>"
            + _table([col, "rows", "PASS", "defect"], rows)
            + "</div>"
        )
    out.append(f'<div class="flex">{"".join(blocks)}</div>')
    return "".join(out)


def _is_category(column: pd.Series) -> bool:
    """A metadata column worth a value-count table (not an identifier or a measurement).

    Between 2 and :data:`MAX_METADATA_VALUES` values, and on average at least two rows
    per non-empty value, so per-row columns (a bounding box, a contrast) are left out.
    """
    if column.name in REQUIRED_COLUMNS or column.name == SCORE_COLUMN:
        return False
    filled = column.astype(str)
    filled = filled[filled.str.strip() != ""]
    distinct = filled.nunique()
    return 2 <= column.nunique() <= MAX_METADATA_VALUES and 0 < distinct <= len(filled) / 2


def _approach(run: _Run) -> str:
    cfg = run.config
    sdg, mining = _dict(cfg.get("sdg")), _dict(cfg.get("mining"))
    regression, rca = _dict(cfg.get("regression")), _dict(cfg.get("rca"))
    sdg_text = (
        f"backend <code>{escape(_fmt(sdg.get('backend')))}</code>, "
        f"{escape(_fmt(sdg.get('num_sdg')))} new pairs per iteration split across the "
        "targeted defect types in proportion to need"
        if sdg.get("enabled", True)
        else "disabled"
    )
    mining_text = (
        f"top {escape(_fmt(mining.get('top_k_per_target')))} pool rows per weak sample by "
        f"{escape(_fmt(mining.get('metric', 'cosine')))} similarity of "
        f"<code>{escape(_fmt(mining.get('embedder')))}</code> embeddings, kept at similarity "
        f"≥ {escape(_fmt(mining.get('min_similarity')))}, never re-selecting a row"
        if mining.get("enabled", True)
        else "disabled"
    )
    gate = (
        f"an iteration regresses when its FAR is worse than the best so far by more than "
        f"{escape(_fmt(regression.get('tolerance_pp')))} pp; "
        f"{escape(_fmt(regression.get('patience')))} regressing iteration(s) in a row stop the "
        "loop for review"
        if regression.get("enabled", True)
        else "disabled"
    )
    steps = [
        "Baseline: train (or reuse the AutoML Phase 1 winner), score the KPI test set, "
        "root-cause analysis (RCA) of the weak samples.",
        "RCA: sweep the threshold at 100% recall, rank rows by weakness, keep the top "
        f"{escape(_fmt(rca.get('top_k_per_label', 50)))} weak rows per label and break the "
        "weakness down by metadata.",
        "Routing: each weak sample's label goes to mining when the pool has it, to synthetic "
        "data generation (SDG) when the generator supports it; labels going nowhere are "
        "reported as dropped.",
        f"SDG: {sdg_text}.",
        f"Mining: {mining_text}.",
        "Assemble: previous training set + new rows (it only grows), checked for missing files "
        "and leakage into the validation and KPI sets.",
        f"Fine-tune from the previous best checkpoint "
        f"({escape(_fmt(cfg.get('num_epochs') or 'spec default'))} epochs), score the KPI set, "
        "keep the better of the best-validation and latest checkpoints.",
        f"Stop when the KPI is met, after {escape(_fmt(run.state.get('max_iterations')))} "
        f"iterations, or at a hard stop. Regression gate: {gate}.",
    ]
    items = "".join(f"<li>{s}</li>" for s in steps)
    paths = run.paths
    path_rows = [[k, _Raw(f"<code>{escape(str(v))}</code>")] for k, v in paths.items() if v]
    config_json = escape(json.dumps(cfg, indent=2, default=str))
    return (
        f"<ol>{items}</ol>"
        + (_table(["input", "path"], path_rows) if path_rows else "")
        + f"<details><summary>Resolved configuration</summary><pre>{config_json}</pre></details>"
    )


def _progress(run: _Run) -> str:
    points = [(lab, far) for lab in run.labels if (far := run.far(lab)) is not None]
    if not points:
        return _na(f"Progress chart: {NOT_YET.lower()} (no phase has been evaluated).")
    from matplotlib.figure import Figure

    target, best = run.target, run.best()
    fig = _figure(Figure(figsize=(7, 3.6), dpi=100))
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    ys = [far for _, far in points]
    loop = [(x, y) for x, (lab, y) in zip(xs, points, strict=True) if lab != FINAL_AUTOML]
    if loop:
        ax.plot(*zip(*loop, strict=True), marker="o", color="tab:blue", label="FAR@100% recall")
    for x, (lab, y) in zip(xs, points, strict=True):
        if lab == FINAL_AUTOML:
            ax.plot([x], [y], marker="s", color="tab:purple", linestyle="", label="Phase 3")
        ax.annotate(f"{y:.2f}%", (x, y), textcoords="offset points", xytext=(0, 7), ha="center")
    if target is not None:
        ax.axhline(target.value_pct, color="tab:red", linestyle="--", label=f"target {target}")
    if best is not None and best[0] in dict(points):
        bx = [lab for lab, _ in points].index(best[0])
        ax.plot(
            [bx],
            [best[1]],
            marker="*",
            markersize=18,
            color="gold",
            markeredgecolor="k",
            linestyle="",
            label=f"best ({best[0]})",
        )
    ax.set_xticks(xs, [lab for lab, _ in points])
    ax.set_ylabel("FAR @ 100% recall (%)")
    top = max([*ys, target.value_pct if target else 0.0])
    ax.set_ylim(0, top * 1.2 + 1e-9 if top > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return _img(_png(fig), "FAR per phase with the KPI target", "progress-chart")


def _per_iteration(run: _Run) -> str:
    if not run.labels:
        return _na(f"Per-iteration results: {NOT_YET.lower()}.")
    base, best = run.far(BASELINE), run.best()
    rows, classes = [], []
    synthetic_total = mined_total = 0
    last_train_rows: int | None = None
    for lab in run.labels:
        rec = run.rec(lab)
        far = run.far(lab)
        n = iteration_number(lab)
        new_sdg, new_mined = _added(run, lab)
        if n:  # iterations: cumulative counts of the training set they trained on
            synthetic_total += new_sdg or 0
            mined_total += new_mined or 0
        synthetic: int | None
        mined: int | None
        if n == 0:
            synthetic, mined = 0, 0
        elif n or lab == FINAL_AUTOML:  # Phase 3 trains on the last iteration's set
            synthetic, mined = synthetic_total, mined_total
        else:
            synthetic = mined = None
        train_rows = _int(rec.get("train_rows"))
        if train_rows is None and n and (prov := run.provenance(lab)) is not None:
            train_rows = len(prov)
        if n:
            last_train_rows = train_rows
        elif lab == FINAL_AUTOML and train_rows is None:
            train_rows = last_train_rows
        delta = None if far is None or base is None or lab == BASELINE else far - base
        kpi = _dict(rec.get("kpi"))
        far_text = (
            _pct(far)
            if far is not None
            else "unavailable"
            if kpi and not kpi.get("available", True)
            else "—"
        )
        rows.append(
            [
                lab + (" ★" if best and best[0] == lab else ""),
                str(rec.get("status") or "pending"),
                _Num(far_text),
                _Raw(_delta_html(delta)),
                _Num(_thr(run.threshold(lab))),
                _Num(_fmt(train_rows)),
                _Num(_fmt(synthetic)),
                _Num(_share(synthetic, train_rows) if synthetic is not None else "—"),
                _Num(_fmt(mined)),
                _checkpoint_kind(rec),
                _note(rec),
            ]
        )
        classes.append("best" if best and best[0] == lab else "")
    table = _table(
        [
            "phase",
            "status",
            "FAR@100%",
            "Δ vs baseline (pp)",
            "threshold",
            "training rows",
            "synthetic rows",
            "synthetic ratio",
            "mined rows",
            "checkpoint",
            "note / source",
        ],
        rows,
        row_classes=classes,
        table_id="iterations-table",
    )
    return table + (
        '<p class="meta">Synthetic and mined rows count what the phase\'s training set holds '
        "(cumulative); the augmentation table shows what each iteration added. ★ = best.</p>"
    )


def _augmentation(run: _Run) -> str:
    iters = [lab for lab in run.labels if (iteration_number(lab) or 0) > 0]
    if not iters:
        return _na(f"Augmentation: {NOT_YET.lower()} (no iteration has started).")
    cutoff = _fmt(_dict(run.config.get("mining")).get("min_similarity"))
    rows, label_rows = [], []
    for lab in iters:
        rec = run.rec(lab)
        sdg, mining = _dict(rec.get("sdg")), _dict(rec.get("mining"))
        new_sdg, new_mined = _added(run, lab)
        added = _int(rec.get("added_rows"))
        if added is None and (new_sdg is not None or new_mined is not None):
            added = (new_sdg or 0) + (new_mined or 0)
        rows.append(
            [
                lab,
                _Num(_fmt(_sum(_dict(sdg.get("requested")).values()))),
                _Num(_fmt(new_sdg)),
                _Num(_fmt(_sum(_dict(v).get("candidates") for v in _per_label(mining)))),
                _Num(_fmt(new_mined)),
                _Num(_fmt(added)),
                _backend(sdg, run),
            ]
        )
        per_label = _dict(mining.get("per_label"))
        routing = _dict(rec.get("routing"))
        # RCA of the phase before chose this iteration's targets (and wrote ``need``).
        need = _dict(run.rec(iteration_label((iteration_number(lab) or 1) - 1)).get("need"))
        requested, generated = _dict(sdg.get("requested")), _dict(sdg.get("generated"))
        names = sorted(
            {*need, *requested, *generated, *per_label}
            | {str(x) for key in ("mining", "sdg", "dropped") for x in _list(routing.get(key))}
        )
        for name in names:
            routes = [k for k in ("mining", "sdg", "dropped") if name in _list(routing.get(k))]
            stats = _dict(per_label.get(name))
            label_rows.append(
                [
                    lab,
                    name,
                    _Num(_fmt(need.get(name))),
                    ", ".join(routes) or "—",
                    _Num(_fmt(requested.get(name))),
                    _Num(_fmt(generated.get(name))),
                    _Num(_fmt(stats.get("targets"))),
                    _Num(_fmt(stats.get("pool_rows"))),
                    _Num(_fmt(stats.get("candidates"))),
                    _Num(_fmt(stats.get("selected"))),
                ]
            )
    out = _table(
        [
            "iteration",
            "SDG requested",
            "SDG generated",
            f"mining candidates (≥ {cutoff})",
            "mined, selected",
            "total added",
            "SDG backend",
        ],
        rows,
        table_id="augmentation-table",
    )
    if label_rows:
        out += "<h3>Per label</h3>" + _table(
            [
                "iteration",
                "label",
                "need",
                "routed to",
                "SDG requested",
                "SDG generated",
                "mining targets",
                "pool rows",
                "candidates",
                "selected",
            ],
            label_rows,
        )
    return out


def _rca_scores(run: _Run) -> str:
    out, sweep_rows = [], []
    for lab in run.labels:
        frame = run.scored(lab)
        if frame is None:
            continue
        labels, scores = frame["label"], frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
        thr = run.threshold(lab)
        far = run.far(lab)
        title = f"{lab}: FAR@100% {far:.2f}%" if far is not None else lab
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "scores.png"
            plot_score_distribution(labels, scores, png, threshold=thr, title=title)
            data = base64.b64encode(png.read_bytes()).decode()
        out.append(f"<h3>{escape(lab)}</h3>" + _img(data, f"score distribution {lab}"))
        sweep_rows.append([lab, *(_Num(c) for c in _far_at_recalls(labels, scores))])
    if not out:
        return _na(f"Score distributions: {NOT_YET.lower()} (no scored KPI set on disk).")
    table = _table(
        ["phase", *(f"FAR @ recall ≥ {r:g}% (threshold)" for r in RECALL_LEVELS)],
        sweep_rows,
        table_id="recall-far-table",
    )
    return "<h3>Recall vs FAR</h3>" + table + "".join(out)


def _defect_types(run: _Run) -> str:
    parts: list[str] = []
    evaluated = [lab for lab in run.labels if run.scored(lab) is not None or _has_rca(run, lab)]
    for i, lab in enumerate(evaluated):
        body = _defect_types_of(run, lab)
        attr = " open" if i == len(evaluated) - 1 else ""
        parts.append(f"<details{attr}><summary>{escape(lab)}</summary>{body}</details>")
    if not parts:
        return _na(f"Defect-type analysis: {NOT_YET.lower()} (no RCA or scored KPI set on disk).")
    return "".join(parts)


def _defect_types_of(run: _Run, lab: str) -> str:
    rca = run.root / lab / RCA_DIR
    out = []
    unreachable = run.read_text(rca / UNREACHABLE_FILE)
    if unreachable:
        out.append(f'<p class="bad">{escape(unreachable.strip())}</p>')
    findings = run.findings(lab)
    if findings:
        out.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in findings) + "</ul>")
    table = _label_table(run, lab)
    out.append(table or _na("Per-label weakness: " + NOT_YET.lower() + "."))
    targets = _list(run.rec(lab).get("rca_target_defects"))
    if targets:
        out.append(f"<p>RCA targets: {escape(', '.join(map(str, targets)))}</p>")
    breakdown = _dict(run.read_json(rca / BREAKDOWN_FILE))
    for column, entries in breakdown.items():
        rows = sorted(
            (_dict(e) for e in _list(entries)),
            key=lambda e: -(_num(e.get("lift")) or 0.0),
        )[:MAX_BREAKDOWN_ROWS]
        if not rows:
            continue
        out.append(f"<h4>Weakness by <code>{escape(str(column))}</code></h4>")
        out.append(
            _table(
                [
                    "value",
                    "rows",
                    "PASS",
                    "defects",
                    "false alarms",
                    "FAR",
                    "weak",
                    "row share",
                    "weak share",
                    "lift",
                ],
                [
                    [
                        _fmt(e.get("value")),
                        _Num(_fmt(e.get("rows"))),
                        _Num(_fmt(e.get("pass"))),
                        _Num(_fmt(e.get("defects"))),
                        _Num(_fmt(e.get("false_alarms"))),
                        _Num(_pct(_num(e.get("far_pct")))),
                        _Num(_fmt(e.get("weak"))),
                        _Num(_ratio_pct(e.get("row_share"))),
                        _Num(_ratio_pct(e.get("weak_share"))),
                        _Num(_fmt_float(e.get("lift"))),
                    ]
                    for e in rows
                ],
            )
        )
    return "".join(out)


def _label_table(run: _Run, lab: str) -> str:
    """Per label: rows, weak rows, false alarms, lowest score and the FAR it forces.

    Read from RCA's ``metrics.json`` (``per_label``), else ``kpi_gaps.parquet``; the
    lowest score (and, without RCA files, the forced FAR) comes from the scored set.
    """
    stats: dict[str, dict[str, Any]] = {}
    frame = run.scored(lab)
    if frame is not None:
        scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
        names = frame["label"].map(normalize_label).to_numpy(dtype=object)
        passes = names == PASS_LABEL
        pass_scores = scores[passes]
        threshold = run.threshold(lab)
        for name in sorted(set(names)):
            mine = scores[names == name]
            entry = stats.setdefault(str(name), {"rows": len(mine)})
            if name == PASS_LABEL:
                if threshold is not None:
                    entry["false_alarms"] = int((mine > threshold).sum())
                continue
            entry["min"] = float(mine.min())
            if len(pass_scores):
                entry["forced"] = float((pass_scores >= mine.min()).mean() * 100)
    per_label = [
        _dict(e)
        for e in _list(
            _dict(run.read_json(run.root / lab / RCA_DIR / METRICS_FILE)).get("per_label")
        )
    ]
    gaps = None if per_label else run.read_parquet(run.root / lab / RCA_DIR / GAPS_FILE)
    if gaps is not None and {"label", "is_weak"} <= set(gaps.columns):
        for name, group in gaps.groupby(gaps["label"].map(normalize_label)):
            entry = stats.setdefault(str(name), {"rows": len(group)})
            entry["weak"] = int(group["is_weak"].astype(bool).sum())
            if "forced_far_pct" in group.columns and name != PASS_LABEL:
                forced = _num(pd.to_numeric(group["forced_far_pct"], errors="coerce").max())
                entry["forced"] = forced if forced is not None else entry.get("forced")
    for e in per_label:
        entry = stats.setdefault(normalize_label(e.get("label")), {})
        for key, src in (("rows", "n"), ("weak", "weak"), ("false_alarms", "fp_at_t")):
            if _int(e.get(src)) is not None:
                entry[key] = _int(e.get(src))
        if _num(e.get("max_forced_far_pct")) is not None:
            entry["forced"] = _num(e.get("max_forced_far_pct"))
    if not stats:
        return ""
    defects = [(n, s) for n, s in stats.items() if n != PASS_LABEL]
    driver = max(defects, key=lambda d: d[1].get("forced") or 0.0, default=None)
    ordered = [(n, s) for n, s in stats.items() if n == PASS_LABEL]
    ordered += sorted(defects, key=lambda d: (-(d[1].get("forced") or 0.0), d[0]))
    rows = [
        [
            name + (" (sets the threshold)" if driver and driver[0] == name else ""),
            _Num(_fmt(s.get("rows"))),
            _Num(_fmt(s.get("weak"))),
            _Num(_fmt(s.get("false_alarms")) if name == PASS_LABEL else ""),
            _Num(_fmt_float(s.get("min")) if name != PASS_LABEL else ""),
            _Num(_pct(s.get("forced")) if name != PASS_LABEL else ""),
        ]
        for name, s in ordered
    ]
    return _table(
        ["label", "rows", "weak rows (RCA)", "false alarms", "lowest score", "max forced FAR"],
        rows,
        table_id=f"labels-{lab}",
    ) + (
        '<p class="meta">Max forced FAR: the FAR a threshold just below the label\'s '
        "lowest-scoring defect gives; the label with the highest one sets the recall-100 "
        "threshold. False alarms: PASS rows above the threshold.</p>"
    )


def _samples(run: _Run) -> str:
    iters = [lab for lab in run.labels if (iteration_number(lab) or 0) > 0]
    images_dir, out = run.images_dir, []
    for lab in iters:
        prov = run.provenance(lab)
        if prov is None:
            out.append(f"<h3>{escape(lab)}</h3>" + _na(f"{NOT_YET} (no provenance CSV)."))
            continue
        picked = _pick_samples(prov)
        if picked.empty:
            out.append(f"<h3>{escape(lab)}</h3>" + _na("No generated or mined rows."))
            continue
        if images_dir is None:
            out.append(f"<h3>{escape(lab)}</h3>" + _na("No images_dir in the state's config."))
            continue
        counts = prov["source"].value_counts()
        figures = "".join(
            _sample_figure(row, images_dir, run.naming) for _, row in picked.iterrows()
        )
        out.append(
            f'<h3>{escape(lab)}</h3><p class="meta">{int(counts.get(_PROVENANCE_SDG, 0))} '
            f"synthetic and {int(counts.get(_PROVENANCE_MINED, 0))} mined rows added; "
            f"{len(picked)} shown (input | golden | |diff|).</p>"
            f'<div class="flex samples">{figures}</div>'
        )
    if not out:
        return _na(f"Generated data: {NOT_YET.lower()} (no iteration has assembled a dataset).")
    return "".join(out)


def _details(run: _Run) -> str:
    if not run.labels:
        return _na(f"Details: {NOT_YET.lower()}.")
    parts = []
    for lab in run.labels:
        rec = run.rec(lab)
        body = []
        facts = [
            ("status", rec.get("status")),
            ("stage completed", rec.get("stage_completed")),
            ("source", rec.get("source")),
            ("training CSV", rec.get("train_csv")),
            ("checkpoint", rec.get("best_ckpt_path")),
            ("inference CSV", rec.get("inference_csv")),
            ("validation loss", rec.get("val_loss")),
            ("RCA targets", ", ".join(map(str, _list(rec.get("rca_target_defects")))) or None),
        ]
        body.append(_table(None, [[k, _fmt(v)] for k, v in facts if v not in (None, "")]))
        error = _dict(rec.get("error"))
        if error:
            body.append(
                f'<p class="bad">Error in {escape(_fmt(error.get("stage")))}: '
                f"{escape(_fmt(error.get('message')))}</p>"
            )
        durations = _dict(rec.get("durations"))
        if durations:
            total = sum(_num(v) or 0.0 for v in durations.values())
            rows = [[k, _Num(_duration(_num(v) or 0.0))] for k, v in durations.items()]
            body.append(_table(["stage", "duration"], [*rows, ["total", _Num(_duration(total))]]))
        routing = _dict(rec.get("routing"))
        if routing:
            counts = _dict(routing.get("rows"))
            body.append(
                _table(
                    ["route", "labels (weak rows)"],
                    [
                        [route, _route_labels(_list(routing.get(route)), _dict(counts.get(route)))]
                        for route in ("mining", "sdg", "dropped")
                        if route in routing
                    ],
                )
            )
        warnings = [
            f"{what}: {w}"
            for what in ("sdg", "mining")
            for w in _list(_dict(rec.get(what)).get("warnings"))
        ]
        if warnings:
            body.append("<ul>" + "".join(f"<li>{escape(w)}</li>" for w in warnings) + "</ul>")
        entries = [e for e in run.log if e.get("iter") == lab]
        if entries:
            body.append(
                _table(
                    ["seq", "time", "stage", "status", "summary", "duration"],
                    [
                        [
                            _Num(_fmt(e.get("seq"))),
                            _fmt(e.get("ts")),
                            _fmt(e.get("stage")),
                            _fmt(e.get("status")),
                            _fmt(e.get("summary")),
                            _Num(_duration(_num(e.get("duration_sec")) or 0.0)),
                        ]
                        for e in entries
                    ],
                )
            )
        summary_md = run.read_text(run.root / lab / RCA_DIR / SUMMARY_FILE)
        if summary_md:
            body.append(
                f"<details><summary>RCA summary</summary><pre>{escape(summary_md)}</pre></details>"
            )
        metrics = run.read_json(run.root / lab / RCA_DIR / METRICS_FILE)
        if metrics is not None:
            text = escape(json.dumps(metrics, indent=2, default=str))
            body.append(f"<details><summary>RCA metrics</summary><pre>{text}</pre></details>")
        attr = " open" if lab == run.labels[-1] else ""
        parts.append(f"<details{attr}><summary>{escape(lab)}</summary>{''.join(body)}</details>")
    return "".join(parts)


def _recommendations(run: _Run) -> str:
    items = _recommend(run)
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _final(run: _Run) -> str:
    best, target = run.best(), run.target
    out = []
    if best is None:
        out.append(_na(f"Best model: {NOT_YET.lower()} (no phase has been evaluated)."))
    else:
        label, far, thr, ckpt = best
        gap = None if target is None else target.gap_pp(far)
        gap_text = "—" if gap is None else ("met" if gap == 0 else f"{gap:.1f} pp")
        rows = [
            ["best iteration", label],
            ["best FAR@100% recall", _pct(far)],
            ["threshold", _thr(thr)],
            ["gap to KPI", gap_text],
            ["best checkpoint", _Raw(f"<code>{escape(_fmt(ckpt))}</code>")],
            ["checkpoint kind", _fmt(run.rec(label).get("best_ckpt_kind"))],
        ]
        rows += [
            ["loop status", run.status.replace("_", " ")],
            ["stop reason", _fmt(run.state.get("stop_reason"))],
        ]
        out.append(_table(None, rows, table_id="final-table"))
    bundle = run.read_json(run.root / BEST_BUNDLE_FILE)
    if bundle is not None:
        text = escape(json.dumps(bundle, indent=2, default=str))
        out.append(f"<h3><code>{BEST_BUNDLE_FILE}</code></h3><pre>{text}</pre>")
    else:
        out.append(_na(f"{BEST_BUNDLE_FILE}: {NOT_YET.lower()} (written when the loop ends)."))
    return "".join(out)


_BUILDERS: tuple[Callable[[_Run], str], ...] = (
    _problem,
    _dataset,
    _approach,
    _progress,
    _per_iteration,
    _augmentation,
    _rca_scores,
    _defect_types,
    _samples,
    _details,
    _recommendations,
    _final,
)


# ---------------------------------------------------------------- recommendations


def _recommend(run: _Run) -> list[str]:
    """Rule-based advice, most urgent first."""
    items: list[str] = []
    target, best = run.target, run.best()
    reason = str(run.state.get("stop_reason") or "no reason recorded")
    met = best is not None and target is not None and target.is_met(best[1])
    iters = [lab for lab in run.labels if (iteration_number(lab) or 0) > 0]
    if run.status == HARD_STOPPED:
        items.append(
            f"The loop hard-stopped ({reason}). Fix the cause, then resume the loop on this "
            "results directory; it continues from deft_state.json."
        )
    if run.status == NEEDS_REVIEW:
        items.append(
            f"The regression gate stopped the loop ({reason}). Review the regressing "
            "iterations' added data below; continue with --acknowledge-regression or keep the "
            "best checkpoint."
        )
    if met and best is not None:
        items.append(
            f"KPI met: deploy {best[0]}'s checkpoint ({_fmt(best[3])}) with threshold "
            f"{_thr(best[2])} (see {BEST_BUNDLE_FILE} and best_model_inference_spec.yaml)."
        )
    regressed = [lab for lab in iters if run.rec(lab).get("regression")]
    if regressed:
        items.append(
            f"{', '.join(regressed)} regressed against the best so far: check the sample of "
            "generated data for implausible or mislabelled rows before continuing."
        )
    dropped = sorted(
        {str(x) for lab in iters for x in _list(_dict(run.rec(lab).get("routing")).get("dropped"))}
    )
    if dropped:
        items.append(
            f"Weak labels with no route ({', '.join(dropped)}): add pool rows with these labels "
            "to the mining pool, or use an SDG backend that supports them."
        )
    yields = [(lab, _added(run, lab)[1]) for lab in iters]
    for (prev, a), (lab, b) in itertools.pairwise(yields):
        if a and b is not None and b <= a / 2:
            items.append(
                f"Mining yield fell from {a} ({prev}) to {b} ({lab}) rows: the pool is running "
                "out of similar rows; add pool data (or lower mining.min_similarity with care)."
            )
    latest = next(
        (lab for lab in reversed(run.labels) if lab != FINAL_AUTOML and _has_rca(run, lab)), None
    )
    if latest is not None:
        concentrated = [f for f in run.findings(latest) if "concentrate" in f]
        for finding in concentrated[:2]:
            items.append(
                f"{latest} RCA: {finding}. Collect more training or pool data for that value."
            )
    if (
        not met
        and best is not None
        and target is not None
        and run.status not in (IN_PROGRESS, HARD_STOPPED, NEEDS_REVIEW)
    ):
        gap = target.gap_pp(best[1]) or 0.0
        items.append(
            f"The KPI is {gap:.1f} pp away after {len(iters)} iteration(s): raise max_iterations "
            "or the SDG budget (sdg.num_sdg) and resume."
            + (
                " The gap is large: more real data (pool or training) or a Phase 3 search is "
                "likelier to close it than more iterations."
                if gap > LARGE_GAP_PP
                else ""
            )
        )
    final, best_deft = run.far(FINAL_AUTOML), _best_of(run, exclude=FINAL_AUTOML)
    if final is not None and best_deft is not None and final > best_deft[1]:
        items.append(
            f"Phase 3 ({final:.2f}%) did not beat DEFT's best {best_deft[0]} "
            f"({best_deft[1]:.2f}%): the pick-best safety net keeps {best_deft[0]}."
        )
    unavailable = [
        lab for lab in run.labels if _dict(run.rec(lab).get("kpi")).get("available") is False
    ]
    if unavailable:
        items.append(
            f"No threshold reaches 100% recall for {', '.join(unavailable)}: check the KPI set "
            "for mislabelled defects or duplicated images with opposite labels."
        )
    if not items:
        items.append(
            "The loop is running; this report is re-rendered after every iteration."
            if run.status == IN_PROGRESS
            else "No action needed."
        )
    return items


def _best_of(run: _Run, *, exclude: str) -> tuple[str, float] | None:
    scored = [
        (f, i, lab)
        for i, lab in enumerate(run.labels)
        if lab != exclude and (f := run.far(lab)) is not None
    ]
    if not scored:
        return None
    far, _, label = min(scored)
    return label, far


# ----------------------------------------------------------------------- helpers


def _has_rca(run: _Run, lab: str) -> bool:
    return (run.root / lab / RCA_DIR).is_dir()


def _added(run: _Run, lab: str) -> tuple[int | None, int | None]:
    """(synthetic, mined) rows that iteration ``lab`` added; None when unknown."""
    if not iteration_number(lab):
        return None, None
    rec = run.rec(lab)
    sdg, mined = _int(rec.get("sdg_rows")), _int(rec.get("mined_rows"))
    if sdg is None or mined is None:
        prov = run.provenance(lab)
        if prov is not None:
            counts = prov["source"].value_counts()
            sdg = sdg if sdg is not None else int(counts.get(_PROVENANCE_SDG, 0))
            mined = mined if mined is not None else int(counts.get(_PROVENANCE_MINED, 0))
    if sdg is None:
        sdg = _sum(_dict(_dict(rec.get("sdg")).get("generated")).values())
    if mined is None:
        mined = _sum(_dict(v).get("selected") for v in _per_label(_dict(rec.get("mining"))))
    return sdg, mined


def _route_labels(labels: list[Any], rows: dict[str, Any]) -> str:
    shown = [f"{lab} ({rows[lab]})" if lab in rows else str(lab) for lab in labels]
    return ", ".join(shown) or "—"


def _per_label(mining: dict[str, Any]) -> Iterable[Any]:
    return _dict(mining.get("per_label")).values()


def _backend(sdg: dict[str, Any], run: _Run) -> str:
    return _fmt(sdg.get("backend") or _dict(run.config.get("sdg")).get("backend"))


def _checkpoint_kind(rec: dict[str, Any]) -> str:
    kind = _fmt(rec.get("best_ckpt_kind"))
    candidates = _dict(rec.get("candidates"))
    shown = [f"{k} {_pct(_num(v))}" for k, v in candidates.items() if _num(v) is not None]
    return kind + (f" ({' · '.join(shown)})" if shown else "")


def _note(rec: dict[str, Any]) -> str:
    parts = []
    source = rec.get("source")
    if source:
        parts.append(_SOURCE_NOTES.get(str(source), str(source)))
    if rec.get("note"):
        parts.append(str(rec["note"]))
    if rec.get("regression"):
        parts.append("regression")
    error = _dict(rec.get("error"))
    if error:
        parts.append(f"error in {_fmt(error.get('stage'))}")
    return "; ".join(parts) or "—"


def _far_at_recalls(labels: pd.Series, scores: np.ndarray) -> list[str]:
    """ "FAR% (threshold)" at each of :data:`RECALL_LEVELS` (the lowest FAR reaching it)."""
    sweep = threshold_sweep(labels, scores)
    cells = []
    for level in RECALL_LEVELS:
        ok = sweep[(sweep["recall"] >= level / 100 - 1e-12) & sweep["far_pct"].notna()]
        if ok.empty:
            cells.append("—")
            continue
        row = ok[ok["far_pct"] == ok["far_pct"].min()].iloc[-1]
        cells.append(f"{row['far_pct']:.2f}% ({format_threshold(float(row['threshold']))})")
    return cells


def _pick_samples(prov: pd.DataFrame) -> pd.DataFrame:
    """Up to :data:`MAX_SAMPLES_PER_ITERATION` rows: half SDG, half mined when both exist."""
    sdg = prov[prov["source"] == _PROVENANCE_SDG]
    mined = prov[prov["source"] == _PROVENANCE_MINED]
    half = MAX_SAMPLES_PER_ITERATION // 2
    n_sdg = min(len(sdg), max(half, MAX_SAMPLES_PER_ITERATION - len(mined)))
    n_mined = min(len(mined), MAX_SAMPLES_PER_ITERATION - n_sdg)
    return pd.concat([sdg.head(n_sdg), mined.head(n_mined)])


def _sample_figure(row: pd.Series, images_dir: Path, naming: ImageNaming) -> str:
    """One generated row as a captioned PNG strip: input | golden | |diff|."""
    light = naming.lights[0] if naming.lights else ImageNaming().lights[0]
    test = _thumb(images_dir, row, "input_path", light, naming.ext)
    golden = _thumb(images_dir, row, "golden_path", light, naming.ext)
    side = THUMB_PX
    blank = np.full((side, side, 3), 200, dtype=np.uint8)
    diff = None
    if test is not None and golden is not None:
        delta = np.abs(test.astype(np.int16) - golden.astype(np.int16)).mean(axis=2)
        diff = _colorize(delta)
    gap = np.full((side, 4, 3), 255, dtype=np.uint8)
    panels = [blank if p is None else p for p in (test, golden, diff)]
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    source = str(row.get("source", ""))
    caption = [f"{source} · {row.get('label', '')}"]
    if source == _PROVENANCE_MINED and str(row.get("mined_similarity", "")):
        caption.append(f"similarity {row['mined_similarity']} to {row.get('mined_for', '?')}")
    elif source == _PROVENANCE_SDG and str(row.get("sdg_backend", "")):
        caption.append(f"backend {row['sdg_backend']}")
    caption.append(str(row.get("object_name", "")))
    if test is None or golden is None:
        caption.append("image missing")
    text = "<br>".join(escape(c) for c in caption)
    alt = f"{source} {row.get('object_name', '')}: input, golden, difference"
    return f"<figure>{_img(_png_array(strip), alt)}<figcaption>{text}</figcaption></figure>"


def _thumb(
    images_dir: Path, row: pd.Series, column: str, light: str, ext: str
) -> np.ndarray | None:
    """The row's image as a ``THUMB_PX`` square RGB array (None when unreadable)."""
    from PIL import Image

    try:
        path = resolve_image_path(images_dir, str(row[column]), str(row["object_name"]), light, ext)
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (AutomlDeftError, OSError, KeyError, ValueError):
        return None
    scale = THUMB_PX / max(rgb.size)
    size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    # Small AOI crops are enlarged without smoothing so single pixels stay visible.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    canvas = Image.new("RGB", (THUMB_PX, THUMB_PX), (255, 255, 255))
    canvas.paste(rgb.resize(size, resample), ((THUMB_PX - size[0]) // 2, (THUMB_PX - size[1]) // 2))
    return np.asarray(canvas)


def _colorize(delta: np.ndarray) -> np.ndarray:
    """A 0-255 difference map in the ``magma`` colour map, scaled to its own maximum."""
    from matplotlib import colormaps

    scaled = delta / max(float(delta.max()), 1.0)
    rgba = colormaps["magma"](scaled, bytes=True)
    return np.ascontiguousarray(rgba[..., :3])


def _png_array(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(fig: Any) -> Any:
    """Attach the Agg canvas (no pyplot: the process-wide backend stays untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _img(png_b64: str, alt: str, img_id: str | None = None) -> str:
    id_attr = f' id="{escape(img_id)}"' if img_id else ""
    return f'<img{id_attr} alt="{escape(alt)}" src="data:image/png;base64,{png_b64}">'


class _Raw(str):
    """A table cell that is already HTML."""

    __slots__ = ()


class _Num(str):
    """A right-aligned (numeric) table cell."""

    __slots__ = ()


def _table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[object]],
    *,
    row_classes: Sequence[str] | None = None,
    table_id: str | None = None,
) -> str:
    """An HTML table; ``headers`` None for a key/value table (first column as ``<th>``)."""
    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes and row_classes[i] else ""
        cells = "".join(
            f"<th>{escape(str(c))}</th>" if headers is None and j == 0 else _cell(c)
            for j, c in enumerate(row)
        )
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    id_attr = f' id="{escape(table_id)}"' if table_id else ""
    head = (
        ""
        if headers is None
        else "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>"
    )
    return f"<table{id_attr}>{head}<tbody>{''.join(body)}</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, _Raw):
        return f"<td>{value}</td>"
    if isinstance(value, _Num):
        return f'<td class="num">{escape(str(value))}</td>'
    return f"<td>{escape(str(value))}</td>"


def _na(text: str) -> str:
    return f'<p class="na">{escape(text)}</p>'


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _sum(values: Iterable[Any]) -> int | None:
    numbers = [n for v in values if (n := _num(v)) is not None]
    return int(sum(numbers)) if numbers else None


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return _fmt_float(value)
    return str(value)


def _fmt_float(value: Any) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:.4g}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}%"


def _ratio_pct(value: Any) -> str:
    number = _num(value)
    return "—" if number is None else f"{number * 100:.0f}%"


def _share(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{part / whole * 100:.1f}%"


def _thr(value: float | None) -> str:
    return "—" if value is None else format_threshold(value)


def _delta_html(delta: float | None) -> str:
    if delta is None:
        return "—"
    css = "good" if delta < 0 else "bad" if delta > 0 else ""
    return f'<span class="{css}">{delta:+.2f}</span>' if css else f"{delta:+.2f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds // 3600:.0f}h{seconds % 3600 / 60:02.0f}m"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
