"""The model card of a run's deliverable: ``model_card.json`` and ``MODEL_CARD.md``.

What a reviewer or an AOI line needs before deploying the model, in one place:
the data it was made and judged on (row counts per label and a SHA-256 of each
CSV), the trajectory with steering-set and hold-out FAR and their intervals,
the operating point, the training hyperparameters (the checkpoint's own spec),
library versions, intended use and the limitations the run itself found.

Built from the run directory only (``deft_state.json``, ``best_model.json``,
``pipeline_summary.json`` and the checkpoint), so a moved or copied run makes
the same card. ``automl-deft export`` writes it into the package.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import automl_deft
from automl_deft.deft.state import DeftState
from automl_deft.errors import UserError
from automl_deft.kpi import format_far
from automl_deft.layout import RunLayout
from automl_deft.model.checkpoint import load_checkpoint, spec_of
from automl_deft.records import Deliverable, HoldoutScore, PipelineSummary, Record, TrajectoryStep
from automl_deft.scorecard import NO_HOLDOUT_NOTE, steering_interval
from automl_deft.serving.manifest import sha256_file
from automl_deft.workspace import Workspace, normalize_label, read_dataset_csv

__all__ = ["DatasetEntry", "ModelCard", "build_model_card", "export_run", "render_markdown"]

INTENDED_USE = (
    "Flag PCB automated-optical-inspection image pairs (a golden reference and a test "
    "capture of the same location, under the lights and image size listed in the "
    "preprocessing) as PASS or NO_PASS. NO_PASS (siamese_score > threshold) sends the "
    "board to a human review; the threshold was chosen so that every defect of the KPI "
    "set is caught. Use on boards, components and capture conditions like the training "
    "data's; re-validate on a labelled sample before use elsewhere."
)
LIMITATIONS = (
    "FAR at 100% recall is set by the single hardest defect: one new defect look can move "
    "the threshold and the false-alarm rate a lot; the intervals show how much.",
    "The KPI (steering) set chose checkpoints, mined training rows and picked this model, "
    "so its FAR is optimistic; the hold-out FAR is the estimate for unseen boards.",
    "Greyscale pixels only; lights are stacked as channels in the order listed.",
)


@dataclass(frozen=True)
class DatasetEntry(Record):
    """One data set the model was made or judged with."""

    role: str
    path: str
    rows: int
    sha256: str
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard(Record):
    """``model_card.json``."""

    ALWAYS = frozenset({"holdout"})

    model: str
    created: str
    iteration: str
    threshold: float
    decision_rule: str
    chosen_because: str | None
    steering_far_pct: float
    steering_ci95: list[float] | None
    holdout: HoldoutScore | None
    datasets: list[DatasetEntry]
    trajectory: list[TrajectoryStep]
    preprocessing: dict[str, Any]
    hyperparameters: dict[str, Any]
    versions: dict[str, str]
    intended_use: str
    limitations: list[str]
    notes: list[str] = field(default_factory=list)
    kpi_target: str | None = None
    kpi_met: bool | None = None
    holdout_kpi_met: bool | None = None

    def dumps_pretty(self) -> str:
        """Indented JSON (the file a person may open)."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"


def _dataset(role: str, path: Path, shown_from: Path | None) -> DatasetEntry | None:
    if not path.is_file():
        return None
    frame = read_dataset_csv(path, role=role)
    labels = Counter(normalize_label(v) for v in frame["label"])
    shown = path
    if shown_from is not None and path.is_relative_to(shown_from):
        shown = path.relative_to(shown_from)
    return DatasetEntry(
        role=role,
        path=shown.as_posix(),
        rows=len(frame),
        sha256=sha256_file(path),
        labels=dict(sorted(labels.items())),
    )


def _datasets(state: DeftState, best: Deliverable) -> list[DatasetEntry]:
    inputs = state.inputs
    root = Path(inputs.workspace) if inputs.workspace else None
    candidates: list[tuple[str, Path | None]] = [
        ("base training set", inputs.path("train_csv") if inputs.train_csv else None),
        ("validation set", inputs.path("val_csv") if inputs.val_csv else None),
        ("KPI (steering) set", inputs.path("kpi_csv") if inputs.kpi_csv else None),
        ("mining pool", inputs.path("pool_csv") if inputs.pool_csv else None),
        ("deliverable's training set", state.path_of(best.iteration, "train_csv")),
    ]
    if root is not None:
        candidates.append(("untouched hold-out", Workspace.at(root).holdout_csv))
    entries = []
    for role, path in candidates:
        entry = _dataset(role, path, root) if path is not None else None
        if entry is not None:
            entries.append(entry)
    return entries


