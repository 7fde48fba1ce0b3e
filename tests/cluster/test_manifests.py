"""Cluster manifests: RBAC, the workspace PVC, ScheduledWorkflow, cron, the kustomize base."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from automl_deft.cluster import manifests as m
from automl_deft.errors import SpecError

REPO = Path(__file__).resolve().parents[2]

NS = "kubeflow-user"


def _load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


# --- RBAC ------------------------------------------------------------------------------


def test_rbac_parses_with_the_kubernetes_models_and_binds_the_role() -> None:
    sa, role, binding = m.parse_objects(m.rbac(NS, "runner"))
    assert isinstance(sa, k8s.V1ServiceAccount)
    assert isinstance(role, k8s.V1Role)
    assert isinstance(binding, k8s.V1RoleBinding)
    assert (sa.metadata.name, sa.metadata.namespace) == ("runner", NS)
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", role.metadata.name)
    [subject] = binding.subjects
    assert (subject.kind, subject.name, subject.namespace) == ("ServiceAccount", "runner", NS)


def test_role_grants_exactly_what_the_katib_launcher_needs() -> None:
    role = m.parse_objects(m.rbac(NS))[1]
    granted = {
        (group, resource): set(rule.verbs)
        for rule in role.rules
        for group in rule.api_groups
        for resource in rule.resources
    }
    assert granted == {
        ("kubeflow.org", "experiments"): {"create", "get", "list", "watch", "delete", "patch"},
        ("kubeflow.org", "trials"): {"get", "list", "watch"},
        ("kubeflow.org", "suggestions"): {"get", "list"},
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get", "list", "watch"},
    }


@pytest.mark.parametrize(
    ("namespace", "account", "message"),
    [
        ("Kubeflow", "sa", r"namespace 'Kubeflow': use at most 63 lower case letters"),
        (NS, "my_sa", r"service account 'my_sa': use lower case letters"),
        ("x" * 64, "sa", r"namespace 'x{64}'"),
    ],
)
def test_rbac_rejects_invalid_names(namespace: str, account: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        m.rbac(namespace, account)


# --- PVC -------------------------------------------------------------------------------


def test_workspace_pvc_defaults_to_rwx_on_the_default_storage_class() -> None:
    doc = m.workspace_pvc("ws", NS)
    [pvc] = m.parse_objects([doc])
    assert isinstance(pvc, k8s.V1PersistentVolumeClaim)
    assert (pvc.metadata.name, pvc.metadata.namespace) == ("ws", NS)
    assert pvc.spec.access_modes == ["ReadWriteMany"]
    assert pvc.spec.resources.requests == {"storage": "50Gi"}
    assert "storageClassName" not in doc["spec"]  # None: the cluster's default class


@pytest.mark.parametrize(("storage_class", "expected"), [("nfs-client", "nfs-client"), ("", "")])
def test_workspace_pvc_storage_class(storage_class: str, expected: str) -> None:
    doc = m.workspace_pvc("ws", NS, "200Gi", storage_class, "ReadWriteOnce")
    [pvc] = m.parse_objects([doc])
    assert pvc.spec.storage_class_name == expected
    assert pvc.spec.access_modes == ["ReadWriteOnce"]
    assert pvc.spec.resources.requests == {"storage": "200Gi"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": "50GB"}, r"PVC size '50GB': use a positive quantity such as 50Gi"),
        ({"size": "0Gi"}, r"PVC size '0Gi'"),
        ({"access_mode": "RWX"}, r"PVC access mode 'RWX': use one of ReadWriteOnce, "),
        ({"storage_class": "Fast_SSD"}, r"storage class 'Fast_SSD'"),
    ],
)
def test_workspace_pvc_rejects_bad_fields(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        m.workspace_pvc("ws", NS, **kwargs)


# --- parse_objects ---------------------------------------------------------------------


def test_parse_objects_reports_a_misspelled_field() -> None:
    role = m.rbac(NS)[1]
    role["rules"][0]["apiGroup"] = role["rules"][0].pop("apiGroups")
    with pytest.raises(
        SpecError, match=r"^Role automl-deft: unknown or misplaced field rules\[0\]\.apiGroup$"
    ):
        m.parse_objects([role])


def test_parse_objects_reports_a_missing_required_field() -> None:
    role = m.rbac(NS)[1]
    del role["rules"][0]["verbs"]
    with pytest.raises(SpecError, match=r"^Role automl-deft: Invalid value for `verbs`"):
        m.parse_objects([role])


def test_parse_objects_refuses_a_crd_it_cannot_check_and_skips_empty_documents() -> None:
    assert m.parse_objects([None]) == []
    pipeline = {"apiVersion": "pipelines.kubeflow.org/v2beta1", "kind": "Pipeline"}
    with pytest.raises(SpecError, match=r"no kubernetes client model for pipelines\.kubeflow"):
        m.parse_objects([pipeline])


# --- ScheduledWorkflow -----------------------------------------------------------------


def _swf(**kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"cron": "0 0 2 * * *", "pipeline_id": "p-1"}
    return m.scheduled_workflow("nightly", NS, **(args | kwargs))


def test_scheduled_workflow_shape() -> None:
    start = datetime(2025, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=1)))
    swf = _swf(
        pipeline_version_id="v-1",
        experiment_id="e-1",
        parameters={"text": "a b", "max_trials": 8, "lr": 0.5, "flag": True, "lights": ["A"]},
        service_account="automl-deft",
        max_concurrency=2,
        no_catchup=False,
        start_time=start,
        end_time="2026-01-01T00:00:00Z",
    )
    assert [d["kind"] for d in m.parse_objects([swf])] == ["ScheduledWorkflow"]
    assert swf["apiVersion"] == "kubeflow.org/v1beta1"
    assert swf["metadata"]["name"] == "nightly"
    spec = swf["spec"]
    assert spec["enabled"] is True
    assert spec["maxConcurrency"] == 2
    assert spec["noCatchup"] is False
    assert spec["trigger"] == {
        "cronSchedule": {
            "cron": "0 0 2 * * *",
            "startTime": "2025-01-01T02:00:00Z",
            "endTime": "2026-01-01T00:00:00Z",
        }
    }
    assert (spec["pipelineId"], spec["pipelineVersionId"], spec["experimentId"]) == (
        "p-1",
        "v-1",
        "e-1",
    )
    assert spec["serviceAccount"] == "automl-deft"
    params = spec["workflow"]["parameters"]
    assert [p["name"] for p in params] == ["flag", "lights", "lr", "max_trials", "text"]
    assert all(isinstance(p["value"], str) for p in params)
    assert {p["name"]: json.loads(p["value"]) for p in params} == {
        "text": "a b",
        "max_trials": 8,
        "lr": 0.5,
        "flag": True,
        "lights": ["A"],
    }
    assert next(p for p in params if p["name"] == "text")["value"] == '"a b"'


def test_scheduled_workflow_omits_what_is_not_given() -> None:
    spec = _swf()["spec"]
    assert set(spec) == {
        "enabled",
        "maxConcurrency",
        "noCatchup",
        "trigger",
        "pipelineId",
        "workflow",
    }
    assert spec["noCatchup"] is True
    assert spec["maxConcurrency"] == 1
    assert spec["workflow"] == {"parameters": []}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 2 * * *"}, r'cron "0 2 \* \* \*" has 5 fields; Kubeflow needs 6'),
        ({"pipeline_id": None}, r"a ScheduledWorkflow needs pipeline_id"),
        ({"max_concurrency": 11}, r"max_concurrency 11 is out of range; KFP allows 1-10"),
        ({"max_concurrency": 0}, r"max_concurrency 0 is out of range"),
        ({"parameters": {"p": None}}, r"parameters\.p is None; leave the argument out"),
        ({"parameters": {"p": float("nan")}}, r"parameters\.p is nan; JSON has no NaN"),
        ({"parameters": {"p": Path("x")}}, r"parameters\.p is a PosixPath; pass a str"),
        ({"start_time": datetime(2025, 1, 1)}, r"start_time 2025-01-01T00:00:00 has no time zone"),
        ({"start_time": "tomorrow"}, r"start_time 'tomorrow' is not an RFC 3339 time"),
        (
            {"start_time": "2025-02-01T00:00:00Z", "end_time": "2025-01-01T00:00:00Z"},
            r"end_time 2025-01-01T00:00:00Z is not after start_time 2025-02-01T00:00:00Z",
        ),
    ],
)
def test_scheduled_workflow_rejects(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _swf(**kwargs)


def test_validate_scheduled_workflow_catches_an_unencoded_value_and_two_triggers() -> None:
    swf = _swf(parameters={"text": "x"})
    swf["spec"]["workflow"]["parameters"][0]["value"] = "x"
    with pytest.raises(SpecError, match=r"parameters\[0\]\.value 'x' is not JSON"):
        m.validate_scheduled_workflow(swf)
    swf = _swf()
    swf["spec"]["trigger"]["periodicSchedule"] = {"intervalSecond": 60}
    with pytest.raises(SpecError, match=r"needs exactly one of cronSchedule, periodicSchedule"):
        m.parse_objects([swf])
    swf = _swf()
    swf["spec"]["catchUp"] = False
    with pytest.raises(SpecError, match=r"^ScheduledWorkflow nightly: unknown spec field"):
        m.parse_objects([swf])


# --- cron ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "normalised"),
    [
        ("0 0 2 * * *", "0 0 2 * * *"),
        ("  0  30   2 * * *  ", "0 30 2 * * *"),
        ("*/15 * * * * *", "*/15 * * * * *"),
        ("0 0 9 ? * 2-6", "0 0 9 ? * 2-6"),
        ("0 0 9 * * MON-fri", "0 0 9 * * MON-fri"),
        ("0 0,30 8-18/2 1,15 jan-jun,DEC sun", "0 0,30 8-18/2 1,15 jan-jun,DEC sun"),
        ("5/10 * * * * *", "5/10 * * * * *"),
        ("59 59 23 31 12 6", "59 59 23 31 12 6"),
        ("@daily", "@daily"),
        ("@midnight", "@midnight"),
        ("@hourly", "@hourly"),
        ("@annually", "@annually"),
        ("@every 1h", "@every 1h"),
        ("@every 1h30m", "@every 1h30m"),
        ("@every 1.5h", "@every 1.5h"),
    ],
)
def test_validate_cron_accepts(expr: str, normalised: str) -> None:
    assert m.validate_cron(expr) == normalised


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "0 2 * * *",
            'cron "0 2 * * *" has 5 fields; Kubeflow needs 6 (seconds first): "0 0 2 * * *"',
        ),
        (
            "0 0 2 * * * 2025",
            'cron "0 0 2 * * * 2025" has 7 fields; Kubeflow needs 6: seconds minutes hours '
            'day-of-month month day-of-week, e.g. "0 0 2 * * *"',
        ),
        ("", "cron '' is empty; use 6 fields, seconds first, e.g. \"0 0 2 * * *\""),
        ("60 0 2 * * *", 'cron "60 0 2 * * *": seconds field "60": 60 is above the maximum 59'),
        ("0 0 24 * * *", 'cron "0 0 24 * * *": hours field "24": 24 is above the maximum 23'),
        ("0 0 2 0 * *", 'cron "0 0 2 0 * *": day-of-month field "0": 0 is below the minimum 1'),
        ("0 0 2 * 13 *", 'cron "0 0 2 * 13 *": month field "13": 13 is above the maximum 12'),
        (
            "0 0 2 * * 7",
            'cron "0 0 2 * * 7": day-of-week field "7": 7 is above the maximum 6 '
            "(Sunday is 0 or SUN)",
        ),
        (
            "0 0 2 * * mon-fry",
            'cron "0 0 2 * * mon-fry": day-of-week field "mon-fry": "fry" is not a number or a '
            "name (sun, mon, tue, wed, thu, fri, sat)",
        ),
        ("0 0 2 mon * *", 'cron "0 0 2 mon * *": day-of-month field "mon": "mon" is not a number'),
        (
            "0 0 18-6 * * *",
            'cron "0 0 18-6 * * *": hours field "18-6": the range 18-6 runs backwards',
        ),
        (
            "*/0 * * * * *",
            'cron "*/0 * * * * *": seconds field "*/0": step "0" must be a whole number >= 1',
        ),
        (
            "1/2/3 * * * * *",
            'cron "1/2/3 * * * * *": seconds field "1/2/3": too many \'/\' in "1/2/3"',
        ),
        (
            "1-2-3 * * * * *",
            'cron "1-2-3 * * * * *": seconds field "1-2-3": too many \'-\' in "1-2-3"',
        ),
        ("1,,2 * * * * *", 'cron "1,,2 * * * * *": seconds field "1,,2": an empty list item'),
        ("L 0 2 * * *", 'cron "L 0 2 * * *": seconds field "L": "L" is not a number'),
        (
            "@weekdays",
            'cron "@weekdays": unknown descriptor; use @yearly, @annually, @monthly, @weekly, '
            "@daily, @midnight, @hourly or @every <duration> (e.g. @every 1h30m)",
        ),
        (
            "@every 1d",
            'cron "@every 1d": "1d" is not a Go duration; use units h, m, s (e.g. @every 24h '
            "or @every 1h30m)",
        ),
        ("@every 500ms", 'cron "@every 500ms": the interval must be at least 1s'),
        (
            "CRON_TZ=Europe/Berlin 0 0 2 * * *",
            'cron "CRON_TZ=Europe/Berlin 0 0 2 * * *": Kubeflow\'s scheduler has no time zones; '
            "drop the prefix and give the time in UTC",
        ),
    ],
)
def test_validate_cron_rejects_with_the_fix(expr: str, message: str) -> None:
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        m.validate_cron(expr)


# --- kustomize -------------------------------------------------------------------------


def _write(out: Path, pipeline_files: tuple[str, ...] = ()) -> list[Path]:
    return m.write_kustomize_base(
        out,
        namespace=NS,
        service_account="automl-deft",
        pvc_name="automl-deft-workspace",
        pvc_size="100Gi",
        storage_class="nfs-client",
        pipeline_files=pipeline_files,
    )


def test_kustomize_base_is_deterministic(tmp_path: Path) -> None:
    first = _write(tmp_path / "a")
    second = _write(tmp_path / "b")
    assert [p.name for p in first] == [
        "rbac.yaml",
        "workspace-pvc.yaml",
        "kustomization.yaml",
        "scheduled-run.example.yaml",
    ]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    again = _write(tmp_path / "a")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in second]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in first)


def test_kustomization_lists_resources_that_exist_and_parse(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "automl-deft.yaml").write_text("kind: Pipeline\n", encoding="utf-8")
    _write(tmp_path, ("pipelines/automl-deft.yaml",))
    [kustomize] = _load_all(tmp_path / "kustomization.yaml")
    assert kustomize["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomize["namespace"] == NS
    assert kustomize["resources"] == [
        "rbac.yaml",
        "workspace-pvc.yaml",
        "pipelines/automl-deft.yaml",
    ]
    assert all((tmp_path / r).is_file() for r in kustomize["resources"])
    assert "scheduled-run.example.yaml" not in kustomize["resources"]
    kinds = [type(o).__name__ for o in m.parse_objects(_load_all(tmp_path / "rbac.yaml"))]
    assert kinds == ["V1ServiceAccount", "V1Role", "V1RoleBinding"]
    [pvc] = m.parse_objects(_load_all(tmp_path / "workspace-pvc.yaml"))
    assert pvc.spec.storage_class_name == "nfs-client"
    assert pvc.spec.resources.requests == {"storage": "100Gi"}


def test_schedule_example_is_a_valid_scheduled_workflow_with_placeholders(tmp_path: Path) -> None:
    _write(tmp_path)
    text = (tmp_path / "scheduled-run.example.yaml").read_text(encoding="utf-8")
    assert "NOT part of the kustomization" in text
    [swf] = m.parse_objects(_load_all(tmp_path / "scheduled-run.example.yaml"))
    assert swf["spec"]["pipelineId"] == "PIPELINE_ID"
    assert swf["spec"]["experimentId"] == "EXPERIMENT_ID"
    assert swf["spec"]["serviceAccount"] == "automl-deft"
    assert swf["spec"]["trigger"]["cronSchedule"]["cron"] == m.EXAMPLE_CRON


@pytest.mark.parametrize(
    ("pipeline_file", "message"),
    [
        ("missing.yaml", r"pipeline manifest missing\.yaml is not in .*; compile it there first"),
        ("../outside.yaml", r"use a path relative to the base directory, inside it"),
        ("/abs/pipeline.yaml", r"use a path relative to the base directory"),
    ],
)
def test_kustomize_base_refuses_bad_pipeline_files(
    tmp_path: Path, pipeline_file: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        _write(tmp_path / "base", (pipeline_file,))
    assert not (tmp_path / "base").exists()  # nothing half-written


def test_kustomization_refuses_duplicates() -> None:
    with pytest.raises(SpecError, match=r"kustomization resource a\.yaml is listed twice"):
        m.kustomization(["a.yaml", "a.yaml"], NS)


def test_scheduled_workflow_carries_the_status_every_kfp_crd_requires() -> None:
    """KFP 2.5-2.17's ScheduledWorkflow CRD lists ``status`` as required: an object
    without it is refused by the API server ("status: Required value")."""
    swf = _swf()
    assert swf["status"] == {}
    example = m.parse_objects(
        [yaml.safe_load((REPO / "manifests/base/scheduled-run.example.yaml").read_text())]
    )
    assert example[0]["status"] == {}
    del swf["status"]
    with pytest.raises(SpecError, match=r"^ScheduledWorkflow nightly: status is missing"):
        m.validate_scheduled_workflow(swf)
