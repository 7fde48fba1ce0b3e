"""The terminal of ``automl-deft run``: console events, the router, the logs, the bars.

The router is fed a recorded kfp.local stream (what ``automl-deft run`` printed before
it had a router: kfp's coloured lines, the executor's JSON, a task's own lines) and a
tiny real pipeline run through :func:`run_local`. The whole pipeline's terminal is
checked in tests/test_pipeline.py (its one ``automl-deft run``).

No ``from __future__ import annotations`` here: kfp reads the tiny pipeline's component
signatures at import time.
"""

import io
import logging
import re
from pathlib import Path

import pytest
from kfp import dsl

import pipelines
from automl_deft import console
from automl_deft.cluster.local_run import TASK_LABELS, Verbosity, _Console, run_local, task_labels
from automl_deft.errors import UserError
from automl_deft.layout import RunLayout

ANSI = re.compile(r"\x1b\[")

# Recorded from `automl-deft run` on the tiny workspace (kfp 2.17, stdout redirected);
# the executor_input JSON is cut to its first and last lines.
RECORDED = (
    "02:31:19.177 - INFO - Running pipeline: \x1b[95m'automl-deft'\x1b[0m\n"
    "--------------------------------------------------------------------------------\n"
    "02:31:19.188 - INFO - Executing task \x1b[96m'preflight'\x1b[0m\n"
    "02:31:19.188 - INFO - Streamed logs:\n"
    "\n"
    "    [KFP Executor 2026-12-02 02:31:19,241 INFO]: Looking for component `preflight` in "
    "--component_module_path `/tmp/rec/results/kfp/workspace/tmp/tmp.mxt7lW8kLY/"
    "ephemeral_component.py`\n"
    "    [KFP Executor 2026-12-02 02:31:19,242 INFO]: Got executor_input:\n"
    "    {\n"
    '        "inputs": {\n'
    '            "parameterValues": {\n'
    '                "hpo_backend": "optuna",\n'
    "    }\n"
    "    [KFP Executor 2026-12-02 02:31:25,054 INFO]: Wrote executor output file to "
    "/tmp/rec/results/kfp/automl-deft-2026-12-02-02-31-19-177087/preflight/"
    "executor_output.json.\n"
    "    \n"
    "\n"
    "02:31:26.452 - INFO - Task \x1b[96m'preflight'\x1b[0m finished with status "
    "\x1b[92mSUCCESS\x1b[0m\n"
    "02:31:26.453 - INFO - Task \x1b[96m'preflight'\x1b[0m outputs:\n"
    "    Output: '/tmp/rec/results'\n"
    "    summary: Markdown( name='summary',\n"
    "                       uri='/tmp/rec/results/kfp/automl-deft-2026-12-02-02-31-19-177087/"
    "preflight/summary',\n"
    "                       metadata={} )\n"
    "--------------------------------------------------------------------------------\n"
    "02:31:26.456 - INFO - Executing task \x1b[96m'automl-search-2'\x1b[0m\n"
    "02:31:26.456 - INFO - Streamed logs:\n"
    "\n"
    "    [I 2026-12-02 02:31:30,432] A new study created in Journal with name: results-phase1\n"
    "    [KFP Executor 2026-12-02 02:31:34,634 INFO]: epoch 1/2  train_loss=0.7831  "
    "val_far=58.82%  val_loss=0.8011\n"
    "    {trial1}\n"
    "    [KFP Executor 2026-12-02 02:31:39,446 INFO]: epoch 2/2  train_loss=0.5568  "
    "val_far=61.76%  val_loss=0.8978\n"
    "    {trial2}\n"
    "    {result}\n"
    "    \n"
    "\n"
    "02:31:42.102 - INFO - Task \x1b[96m'automl-search-2'\x1b[0m finished with status "
    "\x1b[92mSUCCESS\x1b[0m\n"
    "--------------------------------------------------------------------------------\n"
    "02:33:15.312 - INFO - Pipeline \x1b[95m'automl-deft'\x1b[0m finished with status "
    "\x1b[92mSUCCESS\x1b[0m\n"
)
TRIAL1 = "trial 1/2 (trial-0000) finished: val FAR 58.82% (best so far) · 8s"
TRIAL2 = "trial 2/2 (trial-0001) finished: val FAR 61.76% (best so far: trial-0000) · 5s"
LABELS = {"preflight": "pre-flight", "automl-search-2": "Phase 1 AutoML"}


def _stream() -> str:
    def event(text: str, seconds: float | None, done: int | None) -> str:
        fields = {} if done is None else {"done": done, "of": 2}
        return console.Event("trial" if seconds else "result", text, seconds, fields).line()

    return (
        RECORDED.replace("{trial1}", event(TRIAL1, 8.0, 1))
        .replace("{trial2}", event(TRIAL2, 5.0, 2))
        .replace("{result}", event("winner trial-0000: val FAR 58.82%", None, None))
    )


