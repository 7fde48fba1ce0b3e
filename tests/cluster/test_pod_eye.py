"""Every component run the way a pod runs it (the "pod's-eye" tier, marker ``cluster``).

Each task of the compiled ``automl-deft`` IR runs its container command in a private
mount namespace (:mod:`automl_deft.testing.pod`) where the workspace exists only at
the PVC's mount path (``/workspace``) and its path on this machine is hidden; its
artifacts live under the ``minio://`` pipeline root, each pod seeing only its own
inputs. A Katib trial runs as Katib runs it: the trial Job of the real builder,
``${trialParameters.*}`` substituted, the StdOut collector's ``sh -c`` wrapper, the
metrics read back from ``metrics.log`` with Katib's default regex.

Run with ``python -m pytest -m cluster tests/cluster/test_pod_eye.py`` (as root).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from automl_deft.testing.pod import (
    KATIB_LOG_DIR,
    RFC3339,
    Bind,
    PodDriver,
    PodError,
    TaskRun,
    image_roots,
    katib_metrics,
    katib_trial_container,
    pod_support,
    run_in_pod,
    sample_assignments,
    stdout_collector_command,
)

UNSUPPORTED = pod_support()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(UNSUPPORTED is not None, reason=UNSUPPORTED or ""),
]

MOUNT = "/workspace"
CONFIG: dict[str, Any] = {
    "automl": {
        "max_trials": 2,
        "num_epochs": 2,
        "parallel_trials": 1,
        "guards": {"allow_no_gain_over_zero_shot": True},
    },
    "deft": {"max_iterations": 1, "num_epochs": 1, "kpi_target": "FAR < 1% at recall=100%"},
    "phase3": {"max_trials": 2, "num_epochs": 1},
}
CONFIG_NAME = "pod_eye.yaml"
"""The run config, in the workspace (the pipeline's ``config`` is workspace-relative)."""
POD_LOCAL = ("/minio/", "/tmp/")
"""Path prefixes that exist only inside one pod: no state on the volume may name them."""


@dataclass(frozen=True)
class PipelineRun:
    ws: Path
    driver: PodDriver
    tasks: dict[str, TaskRun]

    def task(self, name: str) -> TaskRun:
        (run,) = [t for t in self.tasks.values() if t.name == name]
        return run

    @property
    def run_dir(self) -> Path:
        pod_dir = self.task("preflight").parameters["Output"]
        assert pod_dir.startswith(f"{MOUNT}/"), pod_dir
        return self.ws / pod_dir.removeprefix(f"{MOUNT}/")


def _compiled(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import pipelines
    from automl_deft.cluster.compile import ir_yaml

    ir, platform = yaml.safe_load_all(ir_yaml(pipelines.build(name), name))
    return ir, platform


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory, tiny_ws: Path) -> PipelineRun:
    """The whole ``automl-deft`` pipeline chained task by task, every task in its pod."""
    base = tmp_path_factory.mktemp("pod_eye")
    ws = base / "ws"
    shutil.copytree(tiny_ws, ws)
    (ws / CONFIG_NAME).write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    ir, platform = _compiled("automl-deft")
    driver = PodDriver(ir, platform, workspace=ws, store=base / "store", logs=base / "logs")
    tasks = driver.run({"config": CONFIG_NAME, "hpo_backend": "optuna"})
    return PipelineRun(ws, driver, tasks)


def test_every_task_mounts_the_workspace_at_the_pipeline_parameter() -> None:
    """The driver binds the workspace where the IR mounts the PVC; ``workspace`` says the same."""
    ir, platform = _compiled("automl-deft")
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(ir["deploymentSpec"]["executors"])
    for name, spec in executors.items():
        assert [m["mountPath"] for m in spec["pvcMount"]] == [MOUNT], name
    assert ir["root"]["inputDefinitions"]["parameters"]["workspace"]["defaultValue"] == MOUNT


def test_the_pipeline_chains_in_pods_to_a_deliverable(pipeline_run: PipelineRun) -> None:
    from automl_deft.records import Deliverable

    run = pipeline_run
    ran = {t.name for t in run.tasks.values() if not t.skipped and t.result is not None}
    skipped = {t.name for t in run.tasks.values() if t.skipped}
    # Optuna: the in-pod branch of both searches ran, the Katib launchers did not.
    assert {"condition-3", "condition-7"} & skipped == set()
    assert {"condition-2", "condition-6"} <= skipped
    assert {"preflight", "automl-search-2", "quality-check", "seed-deft-baseline"} <= ran
    assert "deft-loop" in ran and "automl-search" not in ran
    phase3 = run.task("deft-loop").parameters["run_phase3"]
    taken, not_taken = ("condition-8", "condition-9") if phase3 else ("condition-9", "condition-8")
    assert not_taken in skipped and taken not in skipped
    finalize, export = ("finalize", "export-model") if phase3 else ("finalize-2", "export-model-2")
    assert {finalize, export} <= ran
    deliverable = run.run_dir / "best_model.json"
    assert deliverable.is_file(), sorted(p.name for p in run.run_dir.iterdir())
    chosen = Deliverable.read(deliverable)
    assert chosen.path(run.run_dir, "checkpoint").is_file()
    package = run.driver.host_path(run.task(export).artifacts["package"])
    assert (package / "package.json").is_file(), sorted(p.name for p in package.iterdir())
    manifest = json.loads((package / "package.json").read_text(encoding="utf-8"))
    assert (package / manifest["model_file"]).is_file()
    # The KFP UI's view of the deliverable: a confusion matrix at its threshold and a ROC.
    shown = run.task(finalize).artifacts["classification"].metadata
    matrix = shown["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["PASS", "defect"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) > 0
    assert shown["confidenceMetrics"], "the ROC curve"
    assert shown["scored_on"] in ("holdout", "kpi")


def test_phase3_gets_the_deft_artifacts_by_uri(pipeline_run: PipelineRun) -> None:
    run = pipeline_run
    if not run.task("deft-loop").parameters["run_phase3"]:
        pytest.skip("DEFT stopped Phase 3 on this run (a safety gate), so no Phase 3 task ran")
    search = run.task("automl-search-4")
    assert search.executor_input is not None
    given = search.executor_input["inputs"]["artifacts"]
    sources = {
        "train_dataset": ("deft-loop", "augmented"),
        "warm_start": ("select-warm-start", "warm_start"),
        "centroid": ("seed-deft-baseline", "winning_spec"),
    }
    for key, (producer, output) in sources.items():
        art = run.task(producer).artifacts[output]
        assert given[key]["artifacts"][0]["uri"] == art.uri, key
        assert given[key]["artifacts"][0]["metadata"] == art.metadata, key
        assert art.uri.startswith("minio://"), art.uri
    source_csv = run.task("deft-loop").artifacts["augmented"].metadata["source_csv"]
    assert source_csv.startswith(f"{MOUNT}/"), source_csv


def test_no_state_on_the_volume_names_a_pod_local_path(pipeline_run: PipelineRun) -> None:
    """A path under ``/minio`` or ``/tmp`` is one pod's private copy: the next pod (or a
    Katib trial) cannot open it, so nothing written to the workspace may name one."""
    offenders = []
    for path in sorted(pipeline_run.ws.rglob("*")):
        if path.suffix not in {".json", ".jsonl", ".yaml", ".yml", ".csv"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path}: {p}" for p in POD_LOCAL if f'"{p}' in text or f" {p}" in text]
    assert offenders == []


def test_a_path_of_the_submitting_machine_fails_in_the_pod(tiny_ws: Path, tmp_path: Path) -> None:
    """The control: the workspace's path on this machine, handed to a pod, is not there."""
    ws = tmp_path / "ws"
    shutil.copytree(tiny_ws, ws)
    ir, platform = _compiled("automl-deft")
    driver = PodDriver(ir, platform, workspace=ws, store=tmp_path / "store", logs=tmp_path / "logs")
    with pytest.raises(PodError, match=r"^preflight failed in its pod \(exit [1-9]\d*\)") as err:
        driver.run({"workspace": str(ws)})
    assert str(ws) in str(err.value), str(err.value)
    assert [t.name for t in driver.tasks.values()] == []


# --- the namespace itself ---------------------------------------------------------------


@pytest.fixture(params=["tmp", "var-tmp"])
def host_ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A small workspace under ``/tmp`` (gone with the pod's fresh /tmp) or elsewhere
    (``/var/tmp``: its parent is covered)."""
    if request.param == "tmp":
        ws = tmp_path / "ws"
        ws.mkdir()
        yield ws
        return
    parent = Path(tempfile.mkdtemp(prefix="pod-eye-", dir="/var/tmp"))
    try:
        ws = parent / "ws"
        ws.mkdir()
        yield ws
    finally:
        shutil.rmtree(parent)


def _image_in_tmp() -> list[str]:
    """What a fresh pod /tmp holds: nothing but a checkout (the "image") that itself
    lives in /tmp, put back at its own path."""
    return sorted(
        {p.relative_to("/tmp").parts[0] for p in image_roots() if p.is_relative_to("/tmp")}
    )


def test_the_namespace_hides_the_host_path(host_ws: Path, tmp_path: Path) -> None:
    (host_ws / "data").mkdir()
    (host_ws / "data" / "file.txt").write_text("on the volume\n", encoding="utf-8")
    store = tmp_path / "store"
    store.mkdir()
    script = "; ".join(
        [
            f"echo content=$(cat {MOUNT}/data/file.txt)",
            f"stat {host_ws} >/dev/null 2>&1 && echo host=seen || echo host=missing",
            f"echo parent=$(ls -A {host_ws.parent} 2>/dev/null || echo missing)",
            f"stat {store} >/dev/null 2>&1 && echo store=seen || echo store=missing",
            "echo tmp=$(ls -A /tmp)",
            "echo tmpdir=$TMPDIR",
            f"echo written > {MOUNT}/data/from_pod.txt",
            "echo stored > /minio/x/a.txt",
        ]
    )
    result = run_in_pod(["sh", "-c", script], host_ws, MOUNT, binds=[Bind("/minio/x", store)])
    assert result.returncode == 0, result.output
    seen = dict(line.partition("=")[::2] for line in result.output.splitlines())
    assert seen["content"] == "on the volume"
    assert seen["host"] == "missing" and seen["store"] == "missing"
    # Under /tmp the parent is gone with the fresh /tmp; elsewhere it is an empty folder.
    assert seen["parent"] in ("missing", ""), seen
    assert (seen["tmp"].split(), seen["tmpdir"]) == (_image_in_tmp(), "/tmp")
    assert (host_ws / "data" / "from_pod.txt").read_text(encoding="utf-8") == "written\n"
    assert (store / "a.txt").read_text(encoding="utf-8") == "stored\n"


def test_the_pod_tmp_is_fresh_and_private(tmp_path: Path) -> None:
    marker = Path(tempfile.gettempdir()) / f"pod-eye-marker-{tmp_path.name}"
    marker.write_text("host\n", encoding="utf-8")
    try:
        ws = tmp_path / "ws"
        ws.mkdir()
        result = run_in_pod(
            ["sh", "-c", f"ls -A /tmp; test ! -e {marker} && echo fresh; mktemp -d"], ws
        )
    finally:
        marker.unlink()
    assert result.returncode == 0, result.output
    *listing, fresh, made = result.output.splitlines()
    assert listing == _image_in_tmp() and fresh == "fresh"
    assert made.startswith("/tmp/tmp."), made


# --- one Katib trial, as Katib runs it ----------------------------------------------------

KATIB_TRIAL_NAME = "automl-deft-0123abcd-x7k9p2mq"
"""A trial name as Katib makes them (``<experiment>-<8 random characters>``)."""
CRAFTED_TRIAL_NAME = "pod-eye trial;$(true)&x"
"""A trial name with a space and shell metacharacters: it must reach the trial intact
through the collector's ``sh -c`` (the name is this trial's folder under ``trials/``)."""


class _Submitted(Exception):
    """Stops the search once the Experiment reached the (fake) API."""


def _submitted_experiment(
    ws: Path, results: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The Experiment the real launcher submits (the search problem written as it writes
    it), from this machine's view of the workspace, as ``automl --backend katib`` does."""
    from automl_deft.hpo import katib_backend
    from automl_deft.hpo.search import AutomlConfig, automl_search
    from automl_deft.testing.fake_kubernetes import FakeCall, FakeCluster

    cluster = FakeCluster()

    def submitted(c: FakeCluster, call: FakeCall) -> None:
        raise _Submitted

    cluster.on("create", submitted)
    monkeypatch.setattr(katib_backend, "default_api_factory", cluster.client)
    cfg = AutomlConfig(
        backend="katib", max_trials=1, num_epochs=1, katib={"mount_path": MOUNT, "gpus": 0}
    )
    with pytest.raises(_Submitted):
        automl_search(ws, cfg, results_dir=results)
    (call,) = cluster.calls
    body: dict[str, Any] = call.body
    return body


@dataclass(frozen=True)
class KatibTrial:
    command: list[str]
    returncode: int
    output: str
    metrics_log: str
    pid_files: list[str]
    trial_dir: Path


def _run_katib_trial(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trial_name: str
) -> KatibTrial:
    """Submit (to the fake API), then run the trial's container as Katib would: its
    template substituted, wrapped by the StdOut collector, in a pod with the workspace
    at the mount path and ``/var/log/katib`` as the collector's shared folder."""
    results = ws / "results" / "katib_pod_eye"
    experiment = _submitted_experiment(ws, results, monkeypatch)
    container = katib_trial_container(experiment, trial_name, sample_assignments(experiment))
    logs = tmp_path / "katib"
    logs.mkdir()
    result = run_in_pod(
        stdout_collector_command(container.command, container.env),
        ws,
        MOUNT,
        binds=[Bind(KATIB_LOG_DIR, logs)],
        env=container.env,
        cwd=container.working_dir,
        timeout_s=900,
    )
    metrics_log = logs / "metrics.log"
    return KatibTrial(
        command=container.command,
        returncode=result.returncode,
        output=result.output,
        metrics_log=metrics_log.read_text(encoding="utf-8") if metrics_log.is_file() else "",
        pid_files=[p.read_text(encoding="utf-8") for p in sorted(logs.glob("*.pid"))],
        trial_dir=results / "trials" / trial_name,
    )


def test_a_katib_trial_runs_as_katib_runs_it(
    tiny_ws_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = _run_katib_trial(tiny_ws_copy, tmp_path, monkeypatch, KATIB_TRIAL_NAME)
    # Every path the trial is given is the pod's (the submitting machine's means nothing).
    paths = [w for part in trial.command for w in part.split() if "/" in w]
    assert paths and all(p.startswith(f"{MOUNT}/") for p in paths), trial.command
    log = trial.metrics_log
    assert trial.returncode == 0, f"{trial.output}\n--- metrics.log ---\n{log[-3000:]}"
    assert trial.pid_files == ["completed\n"]
    metrics = katib_metrics(log, ["far_pct", "val_loss"])
    assert {m.name for m in metrics} == {"far_pct", "val_loss"}, log[-3000:]
    undated = [m for m in metrics if m.timestamp is None or not RFC3339.fullmatch(m.timestamp)]
    assert undated == [], log[-3000:]
    stamps = [m.timestamp for m in metrics]
    assert stamps == sorted(stamps), stamps  # one clock, in order: "latest" is well defined
    assert (trial.trial_dir / "trial.json").is_file()


def test_a_katib_trial_name_with_shell_metacharacters_reaches_the_trial(
    tiny_ws_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector joins the command with spaces into ``sh -c``: what the builder puts
    there must survive it, whatever Katib substitutes."""
    trial = _run_katib_trial(tiny_ws_copy, tmp_path, monkeypatch, CRAFTED_TRIAL_NAME)
    log = trial.metrics_log
    assert trial.returncode == 0, f"{trial.output}\n--- metrics.log ---\n{log[-3000:]}"
    assert trial.pid_files == ["completed\n"]
    assert (trial.trial_dir / "trial.json").is_file()
    assert {m.name for m in katib_metrics(log, ["far_pct", "val_loss"])} == {"far_pct", "val_loss"}
