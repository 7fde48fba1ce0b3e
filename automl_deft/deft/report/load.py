"""The run as the report sees it: the typed state, the log and the artefact files, read-only.

The state comes from :func:`~automl_deft.deft.report.salvage.read_state` (typed
records, nothing written); the best phase from the saved pointer or
:func:`~automl_deft.records.rank_by_far`; every path inside the run through
:class:`~automl_deft.layout.RunLayout`. The artefact files (scored KPI sets,
provenance CSVs, RCA outputs, ``best_model.json`` and finalize's
``pipeline_summary.json``) are read lazily, once, and a malformed one is noted
under "Problems reading the results directory", never raised.

The steering-set interval of a phase is finalize's (``pipeline_summary.json``)
when it recorded one, else computed here from the phase's scored KPI set with the
same method and draws (:func:`~automl_deft.kpi.far_interval`,
:data:`BOOTSTRAP_RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`), so a DEFT-only
run shows the same interval finalize would write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from automl_deft.deft.assemble import provenance_name
from automl_deft.deft.config import DeftConfig
from automl_deft.deft.hygiene import FLAGGED_FILE, REFUSED_FILE, SUMMARY_FILE
from automl_deft.deft.rca import METRICS_FILE
from automl_deft.deft.report.names import readable, step_name
from automl_deft.deft.report.salvage import read_state
from automl_deft.deft.report.values import as_list, as_mapping, finite, first_line, total
from automl_deft.deft.state import DeftState, now_iso, read_log
from automl_deft.errors import AutomlDeftError, KPIError, UserError
from automl_deft.hpo.guards import GuardReport
from automl_deft.hpo.results import SearchBest, SearchResult, SearchTrial
from automl_deft.kpi import KPITarget, far_interval, parse_target
from automl_deft.layout import RunLayout, SearchLayout, rebase_into_run
from automl_deft.phases import BASELINE, Phase, iteration_number
from automl_deft.records import (
    Deliverable,
    HygieneSummary,
    IterationRecord,
    LogEntry,
    PipelineSummary,
    TrajectoryStep,
    labels_in_order,
    rank_by_far,
)
from automl_deft.workspace import SCORE_COLUMN, ImageNaming, resolve_image_path

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "HYGIENE_FILE",
    "HYGIENE_FLAGGED_FILE",
    "HYGIENE_REFUSED_FILE",
    "PROVENANCE_MINED",
    "PROVENANCE_SDG",
    "Best",
    "ReportRun",
    "SearchOnDisk",
    "load_run",
    "rebase_into_run",
]

PROVENANCE_SDG = "sdg"
"""``source`` of a synthetic row in a provenance CSV."""
PROVENANCE_MINED = "mining_pool"
"""``source`` of a mined row in a provenance CSV."""
BOOTSTRAP_RESAMPLES = 1000
"""Bootstrap resamples of a steering interval computed here (finalize's number)."""
BOOTSTRAP_SEED = 0
"""Seed of a steering interval computed here (finalize's seed)."""
HYGIENE_FILE, HYGIENE_REFUSED_FILE, HYGIENE_FLAGGED_FILE = SUMMARY_FILE, REFUSED_FILE, FLAGGED_FILE
"""The hygiene checks' files in an iteration's dataset folder (:mod:`automl_deft.deft.hygiene`)."""


class Best(NamedTuple):
    """The best phase so far (what the deliverable names)."""

    label: str
    far_pct: float
    threshold: float | None
    checkpoint: Path | None


@dataclass(frozen=True)
class SearchOnDisk:
    """A search phase as its folder shows it: ``automl_result.json`` and the trials' times.

    ``result`` is None while the search runs (or when it failed before writing one);
    ``started``/``finished`` span its trials in the Optuna journal (None without one,
    e.g. a Katib search).
    """

    phase: Phase
    layout: SearchLayout
    result: SearchResult | None
    started: datetime | None = None
    finished: datetime | None = None
    trials_seen: int = 0
    """Trials in the journal (the running search's progress when there is no result yet)."""


def load_run(root: Path) -> ReportRun:
    """Everything the report reads from ``root`` (the state at once, files lazily).

    Raises:
        UserError: as :func:`read_state`.
    """
    state, problems = read_state(root)
    run = ReportRun(state=state, generated=now_iso(), problems=problems)
    try:
        lines = read_log(state.layout.log)
    except (OSError, UnicodeDecodeError) as exc:
        run.note(f"{state.layout.log}: {first_line(exc)}")
        lines = []
    for line in lines:
        try:
            run.log.append(LogEntry.from_json(line))
        except UserError as exc:
            run.note(f"{state.layout.log}: {first_line(exc)} (line left out)")
    return run


@dataclass
class ReportRun:
    """One results directory as the report reads it."""

    state: DeftState
    generated: str
    log: list[LogEntry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _scored: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _provenance: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _hygiene: dict[str, HygieneSummary | None] = field(default_factory=dict)
    _intervals: dict[str, list[float] | None] = field(default_factory=dict)
    _holdout_scored: dict[str, pd.DataFrame | None] = field(default_factory=dict)
    _searches: dict[Phase, SearchOnDisk | None] = field(default_factory=dict)

    # --- the state ---------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.state.results_dir

    @property
    def layout(self) -> RunLayout:
        return self.state.layout

    @property
    def config(self) -> DeftConfig:
        return self.state.config

    @property
    def target_text(self) -> str:
        return self.state.kpi_target or "?"

    @property
    def target(self) -> KPITarget | None:
        try:
            return parse_target(self.target_text)
        except AutomlDeftError:
            return None

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def labels(self) -> list[str]:
        """Phases in loop order: baseline, iter1, …, then final_automl."""
        return labels_in_order(self.state.iterations)

    @property
    def iteration_labels(self) -> list[str]:
        """``iter1``, ``iter2``, … (no baseline, no final_automl)."""
        return [lab for lab in self.labels if (iteration_number(lab) or 0) > 0]

    def rec(self, label: str) -> IterationRecord:
        return self.state.iteration(label)

    def name(self, label: str) -> str:
        """``label`` in a reader's words (``Phase 1 winner``, ``DEFT iter 1``, …)."""
        source = self.state.iterations[label].source if label in self.state.iterations else None
        return step_name(label, source)

    def readable(self, text: str) -> str:
        """A sentence of another stage with its labels in a reader's words."""
        baseline = self.state.iterations.get(BASELINE)
        return readable(text, baseline.source if baseline is not None else None)

    def far(self, label: str) -> float | None:
        return finite(self.rec(label).far_pct)

    def threshold(self, label: str) -> float | None:
        return finite(self.rec(label).threshold)

    def best(self) -> Best | None:
        """The best phase so far: the saved pointer, else the one ranking."""
        saved = self.state.best
        if saved is not None:
            return Best(
                saved.label,
                saved.far_pct,
                saved.threshold,
                self.layout.path(saved.best_ckpt_path),
            )
        return self._best(include_final=True)

    def best_of_loop(self) -> Best | None:
        """The best phase of the loop itself (Phase 3's ``final_automl`` left out)."""
        return self._best(include_final=False)

    def _best(self, *, include_final: bool) -> Best | None:
        ranked = rank_by_far(self.state.iterations, include_final=include_final)
        if not ranked:
            return None
        label = ranked[0]
        far = self.far(label)
        assert far is not None  # rank_by_far ranks evaluated phases first
        return Best(label, far, self.threshold(label), self.state.path_of(label, "best_ckpt_path"))

    def added(self, label: str) -> tuple[int | None, int | None]:
        """(synthetic, mined) rows that iteration ``label`` added; None when unknown."""
        if not iteration_number(label):
            return None, None
        rec = self.rec(label)
        sdg, mined = rec.sdg_rows, rec.mined_rows
        if sdg is None or mined is None:
            prov = self.provenance(label)
            if prov is not None:
                counts = prov["source"].value_counts()
                sdg = sdg if sdg is not None else int(counts.get(PROVENANCE_SDG, 0))
                mined = mined if mined is not None else int(counts.get(PROVENANCE_MINED, 0))
        if sdg is None and rec.sdg is not None and rec.sdg.generated:
            sdg = sum(rec.sdg.generated.values())
        if mined is None and rec.mining is not None:
            mined = total(v.get("selected") for v in rec.mining.per_label.values())
        return sdg, mined

    # --- finalize's evidence and the deliverable -------------------------------------------

    @cached_property
    def summary(self) -> PipelineSummary | None:
        """``pipeline_summary.json`` (None: a DEFT-only run, or finalize has not run)."""
        path = self.layout.summary
        if not path.is_file():
            return None
        try:
            return PipelineSummary.read(path)
        except UserError as exc:
            self.note(f"{path}: {first_line(exc)}")
            return None

    @cached_property
    def deliverable(self) -> Deliverable | None:
        """``best_model.json`` (None: not written yet, or unreadable; noted)."""
        path = self.layout.deliverable
        if not path.is_file():
            return None
        try:
            return Deliverable.read(path)
        except UserError as exc:
            self.note(f"{path}: {first_line(exc)}")
            return None

    def deliverable_label(self) -> str | None:
        """The phase the run ships: ``best_model.json``'s, else the summary's, else the best."""
        if self.deliverable is not None:
            return self.deliverable.iteration
        summary = self.summary
        if summary is not None and summary.best is not None:
            return summary.best.iteration
        best = self.best()
        return None if best is None else best.label

    def step(self, label: str) -> TrajectoryStep | None:
        """``label``'s entry of the summary's trajectory (None without one)."""
        summary = self.summary
        if summary is None:
            return None
        return next((s for s in summary.trajectory if s.step == label), None)

    def steering_ci(self, label: str) -> list[float] | None:
        """``[low, high]`` of ``label``'s FAR on the KPI (steering) set, bootstrap 95%.

        Finalize's interval when the summary has one, else the same bootstrap on the
        phase's scored KPI set; None when neither exists or the KPI is undefined.
        """
        step = self.step(label)
        if step is not None and step.far_pct_ci95 is not None:
            return list(step.far_pct_ci95)
        if label not in self._intervals:
            frame = self.scored(label)
            interval = None
            if frame is not None:
                try:
                    iv = far_interval(
                        frame["label"],
                        frame[SCORE_COLUMN].to_numpy(dtype=np.float64),
                        n_resamples=BOOTSTRAP_RESAMPLES,
                        seed=BOOTSTRAP_SEED,
                    )
                    interval = [iv.low, iv.high]
                except KPIError:
                    interval = None
            self._intervals[label] = interval
        return self._intervals[label]

    def val_far(self, label: str) -> float | None:
        """``label``'s FAR on the validation set (the summary's, else the state's)."""
        step = self.step(label)
        if step is not None and step.val_far_pct is not None:
            return finite(step.val_far_pct)
        return finite(self.rec(label).val_far_pct)

    # --- the searches (Phase 1, Phase 3) ----------------------------------------------------

    def search(self, phase: Phase) -> SearchOnDisk | None:
        """The search of ``phase`` as on disk (None: its folder does not exist)."""
        if phase not in self._searches:
            self._searches[phase] = self._read_search(phase)
        return self._searches[phase]

    def _read_search(self, phase: Phase) -> SearchOnDisk | None:
        layout = self.layout.search(phase)
        if not layout.root.is_dir():
            return None
        path = layout.root / SearchLayout.RESULT
        data = self.read_json(path)
        result = None
        if data is not None:
            try:
                result = search_result(data, layout.root)
            except (UserError, KeyError, TypeError, ValueError) as exc:
                self.note(f"{path}: {first_line(exc)}")
        started, finished, seen = self._trial_times(layout)
        return SearchOnDisk(phase, layout, result, started, finished, seen)

    def _trial_times(self, layout: SearchLayout) -> tuple[datetime | None, datetime | None, int]:
        journal = layout.root / SearchLayout.OPTUNA_JOURNAL
        if not journal.is_file():
            return None, None, 0
        from automl_deft.hpo.optuna_backend import load_study

        try:
            trials = load_study(layout.root).get_trials(deepcopy=False)
        except Exception as exc:  # a torn journal costs the times, never the page
            self.note(f"{journal}: {first_line(exc)}")
            return None, None, 0
        # Optuna stamps trials with naive local times; the state's are UTC.
        starts = [t.datetime_start.astimezone(UTC) for t in trials if t.datetime_start]
        ends = [t.datetime_complete.astimezone(UTC) for t in trials if t.datetime_complete]
        return min(starts, default=None), max(ends, default=None), len(trials)

    # --- files of the run ----------------------------------------------------------------

    def rca_dir(self, label: str) -> Path:
        return self.layout.stage_dir(label, RunLayout.RCA)

    def has_rca(self, label: str) -> bool:
        return self.rca_dir(label).is_dir()

    def findings(self, label: str) -> list[str]:
        """RCA's finding lines: the state's copy, else ``metrics.json``'s."""
        found = self.rec(label).findings
        if found:
            return list(found)
        metrics = self.read_json(self.rca_dir(label) / METRICS_FILE)
        return [str(f) for f in as_list(as_mapping(metrics).get("findings"))]

    def scored(self, label: str) -> pd.DataFrame | None:
        """The scored KPI set of ``label`` with numeric scores (None when not there yet)."""
        if label not in self._scored:
            path = self.layout.stage_dir(label, RunLayout.INFERENCE, RunLayout.KPI_SCORES)
            alt = self.state.path_of(label, "inference_csv")
            if not path.is_file() and alt is not None and alt.is_file():
                path = alt
            self._scored[label] = self._numeric_scores(path, self.read_csv(path))
        return self._scored[label]

    def _numeric_scores(self, path: Path, frame: pd.DataFrame | None) -> pd.DataFrame | None:
        if frame is None:
            return None
        if "label" not in frame.columns or SCORE_COLUMN not in frame.columns:
            self.note(f"{path}: no 'label' or {SCORE_COLUMN!r} column")
            return None
        frame = frame.copy()
        frame[SCORE_COLUMN] = pd.to_numeric(frame[SCORE_COLUMN], errors="coerce")
        finite = np.isfinite(frame[SCORE_COLUMN].to_numpy(dtype=np.float64))
        if not finite.all():
            self.note(f"{path}: {int((~finite).sum())} row(s) without a numeric score left out")
        frame = frame[finite].reset_index(drop=True)
        return None if frame.empty else frame

    def provenance(self, label: str) -> pd.DataFrame | None:
        """``train_combined_<label>_provenance.csv`` (None when not assembled yet)."""
        if label not in self._provenance:
            n = iteration_number(label)
            frame = None
            if n:
                path = self.layout.stage_dir(label, RunLayout.DATASET, provenance_name(n))
                frame = self.read_csv(path)
                if frame is not None and "source" not in frame.columns:
                    self.note(f"{path}: no 'source' column")
                    frame = None
            self._provenance[label] = frame
        return self._provenance[label]

    def hygiene(self, label: str) -> HygieneSummary | None:
        """What the hygiene checks did to ``label``'s new rows: the state's copy, else
        ``dataset/hygiene.json`` (None: hygiene did not run, or the run predates it)."""
        if label not in self._hygiene:
            summary = self.rec(label).hygiene if label in self.state.iterations else None
            path = self.hygiene_path(label, HYGIENE_FILE)
            if summary is None and path.is_file():
                try:
                    summary = HygieneSummary.read(path)
                except UserError as exc:
                    self.note(f"{path}: {first_line(exc)}")
            self._hygiene[label] = summary
        return self._hygiene[label]

    def hygiene_path(self, label: str, name: str) -> Path:
        """A hygiene file of ``label`` (:data:`HYGIENE_FILE`, … in its dataset folder)."""
        return self.layout.stage_dir(label, RunLayout.DATASET, name)

    def hygiene_rows(self, label: str, name: str) -> pd.DataFrame | None:
        """``hygiene_flagged.csv`` or ``hygiene_refused.csv`` of ``label`` (None: not on
        disk; an empty file is an empty frame)."""
        path = self.hygiene_path(label, name)
        if path.is_file() and path.stat().st_size == 0:  # written with no rows and no header
            return pd.DataFrame()
        return self.read_csv(path)

    def holdout_scored(self, label: str) -> pd.DataFrame | None:
        """``label`` scored on the untouched hold-out by finalize (None: not scored).

        Only after finalize wrote ``pipeline_summary.json``: every choice was made by then,
        so showing these rows cannot steer anything.
        """
        if label not in self._holdout_scored:
            frame = None
            if self.layout.summary.is_file():
                path = self.layout.holdout_scores(label)
                frame = self._numeric_scores(path, self.read_csv(path))
            self._holdout_scored[label] = frame
        return self._holdout_scored[label]

    @cached_property
    def kpi_set(self) -> pd.DataFrame | None:
        """The KPI test set: ``config.paths.kpi_csv``, else the first scored copy of it."""
        kpi_csv = self.state.inputs.kpi_csv
        frame = self.read_csv(Path(kpi_csv)) if kpi_csv else None
        if frame is None or "label" not in frame.columns:
            frame = next((f for lab in self.labels if (f := self.scored(lab)) is not None), None)
        return frame

    @property
    def images_dir(self) -> Path | None:
        inputs = self.state.inputs
        if not inputs.images_dir:
            return None
        path = Path(inputs.images_dir)
        if not path.is_absolute() and inputs.workspace:
            path = Path(inputs.workspace) / path
        return path

    @cached_property
    def naming(self) -> ImageNaming:
        """The image naming of the run's spec (the default one when unreadable)."""
        spec = self.state.inputs.spec
        if spec:
            from automl_deft.model.spec import load_spec

            try:
                return load_spec(spec).naming()
            except (AutomlDeftError, OSError, ValueError) as exc:
                self.note(f"{spec}: {exc} (using the default image naming)")
        return ImageNaming()

    def image_dir(self, images_dir: Path, rel_dir: str) -> Path:
        """A CSV row's image directory, followed into this run when the run was moved."""
        return rebase_into_run(images_dir, rel_dir, self.state.created_in, self.root)

    def image_file(self, row: pd.Series, column: str, light: str) -> Path:
        """The image of a CSV row (``input_path`` or ``golden_path``) under ``light``.

        Raises:
            UserError: the state records no ``images_dir``.
            KeyError: the row has no such column.
        """
        images_dir = self.images_dir
        if images_dir is None:
            raise UserError("the DEFT state records no images_dir; start a new results directory")
        folder = self.image_dir(images_dir, str(row[column]))
        return resolve_image_path(folder, ".", str(row["object_name"]), light, self.naming.ext)

    # --- reading ---------------------------------------------------------------------------

    def note(self, problem: str) -> None:
        """Record a file that could not be read (once)."""
        if problem not in self.problems:
            self.problems.append(problem)

    def read_csv(self, path: Path) -> pd.DataFrame | None:
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.note(f"{path}: {first_line(exc)}")
            return None

    def read_json(self, path: Path) -> Any:
        """A JSON artefact (its shape is checked where it is used)."""
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.note(f"{path}: {first_line(exc)}")
            return None

    def read_parquet(self, path: Path) -> pd.DataFrame | None:
        if not path.is_file():
            return None
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own types for a torn file
            self.note(f"{path}: {first_line(exc)}")
            return None

    def read_text(self, path: Path) -> str | None:
        if not path.is_file():
            return None
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.note(f"{path}: {first_line(exc)}")
            return None


def search_result(data: Any, root: Path) -> SearchResult:
    """``automl_result.json`` back as a :class:`~automl_deft.hpo.results.SearchResult`.

    The winner and the guards are read strictly through their records; a trial's
    parameters are kept as written (the page never shows them).

    Raises:
        UserError: a malformed winner or guard record.
        KeyError, TypeError, ValueError: a malformed field elsewhere.
    """
    if not isinstance(data, dict):
        raise UserError("not a JSON object")
    history = []
    for entry in as_list(data.get("history")):
        entry = as_mapping(entry)
        metric = entry.get("metric")
        pruned = entry.get("pruned_at_epoch")
        history.append(
            SearchTrial(
                rec_id=str(entry["rec_id"]),
                params=dict(as_mapping(entry.get("params"))),
                metric=None if metric is None else float(metric),
                status="pruned" if entry.get("status") == "pruned" else "complete",
                pruned_at_epoch=None if pruned is None else int(pruned),
            )
        )
    return SearchResult(
        results_dir=root,
        best=SearchBest.from_json(data["best"], "automl_result.json best"),
        history=history,
        algorithm=str(data.get("algorithm", "?")),
        backend=str(data.get("backend", "?")),
        metric=str(data.get("metric", "far_pct")),
        guards=GuardReport.from_json(data.get("guards") or {}, "automl_result.json guards"),
    )
