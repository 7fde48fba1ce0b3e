"""The embedded default: run a pipeline function on this machine with ``kfp.local``.

No compilation, no cluster: every component runs as a subprocess of this
Python (``SubprocessRunner(use_venv=False)``, so the installed project is
importable), the Optuna backend trains in-process, and artifacts land under
``<results>/kfp/``. Resources, volumes and node placement are cluster-only
settings that ``kfp.local`` ignores. Retries it honours, so the pipeline comes
built without them (``pipelines.build(name, retries=False)``): a local failure
is a real error, reported at once, and re-running resumes from the state on disk.
Nothing goes through the environment: the results directory is a parameter, and
each step records its own error in it (``RUN/task_errors.jsonl``).

What the terminal shows: kfp.local prints everything a task writes, and its own
lines about the task, on ``sys.stdout``; while the pipeline runs that is
:class:`_Console`, which writes all of it to the task's log (``RUN/logs/<task>.log``)
and shows a person one line when a task starts and ends (a readable name from
:data:`TASK_LABELS`, its duration, its key result), the tasks' console events
(:mod:`automl_deft.console`: trial ends, DEFT stages, headings) and an overall ETA.
``Verbosity.VERBOSE`` shows everything as well. Every line passes
:func:`automl_deft.redact.redact` first, so a credential a task echoes reaches
neither the terminal nor a log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from pathlib import Path
from typing import IO, Any

from automl_deft import console
from automl_deft.errors import AutomlDeftError, InfrastructureError, UserError
from automl_deft.layout import RunLayout
from automl_deft.redact import redact


@dataclass
class LocalRun:
    pipeline_root: Path
    seconds: float


class Verbosity(IntEnum):
    """How much of a local run the terminal shows (the task logs always get everything)."""

    QUIET = 0
    """Each task's end line, and a failure."""
    SUMMARY = 1
    """Also each task's start, trial ends, DEFT stages, the ETA; bars on a terminal."""
    VERBOSE = 2
    """Also every line kfp.local and the tasks print."""


TASK_LABELS: dict[str, str] = {
    "pre-flight": "pre-flight",
    "phase1: AutoML (Optuna)": "Phase 1 AutoML",
    "phase1: AutoML (Katib trials)": "Phase 1 AutoML (Katib)",
    "quality check": "quality check",
    "handoff 1→2": "handoff 1→2",
    "Phase 2: DEFT loop": "Phase 2 DEFT loop",
    "handoff 2→3": "handoff 2→3",
    "phase3: AutoML (Optuna)": "Phase 3 AutoML",
    "phase3: AutoML (Katib trials)": "Phase 3 AutoML (Katib)",
    "finalize": "finalize",
    "finalize (Phase 3 skipped: DEFT hard-stopped or phase3.enabled false)": (
        "finalize (Phase 3 skipped)"
    ),
    "export": "export",
}
"""The pipelines' display names (``set_display_name`` in ``pipelines/``) as the terminal
names them; a name not listed is shown as it is."""


