"""Four reliability fixes: no secret in any file, authentication errors, the search lock,
and torn journal lines.

No ``from __future__ import annotations`` here: kfp reads the tiny pipelines' component
signatures at runtime, and string annotations would turn ``str`` into an artifact type.
"""

import fcntl
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import kfp
import pytest
import yaml
from click.testing import CliRunner
from kfp import dsl

from automl_deft.cli import cli
from automl_deft.cluster.local_run import run_local
from automl_deft.deft.sdg import SDGContext, SDGRequest, get_sdg_backend
from automl_deft.deft.state import DeftState, read_log
from automl_deft.errors import InfrastructureError, StageError, UserError
from automl_deft.layout import RunLayout, SearchLayout
from automl_deft.testing.deft_state import seeded_state
from automl_deft.testing.loopback import serve_on_loopback
from automl_deft.workspace import ImageNaming, Workspace, read_dataset_csv

HF_SECRET = "hf_plantedSecretValue_4711"
AWS_SECRET = "aws/planted+SecretKey=0815"
CUSTOM_SECRET = "sdg-api-key-planted-9931"
MEAN_DIFF = "automl_deft.testing.applications:MeanDiffApplication"
LEAKY_COMMAND = ["sh", "-c", "echo token $HF_TOKEN >&2; exit 1"]


