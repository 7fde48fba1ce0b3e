"""The compiled pipelines: in sync with manifests/, and what a cluster run relies on.

The IR YAML is parsed (never grepped) and every ``{{$.inputs.parameters[…]}}`` /
``componentInputParameter`` reference is followed up through the nested DAGs
(conditions, branches) to the pipeline parameter it comes from, so "the GPU count
is the ``gpus`` parameter" is checked as a binding, not as a string. The pipelines
are built with explicit settings (``pipelines.build(name, image=…, retries=…)``):
nothing here sets or reads an environment variable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import pipelines
from automl_deft.cli import cli
from automl_deft.cli.options import PIPELINE_NAMES
from automl_deft.cluster import client
from automl_deft.cluster.compile import compile_all, ir_yaml, without_sdk_version
from automl_deft.cluster.local_run import retried_tasks
from automl_deft.cluster.manifests import parse_objects
from automl_deft.credentials import CREDENTIALS
from automl_deft.run_config import DEFAULT_IMAGE
from automl_deft.testing.fake_kfp import FakeKfpClient

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
FIX = "run `automl-deft compile` and commit manifests/"
IMAGE = "registry.example/x:1"
HOST = "https://kfp.example.com/pipeline"
SIDE_CHANNELS = ("AUTOML_DEFT_IMAGE", "AUTOML_DEFT_NO_RETRY", "AUTOML_DEFT_ERROR_FILE")
"""Environment variables that once carried settings into the pipeline: gone for good."""

KFP_API = "pipelines.kubeflow.org/v2beta1"
WORKSPACE_MOUNT = "/workspace"
HEAVY_RETRIES, LIGHT_RETRIES = 3, 2
LIGHT_CPU, LIGHT_MEMORY = "2", "4Gi"
KATIB = "hpo_backend == 'katib'"
IN_POD = f"!({KATIB})"
PHASE3 = "deft-loop.run_phase3 == true"

_PLACEHOLDER = re.compile(r"^\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}$")
_CONDITION_INPUT = re.compile(r"inputs\.parameter_values\['([^']+)'\]")


# --- reading the IR --------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One container task of a compiled pipeline, with its bindings resolved.

    ``sources`` maps each task input parameter to where its value comes from: a
    pipeline parameter name (``gpus``), a task output (``deft-loop.run_phase3``)
    or a constant (``const:phase1``); ``scope`` does the same for the enclosing
    DAG's inputs, which the platform (``kubernetes``) settings refer to.
    ``conditions`` are the enclosing ``dsl.If`` conditions, outermost first,
    written with those sources.
    """

    name: str
    spec: dict[str, Any]
    container: dict[str, Any]
    platform: dict[str, Any]
    sources: dict[str, str]
    scope: dict[str, str]
    conditions: tuple[str, ...]

    def source(self, value: Any) -> Any:
        """The source of a ``{{$.inputs.parameters['x']}}`` placeholder (else ``value``)."""
        match = _PLACEHOLDER.match(str(value))
        return self.sources[match.group(1)] if match else value

    def platform_source(self, ref: dict[str, str]) -> str:
        """The source of a platform setting's ``{componentInputParameter: x}``."""
        return self.scope[ref["componentInputParameter"]]

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.container.get("resources", {}))

    @property
    def env(self) -> dict[str, str]:
        return {e["name"]: e["value"] for e in self.container.get("env", [])}

    @property
    def phase(self) -> str | None:
        return self.sources.get("phase", "").removeprefix("const:") or None


def _source(binding: dict[str, Any], scope: dict[str, str]) -> str:
    if "componentInputParameter" in binding:
        return scope[binding["componentInputParameter"]]
    if "taskOutputParameter" in binding:
        out = binding["taskOutputParameter"]
        return f"{out['producerTask']}.{out['outputParameterKey']}"
    if "runtimeValue" in binding:
        return f"const:{binding['runtimeValue']['constant']}"
    return repr(binding)


