"""The Katib launcher through its whole life against a real API server.

The test plays Katib's controller (:class:`KatibController`): it waits for the
launcher's Experiment, creates its Trials and writes their status and then the
Experiment's through the ``/status`` subresource, as the controller does. What the
server adds over the in-process fake: real create/409/404/422 answers, the status
subresource (a client's status on create is dropped), resourceVersion conflicts,
and a server that really goes away and comes back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from automl_deft.errors import InfrastructureError, UserError
from automl_deft.hpo import katib_backend
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.katib_backend import STATE_FILE, KatibLauncher, KatibOutcome
from automl_deft.hpo.space import SearchSpace, default_aoi_space
from automl_deft.layout import SearchLayout
from automl_deft.model.checkpoint import BEST_NAME
from automl_deft.testing.apiserver import ApiServer

pytestmark = pytest.mark.cluster

PROBLEM = "/workspace/results/phase1/search_problem.json"
TIMEOUT_S = 120.0
WAIT_S = 60.0
FAR = (4.0, 1.5, 2.5)
"""far_pct of the controller's trials: the second one wins."""

ApiFactory = Callable[[], Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, status: bool, reason: str, message: str) -> dict[str, str]:
    now = _now()
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _assignments(space: SearchSpace, fraction: float) -> list[dict[str, str]]:
    """A parameter assignment inside the space, as Katib writes it (strings)."""
    out = []
    for p in space.params:
        assert p.low is not None and p.high is not None
        value: float = p.low + (p.high - p.low) * fraction
        out.append({"name": p.name, "value": str(int(value) if p.type == "int" else value)})
    return out


def _metrics(far_pct: float) -> list[dict[str, str]]:
    val_loss = far_pct / 10
    return [
        {"name": name, "min": str(v), "max": str(v), "latest": str(v)}
        for name, v in (("far_pct", far_pct), ("val_loss", val_loss))
    ]