def _files_holding(root: Path, *secrets: str) -> list[str]:
    """Every file under ``root`` whose bytes contain one of ``secrets``."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and any(s.encode() in p.read_bytes() for s in secrets)
    )


# --- 1. no secret in any file ------------------------------------------------------------


def test_redact_masks_credential_values_and_named_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from automl_deft.redact import MASK, redact

    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("NGC_API_KEY", "abc")  # too short to mask: would mask everything
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "")
    monkeypatch.setenv("MY_KEY", CUSTOM_SECRET)
    text = f"a {HF_SECRET} b {AWS_SECRET}{AWS_SECRET} c abc {CUSTOM_SECRET} HF_TOKEN"
    assert MASK == "***"
    assert redact(text) == f"a *** b ****** c abc {CUSTOM_SECRET} HF_TOKEN"
    assert redact(text, extra_names=["MY_KEY", "UNSET_NAME"]) == (
        "a *** b ****** c abc *** HF_TOKEN"
    )
    assert redact("") == ""
    # A value that holds another one is masked whole, not piecewise.
    monkeypatch.setenv("NGC_API_KEY", f"{HF_SECRET}-longer")
    assert redact(f"x {HF_SECRET}-longer y") == "x *** y"


def _deft_config(path: Path, **sdg_options: Any) -> Path:
    config = {
        "kpi_target": "FAR < 0.1% at recall=100%",
        "max_iterations": 1,
        "num_epochs": 1,
        "application": MEAN_DIFF,
        "sdg": {
            "backend": "command",
            "num_sdg": 4,
            "options": {"command": LEAKY_COMMAND, **sdg_options},
        },
        "mining": {"top_k_per_target": 1},
        "rca": {"top_k_per_label": 5},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_a_failing_sdg_command_leaves_no_credential_in_the_run_or_the_output(
    tiny_ws: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    caplog.set_level(logging.DEBUG)
    run = tmp_path / "run"
    cfg = _deft_config(tmp_path / "deft.yaml")
    result = CliRunner().invoke(cli, ["deft", str(tiny_ws), "-c", str(cfg), "--results", str(run)])
    assert result.exit_code == 2, result.output
    # The error still says what failed, with the value masked.
    assert "error: DEFT hard-stopped: iter1 sdg: SDG command exited with status 1: token ***;" in (
        result.stderr
    )
    state = DeftState.load(run, reconcile=False)
    assert state.stop_reason is not None and "token ***" in state.stop_reason
    assert (run / "iter1" / "sdg" / "sdg_command.stderr.log").read_text() == "token ***\n"
    assert _files_holding(run, HF_SECRET) == []
    assert HF_SECRET not in result.output + result.stderr + caplog.text


def _sdg_ctx(ws_root: Path, out: Path, **options: Any) -> SDGContext:
    ws = Workspace.at(ws_root)
    return SDGContext(
        images_dir=ws.images_dir,
        naming=ImageNaming(),
        image_size=(64, 64),
        train_frame=read_dataset_csv(ws.train_csv),
        out_images_dir=out / "images" / "sdg",
        work_dir=out / "sdg",
        options=options,
    )


@pytest.mark.parametrize(
    ("script", "timeout_s", "message"),
    [
        ("exit 4", 60, r"^SDG command exited with status 4: key \*\*\* \| aws \*\*\*; fix"),
        ("sleep 30", 0.5, r"^SDG command timed out after 0.5 s: key \*\*\* \| aws \*\*\*; raise"),
    ],
)
def test_the_sdg_command_masks_the_variables_its_config_marks_secret(
    tiny_ws: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    timeout_s: float,
    message: str,
) -> None:
    monkeypatch.setenv("SDG_API_KEY", CUSTOM_SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    command = [
        "sh",
        "-c",
        f'echo "key $SDG_API_KEY"; echo "key $SDG_API_KEY" >&2; echo "aws $AWS_SECRET_ACCESS_KEY"'
        f" >&2; {script}",
    ]
    options = {"command": command, "timeout_s": timeout_s, "secret_env": ["SDG_API_KEY"]}
    ctx = _sdg_ctx(tiny_ws, tmp_path / "run", **options)
    kpi = read_dataset_csv(Workspace.at(tiny_ws).kpi_csv)
    requests = [SDGRequest("open", 2, kpi[kpi["label"] == "open"])]
    with pytest.raises(StageError, match=message) as info:
        get_sdg_backend("command").generate(requests, ctx)
    assert CUSTOM_SECRET not in str(info.value) and AWS_SECRET not in str(info.value)
    assert (tmp_path / "run" / "sdg" / "sdg_command.stdout.log").read_text() == "key ***\n"
    assert _files_holding(tmp_path, CUSTOM_SECRET, AWS_SECRET) == []


def test_sdg_secret_env_must_be_a_list_of_names(tiny_ws: Path, tmp_path: Path) -> None:
    backend = get_sdg_backend("command")
    for bad in ("HF_TOKEN", [1], ["not a name"]):
        ctx = _sdg_ctx(tiny_ws, tmp_path, command="gen", secret_env=bad)
        with pytest.raises(StageError, match=r"^sdg\.options\.secret_env must be a list of "):
            backend.supported_labels(ctx)


@dsl.component(base_image="python:3.11")
def leaky_task(results_dir: str, torn: bool) -> None:
    import json
    import os
    from pathlib import Path

    print("task sees", os.environ["HF_TOKEN"], flush=True)
    line = json.dumps(
        {"step": "leaky_step", "message": f"bad token {os.environ['HF_TOKEN']}", "exit_code": 2}
    )
    errors = Path(results_dir) / "task_errors.jsonl"
    errors.write_text(line + "\n" + ('{"step": "leaky_st' if torn else ""), encoding="utf-8")
    raise SystemExit(1)


@dsl.pipeline(name="leaky")
def leaky(results_dir: str, torn: bool = False) -> None:
    leaky_task(results_dir=results_dir, torn=torn)


@pytest.mark.parametrize("torn", [False, True])
def test_kfp_local_task_output_and_its_error_line_are_redacted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    torn: bool,
) -> None:
    """``automl-deft run``: a task's printed output and the error line taken from it; a torn
    last line of task_errors.jsonl (written by another step) does not hide the error."""
    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    with pytest.raises(UserError) as info:
        run_local(leaky, {"torn": torn}, results_dir=tmp_path / "run", quiet=True)
    assert str(info.value) == "leaky: bad token ***"
    out = capsys.readouterr()
    # the task's own output goes to its log (the terminal gets its start/end lines)
    log = (tmp_path / "run" / "logs" / "leaky-task.log").read_text(encoding="utf-8")
    assert "task sees ***" in log
    assert HF_SECRET not in log + out.out + out.err


def test_a_failed_katib_experiment_message_is_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_deft.hpo import katib_manifest as km
    from automl_deft.hpo.katib_backend import KatibLauncher
    from automl_deft.hpo.space import default_aoi_space
    from automl_deft.testing.fake_kubernetes import FakeClock, FakeCluster, experiment_status

    monkeypatch.setenv("HF_TOKEN", HF_SECRET)
    cluster, clock = FakeCluster(), FakeClock()
    cluster.script_experiment(
        [experiment_status("Failed", reason="TrialFailed", message=f"trial said {HF_SECRET}")]
    )
    launcher = KatibLauncher(
        default_aoi_space(),
        km.KatibSettings(),
        results_dir=tmp_path,
        problem_path="/workspace/results/phase1/search_problem.json",
        api_factory=cluster.client,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(InfrastructureError, match=r"failed: TrialFailed: trial said \*\*\* \("):
        launcher.run(timeout_s=3600)
    assert _files_holding(tmp_path, HF_SECRET) == []


# --- 2. a 401/403 is authentication, not "unreachable" -------------------------------------


@pytest.fixture
def refusing_server() -> Iterator[dict[str, Any]]:
    """A loopback HTTP server that answers every request with ``state["status"]``."""
    state: dict[str, Any] = {"status": 401, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            state["seen"].append((self.command, self.path, self.headers.get("Authorization")))
            body = b'{"error": "jwt rejected", "code": 16, "message": "jwt rejected"}'
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _refuse

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_on_loopback(Handler) as url:
        state["url"] = url
        yield state


@pytest.mark.parametrize(
    ("command", "status", "token", "fix"),
    [
        ("submit", 401, None, "set KF_PIPELINES_TOKEN to a bearer token for this endpoint"),
        ("schedule", 401, None, "set KF_PIPELINES_TOKEN to a bearer token for this endpoint"),
        ("submit", 403, HF_SECRET, "the token in KF_PIPELINES_TOKEN was refused: get a fresh one"),
    ],
)
def test_an_authentication_refusal_is_one_line_at_once(
    refusing_server: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    command: str,
    status: int,
    token: str | None,
    fix: str,
) -> None:
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if token:
        monkeypatch.setenv("KF_PIPELINES_TOKEN", token)
    refusing_server["status"] = status
    package = tmp_path / "pipeline.yaml"
    package.write_text("pipelineInfo: {name: tiny}\n", encoding="utf-8")
    host = refusing_server["url"]
    args = [command, "--host", host, "--package", str(package)]
    if command == "schedule":
        args += ["--cron", "0 0 2 * * *"]
    caplog.set_level(logging.DEBUG)
    start = time.monotonic()
    result = CliRunner().invoke(cli, args)
    assert time.monotonic() - start < 5  # no retries (kfp's health check waits 5 s a try)
    assert result.exit_code == 2, result.output
    reason = "Unauthorized" if status == 401 else "Forbidden"
    assert result.stderr == (
        f"error: Kubeflow Pipelines at {host} refused connecting (HTTP {status} {reason}: jwt "
        f"rejected); {fix}\n"
    )
    assert len(refusing_server["seen"]) == 1
    assert "Traceback" not in caplog.text and "ApiException" not in caplog.text
    if token:
        assert refusing_server["seen"][0][2] == f"Bearer {token}"
        assert token not in result.output + result.stderr + caplog.text


# --- 3. a lock on the search ----------------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys
from pathlib import Path
from automl_deft.layout import SearchLayout
path = SearchLayout(Path(sys.argv[1])).lock
path.parent.mkdir(parents=True, exist_ok=True)
fh = open(path, "a+")
fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_search_lock(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A search folder whose lock another process holds (as a running search does)."""
    results = tmp_path / "search"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(results)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        yield results, holder.pid
    finally:
        holder.kill()
        holder.wait(30)


