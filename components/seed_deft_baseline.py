"""Component: handoff Phase 1 → Phase 2 (the winner becomes DEFT's baseline)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def seed_deft_baseline(
    workspace: str,
    results_dir: str,
    config: str,
    search: dict,
    winning_spec: Output[Artifact],
) -> NamedTuple("Outputs", [("results_dir", str), ("handoff", dict)]):
    """Merged spec, copied checkpoint, pre-seeded ``deft_state.json`` and log line.

    Args:
        workspace: the workspace root.
        results_dir: the run's results directory.
        config: the run config YAML ('' = defaults).
        search: the checked Phase 1 result (from ``quality_check``).
        winning_spec: the winning HP overrides as YAML (Phase 3's centroid); the
            merged spec path and the HPs are in its metadata.

    Returns:
        The pre-seeded results directory (for the DEFT task) and the handoff record.
    """
    from collections import namedtuple

    import yaml

    from automl_deft.steps import seed_deft_baseline_step, without_nones

    handoff = seed_deft_baseline_step(workspace, config, results_dir, search)
    with open(winning_spec.path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(handoff["specs"], fh, sort_keys=True)
    winning_spec.metadata.update(
        without_nones({"specs": handoff["specs"], "merged_spec": handoff["spec"]})
    )
    out = namedtuple("Outputs", ["results_dir", "handoff"])
    return out(handoff["results_dir"], without_nones(handoff))
