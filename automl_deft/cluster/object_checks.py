"""Checks of whole objects: a manifest must read back as it was written.

:func:`parse_objects` deserialises core and RBAC objects into the ``kubernetes``
client's models and serialises them back, so a misspelled or misplaced field
shows up as a difference; the ``ScheduledWorkflow`` (a CRD without a model) is
checked field by field against the KFP controller's types by
:func:`validate_scheduled_workflow`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from automl_deft.cluster.cron import validate_cron
from automl_deft.errors import SpecError
from automl_deft.k8s_checks import (
    check_max_concurrency,
    check_name,
    check_namespace,
    check_rfc3339,
)

__all__ = ["SWF_API_VERSION", "SWF_KIND", "parse_objects", "validate_scheduled_workflow"]

SWF_API_VERSION = "kubeflow.org/v1beta1"
SWF_KIND = "ScheduledWorkflow"

_SWF_SPEC_FIELDS = frozenset(
    {
        "enabled",
        "maxConcurrency",
        "noCatchup",
        "maxHistory",
        "trigger",
        "workflow",
        "experimentId",
        "pipelineId",
        "pipelineVersionId",
        "pipelineName",
        "serviceAccount",
    }
)
_SCHEDULE_FIELDS = {
    "cronSchedule": frozenset({"cron", "startTime", "endTime"}),
    "periodicSchedule": frozenset({"intervalSecond", "startTime", "endTime"}),
}


def validate_scheduled_workflow(doc: Mapping[str, Any]) -> None:
    """Check a ScheduledWorkflow's fields against the KFP controller's types.

    Raises:
        SpecError: the first problem, with its field path.
    """

    def fail(problem: str) -> SpecError:
        name = (doc.get("metadata") or {}).get("name", "?")
        return SpecError(f"{SWF_KIND} {name}: {problem}")

    if doc.get("apiVersion") != SWF_API_VERSION or doc.get("kind") != SWF_KIND:
        raise fail(f"apiVersion/kind must be {SWF_API_VERSION} {SWF_KIND}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or not metadata.get("name"):
        raise fail("metadata.name is missing")
    check_name("ScheduledWorkflow name", metadata["name"])
    if "namespace" in metadata:
        check_namespace(metadata["namespace"])
    unknown_top = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if unknown_top:
        raise fail(f"unknown field(s) {', '.join(unknown_top)}")
    if not isinstance(doc.get("status"), Mapping):
        raise fail(
            "status is missing: the KFP CRD (2.5 to 2.17) requires it; add status: {} "
            "(the controller fills it)"
        )
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise fail("spec is missing")
    unknown = sorted(set(spec) - _SWF_SPEC_FIELDS)
    if unknown:
        raise fail(f"unknown spec field(s) {', '.join(unknown)}")
    for key in ("enabled", "noCatchup"):
        if key in spec and not isinstance(spec[key], bool):
            raise fail(f"spec.{key} must be true or false")
    if "maxConcurrency" in spec:
        check_max_concurrency(spec["maxConcurrency"])
    for key in ("experimentId", "pipelineId", "pipelineVersionId", "pipelineName"):
        if key in spec and not (isinstance(spec[key], str) and spec[key]):
            raise fail(f"spec.{key} must be a non-empty string")
    if not spec.get("pipelineId"):
        raise fail("spec.pipelineId is missing")
    trigger = spec.get("trigger")
    if (
        not isinstance(trigger, Mapping)
        or len(trigger) != 1
        or set(trigger) - set(_SCHEDULE_FIELDS)
    ):
        raise fail("spec.trigger needs exactly one of cronSchedule, periodicSchedule")
    (kind, schedule), *_ = trigger.items()
    if not isinstance(schedule, Mapping):
        raise fail(f"spec.trigger.{kind} must be a mapping")
    extra = sorted(set(schedule) - _SCHEDULE_FIELDS[kind])
    if extra:
        raise fail(f"unknown spec.trigger.{kind} field(s) {', '.join(extra)}")
    if kind == "cronSchedule":
        validate_cron(schedule.get("cron", ""))
    else:
        interval = schedule.get("intervalSecond")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise fail("spec.trigger.periodicSchedule.intervalSecond must be an integer >= 1")
    for key in ("startTime", "endTime"):
        if key in schedule:
            check_rfc3339(f"spec.trigger.{kind}.{key}", schedule[key])
    workflow = spec.get("workflow") or {}
    if not isinstance(workflow, Mapping) or set(workflow) - {"parameters", "spec"}:
        raise fail("spec.workflow may only hold parameters (and spec)")
    for i, param in enumerate(workflow.get("parameters") or []):
        if not isinstance(param, Mapping) or set(param) != {"name", "value"}:
            raise fail(f"spec.workflow.parameters[{i}] must be {{name, value}}")
        if not isinstance(param["value"], str):
            raise fail(f"spec.workflow.parameters[{i}].value must be a JSON-encoded string")
        try:
            json.loads(param["value"])
        except ValueError:
            raise fail(
                f"spec.workflow.parameters[{i}].value {param['value']!r} is not JSON "
                '(a string must be quoted: "\\"text\\"")'
            ) from None


# --- validation with the kubernetes client's models ----------------------------------


class _Response:
    """The one attribute ``ApiClient.deserialize`` reads from an HTTP response."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.data = json.dumps(doc)


