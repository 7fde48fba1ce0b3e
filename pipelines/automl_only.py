"""AutoML alone (Phase 1 + quality check), for models the DEFT loop does not apply to."""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components import Components
from pipelines._search import search
from pipelines._tasks import WORKSPACE_MOUNT, TaskSettings, parameters


def build(c: Components, t: TaskSettings) -> GraphComponent:
    """The ``automl-only`` pipeline, wired from ``c`` with the task settings ``t``."""

    @dsl.pipeline(
        name="automl-only",
        description="AutoML search judged by validation FAR at 100% recall, with the guards.",
    )
    def automl_only(
        workspace: str = WORKSPACE_MOUNT,
        results_dir: str = "",
        config: str = "",
        hpo_backend: str = "optuna",
        pvc_name: str = "automl-deft-workspace",
        gpus: int = 1,
        accelerator_type: str = "nvidia.com/gpu",
        cpu_limit: str = "8",
        memory_limit: str = "32Gi",
        node_selector: dict = {},  # noqa: B006 - a KFP parameter default, never mutated
        tolerations: list = [],  # noqa: B006 - a KFP parameter default, never mutated
        credentials_secret: str = "automl-deft-credentials",
    ) -> None:
        """Pre-flight, one search, the quality check (parameters as in ``automl_deft_pipeline``)."""
        p = parameters(locals())  # for the task settings in pipelines/_tasks.py
        pre = t.light(
            c.preflight(
                workspace=workspace,
                results_dir=results_dir,
                config=config,
                hpo_backend=hpo_backend,
                phases="phase1",
            ),
            p,
            "pre-flight",
        )
        p["results_dir"] = pre.outputs["Output"]
        t.light(c.quality_check(search=search(c, t, "phase1", p)), p, "quality check")

    return automl_only
