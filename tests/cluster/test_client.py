"""Submitting and scheduling with kfp.Client: a signature-checked fake, and the real client
against a local HTTP server for what travels on the wire (the token, the errors).

No ``from __future__ import annotations`` here: kfp reads the tiny pipeline's annotations
at runtime, and string annotations would turn ``str`` into an artifact type name.
"""

import inspect
import json
import logging
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import kfp
import kfp_server_api
import pytest
from kfp import compiler, dsl
from kfp_server_api import ApiException

from automl_deft.cluster import client as cc
from automl_deft.cluster.client import (
    RECURRING_RUN_URL,
    RUN_URL,
    PipelinesClient,
    ScheduledRun,
    SubmittedRun,
    connect,
    schedule,
    submit,
)
from automl_deft.errors import InfrastructureError, SpecError, UserError
from automl_deft.testing.fake_kfp import FakeKfpClient
from automl_deft.testing.loopback import serve_on_loopback

SECRET = "eyJhbGciOi.SECRET-token.never-printed"
HOST = "https://kfp.example.com/pipeline"
NS = "team-a"


# --- the fake (automl_deft.testing.fake_kfp) against kfp.Client ------------------------


FAKED = [
    "__init__",
    "_get_url_prefix",
    "list_experiments",
    "get_experiment",
    "create_experiment",
    "create_run_from_pipeline_package",
    "create_recurring_run",
]


