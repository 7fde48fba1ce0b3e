"""One AutoML search task, branched on the backend (wiring shared by the pipelines)."""

from __future__ import annotations

from typing import Any

from kfp import dsl

from components import Components
from pipelines._tasks import TaskSettings


def search(c: Components, t: TaskSettings, phase: str, p: dict[str, Any], **artifacts: Any) -> Any:
    """``automl_search`` in-pod with GPUs (Optuna), or as a light Katib launcher.

    The launcher's trial Jobs run the pipeline's own image (``trial_image``); they
    get the GPUs, so the launcher itself is a light task (it needs the Katib RBAC).

    Returns:
        The winning search record's JSON (``dsl.OneOf`` over the two branches).
    """
    args = {
        "workspace": p["workspace"],
        "results_dir": p["results_dir"],
        "config": p["config"],
        "phase": phase,
        "hpo_backend": p["hpo_backend"],
        "gpus": p["gpus"],
        "accelerator_type": p["accelerator_type"],
        "cpu_limit": p["cpu_limit"],
        "memory_limit": p["memory_limit"],
        "pvc_name": p["pvc_name"],
        "node_selector": p["node_selector"],
        "tolerations": p["tolerations"],
        **artifacts,
    }
    with dsl.If(p["hpo_backend"] == "katib", name=f"{phase}-katib"):
        katib = t.light(
            c.automl_search(**args, trial_image=c.image), p, f"{phase}: AutoML (Katib trials)"
        )
    with dsl.Else(name=f"{phase}-in-pod"):
        in_pod = t.heavy(c.automl_search(**args), p, f"{phase}: AutoML (Optuna)")
    return dsl.OneOf(katib.outputs["search"], in_pod.outputs["search"])
