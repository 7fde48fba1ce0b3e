"""Typed records: everything that crosses a stage or phase boundary.

Each record is a frozen dataclass with one JSON round trip: :meth:`Record.to_json`
writes plain JSON values (``None`` fields are left out unless the record lists
them in ``ALWAYS``), :meth:`Record.from_json` reads them back strictly (unknown
keys and wrong types name the key, through :func:`automl_deft.config.typed_from_dict`),
and :meth:`Record.dumps` / :meth:`Record.loads` give the exact text a KFP task
passes on — a string parameter round-trips exactly, so no int/float or ``None``
workaround is needed anywhere.

The iteration record keeps the field names ``deft_state.json`` documents
(``status, stage_completed, best_ckpt_path, best_ckpt_kind, far_pct, threshold,
val_loss, inference_csv, rca_target_defects, …``). Paths inside a run directory
are stored relative to it (see :mod:`automl_deft.layout`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from automl_deft.config import typed_from_dict
from automl_deft.errors import SpecError, UserError
from automl_deft.io import atomic_write_json
from automl_deft.kpi.result import KPIResult, OperatingPoint
from automl_deft.phases import FINAL_AUTOML, iteration_number

__all__ = [
    "Deliverable",
    "ExportOutcome",
    "HoldoutScore",
    "HygieneSummary",
    "IterationRecord",
    "KPISummary",
    "LogEntry",
    "MiningSummary",
    "PipelineSummary",
    "PreflightOutcome",
    "RankEntry",
    "Record",
    "RoutingRows",
    "RoutingSummary",
    "RunInputs",
    "SDGSummary",
    "SearchWinner",
    "StageFailure",
    "TrajectoryStep",
    "far_or_inf",
    "labels_in_order",
    "rank_by_far",
]


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class Record:
    """Base of the typed records (mixed into frozen dataclasses)."""

    ALWAYS: ClassVar[frozenset[str]] = frozenset()
    """Fields written even when ``None`` (documented keys a reader looks for)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; ``None`` fields left out (except ``ALWAYS``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name not in self.ALWAYS:
                continue
            out[f.name] = _plain(value)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> Self:
        """The record from :meth:`to_json`'s output.

        Raises:
            UserError: not a mapping, an unknown key or a wrong type (naming ``where``).
        """
        noun = where or cls.__name__
        try:
            record: Self = typed_from_dict(cls, data, "", noun)
        except SpecError as exc:
            raise UserError(str(exc)) from exc
        return record

    def dumps(self) -> str:
        """The record as compact JSON text (what a KFP task passes on)."""
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False)

    @classmethod
    def loads(cls, text: str, where: str | None = None) -> Self:
        """Inverse of :meth:`dumps`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where or cls.__name__}: not valid JSON ({exc.msg})") from exc
        return cls.from_json(data, where)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Atomically write the record as indented JSON."""
        atomic_write_json(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Self:
        """Read a record written by :meth:`write`.

        Raises:
            UserError: missing or unreadable file.
        """
        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p} not found; the step that writes it has not run")
        return cls.loads(p.read_text(encoding="utf-8"), str(p))

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (records are frozen)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# --- the KPI on the wire -------------------------------------------------------------------


@dataclass(frozen=True)
class KPISummary(Record):
    """:meth:`automl_deft.kpi.KPIResult.to_dict` as a record (flat recall-100 point)."""

    ALWAYS = frozenset({"far_pct", "threshold", "reason"})

    available: bool
    n_pass: int
    n_defect: int
    threshold: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    far_pct: float | None = None
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    reason: str | None = None
    best_f1: OperatingPoint | None = None

    @classmethod
    def of(cls, result: KPIResult) -> KPISummary:
        """From a :class:`~automl_deft.kpi.KPIResult`."""
        return cls.from_json(result.to_dict(), "KPI result")

    def to_result(self) -> KPIResult:
        """Back to a :class:`~automl_deft.kpi.KPIResult`."""
        data = self.to_json()
        data.setdefault("best_f1", None)
        return KPIResult.from_dict(data)