def run_local(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    results_dir: str | os.PathLike[str],
    verbosity: Verbosity = Verbosity.SUMMARY,
    jobs: int | None = None,
    quiet: bool = False,
    stream: IO[str] | None = None,
) -> LocalRun:
    """Execute ``pipeline(results_dir=results_dir, **arguments)`` through ``kfp.local``.

    Artifacts land under ``RunLayout(results_dir).kfp_root``, each task's whole output
    in ``RunLayout(results_dir).logs``. A step that fails on a project error appends it
    to ``RunLayout(results_dir).task_errors`` (cleared first), which is how the task's
    own one-line error is reported instead of kfp's.

    Args:
        pipeline: built without retries (``pipelines.build(name, retries=False)``):
            kfp.local honours them, with their backoff, before reporting a failure.
        arguments: the other pipeline parameters.
        results_dir: the run's results directory (passed to the pipeline as
            ``results_dir``).
        verbosity: what the terminal shows (see :class:`Verbosity`).
        jobs: the trainings the run plans (the pre-flight's compute total), for the
            overall ETA; None: an ETA for the running search or loop only.
        quiet: ``verbosity=Verbosity.QUIET`` (the older spelling).
        stream: the terminal (default: ``sys.stdout``); colour and bars only when it
            is a TTY.

    Raises:
        ValueError: ``pipeline`` retries failed tasks, or ``arguments`` holds
            ``results_dir``.
        UserError: a task failed on a project error (its one-line message is kept).
        InfrastructureError: a task failed otherwise.
    """
    from kfp import local

    if "results_dir" in arguments:
        raise ValueError("run_local: pass the results directory as results_dir=, not in arguments")
    retried = retried_tasks(pipeline)
    if retried:
        raise ValueError(
            f"run_local: tasks {', '.join(retried)} retry on failure; build the pipeline "
            "with retries=False for a local run"
        )
    _hide_docker_folder()
    layout = RunLayout.at(results_dir)
    layout.kfp_root.mkdir(parents=True, exist_ok=True)
    errors = layout.task_errors
    errors.unlink(missing_ok=True)
    scratch = layout.kfp_root / "workspace"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(layout.kfp_root),
        workspace_root=str(scratch),
        raise_on_error=True,
    )
    out = stream if stream is not None else sys.stdout
    screen = _Console(
        out,
        layout,
        task_labels(pipeline),
        Verbosity.QUIET if quiet else verbosity,
        jobs=jobs,
    )
    start = time.monotonic()
    with (
        warnings.catch_warnings(),
        _console_stdout(screen),
        _scratch_in(scratch),
        _console_env(screen.bars),
    ):
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        # kfp.local's SubprocessRunner warns, for every task, that an image whose name
        # lacks "python" may not match this Python: the tasks run here, in this
        # environment, with the installed project (use_venv=False); the image is what a
        # cluster runs.
        warnings.filterwarnings(
            "ignore", message=".*non-Python base image.*", category=RuntimeWarning
        )
        try:
            pipeline(results_dir=str(layout.root), **arguments)
        except AutomlDeftError:
            raise
        except RuntimeError as exc:
            error = _task_error(exc, errors, screen.failed_log or layout.logs)
            screen.failure(str(error))
            raise error from exc
    return LocalRun(layout.kfp_root, time.monotonic() - start)


def task_labels(pipeline: Callable[..., Any]) -> dict[str, str]:
    """kfp.local's name of each task (its component, ``automl-search-2``) → the terminal's."""
    from kfp.dsl.graph_component import GraphComponent

    if not isinstance(pipeline, GraphComponent):
        return {}
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    return {
        task.component_ref.name.removeprefix("comp-"): TASK_LABELS.get(
            task.task_info.name, task.task_info.name
        )
        for dag in dags
        for task in dag.tasks.values()
    }


def _task_result(label: str, layout: RunLayout) -> str | None:
    """The key result of a task that emitted none, read from what it wrote."""
    if not label.startswith("finalize") or not layout.summary.is_file():
        return None
    from automl_deft.records import PipelineSummary
    from automl_deft.steps import kpi_verdict

    summary = PipelineSummary.read(layout.summary)
    if summary.best is None:
        return None
    text = f"deliverable {summary.best.iteration}: KPI FAR {summary.best.far_pct:.2f}%"
    if summary.holdout is not None and summary.holdout.far_pct is not None:
        text += f", hold-out {summary.holdout.far_pct:.2f}%"
    verdict = kpi_verdict(summary)
    return f"{text} · {verdict}" if verdict else text


