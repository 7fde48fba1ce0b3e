"""Component: Phase 3 on the KPI set, pick-best, deliverable spec, trajectory."""

from kfp.dsl import HTML, ClassificationMetrics, Markdown, Metrics, Model, Output


def finalize(
    workspace: str,
    results_dir: str,
    config: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
    deliverable: Output[Model],
    report: Output[HTML],
    classification: Output[ClassificationMetrics],
    phase1: str = "",
    phase3: str = "",
) -> str:
    """Register Phase 3 (if it ran), pick the best of everything, publish the trajectory.

    Args:
        phase1, phase3: the searches' winner records (``SearchWinner`` JSON; '' = did not run).
        classification: the deliverable's confusion matrix at the threshold it ships with
            and its ROC curve, on the untouched hold-out (else the KPI set), for the KFP UI.

    Returns:
        The ``PipelineSummary`` record as JSON.
    """
    from automl_deft.kpi.classification import deliverable_classification
    from automl_deft.records import SearchWinner
    from automl_deft.steps import finalize_step

    result = finalize_step(
        workspace,
        config,
        results_dir,
        phase1=SearchWinner.loads(phase1) if phase1 else None,
        phase3=SearchWinner.loads(phase3) if phase3 else None,
        out_md=summary.path,
        out_model=deliverable.path,
        out_report=report.path,
    )
    for step in result.trajectory:
        if step.far_pct is not None:
            metrics.log_metric(f"kpi_far_pct_{step.step}", step.far_pct)
        if step.holdout is not None and step.holdout.far_pct is not None:
            metrics.log_metric(f"holdout_far_pct_{step.step}", step.holdout.far_pct)
    if result.far_pct_ci95 is not None:
        metrics.log_metric("kpi_far_pct_ci95_low", result.far_pct_ci95[0])
        metrics.log_metric("kpi_far_pct_ci95_high", result.far_pct_ci95[1])
    held = result.holdout
    if held is not None and held.far_pct is not None:
        metrics.log_metric("holdout_far_pct", held.far_pct)
        if held.ci95 is not None:
            metrics.log_metric("holdout_far_pct_ci95_low", held.ci95[0])
            metrics.log_metric("holdout_far_pct_ci95_high", held.ci95[1])
    if result.best is not None:
        deliverable.metadata.update({"deliverable": result.best.dumps()})
    shipped = deliverable_classification(results_dir)
    if shipped is not None:
        classification.log_confusion_matrix(
            list(shipped.confusion.categories), shipped.confusion.matrix
        )
        classification.log_roc_curve(shipped.roc.fpr, shipped.roc.tpr, shipped.roc.threshold)
        classification.metadata.update(
            {"scored_on": shipped.scored_on, "step": shipped.label, "threshold": shipped.threshold}
        )
    return result.dumps()
