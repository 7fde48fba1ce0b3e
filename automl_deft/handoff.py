"""The handoffs between phases, and the pick-best safety net.

- 1→2 (:func:`seed_baseline`): the Phase 1 winner becomes the DEFT baseline: the
  winning HPs deep-merged onto ``specs/baseline_spec.yaml`` are written to
  ``specs/baseline_spec_automl.yaml``, the winning checkpoint is copied into
  ``<results>/baseline/train/``, and ``deft_state.json`` records
  ``iterations.baseline = {stage_completed: "train", …, source: "automl_phase1"}``
  with a matching log line, so DEFT runs no second baseline training.
- 2→3 (:func:`select_warm_start`): the lowest-far_pct DEFT iteration (excluding
  an earlier ``final_automl``) gives Phase 3 its warm-start checkpoint and the
  last assembled training CSV.
- Final (:func:`register_final_automl`, :func:`pick_best`,
  :func:`write_deliverable`): Phase 3's winner is registered like an iteration;
  the best of everything (lowest far_pct) becomes ``best_model.json`` and
  ``best_model_inference_spec.yaml``, even when a later phase regressed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from automl_deft.deft.state import BASELINE, FINAL_AUTOML, DeftState, iteration_number
from automl_deft.errors import CheckpointError, UserError
from automl_deft.io import atomic_copy, atomic_write_json, atomic_write_text
from automl_deft.model.checkpoint import BEST_NAME, LATEST_NAME, load_checkpoint
from automl_deft.model.spec import deep_merge, load_spec, save_spec

BEST_MODEL_FILE = "best_model.json"
INFERENCE_SPEC_FILE = "best_model_inference_spec.yaml"
AUTOML_SPEC_NAME = "baseline_spec_automl.yaml"


def far_or_inf(value: Any) -> float:
    """far_pct for ranking: missing / unavailable ranks last."""
    if value is None:
        return math.inf
    try:
        f = float(value)
    except (TypeError, ValueError):
        return math.inf
    return math.inf if math.isnan(f) else f


def ranked_labels(state: DeftState, *, include_final: bool = True) -> list[str]:
    """Evaluated iterations, best (lowest far_pct) first; ties keep the earlier one."""

    def order(label: str) -> tuple[float, int]:
        n = iteration_number(label)
        return far_or_inf(state.iterations[label].get("far_pct")), 10**6 if n is None else n

    labels = [
        label
        for label, rec in state.iterations.items()
        if rec.get("far_pct") is not None
        and rec.get("best_ckpt_path")
        and (include_final or label != FINAL_AUTOML)
    ]
    return sorted(labels, key=order)


def pick_best(state: DeftState, *, include_final: bool = True) -> str | None:
    """The label with the lowest far_pct over baseline, all iterations (and final_automl)."""
    ranked = ranked_labels(state, include_final=include_final)
    return ranked[0] if ranked else None


def write_deliverable(
    state: DeftState, application: Any, *, images_dir: str | os.PathLike[str]
) -> dict[str, Any] | None:
    """Pick the best and write ``best_model.json`` + ``best_model_inference_spec.yaml``.

    Records ``state.data["best"]`` (saved). Returns the ``best_model.json`` content,
    or None when nothing has been evaluated yet.
    """
    label = pick_best(state)
    if label is None:
        return None
    rec = state.iterations[label]
    ckpt = Path(rec["best_ckpt_path"])
    threshold = float(rec["threshold"])
    spec_path = state.results_dir / INFERENCE_SPEC_FILE
    spec = application.inference_spec(ckpt, threshold)
    atomic_write_text(spec_path, yaml.safe_dump(spec, sort_keys=False))
    best = {
        "checkpoint": str(ckpt),
        "threshold": threshold,
        "far_pct": float(rec["far_pct"]),
        "iteration": label,
        "backbone": application.describe(ckpt).get("backbone"),
        "images_dir": str(images_dir),
        "training_spec": str(spec_path),
        "kpi_target": state.data.get("kpi_target"),
        "ranking": [
            {"iteration": lab, "far_pct": state.iterations[lab].get("far_pct")}
            for lab in ranked_labels(state)
        ],
    }
    atomic_write_json(state.results_dir / BEST_MODEL_FILE, best)
    state.data["best"] = {
        "label": label,
        "far_pct": best["far_pct"],
        "threshold": threshold,
        "best_ckpt_path": str(ckpt),
    }
    state.save()
    return best


# --- 1 → 2 ------------------------------------------------------------------------------


def merge_winning_spec(
    base_spec: str | os.PathLike[str], winning_params: dict[str, Any], out: str | os.PathLike[str]
) -> Path:
    """Deep-merge the winning HP dict (dotted keys allowed) onto the base spec; write ``out``."""
    spec = load_spec(base_spec)
    merged = deep_merge(spec.to_dict(), winning_params)
    save_spec(merged, out)
    return Path(out)


def seed_baseline(
    results_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    train_metric: float | None,
    kpi_target: str,
    max_iterations: int,
    config: dict[str, Any],
    paths: dict[str, str],
    source: str = "automl_phase1",
) -> DeftState:
    """Pre-seed a DEFT run with an already trained baseline (steps 2–3 of the handoff).

    The checkpoint is copied to ``<results>/baseline/train/best_val.pt`` (validated
    by loading it first); the state records the baseline's ``train`` stage as done
    and logs "baseline train skipped — reused Phase 1 winner" with duration 0.
    Re-running on an already seeded directory changes nothing.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable.
        UserError: the results directory already holds a different run.
    """
    root = Path(results_dir)
    if DeftState.exists(root):
        state = DeftState.load(root)
        if state.done(BASELINE, "train"):
            return state
        raise UserError(
            f"{root} already holds a DEFT run without a trained baseline; "
            "use an empty results directory for the handoff"
        )
    src = Path(checkpoint)
    load_checkpoint(src)  # raises CheckpointError with the fix
    train_dir = root / BASELINE / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    dest = train_dir / BEST_NAME
    atomic_copy(src, dest)
    latest = src.with_name(LATEST_NAME)
    if latest.is_file() and latest.resolve() != src.resolve():
        atomic_copy(latest, train_dir / LATEST_NAME)
    state = DeftState.create(
        root, kpi_target=kpi_target, max_iterations=max_iterations, config=config, paths=paths
    )
    state.commit(
        BASELINE,
        "train",
        fields={
            "best_ckpt_path": str(dest),
            "best_ckpt_kind": "best_val",
            "train_metric": train_metric,
            "source": source,
            "seeded_from": str(src),
            "train_csv": paths.get("train_csv"),
            "train_rows": _rows(paths.get("train_csv")),
        },
        summary="baseline train skipped — reused Phase 1 winner",
        duration_sec=0.0,
    )
    return state


def _rows(csv: str | None) -> int | None:
    if not csv or not Path(csv).is_file():
        return None
    with open(csv, encoding="utf-8") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


# --- 2 → 3 and final ----------------------------------------------------------------------


@dataclass(frozen=True)
class WarmStart:
    """What Phase 3 starts from."""

    label: str
    checkpoint: Path
    far_pct: float
    train_csv: Path
    n_final: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def final_training_set(state: DeftState) -> tuple[int, Path]:
    """(N_final, CSV): the last iteration whose assembled training set was committed."""
    best_n, csv = 0, state.data["config"]["paths"]["train_csv"]
    for label, rec in state.iterations.items():
        n = iteration_number(label)
        if n and state.done(label, "data_merge") and n > best_n:
            best_n, csv = n, rec["train_csv"]
    return best_n, Path(csv)


def select_warm_start(state: DeftState) -> WarmStart:
    """The lowest-far_pct DEFT iteration (never an earlier ``final_automl``).

    Raises:
        UserError: no iteration has been evaluated.
    """
    label = pick_best(state, include_final=False)
    if label is None:
        raise UserError(
            f"no evaluated DEFT iteration in {state.results_dir}; run the DEFT loop first"
        )
    rec = state.iterations[label]
    ckpt = Path(rec["best_ckpt_path"])
    if not ckpt.is_file():
        raise CheckpointError(f"warm-start checkpoint {ckpt} of {label} is missing; re-run DEFT")
    n_final, csv = final_training_set(state)
    return WarmStart(label, ckpt, float(rec["far_pct"]), csv, n_final)


def register_final_automl(
    state: DeftState,
    *,
    checkpoint: str | os.PathLike[str],
    far_pct: float | None,
    threshold: float | None,
    fields: dict[str, Any] | None = None,
    duration_sec: float = 0.0,
) -> None:
    """Record Phase 3's KPI-set result as ``iterations.final_automl`` (logged once)."""
    start = time.monotonic()
    rec = state.iteration(FINAL_AUTOML)
    rec.update(fields or {})
    rec.update(
        {
            "best_ckpt_path": str(checkpoint),
            "far_pct": far_pct,
            "threshold": threshold,
            "source": "automl_phase3",
            "status": "complete",
            "stage_completed": "evaluate",
        }
    )
    shown = "unavailable" if far_pct is None else f"{far_pct:.2f}%"
    state.log_event(
        FINAL_AUTOML,
        "evaluate",
        "ok",
        f"FAR={shown} threshold={threshold}",
        duration_sec or time.monotonic() - start,
    )
