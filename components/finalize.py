"""Component: Phase 3 on the KPI set, pick-best, deliverable spec, trajectory."""

from kfp.dsl import HTML, Markdown, Metrics, Model, Output


def finalize(
    workspace: str,
    results_dir: str,
    config: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
    deliverable: Output[Model],
    report: Output[HTML],
    phase1: str = "",
    phase3: str = "",
) -> str:
    """Register Phase 3 (if it ran), pick the best of everything, publish the trajectory.

    Args:
        phase1, phase3: the searches' winner records (``SearchWinner`` JSON; '' = did not run).

    Returns:
        The ``PipelineSummary`` record as JSON.
    """
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
    if result.best is not None:
        deliverable.metadata.update({"deliverable": result.best.dumps()})
    return result.dumps()
