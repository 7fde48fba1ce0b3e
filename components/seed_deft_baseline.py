"""Component: handoff Phase 1 → Phase 2 (the winner becomes DEFT's baseline)."""

from typing import NamedTuple

from kfp.dsl import Artifact, Output


def seed_deft_baseline(
    workspace: str,
    results_dir: str,
    config: str,
    search: str,
    winning_spec: Output[Artifact],
) -> NamedTuple("Outputs", [("results_dir", str), ("handoff", str)]):
    """Merged spec, copied checkpoint, pre-seeded ``deft_state.json`` and log line.

    Args:
        workspace: the workspace root.
        results_dir: the run's results directory.
        config: the run config YAML ('' = defaults).
        search: the checked Phase 1 winner (``SearchWinner`` JSON, from ``quality_check``).
        winning_spec: the winning HP overrides as YAML (Phase 3's centroid); the
            merged spec path and the HPs are in its metadata.

    Returns:
        The pre-seeded results directory (for the DEFT task) and the handoff record.
    """
    from collections import namedtuple

    import yaml

    from automl_deft.records import SearchWinner
    from automl_deft.steps import seed_deft_baseline_step

    handoff = seed_deft_baseline_step(workspace, config, results_dir, SearchWinner.loads(search))
    with open(winning_spec.path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(handoff.specs, fh, sort_keys=True)
    # Artifact metadata is a protobuf Struct (numbers become floats): the record's exact
    # text rides along as a string.
    winning_spec.metadata.update({"merged_spec": handoff.spec, "handoff": handoff.dumps()})
    out = namedtuple("Outputs", ["results_dir", "handoff"])
    return out(handoff.results_dir, handoff.dumps())
