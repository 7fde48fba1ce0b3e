"""``automl-deft compile``: pipeline IR YAML, Kubernetes-native manifests and a kustomize base.

Layout written under ``out`` (default ``manifests/``)::

    pipelines/<name>.yaml            IR YAML (upload in the dashboard, or `submit`)
    base/<name>.k8s.yaml             Pipeline + PipelineVersion (KFP ≥ 2.14, Kubernetes-native mode)
    base/rbac.yaml, workspace-pvc.yaml, kustomization.yaml, scheduled-run.example.yaml

Compilation is deterministic (the SDK version line aside), so the committed
files can be checked for drift by a test. The pipelines are passed in, built
with their image (``pipelines.build(name, image=…)``): this module never imports
``pipelines/`` itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl_deft.io import atomic_write_text


@dataclass(frozen=True)
class CompileOptions:
    """What differs between clusters (everything else is a run-time pipeline parameter)."""

    namespace: str = "kubeflow-user"
    service_account: str = "automl-deft"
    pvc_name: str = "automl-deft-workspace"
    pvc_size: str = "50Gi"
    storage_class: str | None = None
    version: str = "v1"
    """The PipelineVersion name suffix (``<pipeline>-<version>``)."""


def ir_yaml(pipeline: Callable[..., Any], name: str) -> str:
    """The pipeline's IR YAML as text."""
    from kfp import compiler

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path), pipeline_name=name)
        return path.read_text(encoding="utf-8")


def k8s_yaml(pipeline: Callable[..., Any], name: str, options: CompileOptions) -> str:
    """``Pipeline`` + ``PipelineVersion`` documents (``pipelines.kubeflow.org/v2beta1``)."""
    from kfp import compiler
    from kfp.compiler.compiler_utils import KubernetesManifestOptions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.k8s.yaml"
        compiler.Compiler().compile(
            pipeline,
            str(path),
            pipeline_name=name,
            kubernetes_manifest_format=True,
            kubernetes_manifest_options=KubernetesManifestOptions(
                pipeline_name=name,
                pipeline_version_name=f"{name}-{options.version}",
                namespace=options.namespace,
                include_pipeline_manifest=True,
            ),
        )
        return path.read_text(encoding="utf-8")


def compile_all(
    pipelines: Mapping[str, Callable[..., Any]],
    out: str | os.PathLike[str],
    options: CompileOptions | None = None,
) -> list[Path]:
    """Write every pipeline's IR and K8s-native YAML plus the kustomize base.

    Returns:
        Every file written.
    """
    from automl_deft.cluster.manifests import write_kustomize_base

    opts = options or CompileOptions()
    root = Path(out)
    written: list[Path] = []
    k8s_files = []
    for name, fn in sorted(pipelines.items()):
        ir = root / "pipelines" / f"{name}.yaml"
        atomic_write_text(ir, ir_yaml(fn, name))
        written.append(ir)
        k8s = root / "base" / f"{name}.k8s.yaml"
        atomic_write_text(k8s, k8s_yaml(fn, name, opts))
        written.append(k8s)
        k8s_files.append(k8s.name)
    written += write_kustomize_base(
        root / "base",
        namespace=opts.namespace,
        service_account=opts.service_account,
        pvc_name=opts.pvc_name,
        pvc_size=opts.pvc_size,
        storage_class=opts.storage_class,
        pipeline_files=k8s_files,
    )
    return written


def without_sdk_version(text: str) -> str:
    """IR YAML minus the ``sdkVersion`` line (what a drift check compares)."""
    return "\n".join(line for line in text.splitlines() if "sdkVersion:" not in line)
