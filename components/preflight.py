"""Component: the single gate's checks at the start of every run."""

from kfp.dsl import Markdown, Output


def preflight(
    workspace: str,
    results_dir: str,
    config: str,
    hpo_backend: str,
    phases: str,
    summary: Output[Markdown],
) -> str:
    """Re-run the pre-flight checks; fail the run on blocking problems.

    Args:
        workspace: the workspace root (the PVC mount path in a pod).
        results_dir: the run's results directory ('' = a new ``results/run_<ts>``).
        config: the run config YAML, relative to the workspace ('' = defaults).
        hpo_backend: ``optuna`` or ``katib`` ('' = the config's).
        phases: comma-separated phases this pipeline runs (``phase1,phase2,phase3``).
        summary: the nine-section summary, for the dashboard.

    Returns:
        The resolved results directory every later task uses.
    """
    from automl_deft.steps import preflight_step

    out = preflight_step(
        workspace,
        config,
        results_dir,
        hpo_backend,
        phases=[p for p in phases.split(",") if p],
        summary_md=summary.path,
    )
    return out.results_dir
