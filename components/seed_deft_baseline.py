"""Component: handoff Phase 1 → Phase 2 (the winner becomes DEFT's baseline)."""

from kfp import dsl

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def seed_deft_baseline(workspace: str, results_dir: str, config: str, search: dict) -> str:
    """Merged spec, copied checkpoint, pre-seeded ``deft_state.json`` and log line.

    Returns:
        The results directory (pre-seeded), for the DEFT task.
    """
    from automl_deft.steps import seed_deft_baseline_step

    return seed_deft_baseline_step(workspace, config, results_dir, search)["results_dir"]
