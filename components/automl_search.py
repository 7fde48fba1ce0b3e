"""Component: an AutoML search (Phase 1, or Phase 3 warm-started on the augmented set)."""

from typing import NamedTuple, Optional

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output


def automl_search(
    workspace: str,
    results_dir: str,
    config: str,
    phase: str,
    hpo_backend: str,
    gpus: int,
    accelerator_type: str,
    cpu_limit: str,
    memory_limit: str,
    pvc_name: str,
    node_selector: dict,
    tolerations: list,
    best_spec: Output[Artifact],
    best_model: Output[Model],
    metrics: Output[Metrics],
    report: Output[HTML],
    train_dataset: Optional[Input[Dataset]] = None,
    warm_start: Optional[Input[Model]] = None,
    centroid: Optional[Input[Artifact]] = None,
    trial_image: str = "",
) -> NamedTuple("Outputs", [("search", str)]):
    """Search hyperparameters on the validation set's FAR@100% recall.

    Args:
        workspace: the workspace root.
        results_dir: the run's results directory (from ``preflight``).
        config: the run config YAML ('' = defaults).
        phase: ``phase1`` or ``phase3``.
        hpo_backend: ``optuna`` (trials in this pod) or ``katib`` (trial Jobs).
        gpus, accelerator_type, cpu_limit, memory_limit, pvc_name, node_selector,
            tolerations: with
            ``katib``, what each trial Job gets (in-pod Optuna: this task's own pod).
        best_spec: the winning HP overrides (YAML; also in metadata).
        best_model: the winning checkpoint.
        metrics: the winner's validation far_pct / val_loss.
        report: the search's HTML page (history, importance, leaderboard).
        train_dataset: Phase 3: the augmented training set from DEFT.
        warm_start: Phase 3: every trial starts from this checkpoint.
        centroid: Phase 3: Phase 1's winning spec (the search is centred on it).
        trial_image: with ``katib``, the image trial Jobs run ('' = ``automl.katib.image``).
    """
    from collections import namedtuple

    from automl_deft.steps import automl_step, on_volume

    katib = {
        "gpus": gpus if accelerator_type == "nvidia.com/gpu" else 0,
        "cpu": cpu_limit,
        "memory": memory_limit,
        "pvc_name": pvc_name,
        "mount_path": workspace,
        "node_selector": node_selector,
        "tolerations": tolerations,
        "image": trial_image or None,
    }
    search = automl_step(
        workspace,
        config,
        results_dir,
        phase=phase,
        hpo_backend=hpo_backend,
        train_csv=on_volume(train_dataset, "source_csv", "train.csv"),
        warm_start=on_volume(warm_start, "checkpoint"),
        centroid_overrides=centroid.path if centroid else None,
        katib={k: v for k, v in katib.items() if v is not None} if hpo_backend == "katib" else None,
        out_spec=best_spec.path,
        out_model=best_model.path,
        out_report=report.path,
    )
    # Artifact metadata is a protobuf Struct (numbers become floats): readers that need
    # exact values parse the record's JSON text, carried as a string.
    best_spec.metadata.update({"phase": phase, "winner": search.dumps()})
    best_model.metadata.update({"phase": phase, "winner": search.dumps()})
    if search.checkpoint is not None:
        best_model.metadata.update({"checkpoint": search.checkpoint})
    for key, value in (("far_pct", search.far_pct), ("val_loss", search.val_loss)):
        if value is not None:
            metrics.log_metric(f"{phase}_val_{key}", value)
    return namedtuple("Outputs", ["search"])(search.dumps())
