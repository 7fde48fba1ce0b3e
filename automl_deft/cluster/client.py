"""Submitting and scheduling pipeline runs from a laptop with ``kfp.Client``.

::

    client = connect("https://kubeflow.example.com/pipeline", namespace="team-aoi")
    run = submit(client, Path("pipeline.yaml"), arguments={...}, run_name="phase1",
                 experiment_name="automl-deft", namespace="team-aoi",
                 service_account="automl-deft")
    print(run.url)

Everything that can be checked locally is checked before the first network call:
the package is a compiled pipeline YAML, the arguments are JSON values, the cron
has six fields. Failures talking to KFP become one-line errors that name the host
and the fix: :class:`~automl_deft.errors.UserError` for what the user can change
(a refused token, a wrong URL path, a request KFP rejects),
:class:`~automl_deft.errors.InfrastructureError` for the rest (unreachable host,
TLS failure, 5xx).

A refused token (HTTP 401/403) is one line at once, whichever call meets it:
``kfp.Client`` itself probes the server's health on creation (without a namespace)
and retries a refusal five times, 5 s apart, logging a traceback each time, so
:func:`connect` creates :class:`_Client`, whose probe gives up at the first
answer that cannot change.

The bearer token comes from an environment variable (``KF_PIPELINES_TOKEN``) and
goes to ``kfp.Client(existing_token=...)`` only; it is never printed or logged,
and any ``Bearer …`` text in an error message is masked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import kfp
import urllib3
import yaml
from kfp_server_api import ApiException

from automl_deft.cluster.manifests import (
    check_arguments,
    check_max_concurrency,
    check_name,
    check_namespace,
    validate_cron,
)
from automl_deft.errors import AutomlDeftError, InfrastructureError, SpecError, UserError
from automl_deft.jsontypes import JSONObject

log = logging.getLogger(__name__)

TOKEN_ENV = "KF_PIPELINES_TOKEN"
RUN_URL = "{prefix}/#/runs/details/{run_id}"
"""The KFP UI's run page (the link kfp.Client itself prints)."""
RECURRING_RUN_URL = "{prefix}/#/recurringrun/details/{recurring_run_id}"
"""The KFP UI's recurring-run page."""
PACKAGE_SUFFIXES = (".yaml", ".yml")
"""What kfp.Client reads as a plain pipeline file (it matches the suffix case-sensitively)."""
PORT_FORWARD = "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80"
PORT_FORWARD_HINT = f"{PORT_FORWARD} and use http://localhost:8080"
NO_EXPERIMENT = "No experiment is found with name"
"""The start of the ValueError kfp.Client.get_experiment raises for a missing name."""
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_API_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)
AUTH_STATUSES = frozenset({401, 403})
"""HTTP statuses that mean the credentials were refused (never retried)."""
HEALTHZ_ATTEMPTS = 5
"""Health checks before giving up on a server error (kfp's own count)."""
_BEARER = re.compile(r"(?i)(bearer\s+)\S+")
_OBJECT_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*")


