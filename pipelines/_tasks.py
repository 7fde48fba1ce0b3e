"""How each task runs on a cluster (ignored by ``kfp.local``): resources, volume, retries.

Every task mounts the workspace volume at the same path (``workspace``), so the
disk state (search journals, ``deft_state.json``) is where every pod expects it;
a retried pod resumes from it. Caching is off everywhere: each task reads and
writes the run's state on the volume, which KFP's cache cannot see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.pipeline_channel import PipelineChannel

from automl_deft.credentials import CREDENTIALS

WORKSPACE_MOUNT = "/workspace"
"""Where the workspace PVC is mounted in every pod (pass it as ``workspace``)."""

HEAVY_RETRIES = 3
LIGHT_RETRIES = 2
BACKOFF = "60s"
BACKOFF_FACTOR = 2.0
LIGHT_CPU = "2"
LIGHT_MEMORY = "4Gi"
CREDENTIALS_SECRET_OPTIONAL = True


def parameters(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's parameters, from ``locals()`` at the top of a pipeline function.

    A pipeline function is built inside a factory, so its ``locals()`` also holds the
    closure's variables (the components, the task settings); only the parameters are
    KFP channels.
    """
    return {name: value for name, value in scope.items() if isinstance(value, PipelineChannel)}


@dataclass(frozen=True)
class TaskSettings:
    """The cluster settings every task gets; ``p`` is the pipeline's :func:`parameters`.

    Attributes:
        retries: retry failed pods (a preempted node, a flaky pull) with a backoff.
            ``automl-deft run`` builds without: on a laptop a failure is a real
            error, and re-running resumes from the state on disk.
    """

    retries: bool = True

    def light(self, task: PipelineTask, p: dict[str, Any], name: str) -> PipelineTask:
        """A bookkeeping task (or a Katib launcher): small CPU/memory, no GPU."""
        self._common(task, p, name, LIGHT_RETRIES)
        task.set_cpu_limit(LIGHT_CPU).set_memory_limit(LIGHT_MEMORY)
        return task

    def heavy(self, task: PipelineTask, p: dict[str, Any], name: str) -> PipelineTask:
        """A training task: GPUs, CPU, memory, node placement from the pipeline parameters."""
        self._common(task, p, name, HEAVY_RETRIES)
        task.set_accelerator_type(p["accelerator_type"]).set_accelerator_limit(p["gpus"])
        task.set_cpu_limit(p["cpu_limit"]).set_memory_limit(p["memory_limit"])
        kubernetes.add_node_selector_json(task, p["node_selector"])
        kubernetes.add_toleration_json(task, p["tolerations"])
        return task

    def _common(self, task: PipelineTask, p: dict[str, Any], name: str, retries: int) -> None:
        task.set_display_name(name)
        task.set_caching_options(enable_caching=False)
        if self.retries:
            task.set_retry(
                num_retries=retries, backoff_duration=BACKOFF, backoff_factor=BACKOFF_FACTOR
            )
        kubernetes.mount_pvc(task, pvc_name=p["pvc_name"], mount_path=WORKSPACE_MOUNT)
        kubernetes.use_secret_as_env(
            task,
            secret_name=p["credentials_secret"],
            secret_key_to_env={c.name: c.name for c in CREDENTIALS},
            optional=CREDENTIALS_SECRET_OPTIONAL,
        )
        kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "automl-deft")