def test_a_second_search_on_one_results_folder_is_refused_at_once(
    tiny_ws: Path, held_search_lock: tuple[Path, int]
) -> None:
    from automl_deft.hpo.search import AutomlConfig, automl_search

    results, pid = held_search_lock
    before = sorted(p.name for p in results.iterdir())
    cfg = AutomlConfig(application=MEAN_DIFF, max_trials=1, num_epochs=1, parallel_trials=1)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        automl_search(tiny_ws, cfg, results_dir=results)
    assert time.monotonic() - start < 5
    assert str(info.value) == (
        f"another search is running in {results} (pid {pid}); wait for it or use another --results"
    )
    assert sorted(p.name for p in results.iterdir()) == before == [SearchLayout.LOCK]


def test_the_automl_command_refuses_a_locked_search_in_one_line(
    tiny_ws: Path, tmp_path: Path, held_search_lock: tuple[Path, int]
) -> None:
    results, pid = held_search_lock
    cfg = tmp_path / "automl.yaml"
    cfg.write_text(f"application: {MEAN_DIFF}\nmax_trials: 1\nnum_epochs: 1\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["automl", str(tiny_ws), "-c", str(cfg), "--results", str(results)]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: another search is running in {results} (pid {pid}); wait for it or use "
        "another --results\n"
    )