def container_tasks(text: str) -> list[Task]:
    """Every container task in the IR YAML ``text`` (nested DAGs included)."""
    spec, platform = yaml.safe_load_all(text)
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    root_params = spec["root"]["inputDefinitions"]["parameters"]
    out: list[Task] = []

    def walk(dag: dict[str, Any], scope: dict[str, str], conditions: tuple[str, ...]) -> None:
        for name, task in sorted(dag["tasks"].items()):
            params = task.get("inputs", {}).get("parameters", {})
            sources = {k: _source(v, scope) for k, v in params.items()}
            here = conditions
            if "triggerPolicy" in task:
                cond = task["triggerPolicy"]["condition"]
                for n in _CONDITION_INPUT.findall(cond):
                    cond = cond.replace(f"inputs.parameter_values['{n}']", sources[n])
                here += (cond,)
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"], sources, here)
            else:
                label = component["executorLabel"]
                container = executors[label]["container"]
                out.append(Task(name, task, container, k8s.get(label, {}), sources, scope, here))

    walk(spec["root"]["dag"], {p: p for p in root_params}, ())
    return out


def _component(task: Task) -> str:
    return str(task.spec["componentRef"]["name"])


def _searches(tasks: list[Task]) -> list[Task]:
    return [t for t in tasks if _component(t).startswith("comp-automl-search")]


def _is_heavy(task: Task) -> bool:
    """What the pipeline should run on a GPU node: the loop and the in-pod searches."""
    if _component(task).startswith("comp-deft-loop"):
        return True
    return _component(task).startswith("comp-automl-search") and KATIB not in task.conditions


