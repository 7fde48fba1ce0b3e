"""An in-memory stand-in for the Kubernetes custom-objects API, for testing Katib code.

A :class:`FakeCluster` holds the objects, a record of every call, and the test
hooks; each :class:`FakeCustomObjectsApi` is a client bound to one cluster, so
a launcher that re-creates its client after a failure keeps seeing the same
objects (pass ``cluster.client`` as the ``api_factory``)::

    cluster = FakeCluster()
    cluster.script_experiment([running_status(), succeeded_status("exp-abc", {...})])
    cluster.fail_next(2, status=503)
    launcher = KatibLauncher(..., api_factory=cluster.client, sleep=clock.sleep, clock=clock)

Errors are the real ``kubernetes.client.exceptions.ApiException`` (404, 409, or
whatever :meth:`FakeCluster.fail_next` injects).
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from automl_deft.hpo.katib_manifest import API_VERSION, EXPERIMENT_LABEL, EXPERIMENTS, GROUP, TRIALS
from automl_deft.hpo.katib_manifest import VERSION as KATIB_VERSION
from automl_deft.jsontypes import K8sObject

_REASONS = {404: "Not Found", 409: "Conflict", 429: "Too Many Requests", 503: "Service Unavailable"}

Key = tuple[str, str, str, str, str]
"""(group, version, namespace, plural, name)."""
Hook = Callable[["FakeCluster", "FakeCall"], None]


def api_exception(status: int, message: str = "") -> ApiException:
    """A real ``ApiException`` with a Kubernetes ``Status`` body, as the client raises it."""
    reason = _REASONS.get(status, "Error")
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(
        {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message or reason}
    )
    return exc


@dataclass(frozen=True)
class FakeCall:
    """One API call: the method (``create``, ``get``, ``delete``, ``list``) and its target."""

    method: str
    namespace: str
    plural: str
    name: str | None = None
    body: Any = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Failure:
    error: BaseException
    methods: frozenset[str] | None


class FakeCluster:
    """The shared state behind every :class:`FakeCustomObjectsApi` client.

    Attributes:
        objects: stored objects by (group, version, namespace, plural, name).
        calls: every call, in order (failed ones too).
        clients_created: how many clients :meth:`client` has handed out.
    """

    def __init__(self) -> None:
        self.objects: dict[Key, K8sObject] = {}
        self.calls: list[FakeCall] = []
        self.clients_created = 0
        self._failures: deque[_Failure] = deque()
        self._statuses: deque[K8sObject] = deque()
        self._hooks: dict[str, list[Hook]] = {}
        self._version = 0

    def client(self) -> FakeCustomObjectsApi:
        """A new client on this cluster (use as a launcher's ``api_factory``)."""
        self.clients_created += 1
        return FakeCustomObjectsApi(self)

    # --- test hooks ------------------------------------------------------------------

    def script_experiment(self, statuses: Iterable[Mapping[str, Any]]) -> None:
        """Each later GET of an experiment first sets its status to the next of ``statuses``.

        The last status stays once the script runs out.
        """
        self._statuses.extend(copy.deepcopy(dict(s)) for s in statuses)

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        error: BaseException | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Make the next ``n`` calls (of ``methods``, default any) raise.

        Raises ``error`` when given (e.g. ``urllib3.exceptions.ProtocolError``),
        else an ``ApiException`` with ``status``.
        """
        only = frozenset(methods) if methods is not None else None
        for _ in range(n):
            self._failures.append(_Failure(error or api_exception(status), only))

    def on(self, method: str, hook: Hook) -> None:
        """Call ``hook(cluster, call)`` before each ``method`` call is served (after recording)."""
        self._hooks.setdefault(method, []).append(hook)

    def add_trial(
        self,
        experiment: str,
        name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float | str] | None = None,
        *,
        condition: str = "Succeeded",
        namespace: str = "kubeflow-user",
    ) -> K8sObject:
        """Store a Katib ``Trial`` of ``experiment`` (labelled as Katib labels it)."""
        self._version += 1
        trial: K8sObject = {
            "apiVersion": API_VERSION,
            "kind": "Trial",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {EXPERIMENT_LABEL: experiment},
                "creationTimestamp": f"2025-01-01T00:00:{self._version:02d}Z",
            },
            "spec": {"parameterAssignments": _assignments(params)},
            "status": {
                "conditions": [
                    {"type": "Created", "status": "True"},
                    {"type": condition, "status": "True"},
                ],
                "observation": {"metrics": _metric_list(metrics or {})},
            },
        }
        self.objects[(GROUP, KATIB_VERSION, namespace, TRIALS, name)] = trial
        return trial

    def methods(self) -> list[str]:
        """The methods called so far, in order."""
        return [c.method for c in self.calls]

    def experiment(self, name: str, namespace: str = "kubeflow-user") -> K8sObject | None:
        """The stored experiment, or None."""
        return self.objects.get((GROUP, KATIB_VERSION, namespace, EXPERIMENTS, name))

    # --- serving -----------------------------------------------------------------------

    def _serve(self, call: FakeCall) -> None:
        self.calls.append(call)
        for hook in self._hooks.get(call.method, []):
            hook(self, call)
        for failure in list(self._failures):
            if failure.methods is None or call.method in failure.methods:
                self._failures.remove(failure)
                raise failure.error

    def _next_status(self, obj: K8sObject) -> None:
        if obj.get("kind") == "Experiment" and self._statuses:
            status = self._statuses.popleft() if len(self._statuses) > 1 else self._statuses[0]
            obj["status"] = copy.deepcopy(status)


class FakeCustomObjectsApi:
    """``kubernetes.client.CustomObjectsApi`` over a :class:`FakeCluster`, in memory."""

    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.cluster = cluster or FakeCluster()

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> K8sObject:
        name = str(body["metadata"]["name"])
        self.cluster._serve(FakeCall("create", namespace, plural, name, body, kwargs))
        key = (group, version, namespace, plural, name)
        if key in self.cluster.objects:
            raise api_exception(409, f'{plural}.{group} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj["metadata"] = {**obj["metadata"], "namespace": namespace, "uid": f"uid-{name}"}
        self.cluster.objects[key] = obj
        return copy.deepcopy(obj)

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> K8sObject:
        self.cluster._serve(FakeCall("get", namespace, plural, name, None, kwargs))
        obj = self.cluster.objects.get((group, version, namespace, plural, name))
        if obj is None:
            raise api_exception(404, f'{plural}.{group} "{name}" not found')
        self.cluster._next_status(obj)
        return copy.deepcopy(obj)

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> K8sObject:
        self.cluster._serve(FakeCall("delete", namespace, plural, name, None, kwargs))
        key = (group, version, namespace, plural, name)
        if key not in self.cluster.objects:
            raise api_exception(404, f'{plural}.{group} "{name}" not found')
        del self.cluster.objects[key]
        if plural == EXPERIMENTS:  # Katib's trials are owned by the experiment
            for k, obj in list(self.cluster.objects.items()):
                labels = obj.get("metadata", {}).get("labels") or {}
                if k[2] == namespace and labels.get(EXPERIMENT_LABEL) == name:
                    del self.cluster.objects[k]
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> K8sObject:
        self.cluster._serve(FakeCall("list", namespace, plural, None, None, kwargs))
        selector = _parse_selector(kwargs.get("label_selector") or "")
        items = [
            copy.deepcopy(obj)
            for (g, v, ns, p, _), obj in sorted(self.cluster.objects.items())
            if (g, v, ns, p) == (group, version, namespace, plural)
            and all(
                (obj.get("metadata", {}).get("labels") or {}).get(k) == val
                for k, val in selector.items()
            )
        ]
        return {"apiVersion": f"{group}/{version}", "kind": "List", "items": items}


# --- status builders ---------------------------------------------------------------------


def _assignments(params: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(v)} for k, v in params.items()]


def _metric_list(metrics: Mapping[str, float | str]) -> list[dict[str, str]]:
    return [{"name": k, "min": str(v), "max": str(v), "latest": str(v)} for k, v in metrics.items()]


def _parse_selector(selector: str) -> dict[str, str]:
    out = {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        key, _, value = term.partition("=")
        out[key] = value
    return out


def experiment_status(
    condition: str, *, message: str = "", reason: str = "", **counts: Any
) -> K8sObject:
    """A Katib experiment status whose latest held condition is ``condition``.

    ``counts`` go in as they are (``trialsSucceeded=2``, ``failedTrialList=[...]``).
    """
    conditions = [{"type": "Created", "status": "True", "reason": "ExperimentCreated"}]
    if condition != "Created":
        running = "True" if condition == "Running" else "False"
        conditions.append({"type": "Running", "status": running})
    if condition not in ("Created", "Running"):
        conditions.append(
            {"type": condition, "status": "True", "reason": reason, "message": message}
        )
    return {"conditions": conditions, **counts}


def succeeded_status(
    best_trial: str, params: Mapping[str, Any], metrics: Mapping[str, float | str], **counts: Any
) -> K8sObject:
    """A ``Succeeded`` status whose ``currentOptimalTrial`` is ``best_trial``."""
    status = experiment_status(
        "Succeeded", reason="ExperimentMaxTrialsReached", message="max trials reached", **counts
    )
    status["currentOptimalTrial"] = {
        "bestTrialName": best_trial,
        "parameterAssignments": _assignments(params),
        "observation": {"metrics": _metric_list(metrics)},
    }
    return status


class FakeClock:
    """A clock and a ``sleep`` that only moves it: polling tests take no real time."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


__all__ = [
    "FakeCall",
    "FakeClock",
    "FakeCluster",
    "FakeCustomObjectsApi",
    "api_exception",
    "experiment_status",
    "succeeded_status",
]