def test_the_search_lock_is_held_for_the_search_and_released_after(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_deft.hpo import search

    results = tmp_path / "search"
    seen: list[bool] = []
    real = search.write_outputs

    def probe(*args: Any, **kwargs: Any) -> None:
        with open(SearchLayout(results).lock, "a+") as fh:  # another open file: not ours
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append(False)
            except BlockingIOError:
                seen.append(True)
        real(*args, **kwargs)

    monkeypatch.setattr(search, "write_outputs", probe)
    cfg = search.AutomlConfig(
        application=MEAN_DIFF,
        max_trials=1,
        num_epochs=1,
        parallel_trials=1,
        guards=search.GuardConfig(allow_no_gain_over_zero_shot=True, lucky_factor=0),
    )
    search.automl_search(tiny_ws, cfg, results_dir=results)
    assert seen == [True]
    assert (results / SearchLayout.RESULT).is_file()
    search.automl_search(tiny_ws, cfg, results_dir=results)  # released: a rerun resumes


# --- 4. a torn last line of a journal ------------------------------------------------------

STAGES = ("baseline:train", "baseline:evaluate", "baseline:rca", "iter1:routing")


def _log_lines(run: Path) -> list[dict[str, Any]]:
    """Every line of the log, parsed (a line that does not parse fails the test)."""
    text = RunLayout(run).log.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def _assert_journal(run: Path, n: int) -> None:
    entries = _log_lines(run)
    assert [e["seq"] for e in entries] == list(range(1, n + 1))
    keys = [(e["iter"], e["stage"]) for e in entries]
    assert len(keys) == len(set(keys))
    assert read_log(RunLayout(run).log) == entries


@pytest.mark.parametrize("cut", ["mid-line", "newline only"])
def test_a_torn_last_log_line_is_dropped_and_re_appended_on_resume(
    tmp_path: Path, cut: str
) -> None:
    run = seeded_state(tmp_path / "run", stages=STAGES)
    log = RunLayout(run).log
    data = log.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    keep = {"mid-line": last + (len(data) - last) // 2, "newline only": len(data) - 1}
    log.write_bytes(data[: keep[cut]])

    state = DeftState.load(run)
    _assert_journal(run, len(STAGES))
    state.commit("iter1", "sdg", summary="4 pairs", duration_sec=1.0)
    _assert_journal(run, len(STAGES) + 1)
    assert DeftState.load(run).log_seq == len(STAGES) + 1


def test_a_torn_line_in_a_live_run_is_repaired_before_the_next_append(tmp_path: Path) -> None:
    """The process survived a failed append (a full disk): the next append drops the torn
    tail and writes the entry it lost first, so no ``seq`` is missing."""
    run = seeded_state(tmp_path / "run", stages=STAGES)
    state = DeftState.load(run)
    log = RunLayout(run).log
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 10])
    state.commit("iter1", "sdg", summary="4 pairs", duration_sec=1.0)
    _assert_journal(run, len(STAGES) + 1)
    assert _log_lines(run)[-2]["stage"] == "routing"
