"""The loop's result: pick-best over every evaluated checkpoint, and the deliverable files.

``best_model.json`` (:class:`~automl_deft.records.Deliverable`) and
``best_model_inference_spec.yaml`` name the lowest-far_pct checkpoint over the
baseline, every iteration and ``final_automl`` (the pick-best safety net), even
when a later iteration or Phase 3 regressed. The ranking itself is
:func:`automl_deft.records.rank_by_far`, the one the report and the handoffs use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from automl_deft.deft.state import DeftState
from automl_deft.io import atomic_write_csv, atomic_write_text
from automl_deft.layout import relocated_rows, was_moved
from automl_deft.phases import iteration_number
from automl_deft.records import BestPointer, Deliverable, RankEntry, rank_by_far
from automl_deft.workspace import read_dataset_csv
from automl_deft.yamlio import dump_yaml

__all__ = ["chosen_because", "final_training_set", "pick_best", "write_deliverable"]


def pick_best(state: DeftState, *, include_final: bool = True) -> str | None:
    """The label with the lowest far_pct over baseline, all iterations (and final_automl)."""
    ranked = rank_by_far(state.iterations, include_final=include_final)
    return ranked[0] if ranked else None


def write_deliverable(state: DeftState, application: Any) -> Deliverable | None:
    """Pick the best and write ``best_model.json`` + ``best_model_inference_spec.yaml``.

    Records ``state.best`` (saved). Paths in ``best_model.json`` are relative to the
    run directory. Returns the deliverable, or None when nothing has been evaluated yet.
    """
    ranked = rank_by_far(state.iterations)
    if not ranked:
        return None
    label = ranked[0]
    rec = state.iterations[label]
    layout = state.layout
    ckpt = state.path_of(label, "best_ckpt_path")
    assert ckpt is not None and rec.threshold is not None and rec.far_pct is not None
    threshold = float(rec.threshold)
    spec = {
        "checkpoint": str(layout.rel(ckpt)),
        **application.inference_spec(ckpt, threshold),
    }
    atomic_write_text(layout.inference_spec, dump_yaml(spec))
    best = Deliverable(
        checkpoint=str(layout.rel(ckpt)),
        threshold=threshold,
        far_pct=float(rec.far_pct),
        iteration=label,
        backbone=application.describe(ckpt).get("backbone"),
        images_dir=str(state.inputs.images_dir),
        inference_spec=str(layout.rel(layout.inference_spec)),
        kpi_target=state.kpi_target,
        ranking=[RankEntry(lab, state.iterations[lab].far_pct) for lab in ranked],
        chosen_because=chosen_because(state, ranked),
    )
    best.write(layout.deliverable)
    state.best = BestPointer(
        label=label, far_pct=best.far_pct, threshold=threshold, best_ckpt_path=best.checkpoint
    )
    state.save()
    return best


def chosen_because(state: DeftState, ranked: list[str]) -> str:
    """One sentence: why pick-best chose ``ranked[0]`` (the rule and the runner-up)."""
    first = state.iterations[ranked[0]]
    why = (
        f"lowest FAR at 100% recall on the KPI (steering) set of {len(ranked)} evaluated "
        f"model(s): {ranked[0]} {first.far_pct:.2f}%"
    )
    if len(ranked) > 1:
        second = state.iterations[ranked[1]]
        if second.far_pct == first.far_pct:
            why += f", tied with {ranked[1]}; ties keep the earlier step"
        else:
            why += f" vs runner-up {ranked[1]} {second.far_pct:.2f}%"
    return why


def final_training_set(state: DeftState) -> tuple[int, Path]:
    """(N_final, CSV): the last iteration whose assembled training set was committed.

    In a run moved since it was made, the CSV's generated rows name images in the old
    place; then a copy pointing at the current place (``…_relocated.csv``, beside the
    original, written atomically) is what Phase 3 is handed.
    """
    best_n, csv = 0, state.inputs.path("train_csv")
    for label in state.iterations:
        n = iteration_number(label)
        if n and state.done(label, "data_merge") and n > best_n:
            path = state.path_of(label, "train_csv")
            if path is not None:
                best_n, csv = n, path
    if best_n == 0 or not was_moved(state.created_in, state.results_dir):
        return best_n, csv
    frame = read_dataset_csv(csv, role=f"iter{best_n} training")
    images = state.inputs.path("images_dir")
    relocated = csv.with_name(csv.stem + "_relocated.csv")
    atomic_write_csv(relocated, relocated_rows(frame, images, state.created_in, state.results_dir))
    return best_n, relocated