# --- the DEFT loop ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StageFailure(Record):
    stage: str
    message: str


@dataclass(frozen=True)
class RoutingRows(Record):
    mining: dict[str, int] = field(default_factory=dict)
    sdg: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RoutingSummary(Record):
    """Where the weak rows of each label went (``iterN.routing``)."""

    mining: list[str] = field(default_factory=list)
    sdg: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    rows: RoutingRows = field(default_factory=RoutingRows)


@dataclass(frozen=True)
class SDGSummary(Record):
    """What the SDG stage asked for and got (``iterN.sdg``)."""

    backend: str
    requested: dict[str, int] = field(default_factory=dict)
    """Per label, the pairs asked of the backend (the budget's split, top-ups included)."""
    generated: dict[str, int] = field(default_factory=dict)
    """Per label, the pairs written (after the independent PASS check)."""
    warnings: list[str] = field(default_factory=list)
    budget: int | None = None
    """``sdg.num_sdg``: the pairs the iteration could make."""
    unrouted: dict[str, str] = field(default_factory=dict)
    """Weak labels the backend cannot make, each with why (they got no budget)."""
    pass_check: dict[str, int] = field(default_factory=dict)
    """The independent PASS check of generated PASS pairs: ``checked``, ``passed``, ``refused``."""

    @property
    def asked(self) -> int:
        """The pairs the stage could make: the budget (the requested pairs when an older
        run recorded none)."""
        return self.budget if self.budget is not None else sum(self.requested.values())

    @property
    def made(self) -> int:
        """The pairs written."""
        return sum(self.generated.values())

    def line(self) -> str:
        """``SDG: 40 requested, 40 made — PASS 39, spur 1`` (plus what was short and why)."""
        asked, made = self.asked, self.made
        per = ", ".join(f"{k} {v}" for k, v in sorted(self.generated.items(), key=_by_count))
        text = f"SDG: {asked} requested, {made} made via {self.backend}"
        if per:
            text += f" — {per}"
        if made < asked:
            why = [f"{k} not made ({v})" for k, v in sorted(self.unrouted.items())]
            refused = self.pass_check.get("refused", 0)
            if refused:
                why.append(f"{refused} PASS pair(s) failed the PASS check")
            why.extend(self.warnings)
            text += f"; {asked - made} short: {'; '.join(why) or 'the backend made fewer'}"
        return text


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


@dataclass(frozen=True)
class HygieneSummary(Record):
    """What the hygiene checks did to an iteration's new rows before assemble
    (``iterN.hygiene``; ``iterN/dataset/hygiene.json``)."""

    candidates: int = 0
    """New rows offered (generated + mined)."""
    kept: int = 0
    """Rows that went on to assemble (flagged rows included unless excluded)."""
    exact_duplicates: int = 0
    """Refused: same image content as a training row or an earlier candidate."""
    near_duplicates: int = 0
    """Refused: the same place and the same registered difference as another row."""
    flagged_label_errors: int = 0
    """Rows whose label the model and/or the independent check contradict (listed, kept)."""
    excluded_label_errors: int = 0
    """Flagged rows left out (``hygiene.label_errors: exclude``)."""
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per source (``sdg``, ``mining_pool``): the counts above."""
    thresholds: dict[str, float | str] = field(default_factory=dict)
    """The settings the checks ran with."""
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MiningSummary(Record):
    """The mining stage's summary (``iterN.mining``; ``mining.json``)."""

    per_label: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    iteration: int | None = None
    metric: str | None = None
    top_k_per_target: int | None = None
    min_similarity: float | None = None
    targets: int | None = None
    candidates: int | None = None
    selected: int | None = None


