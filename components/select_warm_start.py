"""Component: handoff Phase 2 → Phase 3 (the warm-start checkpoint)."""

from kfp.dsl import Model, Output


def select_warm_start(results_dir: str, warm_start: Output[Model]) -> str:
    """The lowest-far_pct DEFT iteration's checkpoint (never an earlier final_automl).

    Returns:
        The ``WarmStart`` record as JSON.
    """
    from automl_deft.io import atomic_copy
    from automl_deft.steps import select_warm_start_step

    chosen = select_warm_start_step(results_dir)
    atomic_copy(chosen.checkpoint, warm_start.path)
    warm_start.metadata.update({"checkpoint": chosen.checkpoint, "iteration": chosen.label})
    return chosen.dumps()