class KatibController:
    """Katib's controller for one experiment, in a thread, through the real API.

    Waits for an Experiment in ``namespace``, marks it Created/Running, runs
    ``while_running`` (a test's disturbance), creates one Trial per :data:`FAR`
    value with its status, writes the winner's checkpoint on the "shared volume"
    (``results_dir``), and finally writes the Experiment's terminal status.
    """

    def __init__(
        self,
        api_factory: ApiFactory,
        namespace: str,
        results_dir: Path,
        space: SearchSpace,
        *,
        outcome: str = "Succeeded",
        while_running: Callable[[], None] | None = None,
    ) -> None:
        self.api_factory = api_factory
        self.namespace = namespace
        self.results_dir = results_dir
        self.space = space
        self.outcome = outcome
        self.while_running = while_running
        self.experiment: str | None = None
        self.trials: list[str] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="katib-controller", daemon=True)

    def __enter__(self) -> KatibController:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive(), "the controller thread did not finish"
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"the controller failed: {self.error!r}") from self.error

    # --- the controller's work -------------------------------------------------------

    def _run(self) -> None:
        try:
            name = self._wait_for_experiment()
            self.experiment = name
            self._write_status(
                name,
                {
                    "startTime": _now(),
                    "conditions": [
                        _condition("Created", True, "ExperimentCreated", "Experiment is created"),
                        _condition("Running", True, "ExperimentRunning", "Experiment is running"),
                    ],
                },
            )
            if self.while_running is not None:
                self.while_running()
            for index, far in enumerate(FAR):
                self.trials.append(self._run_trial(name, index, far))
            self._finish(name)
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def _wait_for_experiment(self) -> str:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            items = self.api_factory().list_namespaced_custom_object(
                km.GROUP, km.VERSION, self.namespace, km.EXPERIMENTS
            )["items"]
            if items:
                return str(items[0]["metadata"]["name"])
            time.sleep(0.1)
        raise TimeoutError(f"no Experiment appeared in namespace {self.namespace}")

    def _write_status(
        self, name: str, status: dict[str, Any], plural: str = km.EXPERIMENTS
    ) -> None:
        """Read-modify-write of ``/status``, retried on a resourceVersion conflict."""
        for _attempt in range(10):
            api = self.api_factory()
            obj = api.get_namespaced_custom_object(
                km.GROUP, km.VERSION, self.namespace, plural, name
            )
            obj["status"] = {**(obj.get("status") or {}), **status}
            try:
                api.replace_namespaced_custom_object_status(
                    km.GROUP, km.VERSION, self.namespace, plural, name, obj
                )
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError(f"status of {plural}/{name}: conflicts kept happening")

    def _run_trial(self, experiment: str, index: int, far: float) -> str:
        trial = f"{experiment}-{uuid.uuid4().hex[:8]}"
        api = self.api_factory()
        api.create_namespaced_custom_object(
            km.GROUP,
            km.VERSION,
            self.namespace,
            km.TRIALS,
            {
                "apiVersion": km.API_VERSION,
                "kind": "Trial",
                "metadata": {
                    "name": trial,
                    "labels": {km.EXPERIMENT_LABEL: experiment},
                },
                "spec": {
                    "objective": {"type": "minimize", "objectiveMetricName": "far_pct"},
                    "parameterAssignments": _assignments(self.space, (index + 1) / 4),
                    "primaryContainerName": km.PRIMARY_CONTAINER,
                },
            },
        )
        self._write_status(
            trial,
            {
                "startTime": _now(),
                "completionTime": _now(),
                "conditions": [
                    _condition("Created", True, "TrialCreated", "Trial is created"),
                    _condition("Running", False, "TrialRunning", "Trial is running"),
                    _condition("Succeeded", True, "TrialSucceeded", "Trial has succeeded"),
                ],
                "observation": {"metrics": _metrics(far)},
            },
            plural=km.TRIALS,
        )
        time.sleep(1.1)  # creationTimestamp has 1 s resolution: keep the trials in order
        return trial

    def _finish(self, name: str) -> None:
        best = self.trials[FAR.index(min(FAR))]
        conditions = [
            _condition("Created", True, "ExperimentCreated", "Experiment is created"),
            _condition("Running", False, "ExperimentRunning", "Experiment is running"),
        ]
        status: dict[str, Any] = {"trials": len(self.trials), "completionTime": _now()}
        if self.outcome == "Succeeded":
            checkpoint = SearchLayout(self.results_dir).trial_dir(best) / BEST_NAME
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            checkpoint.write_bytes(b"a trial's best checkpoint")
            conditions.append(
                _condition(
                    "Succeeded", True, "ExperimentMaxTrialsReached", "Experiment has succeeded"
                )
            )
            status.update(
                trialsSucceeded=len(self.trials),
                succeededTrialList=list(self.trials),
                currentOptimalTrial={
                    "bestTrialName": best,
                    "parameterAssignments": _assignments(self.space, (FAR.index(min(FAR)) + 1) / 4),
                    "observation": {"metrics": _metrics(min(FAR))},
                },
            )
        else:
            conditions.append(
                _condition(
                    "Failed",
                    True,
                    "ExperimentMaxFailedTrialsReached",
                    "Experiment has reached the maximum number of failed trials",
                )
            )
            status.update(trialsFailed=len(self.trials), failedTrialList=list(self.trials))
        status["conditions"] = conditions
        self._write_status(name, status)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def namespace() -> str:
    """A namespace of its own per test (the server admits any valid name)."""
    return f"katib-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = tmp_path / "results" / "phase1"
    path.mkdir(parents=True)
    return path


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(katib_backend, "POLL_INTERVAL_S", 0.2)
    monkeypatch.setattr(katib_backend, "RETRY_BACKOFF_S", 0.2)


def _launcher(results: Path, namespace: str, api_factory: ApiFactory) -> KatibLauncher:
    return KatibLauncher(
        default_aoi_space(),
        km.KatibSettings(namespace=namespace, gpus=0),
        results_dir=results,
        problem_path=PROBLEM,
        api_factory=api_factory,
    )


def _experiments(api_factory: ApiFactory, namespace: str) -> list[dict[str, Any]]:
    items = api_factory().list_namespaced_custom_object(
        km.GROUP, km.VERSION, namespace, km.EXPERIMENTS
    )["items"]
    return list(items)