@dataclass(frozen=True)
class IterationRecord(Record):
    """One entry of ``deft_state.json`` ``iterations`` (baseline, iterN, final_automl).

    Paths (``best_ckpt_path``, ``train_csv``, ``inference_csv``, ``spec_path``) are
    relative to the run directory when they lie inside it; resolve them with
    :meth:`automl_deft.layout.RunLayout.path`.
    """

    ALWAYS = frozenset({"stage_completed"})
    PATHS: ClassVar[frozenset[str]] = frozenset(
        {"best_ckpt_path", "train_csv", "inference_csv", "spec_path", "warm_start_from"}
    )
    """Fields holding paths (stored relative to the run directory when inside it)."""

    status: str = "pending"
    stage_completed: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
    error: StageFailure | None = None
    source: str | None = None
    # train
    best_ckpt_path: str | None = None
    best_ckpt_kind: str | None = None
    train_csv: str | None = None
    train_rows: int | None = None
    val_far_pct: float | None = None
    val_loss: float | None = None
    train_metric: float | None = None
    train_seconds: float | None = None
    spec_path: str | None = None
    warm_start_from: str | None = None
    seeded_from: str | None = None
    rec_id: str | None = None
    # evaluate
    far_pct: float | None = None
    threshold: float | None = None
    candidates: dict[str, float | None] | None = None
    inference_csv: str | None = None
    kpi: KPISummary | None = None
    regression: bool | None = None
    # rca
    reachable: bool | None = None
    unreachable_reason: str | None = None
    rca_target_defects: list[str] | None = None
    rca_target_labels: list[str] | None = None
    need: dict[str, int] | None = None
    weak_rows: int | None = None
    findings: list[str] | None = None
    # routing, sdg, mining, data_merge
    routing: RoutingSummary | None = None
    sdg: SDGSummary | None = None
    sdg_rows: int | None = None
    mining: MiningSummary | None = None
    mined_rows: int | None = None
    added_rows: int | None = None
    skipped_duplicates: int | None = None
    hygiene: HygieneSummary | None = None

    @property
    def evaluated(self) -> bool:
        """True when the KPI set was scored with a checkpoint (it can be ranked)."""
        return self.far_pct is not None and bool(self.best_ckpt_path)