def _model_name(api_version: str, kind: str) -> str | None:
    """``V1Role`` for ``rbac.authorization.k8s.io/v1`` ``Role``; None for a CRD."""
    group, _, version = api_version.rpartition("/")
    if not version or not kind or ("." in group and not group.endswith(".k8s.io")):
        return None
    from kubernetes import client

    name = f"{version[:1].upper()}{version[1:]}{kind}"
    return name if hasattr(client, name) else None


def parse_objects(docs: Iterable[Mapping[str, Any] | None]) -> list[object]:
    """Validate manifests; return the kubernetes client models (the dict for a ScheduledWorkflow).

    Each built-in object is deserialised into its ``kubernetes.client`` model (which
    checks required fields and types) and serialised back: any difference is a
    field the model does not know (a typo, or a field in the wrong place).
    Empty YAML documents (None) are skipped.

    Raises:
        SpecError: an invalid object, or a kind with neither a model nor a check.
    """
    from kubernetes import client

    out: list[object] = []
    with client.ApiClient() as api:
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise SpecError(f"document {i} is a {type(doc).__name__}, not a mapping")
            api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
            name = (doc.get("metadata") or {}).get("name", "?")
            where = f"{kind or '?'} {name}"
            if (api_version, kind) == (SWF_API_VERSION, SWF_KIND):
                validate_scheduled_workflow(doc)
                out.append(dict(doc))
                continue
            model_name = _model_name(api_version, kind)
            if model_name is None:
                raise SpecError(
                    f"{where}: no kubernetes client model for {api_version or '?'} "
                    f"{kind or '?'}; only built-in kinds and {SWF_KIND} can be checked"
                )
            plain = json.loads(json.dumps(doc))
            try:
                model = api.deserialize(_Response(plain), model_name)
            except (ValueError, TypeError) as exc:
                raise SpecError(f"{where}: {exc}") from None
            back = api.sanitize_for_serialization(model)
            difference = _first_difference(plain, back)
            if difference:
                raise SpecError(f"{where}: {difference}")
            out.append(model)
    return out


def _first_difference(given: Any, parsed: Any, path: str = "") -> str | None:
    if isinstance(given, dict) and isinstance(parsed, dict):
        for key in given:
            where = f"{path}.{key}" if path else str(key)
            if key not in parsed:
                return f"unknown or misplaced field {where}"
            problem = _first_difference(given[key], parsed[key], where)
            if problem:
                return problem
        return None
    if isinstance(given, list) and isinstance(parsed, list) and len(given) == len(parsed):
        for i, (g, p) in enumerate(zip(given, parsed, strict=True)):
            problem = _first_difference(g, p, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if given != parsed:
        return f"{path or 'the object'} reads back as {parsed!r}, not {given!r}"
    return None
