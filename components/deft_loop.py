"""Component: Phase 2, the DEFT loop (resumable from its state on the workspace volume)."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Metrics, Model, Output


def deft_loop(
    workspace: str,
    results_dir: str,
    config: str,
    augmented: Output[Dataset],
    best_model: Output[Model],
    report: Output[HTML],
    metrics: Output[Metrics],
) -> NamedTuple(
    "Outputs",
    [("outcome", str), ("hard_stopped", bool), ("kpi_met", bool), ("run_phase3", bool)],
):
    """Run or resume the loop; publish the augmented set, best checkpoint and report."""
    from collections import namedtuple

    from automl_deft.steps import deft_step

    outcome = deft_step(
        workspace,
        config,
        results_dir,
        out_dataset=augmented.path,
        out_model=best_model.path,
        out_report=report.path,
    )
    augmented.metadata.update({"n_final": outcome.n_final, "source_csv": outcome.final_train_csv})
    if outcome.best_label is not None:
        best_model.metadata.update({"iteration": outcome.best_label})
    if outcome.best_far_pct is not None:
        best_model.metadata.update({"far_pct": outcome.best_far_pct})
        metrics.log_metric("deft_best_far_pct", outcome.best_far_pct)
    out = namedtuple("Outputs", ["outcome", "hard_stopped", "kpi_met", "run_phase3"])
    return out(outcome.dumps(), outcome.hard_stopped, outcome.kpi_met, outcome.run_phase3)