@dataclass(frozen=True)
class RunInputs(Record):
    """``deft_state.json`` ``config.paths``: what the loop reads from the workspace (absolute)."""

    workspace: str | None = None
    train_csv: str | None = None
    val_csv: str | None = None
    kpi_csv: str | None = None
    pool_csv: str | None = None
    images_dir: str | None = None
    spec: str | None = None

    def rebased(self, old_root: Path, new_root: Path) -> RunInputs:
        """Every input under ``old_root`` moved to the same place under ``new_root``."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value:
                continue
            p = Path(os.path.normpath(value))
            if p == old_root or p.is_relative_to(old_root):
                changes[f.name] = str(new_root / p.relative_to(old_root))
        return self.replace(**changes)

    def path(self, name: str) -> Path:
        """The input ``name`` as a path.

        Raises:
            UserError: the state does not record it.
        """
        value = getattr(self, name)
        if not value:
            raise UserError(f"the DEFT state records no {name}; start a new results directory")
        return Path(value)


@dataclass(frozen=True)
class LogEntry(Record):
    """One line of ``loop_log.jsonl``."""

    ALWAYS = frozenset({"summary"})

    seq: int
    ts: str
    iter: str
    stage: str
    status: str
    summary: str
    duration_sec: float


@dataclass(frozen=True)
class BestPointer(Record):
    """``deft_state.json`` ``best``: what the deliverable names."""

    label: str
    far_pct: float
    threshold: float
    best_ckpt_path: str


def far_or_inf(value: float | None) -> float:
    """far_pct for ranking: missing / unavailable / NaN ranks last."""
    if value is None or math.isnan(value):
        return math.inf
    return float(value)


def rank_by_far(records: Mapping[str, IterationRecord], *, include_final: bool = True) -> list[str]:
    """The one pick-best ranking: evaluated labels, lowest far_pct first.

    Ties keep the earlier label (baseline, iter1, …, then ``final_automl``), so a
    later phase must be strictly better to win. The loop, the handoffs, the report
    and finalize all rank with this function.
    """

    def order(label: str) -> tuple[float, int]:
        n = iteration_number(label)
        return far_or_inf(records[label].far_pct), 10**6 if n is None else n

    labels = [
        label
        for label, rec in records.items()
        if rec.evaluated and (include_final or label != FINAL_AUTOML)
    ]
    return sorted(labels, key=order)


# --- searches and steps -----------------------------------------------------------------------


@dataclass(frozen=True)
class SearchWinner(Record):
    """What a search step hands on (Phase 1 or Phase 3), or why it has no winner.

    ``specs`` are the winning hyperparameter overrides (dotted spec keys → values,
    as YAML would hold them); ``checkpoint`` is absolute (it is read by other pods
    through the shared volume).
    """

    phase: str
    results_dir: str
    failed: str | None = None
    rec_id: str | None = None
    far_pct: float | None = None
    val_loss: float | None = None
    metric: str | None = None
    metric_value: float | None = None
    checkpoint: str | None = None
    specs: dict[str, Any] = field(default_factory=dict)
    pred_counts: dict[str, int] = field(default_factory=dict)
    algorithm: str | None = None
    backend: str | None = None
    trials: int | None = None
    warm_start: str | None = None
    train_csv: str | None = None
    guards: dict[str, Any] = field(default_factory=dict)
    quality: str | None = None

    @property
    def usable(self) -> bool:
        return self.failed is None and self.checkpoint is not None


@dataclass(frozen=True)
class PreflightOutcome(Record):
    """The pre-flight step's result: the results directory every later step uses."""

    results_dir: str
    ok: bool
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BaselineSeed(Record):
    """Handoff 1→2: what the DEFT loop was seeded with."""

    results_dir: str
    spec: str
    baseline_checkpoint: str
    source: str
    specs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoopOutcome(Record):
    """What the DEFT loop hands on (to Phase 3, the pipeline, or the user)."""

    results_dir: str
    status: str
    final_train_csv: str
    n_final: int
    kpi_met: bool
    stop_reason: str | None = None
    best_label: str | None = None
    best_checkpoint: str | None = None
    best_far_pct: float | None = None
    best_threshold: float | None = None
    report: str | None = None
    run_phase3: bool = False

    ALWAYS = frozenset({"stop_reason", "best_label", "best_checkpoint", "best_far_pct"})

    @property
    def hard_stopped(self) -> bool:
        return self.status == "hard_stopped"

    @property
    def needs_review(self) -> bool:
        return self.status == "needs_review"

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "hard_stopped": self.hard_stopped,
            "needs_review": self.needs_review,
        }

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> LoopOutcome:
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("hard_stopped", "needs_review")}
        return super().from_json(data, where)


@dataclass(frozen=True)
class WarmStart(Record):
    """What Phase 3 starts from (handoff 2→3)."""

    label: str
    checkpoint: str
    far_pct: float
    train_csv: str
    n_final: int


@dataclass(frozen=True)
class RankEntry(Record):
    ALWAYS = frozenset({"far_pct"})

    iteration: str
    far_pct: float | None


@dataclass(frozen=True)
class Deliverable(Record):
    """``best_model.json``: the run's product.

    ``checkpoint`` and ``inference_spec`` are relative to the run directory, so a
    moved or copied run still names its model; read them with :meth:`path`.
    """

    checkpoint: str
    threshold: float
    far_pct: float
    iteration: str
    images_dir: str
    inference_spec: str
    backbone: str | None = None
    kpi_target: str | None = None
    ranking: list[RankEntry] = field(default_factory=list)
    chosen_because: str | None = None
    """Why pick-best chose this one (the ranking rule and the runner-up)."""

    ALWAYS = frozenset({"backbone"})

    def path(self, run_dir: str | os.PathLike[str], member: str) -> Path:
        """``checkpoint`` or ``inference_spec`` resolved against ``run_dir``."""
        value = Path(getattr(self, member))
        return value if value.is_absolute() else Path(run_dir) / value


