"""Component: Phase 3 on the KPI set, pick-best, deliverable spec, trajectory."""

from typing import Optional

from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def finalize(
    workspace: str,
    results_dir: str,
    config: str,
    summary: Output[Markdown],
    metrics: Output[Metrics],
    deliverable: Output[Model],
    report: Output[HTML],
    phase1: Optional[dict] = None,
    phase3: Optional[dict] = None,
) -> dict:
    """Register Phase 3 (if it ran), pick the best of everything, publish the trajectory."""
    from automl_deft.steps import finalize_step, without_nones

    result = finalize_step(
        workspace,
        config,
        results_dir,
        phase1=phase1,
        phase3=phase3,
        out_md=summary.path,
        out_model=deliverable.path,
        out_report=report.path,
    )
    for step in result["trajectory"]:
        if step["far_pct"] is not None:
            metrics.log_metric(f"kpi_far_pct_{step['step']}", float(step["far_pct"]))
    if result["best"]:
        deliverable.metadata.update(without_nones(result["best"]))
    return without_nones(result)