def _route(tmp_path: Path, verbosity: Verbosity, *, jobs: int | None = None) -> list[str]:
    out = io.StringIO()
    screen = _Console(out, RunLayout(tmp_path), LABELS, verbosity, jobs=jobs)
    text = _stream()
    for cut in range(0, len(text), 97):  # written in pieces, as kfp prints
        screen.write(text[cut : cut + 97])
    screen.close_all()
    return out.getvalue().splitlines()


def _clock(lines: list[str]) -> list[str]:
    return [re.sub(r"\d\d:\d\d:\d\d$", "HH:MM:SS", re.sub(r"· \d+s", "· Ns", x)) for x in lines]


def test_the_router_shows_a_summary_and_logs_every_line(tmp_path: Path) -> None:
    lines = _route(tmp_path, Verbosity.SUMMARY)
    assert _clock(lines) == [
        "[pre-flight] started HH:MM:SS",
        "[pre-flight] done · Ns",
        "[Phase 1 AutoML] started HH:MM:SS",
        "  trial 1/2 (trial-0000) finished: val FAR 58.82% (best so far) · Ns · ≈ 8s left in "
        "Phase 1 AutoML",
        "  trial 2/2 (trial-0001) finished: val FAR 61.76% (best so far: trial-0000) · Ns",
        "[Phase 1 AutoML] done · Ns · winner trial-0000: val FAR 58.82%",
    ]
    logs = RunLayout(tmp_path).logs
    assert sorted(p.name for p in logs.iterdir()) == [
        "automl-search-2.log",
        "pipeline.log",
        "preflight.log",
    ]
    pre = (logs / "preflight.log").read_text(encoding="utf-8")
    assert pre.startswith("=== pre-flight (preflight) · started ")
    # The task's lines without kfp's indent; kfp's own lines about it; no colour codes.
    assert "\n[KFP Executor 2026-12-02 02:31:19,242 INFO]: Got executor_input:\n{\n" in pre
    assert "INFO - Task 'preflight' finished with status SUCCESS\n" in pre
    assert "    Output: '/tmp/rec/results'\n" in pre
    search = (logs / "automl-search-2.log").read_text(encoding="utf-8")
    assert "epoch 2/2  train_loss=0.5568" in search and f"\n{TRIAL2}\n" in search
    assert console.MARK not in search
    pipeline = (logs / "pipeline.log").read_text(encoding="utf-8")
    assert "Running pipeline: 'automl-deft'" in pipeline
    assert "Pipeline 'automl-deft' finished with status SUCCESS" in pipeline
    assert not any(ANSI.search(p.read_text(encoding="utf-8")) for p in logs.iterdir())


def test_the_overall_eta_counts_the_plans_jobs(tmp_path: Path) -> None:
    lines = _route(tmp_path, Verbosity.SUMMARY, jobs=5)
    trials = [x for x in lines if x.startswith("  trial")]
    assert trials[0].endswith("· ≈ 32s left")  # 4 jobs × 8 s
    assert trials[1].endswith("· ≈ 20s left")  # 3 jobs × 6.5 s


def test_a_deft_iteration_puts_the_eta_on_its_last_stage_line(tmp_path: Path) -> None:
    out = io.StringIO()
    screen = _Console(
        out, RunLayout(tmp_path), {"deft-loop": "Phase 2 DEFT loop"}, Verbosity.SUMMARY
    )
    screen.write("02:31:52.928 - INFO - Executing task \x1b[96m'deft-loop'\x1b[0m\n")
    for event in (
        console.Event("stage", "[iter 1/3 · evaluate] FAR 9.1% → 7.2% · 5s · next: rca"),
        console.Event("job", "", 60.0, {"done": 1, "of": 3}),
        console.Event("stage", "[iter 1/3 · rca] 12 weak rows · 0s · next: iter 2 routing"),
        console.Event("stage", "[iter 2/3 · routing] mining PASS · 0s · next: sdg"),
    ):
        screen.write("    " + event.line() + "\n")
    screen.close_all()
    assert out.getvalue().splitlines()[1:] == [
        "  [iter 1/3 · evaluate] FAR 9.1% → 7.2% · 5s · next: rca",
        "  [iter 1/3 · rca] 12 weak rows · 0s · next: iter 2 routing · ≈ 2m left in Phase 2 "
        "DEFT loop",
        "  [iter 2/3 · routing] mining PASS · 0s · next: sdg",
    ]


def test_quiet_shows_the_end_lines_and_verbose_everything_without_colour(tmp_path: Path) -> None:
    quiet = _route(tmp_path / "q", Verbosity.QUIET)
    assert [x.split(" · ")[0] for x in quiet] == ["[pre-flight] done", "[Phase 1 AutoML] done"]
    verbose = _route(tmp_path / "v", Verbosity.VERBOSE)
    assert "    [KFP Executor 2026-12-02 02:31:19,242 INFO]: Got executor_input:" in verbose
    assert f"  {TRIAL2}" in verbose  # an event as its text, not its JSON
    assert not any(ANSI.search(x) or console.MARK in x for x in verbose)