@dataclass(frozen=True)
class HoldoutScore(Record):
    """A model scored on the untouched hold-out (``kpi/holdout_set.csv``), in finalize only.

    ``far_pct`` is FAR at 100% recall at the hold-out's own recall-100 threshold
    (``threshold_from: holdout``): the same KPI as on the steering set, on data
    that steered nothing. ``deployed_*`` apply the threshold the model ships with
    (chosen on the steering set) to the hold-out: what the line would see.
    """

    ALWAYS = frozenset({"far_pct", "ci95", "threshold_from"})

    rows: int
    n_pass: int
    n_defect: int
    far_pct: float | None
    ci95: list[float] | None
    threshold_from: str = "holdout"
    threshold: float | None = None
    deployed_threshold: float | None = None
    deployed_far_pct: float | None = None
    deployed_recall: float | None = None
    deployed_missed: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TrajectoryStep(Record):
    ALWAYS = frozenset({"far_pct", "threshold", "train_rows", "added_rows"})

    step: str
    phase: str
    far_pct: float | None = None
    threshold: float | None = None
    train_rows: int | None = None
    added_rows: int | None = None
    far_pct_ci95: list[float] | None = None
    """Bootstrap 95% interval of ``far_pct`` on the steering (KPI) set."""
    val_far_pct: float | None = None
    holdout: HoldoutScore | None = None


@dataclass(frozen=True)
class SearchBrief(Record):
    ALWAYS = frozenset({"rec_id", "far_pct", "val_loss"})

    rec_id: str | None = None
    far_pct: float | None = None
    val_loss: float | None = None

    @classmethod
    def of(cls, winner: SearchWinner | None) -> SearchBrief | None:
        if winner is None or winner.failed is not None:
            return None
        return cls(winner.rec_id, winner.far_pct, winner.val_loss)


@dataclass(frozen=True)
class PipelineSummary(Record):
    """``pipeline_summary.json``: the trajectory Phase 1 → DEFT → Phase 3 on the KPI set."""

    ALWAYS = frozenset(
        {
            "kpi_target",
            "deft_status",
            "deft_stop_reason",
            "phase1",
            "phase3",
            "phase3_failed",
            "best",
        }
    )

    results_dir: str
    kpi_target: str | None
    deft_status: str | None
    deft_stop_reason: str | None
    phase1: SearchBrief | None
    phase3: SearchBrief | None
    phase3_ran: bool
    phase3_failed: str | None
    phase3_kept: bool
    trajectory: list[TrajectoryStep]
    best: Deliverable | None = None
    far_pct_ci95: list[float] | None = None
    """The deliverable's steering-set interval."""
    holdout: HoldoutScore | None = None
    """The deliverable on the untouched hold-out (None: the workspace has none)."""
    holdout_note: str | None = None
    kpi_met: bool | None = None
    """The deliverable's KPI-set (steering) FAR against the target."""
    kpi_gap_pp: float | None = None
    """Percentage points above the target's FAR bound (0 when met)."""
    holdout_kpi_met: bool | None = None
    """The deliverable's hold-out FAR against the same target (None: no hold-out)."""
    holdout_kpi_gap_pp: float | None = None
    notes: list[str] = field(default_factory=list)
    """What a reviewer must know (e.g. a winner worse than zero-shot on validation)."""


@dataclass(frozen=True)
class ExportOutcome(Record):
    """What the export step made: the package, or why there is none (``skipped``)."""

    format: str
    path: str | None = None
    model_file: str | None = None
    threshold: float | None = None
    far_pct: float | None = None
    holdout_far_pct: float | None = None
    skipped: str | None = None

    def metadata(self) -> dict[str, Any]:
        """The package artifact's metadata (what the KFP UI shows next to the model),
        with the package's ``model_card.json`` in full."""
        out: dict[str, Any] = {"format": self.format}
        for key in ("threshold", "far_pct", "holdout_far_pct", "model_file", "skipped"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        card = Path(self.path) / "model_card.json" if self.path else None
        if card is not None and card.is_file():
            out["model_card"] = json.loads(card.read_text(encoding="utf-8"))
        return out


def labels_in_order(labels: Iterable[str]) -> list[str]:
    """baseline, iter1, iter2, …, then anything else (final_automl) in the given order."""
    items = list(labels)

    def key(label: str) -> tuple[int, int]:
        n = iteration_number(label)
        return (0, n) if n is not None else (1, items.index(label))

    return sorted(items, key=key)
