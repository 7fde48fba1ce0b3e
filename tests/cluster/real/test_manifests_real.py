"""Every custom resource the project emits, through a real API server's validation.

``kubectl apply --dry-run=server --validate=strict``: the server decodes each
object against its CRD's schema (required fields, types, patterns) and refuses
unknown fields ("strict decoding error"), then stores nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from automl_deft.cluster import manifests as m
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.katib_backend import dry_run_experiment
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import default_aoi_space
from automl_deft.testing.apiserver import ApiServer

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[3]
CHECKED_IN = REPO / "manifests" / "base"
NS = "kubeflow-user"
PIPELINES = ("automl-deft", "automl-only", "deft-only")

NOT_SERVED = frozenset({"ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim"})
"""Core and RBAC kinds of the kustomize base. The apiextensions-apiserver serves only
CRDs and custom resources (no core/v1, no rbac.authorization.k8s.io), so these are
left out here; their shapes are checked against the Kubernetes client models in
tests/cluster/test_manifests.py."""


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _dry_run(server: ApiServer, text: str) -> subprocess.CompletedProcess[str]:
    return server.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "--filename=-", input=text, check=False
    )


def assert_accepted(server: ApiServer, text: str, what: str) -> list[str]:
    """Dry-run apply ``text``; every object must be accepted. Returns kubectl's lines."""
    proc = _dry_run(server, text)
    assert proc.returncode == 0, f"the API server refused {what}:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == len(_docs(text)), proc.stdout
    assert all(line.endswith("(server dry run)") for line in lines), proc.stdout
    return lines


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``automl-deft compile`` in a fresh interpreter, into a temp directory."""
    out = tmp_path_factory.mktemp("compiled")
    proc = subprocess.run(
        [sys.executable, "-m", "automl_deft.cli", "compile", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "base"


def _served_kinds(server: ApiServer) -> set[str]:
    """The kinds the server serves (``kubectl api-resources``: KIND is the last column)."""
    out = server.kubectl("api-resources", "--no-headers").stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


# --- Pipeline / PipelineVersion --------------------------------------------------------


@pytest.mark.parametrize("name", PIPELINES)
def test_freshly_compiled_pipeline_and_version_pass_strict_validation(
    apiserver: ApiServer, compiled: Path, name: str
) -> None:
    text = (compiled / f"{name}.k8s.yaml").read_text(encoding="utf-8")
    lines = assert_accepted(apiserver, text, f"the compiled {name}.k8s.yaml")
    assert lines == [
        f"pipeline.pipelines.kubeflow.org/{name} created (server dry run)",
        f"pipelineversion.pipelines.kubeflow.org/{name}-v1 created (server dry run)",
    ]


@pytest.mark.parametrize("name", PIPELINES)
def test_checked_in_pipeline_manifests_pass_strict_validation(
    apiserver: ApiServer, name: str
) -> None:
    path = CHECKED_IN / f"{name}.k8s.yaml"
    assert_accepted(apiserver, path.read_text(encoding="utf-8"), str(path))


def test_the_pipeline_version_crd_is_closed_and_needs_the_ir(
    apiserver: ApiServer, compiled: Path
) -> None:
    """The schema the compiled objects pass is strict: not a schema that takes anything."""
    _pipeline, version = _docs((compiled / "automl-deft.k8s.yaml").read_text(encoding="utf-8"))
    misspelt = {**version, "spec": {**version["spec"], "pipelineNmae": "automl-deft"}}
    proc = _dry_run(apiserver, yaml.safe_dump(misspelt))
    assert proc.returncode != 0
    assert 'strict decoding error: unknown field "spec.pipelineNmae"' in proc.stderr
    without_ir = {
        **version,
        "spec": {k: v for k, v in version["spec"].items() if k != "pipelineSpec"},
    }
    proc = _dry_run(apiserver, yaml.safe_dump(without_ir))
    assert proc.returncode != 0
    assert "spec.pipelineSpec: Required value" in proc.stderr


# --- the kustomize base ----------------------------------------------------------------


@pytest.mark.parametrize("which", ["fresh", "checked-in"])
def test_kustomize_base_custom_resources_pass_strict_validation(
    apiserver: ApiServer, compiled: Path, which: str
) -> None:
    base = compiled if which == "fresh" else CHECKED_IN
    built = _docs(apiserver.kubectl("kustomize", str(base)).stdout)
    served = _served_kinds(apiserver)
    custom = [d for d in built if d["kind"] in served]
    left_out = {d["kind"] for d in built} - served
    assert left_out <= NOT_SERVED, f"kinds neither served nor known to be core/RBAC: {left_out}"
    assert sorted((d["kind"], d["metadata"]["name"]) for d in custom) == sorted(
        [("Pipeline", n) for n in PIPELINES] + [("PipelineVersion", f"{n}-v1") for n in PIPELINES]
    )
    assert {d["metadata"]["namespace"] for d in custom} == {NS}
    assert_accepted(apiserver, yaml.safe_dump_all(custom), f"the {which} kustomize base")


# --- ScheduledWorkflow -----------------------------------------------------------------


def _scheduled_workflow() -> dict[str, Any]:
    return m.scheduled_workflow(
        "aoi-nightly",
        NS,
        cron="0 0 2 * * *",
        pipeline_id="7d3a5c1e-0f43-4d6b-9a57-2f1f7c8e9b10",
        pipeline_version_id="1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b",
        experiment_id="a0b1c2d3-e4f5-4a6b-8c7d-9e0f1a2b3c4d",
        parameters={"workspace": "/workspace", "max_trials": 8, "gpus": 1},
        service_account="automl-deft",
        start_time="2026-01-01T00:00:00Z",
    )


def test_scheduled_workflow_from_the_builder_passes_strict_validation(
    apiserver: ApiServer,
) -> None:
    text = m.dump_yaml([_scheduled_workflow()])
    assert assert_accepted(apiserver, text, "scheduled_workflow()") == [
        "scheduledworkflow.kubeflow.org/aoi-nightly created (server dry run)"
    ]


@pytest.mark.parametrize("which", ["fresh", "checked-in"])
def test_scheduled_run_example_passes_strict_validation(
    apiserver: ApiServer, compiled: Path, which: str
) -> None:
    base = compiled if which == "fresh" else CHECKED_IN
    text = (base / m.SCHEDULE_EXAMPLE_FILE).read_text(encoding="utf-8")
    assert [d["kind"] for d in _docs(text)] == ["ScheduledWorkflow"]
    assert_accepted(apiserver, text, f"the {which} {m.SCHEDULE_EXAMPLE_FILE}")


def test_a_scheduled_workflow_without_status_is_refused(apiserver: ApiServer) -> None:
    """What every KFP CRD from 2.5 to 2.17 does, and why the builder writes ``status: {}``."""
    swf = _scheduled_workflow()
    del swf["status"]
    proc = _dry_run(apiserver, yaml.safe_dump(swf))
    assert proc.returncode != 0
    assert "status: Required value" in proc.stderr


def test_a_misspelt_scheduled_workflow_field_is_refused(apiserver: ApiServer) -> None:
    swf = _scheduled_workflow()
    swf["spec"]["maxConcurency"] = swf["spec"].pop("maxConcurrency")
    proc = _dry_run(apiserver, yaml.safe_dump(swf))
    assert proc.returncode != 0
    assert 'strict decoding error: unknown field "spec.maxConcurency"' in proc.stderr


# --- the Katib Experiment --------------------------------------------------------------


def test_katib_experiment_from_the_builder_is_accepted(apiserver: ApiServer) -> None:
    exp = km.build_experiment(
        "automl-deft-real",
        default_aoi_space(),
        km.KatibSettings(namespace="team-a"),
        problem_path="/workspace/results/phase1/search_problem.json",
    )
    assert assert_accepted(apiserver, km.experiment_yaml(exp), "build_experiment()") == [
        "experiment.kubeflow.org/automl-deft-real created (server dry run)"
    ]


def test_katib_experiment_of_the_dry_run_is_accepted(
    apiserver: ApiServer, tiny_ws_copy: Path
) -> None:
    """``automl --backend katib --dry-run``'s Experiment, built the search's own way."""
    cfg = AutomlConfig(backend="katib", max_trials=3, katib={"gpus": 0, "namespace": "team-a"})
    text = dry_run_experiment(tiny_ws_copy, cfg, results_dir=tiny_ws_copy / "results" / "real")
    (exp,) = _docs(text)
    assert exp["metadata"]["namespace"] == "team-a"
    assert_accepted(apiserver, text, "the Katib dry run's Experiment")