def test_a_terminal_gets_bars_only_in_the_summary(tmp_path: Path) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    layout = RunLayout(tmp_path)
    assert _Console(Tty(), layout, {}, Verbosity.SUMMARY).bars
    assert not _Console(Tty(), layout, {}, Verbosity.VERBOSE).bars
    assert not _Console(io.StringIO(), layout, {}, Verbosity.SUMMARY).bars


def test_every_display_name_of_every_pipeline_has_a_terminal_name() -> None:
    for name in pipelines.NAMES:
        labels = task_labels(pipelines.build(name, retries=False))
        tasks = {k: v for k, v in labels.items() if not k.startswith("condition")}
        assert set(tasks.values()) <= set(TASK_LABELS.values()), (name, tasks)
    labels = task_labels(pipelines.build("automl-deft", retries=False))
    assert labels["automl-search-2"] == "Phase 1 AutoML"
    assert labels["deft-loop"] == "Phase 2 DEFT loop"


# --- events in a task -------------------------------------------------------------------


def test_an_event_outside_a_run_is_a_plain_line_or_a_log_record(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv(console.ENV, raising=False)
    caplog.set_level(logging.INFO, logger="automl_deft.console")
    console.emit("stage", "[iter 1/3 · sdg] 20/20 pairs · 1s · next: mining", echo=True)
    console.emit("trial", TRIAL1, job_seconds=8.0)
    console.emit("job", "", job_seconds=3.0)
    assert capsys.readouterr().out == "[iter 1/3 · sdg] 20/20 pairs · 1s · next: mining\n"
    assert [r.getMessage() for r in caplog.records] == [TRIAL1]


def test_an_event_under_a_run_is_one_marked_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(console.ENV, console.PLAIN)
    console.emit("trial", TRIAL1, job_seconds=8.0, done=1, of=2)
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(console.MARK)
    assert console.Event.parse("    " + line) == console.Event(
        "trial", TRIAL1, 8.0, {"done": 1, "of": 2}
    )
    assert console.Event.parse("trial 1/2 finished") is None
    assert console.Event.parse(console.MARK + "{not json") is None


def test_a_bar_draws_on_the_terminal_only_when_the_run_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tty = io.StringIO()
    monkeypatch.setattr(console, "_tty_stream", [tty])
    monkeypatch.setenv(console.ENV, console.BARS)
    with console.activity("trial 3/5"):
        bar = console.bar(10, "epoch 2/8", progress=False, postfix={"val FAR": "9.80%"})
        bar.update(10)
        bar.refresh()
        drawn = tty.getvalue()
        bar.close()
    assert "trial 3/5 · epoch 2/8" in drawn and "10/10" in drawn and "val FAR=9.80%" in drawn
    monkeypatch.setenv(console.ENV, console.PLAIN)
    assert console.bar(10, "epoch 1/8", progress=True).disable
    monkeypatch.delenv(console.ENV)
    assert console.bar(10, "epoch 1/8", progress=False).disable


# --- a tiny real pipeline ---------------------------------------------------------------


@dsl.component(base_image="python:3.11")
def chatty_task(results_dir: str) -> str:
    from automl_deft import console

    print("a line only the log needs", flush=True)
    console.emit("trial", "trial 1/1 (trial-0000) finished: val FAR 9.80% · 1s", job_seconds=1.0)
    console.emit("result", "winner trial-0000: val FAR 9.80%")
    return results_dir


@dsl.component(base_image="python:3.11")
def failing_task(results_dir: str) -> None:
    import json
    from pathlib import Path

    print("about to fail", flush=True)
    error = {"step": "failing_step", "message": "the widget is missing; add it", "exit_code": 2}
    (Path(results_dir) / "task_errors.jsonl").write_text(json.dumps(error) + "\n")
    raise SystemExit(1)


@dsl.pipeline(name="console-demo")
def console_demo(results_dir: str) -> None:
    first = chatty_task(results_dir=results_dir).set_display_name("phase1: AutoML (Optuna)")
    failing_task(results_dir=first.output).set_display_name("finalize")


def test_a_run_shows_its_tasks_and_a_failure_then_the_log(tmp_path: Path) -> None:
    out = io.StringIO()
    with pytest.raises(UserError, match=r"^failing: the widget is missing; add it$"):
        run_local(console_demo, {}, results_dir=tmp_path, stream=out)
    lines = _clock(out.getvalue().splitlines())
    logs = RunLayout(tmp_path).logs
    assert lines == [
        "[Phase 1 AutoML] started HH:MM:SS",
        "  trial 1/1 (trial-0000) finished: val FAR 9.80% · Ns",
        "[Phase 1 AutoML] done · Ns · winner trial-0000: val FAR 9.80%",
        "[finalize] started HH:MM:SS",
        "[finalize] FAILED · Ns · failing: the widget is missing; add it",
        f"  log: {logs / 'failing-task.log'}",
    ]
    chatty = (logs / "chatty-task.log").read_text(encoding="utf-8")
    assert "a line only the log needs" in chatty and "Got executor_input" in chatty
    failing = (logs / "failing-task.log").read_text(encoding="utf-8")
    assert "about to fail" in failing and "finished with status FAILURE" in failing