@contextlib.contextmanager
def _scratch_in(scratch: Path) -> Iterator[None]:
    """Temporary files of the run's tasks under ``RUN/kfp/workspace``, not ``/tmp``.

    kfp.local's scratch folder and each task's ``mktemp -d`` program folder (through
    ``TMPDIR``, which the task subprocesses inherit) live in the run: a killed run
    leaves nothing behind in ``/tmp``, and the next run on the folder empties it first.
    """
    shutil.rmtree(scratch, ignore_errors=True)
    tmp = scratch / "tmp"
    tmp.mkdir(parents=True)
    with _env(os.environ, "TMPDIR", str(tmp)):
        try:
            yield
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _console_env(bars: bool) -> Iterator[None]:
    """Tell the task subprocesses (which inherit the environment) that events are read,
    and whether a training may draw its bar on the user's terminal."""
    with _env(os.environ, console.ENV, console.BARS if bars else console.PLAIN):
        yield


@contextlib.contextmanager
def _env(environ: Any, name: str, value: str) -> Iterator[None]:
    before = environ.get(name)
    environ[name] = value
    try:
        yield
    finally:
        if before is None:
            environ.pop(name, None)
        else:
            environ[name] = before


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_KFP_LINE = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} - (?P<level>[A-Z]+) - (?P<msg>.*)$")
"""kfp.local's own log lines (its ``MillisecondFormatter``)."""
_STARTED = re.compile(r"^Executing task '(?P<task>[^']+)'$")
_ENDED = re.compile(r"^Task '(?P<task>[^']+)' finished with status (?P<status>[A-Z]+)$")
_RULE = re.compile(r"^-{8,}$")
"""The horizontal line kfp.local prints after each task."""
_CHILD_INDENT = " " * 4
"""kfp.local indents every line a task prints by four spaces."""


@dataclass
class _Task:
    name: str
    label: str
    log: IO[str]
    path: Path
    start: float = field(default_factory=time.monotonic)
    result: str | None = None
    streaming: bool = True
    jobs_left: int | None = None
    """The task's own count of jobs still to run, from its last job event."""


