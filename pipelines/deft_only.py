"""DEFT alone: the loop trains its own baseline from the workspace spec."""

from kfp import dsl

from components import deft_loop, finalize, preflight
from pipelines._tasks import WORKSPACE_MOUNT, heavy, light


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
) -> None:
    """Pre-flight, the loop, finalize (parameters as in ``automl_deft_pipeline``)."""
    p = dict(locals())  # the parameters, for the task settings in pipelines/_tasks.py
    pre = light(
        preflight(
            workspace=workspace,
            results_dir=results_dir,
            config=config,
            hpo_backend="",
            phases="deft",
        ),
        p,
        "pre-flight",
    )
    deft = heavy(
        deft_loop(workspace=workspace, results_dir=pre.outputs["Output"], config=config),
        p,
        "Phase 2: DEFT loop",
    )
    light(
        finalize(workspace=workspace, results_dir=pre.outputs["Output"], config=config).after(deft),
        p,
        "finalize",
    )