def _shape(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("method", FAKED)
def test_fake_has_the_signatures_of_kfp_client(method: str) -> None:
    assert _shape(getattr(FakeKfpClient, method)) == _shape(getattr(kfp.Client, method))


def test_fake_covers_every_method_the_module_uses() -> None:
    used = {n for n in vars(PipelinesClient) if not n.startswith("_")}
    assert used <= set(FAKED)
    for name in used:  # the protocol's parameters exist on the real client too
        real = inspect.signature(getattr(kfp.Client, name)).parameters
        declared = inspect.signature(getattr(PipelinesClient, name)).parameters
        assert {p for p, v in declared.items() if v.kind != v.VAR_KEYWORD} <= set(real)


def test_links_match_kfps_own_and_the_real_client_still_has_its_url_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = inspect.getsource(kfp.Client.run_pipeline)
    assert "{self._get_url_prefix()}/#/runs/details/{response.run_id}" in source
    assert RUN_URL.format(prefix=HOST, run_id="r") == f"{HOST}/#/runs/details/r"
    assert RECURRING_RUN_URL.format(prefix=HOST, recurring_run_id="x") == (
        f"{HOST}/#/recurringrun/details/x"
    )
    _isolate_kfp(monkeypatch, tmp_path)
    client = connect(f"{HOST}/", namespace=NS, verify=False)
    assert isinstance(client, kfp.Client)
    assert cc._ui_prefix(client) == HOST
    monkeypatch.setenv("KF_PIPELINES_UI_ENDPOINT", "https://ui.example.com")
    assert cc._ui_prefix(connect(HOST, namespace=NS, verify=False)) == "https://ui.example.com"


# --- fixtures --------------------------------------------------------------------------


@dsl.component(base_image="python:3.11")
def echo(msg: str) -> str:
    return msg


@dsl.pipeline(name="tiny")
def tiny(msg: str = "hi", n: int = 1) -> None:
    echo(msg=msg)


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("package") / "tiny.yaml"
    compiler.Compiler().compile(tiny, str(path))
    return path


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeKfpClient:
    monkeypatch.delenv("KF_PIPELINES_UI_ENDPOINT", raising=False)
    return FakeKfpClient(host=HOST, namespace=NS)


def _isolate_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the real kfp.Client away from the user's ~/.config/kfp and endpoint variables."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _assert_secret_hidden(*texts: str) -> None:
    assert all(SECRET not in text for text in texts)


# --- connect ---------------------------------------------------------------------------


def test_connect_passes_the_token_from_the_environment_and_never_prints_it(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("KF_PIPELINES_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    made: list[dict[str, Any]] = []

    def factory(**kwargs: Any) -> FakeKfpClient:
        made.append(kwargs)
        return FakeKfpClient(**kwargs)

    client = connect(f"{HOST}/", namespace=NS, client_factory=factory)
    assert made == [{"host": HOST, "namespace": NS, "existing_token": SECRET}]
    assert client.methods() == ["list_experiments"]
    assert client.calls[0][1]["page_size"] == 1
    assert "KF_PIPELINES_TOKEN set" in caplog.text
    out = capsys.readouterr()
    _assert_secret_hidden(out.out, out.err, caplog.text, repr(client))


def test_connect_without_a_token_leaves_credentials_to_kfp(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("KF_PIPELINES_TOKEN", raising=False)
    monkeypatch.setenv("MY_TOKEN", "")
    caplog.set_level(logging.INFO)
    made: list[dict[str, Any]] = []

    def factory(**kwargs: Any) -> FakeKfpClient:
        made.append(kwargs)
        return FakeKfpClient(**kwargs)

    connect("http://localhost:8080", client_factory=factory, token_env="MY_TOKEN", verify=False)
    assert made == [{"host": "http://localhost:8080"}]
    assert "MY_TOKEN not set" in caplog.text


def test_connect_warns_before_sending_a_token_over_plain_http(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KF_PIPELINES_TOKEN", SECRET)
    connect("http://kfp.example.com", client_factory=FakeKfpClient, verify=False)
    assert "over plain http; use https" in caplog.text
    _assert_secret_hidden(caplog.text)


@pytest.mark.parametrize("host", ["kfp.example.com", "", "ftp://kfp.example.com", "http://"])
def test_connect_needs_a_url(host: str) -> None:
    with pytest.raises(SpecError, match=r"KFP host .* is not a URL; use e\.g\. http://localhost"):
        connect(host, client_factory=FakeKfpClient)


def test_connect_refuses_credentials_in_the_url() -> None:
    with pytest.raises(SpecError) as info:
        connect(f"https://admin:{SECRET}@kfp.example.com", client_factory=FakeKfpClient)
    assert str(info.value) == (
        "KFP host kfp.example.com: take the credentials out of the URL; put a bearer token "
        "in KF_PIPELINES_TOKEN instead"
    )


@pytest.fixture
def kfp_server() -> Iterator[dict[str, Any]]:
    """A local HTTP server standing in for the KFP API; records what reached it."""
    state: dict[str, Any] = {"status": 200, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["seen"].append((self.path, self.headers.get("Authorization")))
            ok = state["status"] == 200
            body = json.dumps(
                {"experiments": [], "total_size": 0}
                if ok
                else {"error": "jwt rejected", "code": 16, "message": "jwt rejected"}
            ).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_on_loopback(Handler) as url:
        state["url"] = url
        yield state


def test_real_kfp_client_sends_the_token_as_bearer_and_a_refusal_names_the_fix(
    kfp_server: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _isolate_kfp(monkeypatch, tmp_path)
    monkeypatch.setenv("KF_PIPELINES_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    host = kfp_server["url"]
    client = connect(host, namespace=NS)
    assert isinstance(client, kfp.Client)
    path, auth = kfp_server["seen"][0]
    assert path.startswith("/apis/v2beta1/experiments?") and f"namespace={NS}" in path
    assert auth == f"Bearer {SECRET}"

    kfp_server["status"] = 401
    with pytest.raises(UserError) as info:
        connect(host, namespace=NS)
    assert str(info.value) == (
        f"Kubeflow Pipelines at {host} refused connecting (HTTP 401 Unauthorized: jwt "
        "rejected); the token in KF_PIPELINES_TOKEN was refused: get a fresh one"
    )
    out = capsys.readouterr()
    _assert_secret_hidden(str(info.value), out.out, out.err, caplog.text)


def test_unreachable_host_is_an_infrastructure_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _isolate_kfp(monkeypatch, tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"http://127.0.0.1:{port}"
    with pytest.raises(InfrastructureError) as info:
        connect(host, namespace=NS)
    message = str(info.value)
    assert message.startswith(f"cannot reach Kubeflow Pipelines at {host} while connecting (")
    assert message.endswith(
        "; check the URL, or port-forward: kubectl port-forward -n kubeflow "
        "svc/ml-pipeline-ui 8080:80 and use http://localhost:8080"
    )
    assert "\n" not in message


# --- submit ----------------------------------------------------------------------------


def _submit(fake: FakeKfpClient, package: Path, **kwargs: Any) -> SubmittedRun:
    args: dict[str, Any] = {
        "arguments": {"msg": "hello", "n": 3},
        "run_name": "phase1",
        "experiment_name": "automl-deft",
        "namespace": NS,
        "service_account": "automl-deft",
    }
    return submit(fake, package, **(args | kwargs))


def test_submit_gets_or_creates_the_experiment_and_links_the_run(
    fake: FakeKfpClient, package: Path
) -> None:
    first = _submit(fake, package, enable_caching=False)
    assert first == SubmittedRun(run_id="run-2", url=f"{HOST}/#/runs/details/run-2")
    second = _submit(fake, package, run_name="phase1-again")
    assert second.url == f"{HOST}/#/runs/details/run-3"
    assert fake.methods() == [
        "get_experiment",
        "create_experiment",
        "create_run_from_pipeline_package",
        "get_experiment",
        "create_run_from_pipeline_package",
    ]
    assert fake.calls[1][1] == {"name": "automl-deft", "description": None, "namespace": NS}
    assert fake.calls[2][1] == {
        "pipeline_file": str(package),
        "arguments": {"msg": "hello", "n": 3},
        "run_name": "phase1",
        "experiment_name": None,
        "namespace": NS,
        "pipeline_root": None,
        "enable_caching": False,
        "cache_key": None,
        "service_account": "automl-deft",
        "experiment_id": "exp-1",
    }
    assert fake.calls[4][1]["experiment_id"] == "exp-1"


def test_submit_uses_an_existing_experiment(fake: FakeKfpClient, package: Path) -> None:
    fake.experiments.append(
        kfp_server_api.V2beta1Experiment(
            experiment_id="e-old", display_name="automl-deft", namespace=NS
        )
    )
    _submit(fake, package)
    assert fake.methods() == ["get_experiment", "create_run_from_pipeline_package"]
    assert fake.calls[1][1]["experiment_id"] == "e-old"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.yaml", None, r"pipeline package .*missing\.yaml does not exist; compile it"),
        ("pipeline.json", "{}", r"pipeline package .*pipeline\.json must be a \.yaml file"),
        ("broken.yaml", "a: [1,\n", r"pipeline package .*broken\.yaml is not readable YAML"),
        ("plain.yaml", "a: 1\n", r"plain\.yaml is not a compiled pipeline \(no pipelineInfo\)"),
        ("empty.yaml", "", r"empty\.yaml is not a compiled pipeline"),
        (
            "k8s.yaml",
            "apiVersion: pipelines.kubeflow.org/v2beta1\nkind: Pipeline\n",
            r"k8s\.yaml is a Kubernetes-native Pipeline manifest \(kubernetes_manifest_format",
        ),
    ],
)
def test_a_bad_package_fails_before_any_call(
    fake: FakeKfpClient, tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name if text is None else _write(tmp_path / name, text)
    with pytest.raises(SpecError, match=message):
        _submit(fake, path)
    with pytest.raises(SpecError, match=message):
        schedule(
            fake,
            path,
            cron="0 0 2 * * *",
            job_name="nightly",
            experiment_name="automl-deft",
            arguments={},
            namespace=NS,
            service_account=None,
        )
    assert fake.calls == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"data": Path("/x")}, r"^arguments\.data is a PosixPath; pass a str, number, bool"),
        ({"n": None}, r"^arguments\.n is None; leave the argument out"),
        ({"lr": float("inf")}, r"^arguments\.lr is inf; JSON has no NaN or infinity$"),
        ({"max-trials": 3}, r"^arguments: 'max-trials' is not a pipeline parameter name"),
        ({"cfg": {1: "a"}}, r"^arguments\.cfg has the key 1; JSON object keys must be strings$"),
        ({"xs": [1, object()]}, r"^arguments\.xs\[1\] is a object"),
    ],
)
def test_bad_arguments_fail_before_any_call(
    fake: FakeKfpClient, package: Path, arguments: dict[Any, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        _submit(fake, package, arguments=arguments)
    assert fake.calls == []


def test_api_failures_become_one_line_errors_with_the_fix(
    fake: FakeKfpClient, package: Path
) -> None:
    fake.failures["create_run_from_pipeline_package"] = ApiException(503, "Service Unavailable")
    with pytest.raises(InfrastructureError) as info:
        _submit(fake, package)
    assert str(info.value) == (
        f"Kubeflow Pipelines at {HOST} failed while submitting run 'phase1' "
        "(HTTP 503 Service Unavailable); retry later"
    )

    refused = ApiException(403, "Forbidden")
    refused.body = json.dumps({"message": "Authorization: Bearer abc.def.ghi is not allowed"})
    fake.failures["get_experiment"] = refused
    with pytest.raises(UserError) as user_info:
        _submit(fake, package)
    assert str(user_info.value) == (
        f"Kubeflow Pipelines at {HOST} refused looking up experiment 'automl-deft' "
        "(HTTP 403 Forbidden: Authorization: Bearer *** is not allowed); check that "
        "KF_PIPELINES_TOKEN holds a valid, unexpired bearer token"
    )


def test_duplicate_experiments_are_a_user_error(fake: FakeKfpClient, package: Path) -> None:
    for i in range(2):
        fake.experiments.append(
            kfp_server_api.V2beta1Experiment(
                experiment_id=f"e{i}", display_name="automl-deft", namespace=NS
            )
        )
    with pytest.raises(UserError, match=r"^experiment 'automl-deft': Multiple experiments"):
        _submit(fake, package)
    assert "create_run_from_pipeline_package" not in fake.methods()


# --- schedule --------------------------------------------------------------------------


def _schedule(fake: FakeKfpClient, package: Path, **kwargs: Any) -> ScheduledRun:
    args: dict[str, Any] = {
        "cron": " 0 0 2 * * * ",
        "job_name": "nightly",
        "experiment_name": "automl-deft",
        "arguments": {"msg": "nightly"},
        "namespace": NS,
        "service_account": "automl-deft",
    }
    return schedule(fake, package, **(args | kwargs))


def test_schedule_creates_a_recurring_run(fake: FakeKfpClient, package: Path) -> None:
    scheduled = _schedule(fake, package, max_concurrency=2)
    assert scheduled == ScheduledRun(
        recurring_run_id="rr-2", url=f"{HOST}/#/recurringrun/details/rr-2"
    )
    assert fake.methods() == ["get_experiment", "create_experiment", "create_recurring_run"]
    call = fake.calls[-1][1]
    assert {k: call[k] for k in call if call[k] is not None} == {
        "experiment_id": "exp-1",
        "job_name": "nightly",
        "cron_expression": "0 0 2 * * *",
        "max_concurrency": 2,
        "no_catchup": True,
        "params": {"msg": "nightly"},
        "pipeline_package_path": str(package),
        "service_account": "automl-deft",
        "enabled": True,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 2 * * *"}, r'^cron "0 2 \* \* \*" has 5 fields; Kubeflow needs 6'),
        ({"cron": "0 0 25 * * *"}, r'hours field "25": 25 is above the maximum 23$'),
        ({"max_concurrency": 11}, r"^max_concurrency 11 is out of range; KFP allows 1-10$"),
        ({"job_name": " "}, r"^job_name must be a non-empty string"),
        ({"namespace": "Team_A"}, r"^namespace 'Team_A'"),
    ],
)
def test_schedule_refuses_before_any_network_call(
    fake: FakeKfpClient, package: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        _schedule(fake, package, **kwargs)
    assert fake.calls == []
