"""Run a search as a Katib Experiment: create (or resume) → poll → collect.

:class:`KatibLauncher` follows the long-remote-job pattern of Google Cloud
Pipeline Components:

* **Create or resume.** The experiment's name is written (atomically) to
  ``<results_dir>/katib_experiment.json`` *before* the create call, so a
  restarted launcher pod resumes the same experiment instead of starting a
  second one; a 409 on create (a retried request that had gone through) is a
  resume too.
* **Poll** every :data:`POLL_INTERVAL_S` until a ``Succeeded`` or ``Failed``
  condition, or the timeout. Transient API failures (5xx, 429, broken
  connections) are retried with a fresh client, up to
  :data:`MAX_CONSECUTIVE_API_ERRORS` in a row.
* **Cancel.** SIGTERM/SIGINT (a cancelled KFP run) deletes the experiment,
  and with it its trials.
* **Collect** the optimal trial, the history of every trial and the winner's
  checkpoint, which the trial wrote to ``<results_dir>/trials/<trial>/`` on the
  shared volume (mounted at the same path in every pod).

The launcher reads no pod logs; the text it quotes from the cluster (a failed
experiment's condition, an API error's message) is passed through
:func:`automl_deft.redact.redact` first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

import urllib3
from kubernetes.client.exceptions import ApiException

from automl_deft.errors import AutomlDeftError, InfrastructureError, UserError
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.base import Budget, SearchBackend, TrialRecord
from automl_deft.hpo.space import ParamValues, SearchSpace
from automl_deft.hpo.trial import PROBLEM_FILE, SearchProblem
from automl_deft.io import atomic_write_json, atomic_write_text
from automl_deft.jsontypes import JSONObject, K8sObject
from automl_deft.layout import SearchLayout
from automl_deft.model.checkpoint import BEST_NAME
from automl_deft.mount import WorkspaceMount
from automl_deft.redact import redact

if TYPE_CHECKING:
    from automl_deft.hpo.search import AutomlConfig

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 30.0
"""Seconds between two looks at the experiment."""
MAX_CONSECUTIVE_API_ERRORS = 5
"""Transient API failures in a row before giving up."""
RETRY_BACKOFF_S = 5.0
"""Wait after the first transient failure; doubles each time, at most POLL_INTERVAL_S."""
API_REQUEST_TIMEOUT_S = 60.0
"""Per-request timeout, so a hung connection counts as a failure instead of blocking."""
DELETE_ATTEMPTS = 3
"""Tries to delete the experiment on cancellation (no waiting: the pod is going away)."""
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
TERMINAL_CONDITIONS = ("Succeeded", "Failed")
CANCEL_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STATE_FILE = SearchLayout.KATIB_STATE
MANIFEST_FILE = SearchLayout.KATIB_MANIFEST

T = TypeVar("T")


class CustomObjectsApi(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the launcher uses."""

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kwargs: Any
    ) -> Any: ...

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kwargs: Any
    ) -> Any: ...

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> Any: ...