class _Console(io.TextIOBase):
    """``sys.stdout`` while the pipeline runs: every line to its task's log, the terminal
    only what a person reads (see the module's docstring).

    kfp.local runs one task at a time (its orchestrators walk the DAG in topological
    order; only a ``dsl.ParallelFor``, which these pipelines do not use, runs tasks in
    threads), so the task a line belongs to is the one its last "Executing task" named.
    """

    def __init__(
        self,
        out: IO[str],
        layout: RunLayout,
        labels: dict[str, str],
        verbosity: Verbosity,
        *,
        jobs: int | None = None,
    ) -> None:
        super().__init__()
        self._out = out
        self._layout = layout
        self._labels = labels
        self.verbosity = verbosity
        self.tty = _isatty(out)
        self.bars = self.tty and verbosity == Verbosity.SUMMARY
        self._jobs = jobs
        self._job_seconds: list[float] = []
        self._eta_due: str | None = None
        self._pending = ""
        self._task: _Task | None = None
        self._failed: _Task | None = None
        self._pipeline_log: IO[str] | None = None

    # --- the stream kfp.local writes to -----------------------------------------------

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._out, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        self._pending += text
        cut = self._pending.rfind("\n") + 1
        if cut:
            lines, self._pending = self._pending[:cut], self._pending[cut:]
            for line in redact(lines).splitlines():
                self._line(line)
        return len(text)

    def flush(self) -> None:
        # A partial line stays until its end comes (a secret is masked only whole).
        self._out.flush()

    def close_all(self) -> None:
        if self._pending:
            self._line(redact(self._pending))
            self._pending = ""
        self._close_task()
        if self._pipeline_log is not None:
            self._pipeline_log.close()
            self._pipeline_log = None
        self._out.flush()

    # --- routing ------------------------------------------------------------------------

    def _line(self, raw: str) -> None:
        plain = _ANSI.sub("", raw)
        kfp = _KFP_LINE.match(plain)
        if kfp is not None:
            self._kfp_line(kfp["level"], kfp["msg"], plain)
            self._show_verbose(raw, plain)
            return
        task = self._task
        text = plain
        if task is not None and not task.streaming and _RULE.match(text):
            self._log(text)  # kfp.local's line under a finished task: what follows is not its
            self._close_task()
            self._show_verbose(raw, plain)
            return
        if task is not None and task.streaming and text.startswith(_CHILD_INDENT):
            text = text[len(_CHILD_INDENT) :]
        event = console.Event.parse(text)
        if event is None:
            self._log(text)
            self._show_verbose(raw, plain)
            return
        if event.text:
            self._log(event.text)
        self._event(event)

    def _kfp_line(self, level: str, msg: str, plain: str) -> None:
        started = _STARTED.match(msg)
        if started is not None:
            self._start(started["task"])
        self._log(plain)
        ended = _ENDED.match(msg)
        if ended is not None:
            self._end(ended["status"])
        elif level in ("WARNING", "ERROR", "CRITICAL") and self.verbosity < Verbosity.VERBOSE:
            self._say(f"{level.lower()}: {msg}")

    def record(self, record: logging.LogRecord) -> None:
        """A log record of this process (kfp.local outside a task: skipped branches…)."""
        text = redact(f"{record.levelname} {record.name}: {record.getMessage()}")
        self._log(text)
        if self.verbosity == Verbosity.VERBOSE or record.levelno >= logging.WARNING:
            self._say(text)

    def _event(self, event: console.Event) -> None:
        task = self._task
        if task is not None and event.kind == "result":
            task.result = event.text
            return
        if event.job_seconds is not None:
            self._job_seconds.append(event.job_seconds)
            done, of = event.fields.get("done"), event.fields.get("of")
            if task is not None and isinstance(done, int) and isinstance(of, int):
                task.jobs_left = of - done
            # On this line, or (a bare "job" event: a DEFT iteration) on the next one.
            self._eta_due = self._eta()
        if not event.text or event.kind == "job":
            return
        if self.verbosity >= Verbosity.SUMMARY:
            eta, self._eta_due = self._eta_due, None
            self._say(f"  {event.text}" + (f" · {eta}" if eta else ""))

    def _eta(self) -> str | None:
        """``≈ 3m left``: the jobs still to run × the mean measured job time."""
        mean = sum(self._job_seconds) / len(self._job_seconds)
        task = self._task
        if self._jobs is not None:
            left, scope = self._jobs - len(self._job_seconds), ""
        elif task is not None and task.jobs_left is not None:
            left, scope = task.jobs_left, f" in {task.label}"
        else:
            return None
        if left <= 0:
            return None
        return f"≈ {console.format_duration(left * mean)} left{scope}"

    # --- tasks --------------------------------------------------------------------------

    def _start(self, name: str) -> None:
        self._close_task()
        label = self._labels.get(name, name)
        self._layout.logs.mkdir(parents=True, exist_ok=True)
        path = self._layout.logs / f"{name}.log"
        # Appended: a resumed run keeps the log of the attempt that failed.
        log = path.open("a", encoding="utf-8")
        log.write(f"=== {label} ({name}) · started {datetime.now():%Y-%m-%d %H:%M:%S} ===\n")
        self._task = _Task(name, label, log, path)
        self._eta_due = None
        if self.verbosity >= Verbosity.SUMMARY:
            self._say(f"[{label}] started {datetime.now():%H:%M:%S}")

    def _end(self, status: str) -> None:
        task = self._task
        if task is None:
            return
        task.streaming = False
        took = console.format_duration(time.monotonic() - task.start)
        if status != "SUCCESS":
            self._failed = task
            return
        result = task.result or _task_result(task.label, self._layout)
        self._say(f"[{task.label}] done · {took}" + (f" · {result}" if result else ""))

    @property
    def failed_log(self) -> Path | None:
        return self._failed.path if self._failed is not None else None

    def failure(self, error: str) -> None:
        """The failed task's one-line error first, then where its whole log is."""
        task = self._failed
        if task is None:
            self._say(f"[pipeline] FAILED: {error}")
            return
        took = console.format_duration(time.monotonic() - task.start)
        self._say(f"[{task.label}] FAILED · {took} · {error}")
        self._say(f"  log: {task.path}")

    def _close_task(self) -> None:
        if self._task is not None:
            self._task.log.close()
            self._task = None

    # --- output -------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        task = self._task
        if task is not None:
            task.log.write(text + "\n")
            task.log.flush()
            return
        if self._pipeline_log is None:
            self._layout.logs.mkdir(parents=True, exist_ok=True)
            self._pipeline_log = (self._layout.logs / PIPELINE_LOG).open("a", encoding="utf-8")
        self._pipeline_log.write(text + "\n")
        self._pipeline_log.flush()

    def _say(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _show_verbose(self, raw: str, plain: str) -> None:
        if self.verbosity == Verbosity.VERBOSE:
            self._say(raw if self.tty else plain)


PIPELINE_LOG = "pipeline.log"
"""``RUN/logs/pipeline.log``: kfp.local's lines outside any task."""


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _RecordHandler(logging.Handler):
    def __init__(self, screen: _Console) -> None:
        super().__init__(logging.INFO)
        self._screen = screen

    def emit(self, record: logging.LogRecord) -> None:
        self._screen.record(record)


@contextlib.contextmanager
def _console_stdout(screen: _Console) -> Iterator[None]:
    """``sys.stdout`` and this process's root log handlers are ``screen`` meanwhile
    (kfp.local installs its own handler on ``sys.stdout`` for each task, then restores
    these)."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers[:] = [_RecordHandler(screen)]
    try:
        with contextlib.redirect_stdout(screen):  # type: ignore[type-var]
            yield
    finally:
        root.handlers[:] = handlers
        screen.close_all()


def retried_tasks(pipeline: Callable[..., Any]) -> list[str]:
    """The tasks of a compiled-in-memory pipeline that have a retry policy (sorted)."""
    from kfp.dsl.graph_component import GraphComponent

    if not isinstance(pipeline, GraphComponent):
        return []
    spec = pipeline.pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.HasField("dag"))]
    return sorted(
        name
        for dag in dags
        for name, task in dag.tasks.items()
        if task.HasField("retry_policy") and task.retry_policy.max_retry_count > 0
    )


def _hide_docker_folder() -> None:
    """Make ``import docker`` fail cleanly when it would find a plain ``docker/`` folder.

    With the repository root on ``sys.path`` (``python -m pytest``, ``python -m
    automl_deft.cli``), this repository's ``docker/`` (the Dockerfile) imports as an
    empty namespace package; kfp.local's optional import of the Docker SDK then fails
    with AttributeError instead of the ImportError it handles.
    """
    if "docker" in sys.modules:
        return
    spec = importlib.util.find_spec("docker")
    if spec is not None and spec.origin is None:  # a namespace package, not the SDK
        sys.modules["docker"] = None  # type: ignore[assignment]


def _task_error(exc: RuntimeError, errors: Path, log: Path) -> AutomlDeftError:
    """kfp.local's "task failed" as the failing task's own project error, when it had one.

    The error is the last complete record of ``task_errors.jsonl`` (a torn last line,
    from a task killed while writing it, is skipped), with secret values masked;
    otherwise kfp's line and where the task's log is.
    """
    message = str(exc).splitlines()[0] if str(exc) else "a pipeline task failed"
    last = _last_task_error(errors)
    if last is not None:
        cls = UserError if last.get("exit_code") == UserError.exit_code else InfrastructureError
        return cls(redact(f"{str(last['step']).removesuffix('_step')}: {last['message']}"))
    return InfrastructureError(redact(f"{_ANSI.sub('', message)}; its log: {log}"))


def _last_task_error(errors: Path) -> dict[str, Any] | None:
    """The last well-formed ``{step, message, exit_code}`` record of ``errors``, if any."""
    if not errors.is_file():
        return None
    text = errors.read_bytes().decode("utf-8", errors="replace")
    for line in reversed(text.splitlines()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"step", "message"} <= record.keys():
            return record
    return None
