"""The product: all three phases, chained by the workflow's handoffs."""

from kfp import dsl
from kfp.dsl.graph_component import GraphComponent

from components import Components
from pipelines._search import search
from pipelines._tasks import WORKSPACE_MOUNT, TaskSettings, parameters


def build(c: Components, t: TaskSettings) -> GraphComponent:
    """The ``automl-deft`` pipeline, wired from ``c`` with the task settings ``t``."""

    @dsl.pipeline(
        name="automl-deft",
        description="Phase 1 AutoML → DEFT data-improvement loop → warm-started Phase 3 AutoML, "
        "judged by FAR at 100% recall on the KPI test set.",
    )
    def automl_deft_pipeline(
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
        export_format: str = "onnx",
    ) -> None:
        """Run the three phases on a workspace.

        Args:
            workspace: the workspace root; on a cluster, where the PVC is mounted.
            results_dir: the run's results directory ('' = ``results/run_<ts>``; an
                existing one resumes).
            config: the run config YAML, relative to the workspace ('' = defaults).
            hpo_backend: ``optuna`` (trials inside the task's pod) or ``katib``.
            pvc_name: the workspace PersistentVolumeClaim.
            gpus, accelerator_type, cpu_limit, memory_limit: per training task (or
                per Katib trial).
            node_selector, tolerations: where training pods may run.
            credentials_secret: a Secret whose keys become env vars (optional).
            export_format: the deliverable's package as the last step: ``onnx``,
                ``torchscript`` or ``none``.
        """
        p = parameters(locals())  # for the task settings in pipelines/_tasks.py
        pre = t.light(
            c.preflight(
                workspace=workspace,
                results_dir=results_dir,
                config=config,
                hpo_backend=hpo_backend,
                phases="phase1,phase2,phase3",
            ),
            p,
            "pre-flight",
        )
        run_dir = pre.outputs["Output"]
        p["results_dir"] = run_dir
        phase1 = search(c, t, "phase1", p)
        checked = t.light(c.quality_check(search=phase1), p, "quality check")
        seeded = t.light(
            c.seed_deft_baseline(
                workspace=workspace,
                results_dir=run_dir,
                config=config,
                search=checked.outputs["search"],
            ),
            p,
            "handoff 1→2",
        )
        deft = t.heavy(
            c.deft_loop(
                workspace=workspace, results_dir=seeded.outputs["results_dir"], config=config
            ),
            p,
            "Phase 2: DEFT loop",
        )
        with dsl.If(deft.outputs["run_phase3"] == True, name="phase3"):  # noqa: E712 - KFP condition
            warm = t.light(c.select_warm_start(results_dir=run_dir).after(deft), p, "handoff 2→3")
            phase3 = search(
                c,
                t,
                "phase3",
                p,
                train_dataset=deft.outputs["augmented"],
                warm_start=warm.outputs["warm_start"],
                centroid=seeded.outputs["winning_spec"],
            )
            final = t.light(
                c.finalize(
                    workspace=workspace,
                    results_dir=run_dir,
                    config=config,
                    phase1=checked.outputs["search"],
                    phase3=phase3,
                ),
                p,
                "finalize",
            )
            t.light(
                c.export_model(results_dir=run_dir, export_format=export_format).after(final),
                p,
                "export",
            )
        with dsl.Else(name="phase3-skipped"):
            final = t.light(
                c.finalize(
                    workspace=workspace,
                    results_dir=run_dir,
                    config=config,
                    phase1=checked.outputs["search"],
                ).after(deft),
                p,
                "finalize (Phase 3 skipped: DEFT hard-stopped or phase3.enabled false)",
            )
            t.light(
                c.export_model(results_dir=run_dir, export_format=export_format).after(final),
                p,
                "export",
            )

    return automl_deft_pipeline