def default_api_factory() -> CustomObjectsApi:
    """A ``CustomObjectsApi`` on a fresh connection: in-cluster config, else kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise UserError(
                "no Kubernetes configuration: run inside the cluster (a pipeline pod) or set "
                f"KUBECONFIG ({exc})"
            ) from None
    api: CustomObjectsApi = client.CustomObjectsApi(client.ApiClient())
    return api


def new_experiment_name(prefix: str) -> str:
    """A fresh experiment name, ``<prefix>-<8 hex chars>``.

    Random, not derived from the results directory: pipeline runs re-use the same
    paths, and a re-used name would resume (409) an older experiment.
    """
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class SearchCancelled(AutomlDeftError):
    """The run was cancelled (SIGTERM/SIGINT); the experiment has been deleted.

    Exits with ``128 + signal``, as a process killed by that signal would.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class _Cancelled(BaseException):
    """Raised by the signal handler; a BaseException so no ``except Exception`` eats it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass(frozen=True)
class KatibTrial:
    """One Katib trial as the experiment's history holds it.

    Attributes:
        name: the trial's name (the trial's folder under ``trials/``).
        params: its parameter values, typed as the search space declares them.
        far_pct, val_loss: its observed metrics (None: not reported).
        condition: its latest held condition (``Succeeded``, ``EarlyStopped``, …).
    """

    name: str
    params: ParamValues
    far_pct: float | None
    val_loss: float | None
    condition: str | None

    def metric(self, name: str) -> float | None:
        """The observed metric ``name`` (``far_pct`` or ``val_loss``)."""
        return self.far_pct if name == "far_pct" else self.val_loss if name == "val_loss" else None


@dataclass(frozen=True)
class KatibOutcome:
    """What a finished experiment found.

    Attributes:
        experiment: the experiment's name.
        best_trial: the optimal trial's name.
        best_params: its parameter values, typed as the search space declares them.
        best_metrics: its observed metrics (``far_pct``, ``val_loss``).
        history: every trial, oldest first.
        checkpoint: the optimal trial's ``best_val.pt`` on the shared volume.
    """

    experiment: str
    best_trial: str
    best_params: ParamValues
    best_metrics: dict[str, float | None]
    history: list[KatibTrial]
    checkpoint: Path


class KatibLauncher:
    """Creates (or resumes) a Katib experiment, waits for it, and collects its winner.

    Args:
        space: the search space.
        settings: where and how trials run.
        results_dir: the search's folder on the shared volume (name file, trials/).
        problem_path: the trials' ``search_problem.json`` (as seen from the trial pods).
        api_factory: returns a fresh ``CustomObjectsApi``; called again after each
            transient failure (default: :func:`default_api_factory`).
        clock, sleep: injectable for tests.
    """

    def __init__(
        self,
        space: SearchSpace,
        settings: km.KatibSettings,
        *,
        results_dir: Path,
        problem_path: str,
        api_factory: Callable[[], CustomObjectsApi] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.space = space
        self.settings = settings
        self.results_dir = Path(results_dir)
        self.problem_path = problem_path
        self.namespace = settings.namespace
        self._api_factory = api_factory or default_api_factory
        self._api: CustomObjectsApi | None = None
        self.experiment_name: str | None = None
        """The experiment this launcher created or resumed (None before that)."""
        self._clock = clock
        self._sleep = sleep

    @property
    def state_path(self) -> Path:
        return self.results_dir / STATE_FILE

    def new_experiment(self) -> K8sObject:
        """The Experiment a fresh create sends (a new name each call), checked as Katib would."""
        return km.build_experiment(
            new_experiment_name(self.settings.name_prefix),
            self.space,
            self.settings,
            problem_path=self.problem_path,
        )

    def run(self, timeout_s: float) -> KatibOutcome:
        """Create or resume the experiment, wait up to ``timeout_s`` for it, collect the winner.

        Raises:
            UserError: the experiment is invalid, forbidden, or gone.
            InfrastructureError: it failed, timed out, or the API kept failing.
            SearchCancelled: SIGTERM/SIGINT arrived; the experiment was deleted.
        """
        if timeout_s <= 0:
            raise UserError(f"the Katib timeout must be > 0 seconds, got {timeout_s}")
        try:
            with _cancel_on_signals():
                name = self._create_or_resume()
                experiment = self._wait(name, timeout_s)
        except _Cancelled as cancelled:
            raise self._cancel(cancelled.signum) from None
        return self._collect(name, experiment)

    # --- create or resume ----------------------------------------------------------------

    def _create_or_resume(self) -> str:
        if self.state_path.exists():
            try:
                state = json.loads(self.state_path.read_text(encoding="utf-8"))
                name, self.namespace = str(state["name"]), str(state["namespace"])
            except (OSError, ValueError, KeyError, TypeError):
                raise UserError(
                    f"{self.state_path} is unreadable; delete it to start a new Katib experiment"
                ) from None
            self.experiment_name = name
            self._get(name)
            log.info("resuming Katib experiment %s/%s", self.namespace, name)
            return name

        experiment = self.new_experiment()
        name = str(experiment["metadata"]["name"])
        atomic_write_text(self.results_dir / MANIFEST_FILE, km.experiment_yaml(experiment))
        # Recorded before the create: a pod restarted from here on resumes this experiment.
        atomic_write_json(self.state_path, {"name": name, "namespace": self.namespace})
        self.experiment_name = name
        try:
            self._call(
                "creating the Katib experiment",
                lambda api: api.create_namespaced_custom_object(
                    km.GROUP,
                    km.VERSION,
                    self.namespace,
                    km.EXPERIMENTS,
                    experiment,
                    _request_timeout=API_REQUEST_TIMEOUT_S,
                ),
            )
            log.info("created Katib experiment %s/%s", self.namespace, name)
        except ApiException as exc:
            if exc.status != 409:
                # Refused, so nothing exists to resume: a re-run must create afresh.
                self.state_path.unlink(missing_ok=True)
                raise self._api_error(exc, f"creating Katib experiment {name}") from None
            log.info("Katib experiment %s/%s already exists: resuming it", self.namespace, name)
        return name

    # --- poll ----------------------------------------------------------------------------

    def _get(self, name: str) -> K8sObject:
        try:
            experiment: K8sObject = self._call(
                f"reading Katib experiment {name}",
                lambda api: api.get_namespaced_custom_object(
                    km.GROUP,
                    km.VERSION,
                    self.namespace,
                    km.EXPERIMENTS,
                    name,
                    _request_timeout=API_REQUEST_TIMEOUT_S,
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                raise UserError(
                    f"Katib experiment {self.namespace}/{name} (recorded in {self.state_path}) "
                    "no longer exists; delete that file to start a new search"
                ) from None
            raise self._api_error(exc, f"reading Katib experiment {name}") from None
        return experiment

    def _wait(self, name: str, timeout_s: float) -> K8sObject:
        deadline = self._clock() + timeout_s
        last_line = ""
        while True:
            experiment = self._get(name)
            status = experiment.get("status") or {}
            max_trials = (experiment.get("spec") or {}).get("maxTrialCount")
            line = _status_line(name, status, max_trials)
            if line != last_line:
                log.info("%s", line)
                last_line = line
            condition = terminal_condition(status)
            if condition is not None:
                if condition["type"] == "Succeeded":
                    return experiment
                why = redact(
                    f"{condition.get('reason') or 'no reason'}: "
                    f"{condition.get('message') or 'no message'}"
                )
                raise InfrastructureError(
                    f"Katib experiment {self.namespace}/{name} failed: {why} (failed trials: "
                    f"{', '.join(status.get('failedTrialList') or []) or 'none'}; see "
                    f"kubectl logs -n {self.namespace} -l job-name=<trial>)"
                )
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise InfrastructureError(
                    f"Katib experiment {self.namespace}/{name} did not finish within "
                    f"{timeout_s:.0f} s; it keeps running: rerun to resume waiting, or "
                    f"kubectl delete experiment -n {self.namespace} {name}"
                )
            self._sleep(min(POLL_INTERVAL_S, remaining))

    # --- collect -------------------------------------------------------------------------

    def _collect(self, name: str, experiment: Mapping[str, Any]) -> KatibOutcome:
        optimal = (experiment.get("status") or {}).get("currentOptimalTrial") or {}
        best = optimal.get("bestTrialName")
        if not best:
            raise InfrastructureError(
                f"Katib experiment {self.namespace}/{name} succeeded without an optimal trial "
                f"(no trial reported {km.OBJECTIVE_METRIC}); check the trials' logs"
            )
        try:
            trials = self._call(
                f"listing the trials of {name}",
                lambda api: api.list_namespaced_custom_object(
                    km.GROUP,
                    km.VERSION,
                    self.namespace,
                    km.TRIALS,
                    label_selector=f"{km.EXPERIMENT_LABEL}={name}",
                    _request_timeout=API_REQUEST_TIMEOUT_S,
                ),
            )
        except ApiException as exc:
            raise self._api_error(exc, f"listing the trials of {name}") from None
        history = [self._history_entry(t) for t in _sorted_trials(trials.get("items") or [])]
        checkpoint = SearchLayout(self.results_dir).trial_dir(best) / BEST_NAME
        if not checkpoint.is_file():
            raise InfrastructureError(
                f"the best trial's checkpoint {checkpoint} is missing: the trial writes it on "
                f"the shared volume; check that PVC {self.settings.pvc_name} is mounted at the "
                "same path in the launcher and in the trials"
            )
        return KatibOutcome(
            experiment=name,
            best_trial=str(best),
            best_params=self._typed(optimal.get("parameterAssignments") or []),
            best_metrics=_metrics((optimal.get("observation") or {}).get("metrics") or []),
            history=history,
            checkpoint=checkpoint,
        )

    def _history_entry(self, trial: Mapping[str, Any]) -> KatibTrial:
        status = trial.get("status") or {}
        metrics = _metrics((status.get("observation") or {}).get("metrics") or [])
        meta: Mapping[str, Any] = trial.get("metadata") or {}
        return KatibTrial(
            name=cast(str, meta.get("name")),  # the API server always names it
            params=self._typed((trial.get("spec") or {}).get("parameterAssignments") or []),
            far_pct=metrics.get("far_pct"),
            val_loss=metrics.get("val_loss"),
            condition=_latest_condition(status),
        )

    def _typed(self, assignments: list[Mapping[str, Any]]) -> ParamValues:
        params = {p.name: p for p in self.space.params}
        out: ParamValues = {}
        for a in assignments:
            name, raw = str(a.get("name")), str(a.get("value"))
            out[name] = params[name].parse(raw) if name in params else raw
        return out

    # --- cancel --------------------------------------------------------------------------

    def _cancel(self, signum: int) -> AutomlDeftError:
        signame = signal.Signals(signum).name
        name = self.experiment_name
        if name is None:
            return SearchCancelled(
                f"cancelled ({signame}) before a Katib experiment existed", signum
            )
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            try:
                self._client().delete_namespaced_custom_object(
                    km.GROUP,
                    km.VERSION,
                    self.namespace,
                    km.EXPERIMENTS,
                    name,
                    _request_timeout=API_REQUEST_TIMEOUT_S,
                )
                break
            except ApiException as exc:
                if exc.status == 404:
                    break
                if not _is_transient(exc) or attempt == DELETE_ATTEMPTS:
                    return self._cancel_failed(name, signame, exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == DELETE_ATTEMPTS:
                    return self._cancel_failed(name, signame, exc)
            self._api = self._api_factory()
        # The experiment is gone: a new run here must not try to resume it.
        self.state_path.unlink(missing_ok=True)
        log.warning("cancelled (%s): deleted Katib experiment %s/%s", signame, self.namespace, name)
        return SearchCancelled(
            f"cancelled ({signame}): deleted Katib experiment {self.namespace}/{name}", signum
        )

    def _cancel_failed(self, name: str, signame: str, exc: BaseException) -> AutomlDeftError:
        return InfrastructureError(
            f"cancelled ({signame}) but could not delete Katib experiment {self.namespace}/{name} "
            f"({_describe(exc)}); delete it with kubectl delete experiment -n {self.namespace} "
            f"{name}"
        )

    # --- API calls -----------------------------------------------------------------------

    def _client(self) -> CustomObjectsApi:
        if self._api is None:
            self._api = self._api_factory()
        return self._api

    def _call(self, what: str, fn: Callable[[CustomObjectsApi], T]) -> T:
        """``fn(api)``, retried with a fresh client after each transient failure."""
        failures = 0
        while True:
            try:
                return fn(self._client())
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                failures += 1
                if failures >= MAX_CONSECUTIVE_API_ERRORS:
                    raise InfrastructureError(
                        f"the Kubernetes API failed {failures} times in a row while {what} "
                        f"(last: {_describe(exc)})"
                    ) from None
                log.warning("%s failed (%s); retrying", what, _describe(exc))
                self._sleep(min(RETRY_BACKOFF_S * 2 ** (failures - 1), POLL_INTERVAL_S))
                self._api = self._api_factory()

    def _api_error(self, exc: ApiException, what: str) -> AutomlDeftError:
        detail = _describe(exc)
        if exc.status in (401, 403):
            return UserError(
                f"{what}: {detail}; give the pipeline's service account RBAC on "
                f"experiments and trials (kubeflow.org) in namespace {self.namespace}"
            )
        if exc.status == 404:
            return UserError(
                f"{what}: {detail}; is Katib installed, and does namespace {self.namespace} exist?"
            )
        if exc.status in (400, 422):
            return UserError(f"{what}: Katib refused it: {detail}; fix the search settings")
        return InfrastructureError(f"{what}: {detail}")


# --- helpers -----------------------------------------------------------------------------


@contextlib.contextmanager
def _cancel_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into :class:`_Cancelled` while inside; restore the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        log.debug("not the main thread: cancellation signals are not handled")
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Cancelled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in CANCEL_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return exc.status in TRANSIENT_STATUSES
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def _describe(exc: BaseException) -> str:
    """One line about a failed API call (secret values masked)."""
    if isinstance(exc, ApiException):
        message = ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            message = str(json.loads(exc.body).get("message") or "")
        return redact(
            f"HTTP {exc.status} {exc.reason or ''}".rstrip() + (f": {message}" if message else "")
        )
    return redact(f"{type(exc).__name__}: {exc}")


def terminal_condition(status: Mapping[str, Any]) -> K8sObject | None:
    """The experiment's ``Succeeded`` or ``Failed`` condition when it holds, else None."""
    for condition in status.get("conditions") or []:
        if condition.get("type") in TERMINAL_CONDITIONS and condition.get("status") == "True":
            return dict(condition)
    return None