def build_model_card(run_dir: str | Path) -> ModelCard:
    """The card of the deliverable in ``run_dir`` (which must have ``best_model.json``).

    Raises:
        UserError: no deliverable yet, or its checkpoint is missing.
    """
    layout = RunLayout(Path(run_dir))
    if not layout.deliverable.is_file():
        raise UserError(
            f"{layout.deliverable} not found: the run has no deliverable yet; finish it first"
        )
    best = Deliverable.read(layout.deliverable)
    state = DeftState.load(layout.root, reconcile=False)
    ckpt_path = best.path(layout.root, "checkpoint")
    ckpt = load_checkpoint(ckpt_path)
    spec = spec_of(ckpt, ckpt_path)
    summary = PipelineSummary.read(layout.summary) if layout.summary.is_file() else None
    trajectory = summary.trajectory if summary is not None else []
    steering_ci = (
        summary.far_pct_ci95 if summary is not None else steering_interval(state, best.iteration)
    )
    holdout = summary.holdout if summary is not None else None
    notes = list(summary.notes) if summary is not None else [NO_HOLDOUT_NOTE]
    from automl_deft.serving import preprocessing_of

    versions = {str(k): str(v) for k, v in (ckpt.get("versions") or {}).items()}
    versions.setdefault("python", platform.python_version())
    versions["automl_deft (card)"] = automl_deft.__version__
    return ModelCard(
        model=f"automl-deft siamese classifier ({spec.model.backbone.type})",
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        iteration=best.iteration,
        threshold=best.threshold,
        decision_rule="siamese_score > threshold → NO_PASS, else PASS",
        chosen_because=best.chosen_because,
        steering_far_pct=best.far_pct,
        steering_ci95=steering_ci,
        holdout=holdout,
        datasets=_datasets(state, best),
        trajectory=trajectory,
        preprocessing=preprocessing_of(spec).to_json(),
        hyperparameters=spec.to_dict(),
        versions=versions,
        intended_use=INTENDED_USE,
        limitations=list(LIMITATIONS),
        notes=notes,
        kpi_target=best.kpi_target,
        kpi_met=summary.kpi_met if summary is not None else None,
        holdout_kpi_met=summary.holdout_kpi_met if summary is not None else None,
    )


def _flat(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flat(value, name + "."))
        else:
            out.append((name, value))
    return out


HYPERPARAMETER_PREFIXES = ("model.", "train.", "dataset.classify.")


def render_markdown(card: ModelCard) -> str:
    """``MODEL_CARD.md``: the card for a person."""
    held = card.holdout
    lines = [
        f"# Model card: {card.model}",
        "",
        f"Created {card.created} from run step `{card.iteration}`.",
        "",
        "## Intended use",
        "",
        card.intended_use,
        "",
        "## Operating point",
        "",
        f"- Decision: {card.decision_rule}; threshold **{card.threshold:.6g}**.",
        f"- KPI (steering) set FAR at 100% recall: "
        f"**{format_far(card.steering_far_pct, card.steering_ci95)}** (95% bootstrap interval).",
    ]
    if held is not None:
        lines.append(
            f"- Untouched hold-out FAR at 100% recall: **{format_far(held.far_pct, held.ci95)}** "
            f"({held.rows} rows: {held.n_pass} PASS, {held.n_defect} defect)."
        )
        if held.deployed_far_pct is not None:
            lines.append(
                f"- At the shipped threshold on the hold-out: FAR {held.deployed_far_pct:.2f}%, "
                f"recall {100 * (held.deployed_recall or 0):.1f}% "
                f"({held.deployed_missed} defect(s) missed)."
            )
    else:
        lines.append("- Untouched hold-out: none (no number here was measured on unseen data).")
    if card.kpi_target:

        def verdict(met: bool | None) -> str:
            return "met" if met else "not met" if met is False else "n/a"

        lines.append(
            f"- KPI target `{card.kpi_target}`: {verdict(card.holdout_kpi_met)} on the hold-out, "
            f"{verdict(card.kpi_met)} on the KPI (steering) set."
        )
    if card.chosen_because:
        lines.append(f"- Chosen because: {card.chosen_because}.")
    lines += ["", "## Data", "", "| set | rows | labels | sha256 |", "|---|---|---|---|"]
    for d in card.datasets:
        labels = ", ".join(f"{k} {v}" for k, v in d.labels.items())
        lines.append(f"| {d.role} (`{d.path}`) | {d.rows} | {labels} | `{d.sha256[:16]}…` |")
    if card.trajectory:
        lines += [
            "",
            "## Trajectory",
            "",
            "| step | phase | KPI set FAR | hold-out FAR | validation FAR | training rows |",
            "|---|---|---|---|---|---|",
        ]
        for s in card.trajectory:
            h = "—" if s.holdout is None else format_far(s.holdout.far_pct, s.holdout.ci95)
            val = format_far(s.val_far_pct)
            lines.append(
                f"| {s.step} | {s.phase} | {format_far(s.far_pct, s.far_pct_ci95)} | {h} | {val} "
                f"| {s.train_rows or ''} |"
            )
    lines += ["", "## Preprocessing", ""]
    lines += [f"- `{k}`: {v}" for k, v in _flat(card.preprocessing)]
    lines += ["", "## Hyperparameters", ""]
    lines += [
        f"- `{k}`: {v}"
        for k, v in _flat(card.hyperparameters)
        if k.startswith(HYPERPARAMETER_PREFIXES) and "path" not in k
    ]
    lines += ["", "## Versions", ""] + [f"- {k}: {v}" for k, v in card.versions.items()]
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in card.limitations]
    if card.notes:
        lines += ["", "## Notes from this run", ""] + [f"- {n}" for n in card.notes]
    return "\n".join(lines) + "\n"


def export_run(run_dir: str | os.PathLike[str], fmt: str, out_dir: str | os.PathLike[str]) -> Any:
    """Export a run's deliverable as a self-contained package with its model card.

    ``run_dir`` may also be the run's ``best_model.json``. Returns the
    :class:`automl_deft.serving.Package` written to ``out_dir``.
    """
    from automl_deft.serving import ModelFormat, export_package

    run = Path(run_dir)
    if run.is_file() and run.name == RunLayout.DELIVERABLE:
        run = run.parent
    card = build_model_card(run)
    best = Deliverable.read(RunLayout(run).deliverable)
    return export_package(
        best.path(run, "checkpoint"),
        Path(out_dir),
        cast(ModelFormat, fmt),  # export_package refuses any other name, in one line
        threshold=best.threshold,
        extra_files={
            "model_card.json": card.dumps_pretty(),
            "MODEL_CARD.md": render_markdown(card),
        },
    )