def _assert_found_the_winner(outcome: KatibOutcome, controller: KatibController) -> None:
    space = default_aoi_space()
    assert outcome.experiment == controller.experiment
    assert outcome.best_trial == controller.trials[1]
    assert outcome.best_metrics == {"far_pct": 1.5, "val_loss": 0.15}
    expected = {a["name"]: a["value"] for a in _assignments(space, 2 / 4)}
    assert outcome.best_params == {p.name: p.parse(expected[p.name]) for p in space.params}
    assert [t.name for t in outcome.history] == controller.trials
    assert [t.far_pct for t in outcome.history] == list(FAR)
    assert {t.condition for t in outcome.history} == {"Succeeded"}
    assert outcome.checkpoint.read_bytes() == b"a trial's best checkpoint"


# --- the life of an experiment -------------------------------------------------------------


def test_create_poll_collect_then_a_second_launcher_resumes(
    custom_objects: ApiFactory, namespace: str, results: Path
) -> None:
    launcher = _launcher(results, namespace, custom_objects)
    with KatibController(custom_objects, namespace, results, launcher.space) as controller:
        outcome = launcher.run(TIMEOUT_S)
    _assert_found_the_winner(outcome, controller)

    (stored,) = _experiments(custom_objects, namespace)
    assert stored["metadata"]["name"] == outcome.experiment
    manifest = yaml.safe_load((results / katib_backend.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert stored["spec"] == manifest["spec"], "the server holds the spec the launcher recorded"

    # A restarted launcher pod: same results directory, resumes instead of creating.
    again = _launcher(results, namespace, custom_objects).run(TIMEOUT_S)
    assert again == outcome
    assert [e["metadata"]["uid"] for e in _experiments(custom_objects, namespace)] == [
        stored["metadata"]["uid"]
    ]


def test_an_existing_experiment_409_is_resumed(
    custom_objects: ApiFactory,
    namespace: str,
    results: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create retried after it had gone through: the server answers 409, the launcher
    resumes that experiment instead of failing or creating another."""
    name = "automl-deft-409a0b1c"
    monkeypatch.setattr(katib_backend, "new_experiment_name", lambda prefix: name)
    launcher = _launcher(results, namespace, custom_objects)
    created = custom_objects().create_namespaced_custom_object(
        km.GROUP, km.VERSION, namespace, km.EXPERIMENTS, launcher.new_experiment()
    )
    with pytest.raises(ApiException) as conflict:  # what the launcher's create will meet
        custom_objects().create_namespaced_custom_object(
            km.GROUP, km.VERSION, namespace, km.EXPERIMENTS, launcher.new_experiment()
        )
    assert conflict.value.status == 409

    with KatibController(custom_objects, namespace, results, launcher.space) as controller:
        outcome = launcher.run(TIMEOUT_S)
    _assert_found_the_winner(outcome, controller)
    assert outcome.experiment == name
    assert [e["metadata"]["uid"] for e in _experiments(custom_objects, namespace)] == [
        created["metadata"]["uid"]
    ]


def test_a_failed_experiment_is_a_clear_infrastructure_error(
    custom_objects: ApiFactory, namespace: str, results: Path
) -> None:
    launcher = _launcher(results, namespace, custom_objects)
    controller = KatibController(
        custom_objects, namespace, results, launcher.space, outcome="Failed"
    )
    with controller, pytest.raises(InfrastructureError) as failed:
        launcher.run(TIMEOUT_S)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(
        f"Katib experiment {namespace}/{controller.experiment} failed: "
        "ExperimentMaxFailedTrialsReached: Experiment has reached the maximum number of "
        "failed trials (failed trials: "
    )
    assert all(trial in message for trial in controller.trials)


def test_the_api_server_killed_and_restarted_mid_poll(
    apiserver: ApiServer,
    custom_objects: ApiFactory,
    namespace: str,
    results: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL the API server while the launcher polls; it retries until the server is
    back (same port, same etcd) and finishes as if nothing had happened."""
    # Room for a slow restart on a busy machine: ~20 failed polls, 0.5 s apart.
    monkeypatch.setattr(katib_backend, "POLL_INTERVAL_S", 0.5)
    monkeypatch.setattr(katib_backend, "RETRY_BACKOFF_S", 0.5)
    monkeypatch.setattr(katib_backend, "MAX_CONSECUTIVE_API_ERRORS", 40)
    outage: dict[str, float] = {}

    def kill_and_restart() -> None:
        time.sleep(1.0)  # the launcher is polling the Running experiment
        outage["start"] = time.monotonic()
        apiserver.stop(kill=True)
        assert not apiserver.running
        time.sleep(2.0)  # several polls fail
        apiserver.restart()
        outage["end"] = time.monotonic()

    launcher = _launcher(results, namespace, custom_objects)
    caplog.set_level(logging.WARNING, logger=katib_backend.__name__)
    try:
        with KatibController(
            custom_objects, namespace, results, launcher.space, while_running=kill_and_restart
        ) as controller:
            outcome = launcher.run(TIMEOUT_S)
    finally:
        if not apiserver.running:  # leave the session's server up for the other tests
            apiserver.restart()
    _assert_found_the_winner(outcome, controller)
    assert outage["end"] > outage["start"]
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retries, "the launcher never met the outage"
    assert all(f"reading Katib experiment {controller.experiment}" in r for r in retries)


LAUNCHER_SCRIPT = """
import sys
from pathlib import Path

from kubernetes import client, config

from automl_deft.errors import AutomlDeftError
from automl_deft.hpo import katib_backend
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.space import default_aoi_space

katib_backend.POLL_INTERVAL_S = 0.2
kubeconfig, namespace, results = sys.argv[1:]
launcher = katib_backend.KatibLauncher(
    default_aoi_space(),
    km.KatibSettings(namespace=namespace, gpus=0),
    results_dir=Path(results),
    problem_path="/workspace/results/phase1/search_problem.json",
    api_factory=lambda: client.CustomObjectsApi(config.new_client_from_config(kubeconfig)),
)
try:
    launcher.run(300)
except AutomlDeftError as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_sigterm_deletes_the_experiment_on_the_server(
    apiserver: ApiServer, custom_objects: ApiFactory, namespace: str, results: Path
) -> None:
    """A cancelled KFP run: the launcher pod gets SIGTERM, the experiment goes away."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_SCRIPT, str(apiserver.kubeconfig), namespace, str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while not _experiments(custom_objects, namespace):
            assert proc.poll() is None, f"the launcher exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "the launcher created no experiment"
            time.sleep(0.1)
        time.sleep(1.0)  # polling now
        assert (results / STATE_FILE).is_file()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert f"cancelled (SIGTERM): deleted Katib experiment {namespace}/" in stderr
    assert _experiments(custom_objects, namespace) == []
    assert not (results / STATE_FILE).exists(), "a re-run must create afresh, not resume"


# --- a bad namespace -----------------------------------------------------------------------


def test_a_bad_namespace_is_a_one_line_user_error_and_leaves_no_state(
    custom_objects: ApiFactory, results: Path
) -> None:
    """Refused before anything is written or sent (the server would answer 422)."""
    with pytest.raises(UserError) as bad:
        launcher = _launcher(results, "Team_AOI", custom_objects)
        launcher.run(TIMEOUT_S)
    message = str(bad.value)
    assert "\n" not in message
    assert "Team_AOI" in message
    assert list(results.iterdir()) == []


def test_a_create_the_server_refuses_leaves_no_state_file(
    custom_objects: ApiFactory, results: Path
) -> None:
    """Past the client-side check (forced here), the real server's 422 is a one-line
    UserError and the state file is removed again, so a re-run creates afresh."""
    launcher = _launcher(results, "katib-ok", custom_objects)
    object.__setattr__(launcher.settings, "namespace", "Team_AOI")  # bypass the check
    launcher.namespace = "Team_AOI"
    with pytest.raises(UserError) as refused:
        launcher.run(TIMEOUT_S)
    message = str(refused.value)
    assert "\n" not in message
    assert "Katib refused it: HTTP 422" in message
    assert 'metadata.namespace: Invalid value: "Team_AOI"' in message
    assert not (results / STATE_FILE).exists()