def _latest_condition(status: Mapping[str, Any]) -> str | None:
    held = [c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"]
    return held[-1] if held else None


def _status_line(name: str, status: Mapping[str, Any], max_trials: int | None) -> str:
    condition = _latest_condition(status) or "Pending"
    counts = ", ".join(
        f"{status.get(f'trials{kind}', 0) or 0} {kind.lower()}"
        for kind in ("Succeeded", "Running", "Failed")
    )
    return f"Katib experiment {name}: {condition} ({counts} of max {max_trials} trials)"


def _metrics(metrics: list[Mapping[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for m in metrics:
        raw = m.get(km.METRIC_STRATEGY, m.get("min"))
        try:
            out[str(m.get("name"))] = float(raw)
        except (TypeError, ValueError):  # Katib writes "unavailable"
            out[str(m.get("name"))] = None
    return out


def _sorted_trials(items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def key(trial: Mapping[str, Any]) -> tuple[str, str]:
        meta = trial.get("metadata") or {}
        return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")

    return sorted(items, key=key)


class KatibBackend(SearchBackend):
    """Trials as Katib trial Jobs on the cluster; this process only launches and waits.

    The problem file and the trials' outputs live on the workspace volume, which
    must be mounted at the same path here and in the trial pods. The guards run
    where :func:`automl_deft.hpo.search.automl_search` runs: a lucky winner's
    fresh-seed re-training happens in this (launcher) process.
    """

    name = "katib"

    def __init__(self, settings: JSONObject | None = None, **launcher_kwargs: Any) -> None:
        """``settings``: ``automl.katib`` of the config (checked as ``KatibSettings``);
        ``launcher_kwargs`` go to :class:`KatibLauncher` (tests inject a fake API)."""
        self.settings = dict(settings or {})
        self.launcher_kwargs = launcher_kwargs

    def katib_settings(self, budget: Budget) -> km.KatibSettings:
        """The budget as Katib settings; this backend's explicit ``settings`` win."""
        return km.KatibSettings(
            **{
                "algorithm": budget.algorithm,
                "max_trials": budget.max_trials,
                "early_stopping": budget.early_stopping,
                # defaults that stay valid for small budgets; explicit settings win
                "parallel_trials": min(budget.parallel_trials or 2, budget.max_trials),
                "max_failed_trials": min(3, budget.max_trials),
                **self.settings,
            }
        )

    def launcher(self, problem: SearchProblem, budget: Budget) -> KatibLauncher:
        """The launcher :meth:`search` runs (building it writes and sends nothing).

        Raises:
            UserError: a path of the problem lies outside the workspace (no trial pod
                could reach it), before anything is written or sent.
        """
        settings = self.katib_settings(budget)
        mount = WorkspaceMount.of(problem.workspace, settings.mount_path)
        problem.for_pods(mount)  # every path the trials read is reachable from a pod
        return KatibLauncher(
            problem.space,
            settings,
            results_dir=Path(problem.results_dir),
            problem_path=mount.to_pod(problem_file(problem), what="the search problem"),
            **self.launcher_kwargs,
        )

    def pod_problem(self, problem: SearchProblem, budget: Budget) -> SearchProblem:
        """``problem`` as the trial pods read it: its paths re-rooted at the mount path."""
        settings = self.katib_settings(budget)
        return problem.for_pods(WorkspaceMount.of(problem.workspace, settings.mount_path))

    def experiment(self, problem: SearchProblem, budget: Budget) -> K8sObject:
        """The Experiment :meth:`search` would create for a new search (nothing is sent)."""
        return self.launcher(problem, budget).new_experiment()

    def search(self, problem: SearchProblem, budget: Budget) -> list[TrialRecord]:
        launcher = self.launcher(problem, budget)
        # Written here (this machine's path), read there (the pods' path of the same file).
        self.pod_problem(problem, budget).save(problem_file(problem))
        outcome = launcher.run(budget.timeout_s)
        records = []
        for number, h in enumerate(outcome.history):
            state = KATIB_STATES.get(str(h.condition))
            if state is None:  # failed, killed, or still running: not a finished trial
                continue
            records.append(
                TrialRecord(
                    number=number,
                    name=h.name,
                    params=dict(h.params),
                    state=state,
                    value=h.metric(problem.metric) if state == "complete" else None,
                )
            )
        return records


KATIB_STATES: dict[str, Literal["complete", "pruned"]] = {
    "Succeeded": "complete",
    "EarlyStopped": "pruned",
}
"""Katib trial conditions that count as finished trials."""


def problem_file(problem: SearchProblem) -> Path:
    """Where ``problem`` is written for the trials: its results directory on the shared
    volume, as this machine sees it (the trials read the pods' path of the same file)."""
    return Path(problem.results_dir) / PROBLEM_FILE


def dry_run_experiment(
    workspace: str | os.PathLike[str],
    cfg: AutomlConfig,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    warm_start: str | os.PathLike[str] | None = None,
) -> str:
    """The YAML of the Experiment ``automl_search`` would submit for ``cfg``; nothing is sent.

    It goes the search's own way (:func:`~automl_deft.hpo.search.plan_search`,
    :func:`~automl_deft.hpo.search.config_backend`, :meth:`KatibBackend.experiment`),
    so only the random experiment name (:func:`new_experiment_name`) differs, and
    the problem path when ``results_dir`` is None (the default is time-stamped).
    A results directory that already records an experiment would be resumed, not
    created again.

    Raises:
        UserError: ``cfg.backend`` is not ``katib``, or the settings are invalid.
    """
    from automl_deft.hpo.search import config_backend, plan_search

    if cfg.backend != "katib":
        raise UserError("--dry-run prints a Katib Experiment: use it with --backend katib")
    plan = plan_search(workspace, cfg, results_dir=results_dir, warm_start=warm_start)
    backend = config_backend(cfg)
    assert isinstance(backend, KatibBackend)
    return km.experiment_yaml(backend.experiment(plan.problem, plan.budget))


__all__ = [
    "MAX_CONSECUTIVE_API_ERRORS",
    "POLL_INTERVAL_S",
    "STATE_FILE",
    "CustomObjectsApi",
    "KatibBackend",
    "KatibLauncher",
    "KatibOutcome",
    "KatibTrial",
    "SearchCancelled",
    "default_api_factory",
    "dry_run_experiment",
    "new_experiment_name",
    "problem_file",
    "terminal_condition",
]
