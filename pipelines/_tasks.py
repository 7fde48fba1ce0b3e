"""How each task runs on a cluster (ignored by ``kfp.local``): resources, volume, retries.

Every task mounts the workspace volume at the same path (``workspace``), so the
disk state (search journals, ``deft_state.json``) is where every pod expects it;
a retried pod resumes from it. Caching is off everywhere: each task reads and
writes the run's state on the volume, which KFP's cache cannot see.
"""

from __future__ import annotations

import os
from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask

from automl_deft.cluster.credentials import CREDENTIALS

WORKSPACE_MOUNT = "/workspace"
"""Where the workspace PVC is mounted in every pod (pass it as ``workspace``)."""

NO_RETRY_ENV = "AUTOML_DEFT_NO_RETRY"
"""Set (``automl-deft run`` does) to build the pipeline without retries: on a laptop a
failure is a real error, not a preempted node, and the run resumes when re-run."""
HEAVY_RETRIES = 3
LIGHT_RETRIES = 2
BACKOFF = "60s"
BACKOFF_FACTOR = 2.0
LIGHT_CPU = "2"
LIGHT_MEMORY = "4Gi"
CREDENTIALS_SECRET_OPTIONAL = True


def _common(task: PipelineTask, p: dict[str, Any], name: str, retries: int) -> PipelineTask:
    task.set_display_name(name)
    task.set_caching_options(enable_caching=False)
    if not os.environ.get(NO_RETRY_ENV):
        task.set_retry(num_retries=retries, backoff_duration=BACKOFF, backoff_factor=BACKOFF_FACTOR)
    kubernetes.mount_pvc(task, pvc_name=p["pvc_name"], mount_path=WORKSPACE_MOUNT)
    kubernetes.use_secret_as_env(
        task,
        secret_name=p["credentials_secret"],
        secret_key_to_env={c.name: c.name for c in CREDENTIALS},
        optional=CREDENTIALS_SECRET_OPTIONAL,
    )
    kubernetes.add_pod_label(task, "app.kubernetes.io/part-of", "automl-deft")
    return task


def light(task: PipelineTask, p: dict[str, Any], name: str) -> PipelineTask:
    """A bookkeeping task: small CPU/memory, no GPU."""
    _common(task, p, name, LIGHT_RETRIES)
    task.set_cpu_limit(LIGHT_CPU).set_memory_limit(LIGHT_MEMORY)
    return task


def launcher(task: PipelineTask, p: dict[str, Any], name: str, image: str) -> PipelineTask:
    """A Katib launcher: light itself, its trial Jobs get the GPUs (needs the RBAC)."""
    light(task, p, name)
    task.set_env_variable("AUTOML_DEFT_IMAGE", image)
    return task


def heavy(task: PipelineTask, p: dict[str, Any], name: str) -> PipelineTask:
    """A training task: GPUs, CPU, memory, node placement from the pipeline parameters."""
    _common(task, p, name, HEAVY_RETRIES)
    task.set_accelerator_type(p["accelerator_type"]).set_accelerator_limit(p["gpus"])
    task.set_cpu_limit(p["cpu_limit"]).set_memory_limit(p["memory_limit"])
    kubernetes.add_node_selector_json(task, p["node_selector"])
    kubernetes.add_toleration_json(task, p["tolerations"])
    return task
