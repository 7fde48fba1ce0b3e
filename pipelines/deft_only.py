"""DEFT alone: the loop trains its own baseline from the workspace spec."""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components import Components
from pipelines._tasks import WORKSPACE_MOUNT, TaskSettings, parameters


def build(c: Components, t: TaskSettings) -> GraphComponent:
    """The ``deft-only`` pipeline, wired from ``c`` with the task settings ``t``."""

    @dsl.pipeline(
        name="deft-only",
        description="The DEFT data-improvement loop on its own (baseline trained in the loop).",
    )
    def deft_only(
        workspace: str = WORKSPACE_MOUNT,
        results_dir: str = "",
        config: str = "",
        pvc_name: str = "automl-deft-workspace",
        gpus: int = 1,
        accelerator_type: str = "nvidia.com/gpu",
        cpu_limit: str = "8",
        memory_limit: str = "32Gi",
        node_selector: dict = {},  # noqa: B006 - a KFP parameter default, never mutated
        tolerations: list = [],  # noqa: B006 - a KFP parameter default, never mutated
        credentials_secret: str = "automl-deft-credentials",
        export_format: str = "onnx",
    ) -> None:
        """Pre-flight, the loop, finalize, export (parameters as in ``automl_deft_pipeline``)."""
        p = parameters(locals())  # for the task settings in pipelines/_tasks.py
        pre = t.light(
            c.preflight(
                workspace=workspace,
                results_dir=results_dir,
                config=config,
                hpo_backend="",
                phases="phase2",
            ),
            p,
            "pre-flight",
        )
        run_dir = pre.outputs["Output"]
        deft = t.heavy(
            c.deft_loop(workspace=workspace, results_dir=run_dir, config=config),
            p,
            "Phase 2: DEFT loop",
        )
        final = t.light(
            c.finalize(workspace=workspace, results_dir=run_dir, config=config).after(deft),
            p,
            "finalize",
        )
        t.light(
            c.export_model(results_dir=run_dir, export_format=export_format).after(final),
            p,
            "export",
        )

    return deft_only
