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

import os
import time
from pathlib import Path
from typing import Any

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.deliverable import final_training_set, pick_best, write_deliverable
from automl_deft.deft.state import DeftState
from automl_deft.errors import CheckpointError, UserError
from automl_deft.io import atomic_copy
from automl_deft.model.checkpoint import BEST_NAME, LATEST_NAME, load_checkpoint
from automl_deft.model.spec import load_spec, merge_overrides, save_spec
from automl_deft.phases import (
    BASELINE,
    FINAL_AUTOML,
    SOURCE_PHASE1,
    SOURCE_PHASE3,
)
from automl_deft.records import KPISummary, RunInputs, WarmStart

__all__ = [
    "AUTOML_SPEC_NAME",
    "final_training_set",
    "merge_winning_spec",
    "pick_best",
    "register_final_automl",
    "seed_baseline",
    "select_warm_start",
    "unseedable",
    "write_deliverable",
]

AUTOML_SPEC_NAME = "baseline_spec_automl.yaml"


# --- 1 → 2 ------------------------------------------------------------------------------


def merge_winning_spec(
    base_spec: str | os.PathLike[str], winning_params: dict[str, Any], out: str | os.PathLike[str]
) -> Path:
    """Deep-merge the winning HP dict (dotted keys allowed) onto the base spec; write ``out``."""
    spec = load_spec(base_spec)
    merged = merge_overrides(spec.to_dict(), winning_params)
    save_spec(merged, out)
    return Path(out)


def unseedable(results_dir: str | os.PathLike[str]) -> str:
    """Why the 1→2 handoff refuses ``results_dir``: it holds a run without a trained baseline."""
    return (
        f"{results_dir} already holds a DEFT run without a trained baseline; "
        "use an empty results directory for the handoff"
    )


def seed_baseline(
    results_dir: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    train_metric: float | None,
    config: DeftConfig,
    inputs: RunInputs,
    source: str = SOURCE_PHASE1,
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
        raise UserError(unseedable(root))
    src = Path(checkpoint)
    load_checkpoint(src)  # raises CheckpointError with the fix
    train_dir = root / BASELINE / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    dest = train_dir / BEST_NAME
    atomic_copy(src, dest)
    latest = src.with_name(LATEST_NAME)
    if latest.is_file() and latest.resolve() != src.resolve():
        atomic_copy(latest, train_dir / LATEST_NAME)
    state = DeftState.create(root, config=config, inputs=inputs)
    state.commit(
        BASELINE,
        "train",
        summary=(
            "baseline train skipped — reused Phase 1 winner"
            if source == SOURCE_PHASE1
            else f"baseline train skipped — reused a trained baseline ({source})"
        ),
        duration_sec=0.0,
        best_ckpt_path=dest,
        best_ckpt_kind="best_val",
        train_metric=train_metric,
        source=source,
        seeded_from=str(src),
        train_csv=inputs.train_csv,
        train_rows=_rows(inputs.train_csv),
    )
    return state


def _rows(csv: str | None) -> int | None:
    if not csv or not Path(csv).is_file():
        return None
    with open(csv, encoding="utf-8") as fh:
        return max(sum(1 for _ in fh) - 1, 0)


# --- 2 → 3 and final ----------------------------------------------------------------------


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
    ckpt = state.path_of(label, "best_ckpt_path")
    if ckpt is None or not ckpt.is_file():
        raise CheckpointError(f"warm-start checkpoint {ckpt} of {label} is missing; re-run DEFT")
    n_final, csv = final_training_set(state)
    assert rec.far_pct is not None
    return WarmStart(label, str(ckpt), float(rec.far_pct), str(csv), n_final)


def register_final_automl(
    state: DeftState,
    *,
    checkpoint: str | os.PathLike[str],
    kpi: KPISummary,
    inference_csv: str | os.PathLike[str],
    val_far_pct: float | None,
    warm_start_from: str | None,
    train_csv: str | None,
    rec_id: str | None,
    duration_sec: float = 0.0,
) -> None:
    """Record Phase 3's KPI-set result as ``iterations.final_automl`` (logged once)."""
    start = time.monotonic()
    state.update(
        FINAL_AUTOML,
        inference_csv=inference_csv,
        kpi=kpi,
        val_far_pct=val_far_pct,
        warm_start_from=warm_start_from,
        train_csv=train_csv,
        rec_id=rec_id,
        best_ckpt_path=checkpoint,
        far_pct=kpi.far_pct,
        threshold=kpi.threshold,
        source=SOURCE_PHASE3,
        status="complete",
        stage_completed="evaluate",
    )
    shown = "unavailable" if kpi.far_pct is None else f"{kpi.far_pct:.2f}%"
    state.log_event(
        FINAL_AUTOML,
        "evaluate",
        "ok",
        f"FAR={shown} threshold={kpi.threshold}",
        duration_sec or time.monotonic() - start,
    )