def _dags(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every DAG task of the IR YAML ``text`` (container tasks and nested DAGs)."""
    spec = next(yaml.safe_load_all(text))
    dags = [("root", spec["root"]["dag"])]
    dags += [(n, c["dag"]) for n, c in sorted(spec["components"].items()) if "dag" in c]
    for owner, dag in dags:
        for name, task in sorted(dag["tasks"].items()):
            yield f"{owner}/{name}", task


@pytest.fixture(scope="module")
def compiled() -> dict[str, str]:
    """Each pipeline's IR YAML, built with the defaults and compiled in this process."""
    return {name: ir_yaml(pipelines.build(name), name) for name in pipelines.NAMES}


@pytest.fixture(scope="module")
def tasks(compiled: dict[str, str]) -> dict[str, list[Task]]:
    return {name: container_tasks(text) for name, text in compiled.items()}


def _all_tasks(tasks: dict[str, list[Task]]) -> Iterator[tuple[str, Task]]:
    for name, ts in sorted(tasks.items()):
        for t in ts:
            yield name, t


# --- in sync with manifests/ -----------------------------------------------------------


def test_compiling_twice_gives_the_same_yaml(compiled: dict[str, str]) -> None:
    for name in pipelines.NAMES:
        again = ir_yaml(pipelines.build(name), name)
        assert without_sdk_version(again) == without_sdk_version(compiled[name]), (
            f"{name}: compiling twice gave different YAML; the compiled pipeline must be "
            "deterministic"
        )


def test_committed_manifests_match_a_fresh_compile(tmp_path: Path) -> None:
    written = compile_all({name: pipelines.build(name) for name in pipelines.NAMES}, tmp_path)
    fresh = {p.relative_to(tmp_path).as_posix() for p in written}
    committed = {
        p.relative_to(MANIFESTS).as_posix() for p in MANIFESTS.rglob("*.yaml") if p.is_file()
    }
    assert committed == fresh, f"manifests/ holds other files than a compile writes; {FIX}"
    for rel in sorted(fresh):
        new = (tmp_path / rel).read_text(encoding="utf-8")
        old = (MANIFESTS / rel).read_text(encoding="utf-8")
        assert without_sdk_version(new) == without_sdk_version(old), (
            f"manifests/{rel} is out of date with the pipeline code; {FIX}"
        )


# --- what a cluster run relies on ------------------------------------------------------


def test_the_expected_tasks_are_heavy(tasks: dict[str, list[Task]]) -> None:
    heavy = {name: sorted(t.name for t in ts if _is_heavy(t)) for name, ts in tasks.items()}
    assert heavy == {
        "automl-deft": ["automl-search-2", "automl-search-4", "deft-loop"],
        "automl-only": ["automl-search-2"],
        "deft-only": ["deft-loop"],
    }


def test_training_tasks_request_gpus_cpu_and_memory_from_the_parameters(
    tasks: dict[str, list[Task]],
) -> None:
    for name, t in _all_tasks(tasks):
        if not _is_heavy(t):
            continue
        res = t.resources
        where = f"{name}/{t.name}"
        assert t.source(res["accelerator"]["resourceCount"]) == "gpus", where
        assert t.source(res["accelerator"]["resourceType"]) == "accelerator_type", where
        assert t.source(res["resourceCpuLimit"]) == "cpu_limit", where
        assert t.source(res["resourceMemoryLimit"]) == "memory_limit", where
        [toleration] = t.platform["tolerations"]
        assert t.platform_source(toleration["tolerationJson"]) == "tolerations", where
        selector = t.platform["nodeSelector"]["nodeSelectorJson"]
        assert t.platform_source(selector) == "node_selector", where


def test_bookkeeping_tasks_are_small_and_never_ask_for_a_gpu(
    tasks: dict[str, list[Task]],
) -> None:
    for name, t in _all_tasks(tasks):
        if _is_heavy(t):
            continue
        res, where = t.resources, f"{name}/{t.name}"
        assert "accelerator" not in res, where
        assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == (LIGHT_CPU, LIGHT_MEMORY)
        assert "nodeSelector" not in t.platform, where
        assert "tolerations" not in t.platform, where


def test_every_task_mounts_the_workspace_pvc_from_the_parameter(
    tasks: dict[str, list[Task]],
) -> None:
    for name, t in _all_tasks(tasks):
        [mount] = t.platform["pvcMount"]
        assert mount["mountPath"] == WORKSPACE_MOUNT, f"{name}/{t.name}"
        assert t.platform_source(mount["pvcNameParameter"]) == "pvc_name", f"{name}/{t.name}"


def test_every_task_gets_the_credentials_secret_as_optional_env(
    tasks: dict[str, list[Task]],
) -> None:
    for name, t in _all_tasks(tasks):
        [secret] = t.platform["secretAsEnv"]
        where = f"{name}/{t.name}"
        assert secret["optional"] is True, where
        assert t.platform_source(secret["secretNameParameter"]) == "credentials_secret", where
        assert [(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]] == [
            (c.name, c.name) for c in CREDENTIALS
        ], where


def test_retries_are_set_and_caching_is_off(tasks: dict[str, list[Task]]) -> None:
    for name, t in _all_tasks(tasks):
        where = f"{name}/{t.name}"
        retry = t.spec["retryPolicy"]
        assert retry["maxRetryCount"] == (HEAVY_RETRIES if _is_heavy(t) else LIGHT_RETRIES), where
        assert (retry["backoffDuration"], retry["backoffFactor"]) == ("60s", 2.0), where
        assert "cachingOptions" in t.spec, where
        assert not t.spec["cachingOptions"].get("enableCache", False), where


def test_each_search_has_a_katib_launcher_and_an_in_pod_branch(
    tasks: dict[str, list[Task]],
) -> None:
    for name in ("automl-deft", "automl-only"):
        searches = _searches(tasks[name])
        phases = sorted({t.phase for t in searches})
        assert phases == (["phase1", "phase3"] if name == "automl-deft" else ["phase1"])
        for phase in phases:
            [katib] = [t for t in searches if t.phase == phase and KATIB in t.conditions]
            [in_pod] = [t for t in searches if t.phase == phase and IN_POD in t.conditions]
            # The launcher only creates the Experiment: its trial Jobs get the GPUs, and
            # run the launcher's own image (an input of the task, not an env var).
            assert "accelerator" not in katib.resources
            assert katib.sources["trial_image"] == f"const:{katib.container['image']}"
            assert katib.env == {} and in_pod.env == {}
            assert katib.sources["gpus"] == "gpus"  # handed on to the trial Jobs
            assert "trial_image" not in in_pod.sources
            assert katib.sources["hpo_backend"] == in_pod.sources["hpo_backend"] == "hpo_backend"
    assert _searches(tasks["deft-only"]) == []


def test_phase3_and_its_finalize_run_only_when_deft_did_not_hard_stop(
    tasks: dict[str, list[Task]],
) -> None:
    ts = tasks["automl-deft"]
    for t in ts:
        if t.phase == "phase3" or t.name == "select-warm-start":
            assert t.conditions[0] == PHASE3, t.name
    finalize = {t.name: t.conditions for t in ts if t.name.startswith("finalize")}
    assert finalize == {"finalize": (PHASE3,), "finalize-2": (f"!({PHASE3})",)}
    top = {t.name for t in ts if not t.conditions}
    assert top == {"preflight", "quality-check", "seed-deft-baseline", "deft-loop"}


def test_every_executor_runs_the_release_image(tasks: dict[str, list[Task]]) -> None:
    images = {t.container["image"] for _, t in _all_tasks(tasks)}
    assert images == {DEFAULT_IMAGE}


# --- the settings are explicit ----------------------------------------------------------


@pytest.mark.parametrize("name", pipelines.NAMES)
def test_build_puts_the_image_on_every_component_and_can_leave_out_retries(name: str) -> None:
    environ = dict(os.environ)
    pipeline = pipelines.build(name, image=IMAGE, retries=False)
    assert retried_tasks(pipeline) == []
    text = ir_yaml(pipeline, name)
    spec = next(yaml.safe_load_all(text))
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {IMAGE}
    assert [where for where, task in _dags(text) if "retryPolicy" in task] == []
    for t in _searches(container_tasks(text)):
        if KATIB in t.conditions:
            assert t.sources["trial_image"] == f"const:{IMAGE}", t.name
    assert dict(os.environ) == environ


def test_retried_tasks_names_every_retried_task() -> None:
    expected = sorted(t.name for t in container_tasks(ir_yaml(pipelines.build("deft-only"), "x")))
    assert retried_tasks(pipelines.build("deft-only")) == expected


def test_build_refuses_an_unknown_pipeline_or_an_empty_image() -> None:
    with pytest.raises(ValueError, match=r"^no pipeline 'automl'; one of: automl-deft, "):
        pipelines.build("automl")
    with pytest.raises(ValueError, match=r"image must name a container image"):
        pipelines.build("deft-only", image="")


def test_the_cli_knows_every_pipeline() -> None:
    assert pipelines.NAMES == PIPELINE_NAMES


def test_no_module_reads_a_settings_environment_variable() -> None:
    sources = [
        path
        for top in ("automl_deft", "components", "pipelines")
        for path in sorted((REPO / top).rglob("*.py"))
    ]
    assert len(sources) > 20
    found = [
        f"{path.relative_to(REPO)}: {name}"
        for path in sources
        for name in SIDE_CHANNELS
        if name in path.read_text(encoding="utf-8")
    ]
    assert found == [], "pass the setting explicitly (pipelines.build, a component input)"
    # The wiring and the components get nothing from the environment at all.
    environ = re.compile(r"\bos\.environ\b|\bgetenv\(|\benviron\[")
    readers = [
        str(path.relative_to(REPO))
        for path in sources
        if path.parts[len(REPO.parts)] != "automl_deft"
        and environ.search(path.read_text(encoding="utf-8"))
    ]
    assert readers == []


# --- the CLI and the Kubernetes-native manifests ---------------------------------------


@pytest.fixture(scope="module")
def cli_compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``automl-deft compile --image`` in a fresh interpreter, outside the repository."""
    out = tmp_path_factory.mktemp("compiled")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "automl_deft.cli",
            "compile",
            "--out",
            str(out),
            "--image",
            IMAGE,
            "--namespace",
            "team-a",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=out,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_cli_compile_writes_the_files_with_the_image_and_namespace(
    cli_compiled: tuple[Path, str],
) -> None:
    out, stdout = cli_compiled
    listed = {Path(line).relative_to(out).as_posix() for line in stdout.split()}
    names = sorted(pipelines.NAMES)
    assert listed == {
        *(f"pipelines/{n}.yaml" for n in names),
        *(f"base/{n}.k8s.yaml" for n in names),
        "base/rbac.yaml",
        "base/workspace-pvc.yaml",
        "base/kustomization.yaml",
        "base/scheduled-run.example.yaml",
    }
    for name in names:
        text = (out / "pipelines" / f"{name}.yaml").read_text(encoding="utf-8")
        ts = container_tasks(text)
        assert {t.container["image"] for t in ts} == {IMAGE}, name
        for t in _searches(ts):
            if KATIB in t.conditions:
                assert t.sources["trial_image"] == f"const:{IMAGE}"
        docs = [d for d in yaml.safe_load_all((out / "base" / f"{name}.k8s.yaml").read_text())]
        assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}, name
    kustomization = yaml.safe_load((out / "base" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "team-a"
    rbac = parse_objects(yaml.safe_load_all((out / "base" / "rbac.yaml").read_text()))
    assert {o.metadata.namespace for o in rbac} == {"team-a"}  # type: ignore[attr-defined]


@pytest.fixture
def fake_kfp(monkeypatch: pytest.MonkeyPatch) -> FakeKfpClient:
    """What ``submit`` / ``schedule`` connect to."""
    fake = FakeKfpClient(host=HOST)
    monkeypatch.setattr(client, "connect", lambda host, namespace=None: fake)
    return fake


def test_cli_submit_compiles_the_pipeline_with_the_image(fake_kfp: FakeKfpClient) -> None:
    args = ["submit", "--host", HOST, "--pipeline", "deft-only", "--image", IMAGE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    [package] = [
        call["pipeline_file"]
        for method, call in fake_kfp.calls
        if method == "create_run_from_pipeline_package"
    ]
    ts = container_tasks(Path(package).read_text(encoding="utf-8"))
    assert {t.container["image"] for t in ts} == {IMAGE}
    assert all("retryPolicy" in t.spec for t in ts)  # a cluster run keeps its retries


def test_cli_submit_refuses_an_image_for_a_compiled_package(
    fake_kfp: FakeKfpClient, tmp_path: Path
) -> None:
    package = tmp_path / "deft-only.yaml"
    package.write_text(ir_yaml(pipelines.build("deft-only"), "deft-only"), encoding="utf-8")
    args = ["submit", "--host", HOST, "--package", str(package), "--image", IMAGE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --image is for compiling the pipeline now; --package is already compiled: "
        "pass one of them\n"
    )
    assert fake_kfp.calls == []


@pytest.mark.parametrize("name", sorted(pipelines.NAMES))
def test_k8s_native_manifest_is_a_pipeline_and_its_version(
    name: str, compiled: dict[str, str]
) -> None:
    path = MANIFESTS / "base" / f"{name}.k8s.yaml"
    pipeline, version = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert (pipeline["apiVersion"], pipeline["kind"]) == (KFP_API, "Pipeline")
    assert (version["apiVersion"], version["kind"]) == (KFP_API, "PipelineVersion")
    assert pipeline["metadata"] == {"name": name, "namespace": "kubeflow-user"}
    assert version["metadata"] == {"name": f"{name}-v1", "namespace": "kubeflow-user"}
    assert version["spec"]["pipelineName"] == name
    ir, platform = yaml.safe_load_all(compiled[name])
    embedded = version["spec"]["pipelineSpec"]
    embedded.pop("sdkVersion")
    ir.pop("sdkVersion")
    assert embedded == ir, f"{path.name} embeds another pipeline spec than the IR; {FIX}"
    assert version["spec"]["platformSpec"] == platform


def test_rbac_and_pvc_parse_with_the_kubernetes_models() -> None:
    from kubernetes import client as k8s

    base = MANIFESTS / "base"
    rbac = parse_objects(yaml.safe_load_all((base / "rbac.yaml").read_text()))
    assert [type(o) for o in rbac] == [k8s.V1ServiceAccount, k8s.V1Role, k8s.V1RoleBinding]
    [pvc] = parse_objects(yaml.safe_load_all((base / "workspace-pvc.yaml").read_text()))
    assert isinstance(pvc, k8s.V1PersistentVolumeClaim)
    assert pvc.metadata.name == "automl-deft-workspace"
    for obj in (*rbac, pvc):
        assert obj.metadata.namespace == "kubeflow-user"  # type: ignore[attr-defined]


def test_kustomization_lists_only_files_that_exist() -> None:
    base = MANIFESTS / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert [r for r in resources if not (base / r).is_file()] == []
    assert {f"{n}.k8s.yaml" for n in pipelines.NAMES} <= set(resources)
    assert "scheduled-run.example.yaml" not in resources  # an example with placeholder IDs