class PipelinesClient(Protocol):
    """The part of ``kfp.Client`` this module uses (keyword calls only)."""

    def list_experiments(
        self,
        page_token: str = ...,
        page_size: int = ...,
        sort_by: str = ...,
        namespace: str | None = ...,
        filter: str | None = ...,
    ) -> Any: ...

    def get_experiment(
        self,
        experiment_id: str | None = ...,
        experiment_name: str | None = ...,
        namespace: str | None = ...,
    ) -> Any: ...

    def create_experiment(
        self, name: str, description: str | None = ..., namespace: str | None = ...
    ) -> Any: ...

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> Any: ...

    def create_recurring_run(self, experiment_id: str, job_name: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SubmittedRun:
    """A run KFP accepted.

    Attributes:
        run_id: its KFP run ID.
        url: its page in the KFP UI.
    """

    run_id: str
    url: str


@dataclass(frozen=True)
class ScheduledRun:
    """A recurring run KFP accepted.

    Attributes:
        recurring_run_id: its KFP recurring-run ID.
        url: its page in the KFP UI.
    """

    recurring_run_id: str
    url: str


# --- connect ---------------------------------------------------------------------------


class _Client(kfp.Client):
    """``kfp.Client`` whose health check (run on creation without a namespace) fails at
    once on an answer that cannot change: a refused token, a wrong path, a TLS failure.

    Only a server error (5xx, 429) is retried, with a one-line warning instead of a
    traceback.
    """

    def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
        attempt = 1
        while True:
            try:
                return self._healthz_api.healthz_service_get_healthz()
            except ApiException as exc:
                if not _retryable(exc) or attempt >= HEALTHZ_ATTEMPTS:
                    raise
                log.warning(
                    "KFP health check failed (%s); retrying in %d s (%d of %d)",
                    _describe(exc),
                    sleep_duration,
                    attempt,
                    HEALTHZ_ATTEMPTS,
                )
                time.sleep(sleep_duration)
                attempt += 1


def _retryable(exc: ApiException) -> bool:
    return exc.status is not None and (exc.status >= 500 or exc.status == 429)


def connect(
    host: str,
    *,
    namespace: str | None = None,
    token_env: str = TOKEN_ENV,
    client_factory: Callable[..., kfp.Client] = _Client,
    verify: bool = True,
) -> kfp.Client:
    """A ``kfp.Client`` for ``host``, checked with one cheap API call.

    With ``$token_env`` set, its value is the bearer token (``existing_token``);
    otherwise kfp's own credential handling applies (for an explicit host: none, so
    a port-forwarded or unauthenticated endpoint).

    Args:
        host: the KFP API URL with its scheme, e.g. ``http://localhost:8080`` after
            a port-forward, or ``https://<kubeflow host>/pipeline``.
        namespace: the Kubeflow profile namespace (multi-user Kubeflow needs it).
        token_env: the environment variable holding the token.
        client_factory: ``kfp.Client`` or a stand-in with its signature (default: a
            ``kfp.Client`` that does not retry a refused health check).
        verify: list one experiment so a wrong URL or token fails here, not at submit.

    Returns:
        The client (a ``kfp.Client``).

    Raises:
        SpecError: the host is not a URL, or the namespace is not a valid name.
        UserError: KFP refused the token or the request.
        InfrastructureError: KFP cannot be reached or fails.
    """
    host = _check_host(host)
    if namespace is not None:
        check_namespace(namespace)
    token = os.environ.get(token_env) or None
    kwargs: dict[str, str] = {"host": host}
    if namespace:
        kwargs["namespace"] = namespace
    if token:
        kwargs["existing_token"] = token
        if urlsplit(host).scheme == "http" and urlsplit(host).hostname not in _LOCAL_HOSTS:
            log.warning("sending the %s token to %s over plain http; use https", token_env, host)
    log.info(
        "connecting to Kubeflow Pipelines at %s (%s %s)",
        host,
        token_env,
        "set" if token else "not set: no bearer token",
    )
    try:
        with _quiet_kfp():
            client = client_factory(**kwargs)
            if verify:
                client.list_experiments(page_size=1, namespace=namespace)
    except _API_ERRORS as exc:
        raise _api_error(
            host,
            exc,
            what="connecting",
            token=token,
            token_set=bool(token),
            token_env=token_env,
            namespace=namespace,
        ) from None
    return client


def _check_host(host: str) -> str:
    parts = urlsplit(host) if isinstance(host, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(
            f"KFP host {host!r} is not a URL; use e.g. http://localhost:8080 (after "
            f"{PORT_FORWARD}) or https://<kubeflow host>/pipeline"
        )
    if parts.username or parts.password:
        raise SpecError(
            f"KFP host {parts.hostname}: take the credentials out of the URL; put a bearer "
            f"token in {TOKEN_ENV} instead"
        )
    return host.rstrip("/")


@contextlib.contextmanager
def _quiet_kfp() -> Iterator[None]:
    """Hide the FutureWarning every ``kfp.Client()`` emits (it concerns KFP < 2.0 servers)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="This client only works with", category=FutureWarning
        )
        yield


# --- submit and schedule -----------------------------------------------------------------


def submit(
    client: PipelinesClient,
    package_path: Path,
    *,
    arguments: Mapping[str, Any],
    run_name: str,
    experiment_name: str,
    namespace: str | None,
    service_account: str | None,
    enable_caching: bool | None = None,
) -> SubmittedRun:
    """Start one run of a compiled pipeline.

    The experiment is looked up by name and created when missing; the run is then
    submitted to it by ID, so kfp's ``KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME``
    cannot silently move it elsewhere.

    Args:
        client: from :func:`connect`.
        package_path: the compiled pipeline YAML.
        arguments: pipeline parameters (JSON values).
        run_name: the run's display name.
        experiment_name: the experiment to put it in.
        namespace: the profile namespace (None on single-user KFP).
        service_account: the pods' service account (None: KFP's default); the one
            from :func:`automl_deft.cluster.manifests.rbac` can launch Katib.
        enable_caching: override the compiled caching setting of every task.

    Raises:
        SpecError: a bad package, argument or name (before any network call).
        UserError, InfrastructureError: KFP refused or failed.
    """
    package, args = _check_submission(package_path, arguments, namespace, service_account)
    _require("run_name", run_name)
    prefix = _ui_prefix(client)
    experiment_id = _experiment_id(client, experiment_name, namespace, prefix)
    try:
        result = client.create_run_from_pipeline_package(
            pipeline_file=str(package),
            arguments=args,
            run_name=run_name,
            namespace=namespace,
            enable_caching=enable_caching,
            service_account=service_account,
            experiment_id=experiment_id,
        )
    except _API_ERRORS as exc:
        raise _api_error(prefix, exc, what=f"submitting run {run_name!r}") from None
    run_id = str(result.run_id)
    url = RUN_URL.format(prefix=prefix, run_id=run_id)
    log.info("submitted run %s (%s) to experiment %s: %s", run_name, run_id, experiment_name, url)
    return SubmittedRun(run_id=run_id, url=url)


def schedule(
    client: PipelinesClient,
    package_path: Path,
    *,
    cron: str,
    job_name: str,
    experiment_name: str,
    arguments: Mapping[str, Any],
    namespace: str | None,
    service_account: str | None,
    max_concurrency: int = 1,
    no_catchup: bool = True,
) -> ScheduledRun:
    """Create a recurring run of a compiled pipeline.

    Args:
        client: from :func:`connect`.
        package_path: the compiled pipeline YAML (uploaded with the recurring run).
        cron: six fields, seconds first, UTC (see
            :func:`~automl_deft.cluster.manifests.validate_cron`).
        job_name: the recurring run's display name.
        experiment_name: its experiment (created when missing).
        arguments: pipeline parameters (JSON values).
        namespace: the profile namespace (None on single-user KFP).
        service_account: the runs' service account (None: KFP's default).
        max_concurrency: runs of this schedule at once (1-10).
        no_catchup: after a pause, run once instead of once per missed slot.

    Raises:
        SpecError: a bad cron, package, argument or name (before any network call).
        UserError, InfrastructureError: KFP refused or failed.
    """
    cron = validate_cron(cron)
    check_max_concurrency(max_concurrency)
    package, args = _check_submission(package_path, arguments, namespace, service_account)
    _require("job_name", job_name)
    prefix = _ui_prefix(client)
    experiment_id = _experiment_id(client, experiment_name, namespace, prefix)
    try:
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=args,
            pipeline_package_path=str(package),
            service_account=service_account,
        )
    except _API_ERRORS as exc:
        raise _api_error(prefix, exc, what=f"creating recurring run {job_name!r}") from None
    recurring_run_id = str(recurring.recurring_run_id)
    url = RECURRING_RUN_URL.format(prefix=prefix, recurring_run_id=recurring_run_id)
    log.info("scheduled %s (%s) with cron %r: %s", job_name, recurring_run_id, cron, url)
    return ScheduledRun(recurring_run_id=recurring_run_id, url=url)


def check_package(package_path: Path | str) -> Path:
    """Return ``package_path`` if it is a compiled pipeline YAML, else raise SpecError.

    A compiled pipeline's first YAML document has ``pipelineInfo`` (later documents
    hold the platform spec: PVCs, node selectors …).
    """
    path = Path(package_path)
    compile_hint = "compile it with kfp.compiler.Compiler().compile(pipeline, 'pipeline.yaml')"
    if path.suffix not in PACKAGE_SUFFIXES:
        raise SpecError(f"pipeline package {path} must be a .yaml file; {compile_hint}")
    if not path.is_file():
        raise SpecError(f"pipeline package {path} does not exist; {compile_hint}")
    try:
        with open(path, encoding="utf-8") as fh:
            first = next(iter(yaml.safe_load_all(fh)), None)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SpecError(f"pipeline package {path} is not readable YAML ({problem})") from None
    if isinstance(first, Mapping) and first.get("kind") in ("Pipeline", "PipelineVersion"):
        raise SpecError(
            f"{path} is a Kubernetes-native {first['kind']} manifest "
            "(kubernetes_manifest_format=True); submit the plain compiled pipeline YAML, or "
            "kubectl apply this one"
        )
    if not isinstance(first, Mapping) or "pipelineInfo" not in first:
        raise SpecError(f"{path} is not a compiled pipeline (no pipelineInfo); {compile_hint}")
    return path


def _check_submission(
    package_path: Path,
    arguments: Mapping[str, Any],
    namespace: str | None,
    service_account: str | None,
) -> tuple[Path, JSONObject]:
    package = check_package(package_path)
    args = check_arguments(arguments)
    if namespace is not None:
        check_namespace(namespace)
    if service_account is not None:
        check_name("service account", service_account)
    return package, args


def _require(what: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{what} must be a non-empty string, got {value!r}")


def _ui_prefix(client: Any) -> str:
    # kfp builds its own links from this private method: $KF_PIPELINES_UI_ENDPOINT, else
    # ui_host, else host ("/pipeline" in a pod). A test checks kfp.Client still has it.
    get_prefix = getattr(client, "_get_url_prefix", None)
    return str(get_prefix() if callable(get_prefix) else "/pipeline").rstrip("/")


def _experiment_id(client: PipelinesClient, name: str, namespace: str | None, host: str) -> str:
    """The ID of experiment ``name``, created when missing."""
    _require("experiment_name", name)
    what = f"looking up experiment {name!r}"
    try:
        try:
            experiment = client.get_experiment(experiment_name=name, namespace=namespace)
        except ValueError as exc:
            if not str(exc).startswith(NO_EXPERIMENT):
                raise UserError(
                    f"experiment {name!r}: {exc} Pick another experiment_name, or archive "
                    "the duplicates in the KFP UI"
                ) from None
            what = f"creating experiment {name!r}"
            experiment = client.create_experiment(name=name, namespace=namespace)
            log.info("created experiment %s", name)
    except _API_ERRORS as exc:
        raise _api_error(host, exc, what=what, namespace=namespace) from None
    return str(experiment.experiment_id)


# --- errors ----------------------------------------------------------------------------


def _api_error(
    host: str,
    exc: BaseException,
    *,
    what: str,
    token: str | None = None,
    token_set: bool | None = None,
    token_env: str = TOKEN_ENV,
    namespace: str | None = None,
) -> AutomlDeftError:
    """A one-line error for a failed KFP call, naming the host and the fix.

    ``token`` is masked in the message; ``token_set`` (None: unknown) picks the hint
    for a refused request.
    """
    detail = _describe(exc, token)
    where = f"Kubeflow Pipelines at {host}"
    if _http_status(exc) in AUTH_STATUSES:
        fix = {
            True: f"the token in {token_env} was refused: get a fresh one",
            False: f"set {token_env} to a bearer token for this endpoint",
            None: f"check that {token_env} holds a valid, unexpired bearer token",
        }[token_set]
        return UserError(f"{where} refused {what} ({detail}); {fix}")
    if isinstance(exc, ApiException):
        if exc.status == 404:
            return UserError(
                f"{where}: {what} found no KFP API ({detail}); use the KFP API address, "
                "e.g. https://<kubeflow host>/pipeline, or port-forward: " + PORT_FORWARD_HINT
            )
        if exc.status in (400, 409, 422):
            hint = (
                "; on multi-user Kubeflow pass namespace=<your profile namespace>"
                if namespace is None
                else ""
            )
            return UserError(f"{where} refused {what} ({detail}){hint}")
        if exc.status == 0:  # kfp_server_api reports TLS failures as status 0
            return InfrastructureError(
                f"TLS to {host} failed while {what} ({detail}); check the https URL and the "
                "cluster's certificate"
            )
        return InfrastructureError(f"{where} failed while {what} ({detail}); retry later")
    return InfrastructureError(
        f"cannot reach {where} while {what} ({detail}); check the URL, or port-forward: "
        + PORT_FORWARD_HINT
    )


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed call: kfp_server_api's, or a ``requests``/``urllib``
    error's response (kfp's other auth paths), else None (no answer came)."""
    if isinstance(exc, ApiException):
        return exc.status
    response = getattr(exc, "response", None)
    for status in (getattr(response, "status_code", None), getattr(response, "status", None)):
        if isinstance(status, int):
            return status
    code = getattr(exc, "code", None)  # urllib.error.HTTPError
    return code if isinstance(code, int) and 100 <= code < 600 else None


def _describe(exc: BaseException, token: str | None = None) -> str:
    """One line about ``exc``: HTTP status and server message, or the network error."""
    if isinstance(exc, ApiException):
        text = f"HTTP {exc.status} {exc.reason or ''}".strip()
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            body = json.loads(exc.body)
            message = body.get("message") or body.get("error") if isinstance(body, dict) else None
            if message:
                text += f": {message}"
    else:
        reason = getattr(exc, "reason", None)
        text = str(reason if isinstance(reason, BaseException) else exc) or type(exc).__name__
        text = _OBJECT_REPR.sub("", text)
    if token:
        text = text.replace(token, "***")
    text = _BEARER.sub(r"\1***", " ".join(text.split()))
    return text[:300]


__all__ = [
    "PACKAGE_SUFFIXES",
    "RECURRING_RUN_URL",
    "RUN_URL",
    "TOKEN_ENV",
    "PipelinesClient",
    "ScheduledRun",
    "SubmittedRun",
    "check_package",
    "connect",
    "schedule",
    "submit",
]
