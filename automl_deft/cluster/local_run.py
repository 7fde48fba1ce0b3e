"""The embedded default: run a pipeline function on this machine with ``kfp.local``.

No compilation, no cluster: every component runs as a subprocess of this
Python (``SubprocessRunner(use_venv=False)``, so the installed project is
importable), the Optuna backend trains in-process, and artifacts land under
``<results>/kfp/``. Resources, volumes and node placement are cluster-only
settings that ``kfp.local`` ignores. Retries it honours, so the pipeline comes
built without them (``pipelines.build(name, retries=False)``): a local failure
is a real error, reported at once, and re-running resumes from the state on disk.
Nothing goes through the environment: the results directory is a parameter, and
each step records its own error in it (``RUN/task_errors.jsonl``). What the tasks
print and the error line taken from them pass :func:`automl_deft.redact.redact`
first, so a credential a task echoes never reaches the console.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from automl_deft.errors import AutomlDeftError, InfrastructureError, UserError
from automl_deft.layout import RunLayout
from automl_deft.redact import redact


@dataclass
class LocalRun:
    pipeline_root: Path
    seconds: float


def run_local(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    results_dir: str | os.PathLike[str],
    quiet: bool = False,
) -> LocalRun:
    """Execute ``pipeline(results_dir=results_dir, **arguments)`` through ``kfp.local``.

    Artifacts land under ``RunLayout(results_dir).kfp_root``. A step that fails on a
    project error appends it to ``RunLayout(results_dir).task_errors`` (cleared
    first), which is how the task's own one-line error is reported instead of kfp's.

    Args:
        pipeline: built without retries (``pipelines.build(name, retries=False)``):
            kfp.local honours them, with their backoff, before reporting a failure.
        arguments: the other pipeline parameters.
        results_dir: the run's results directory (passed to the pipeline as
            ``results_dir``).

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
    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    start = time.monotonic()
    with warnings.catch_warnings(), _redacted_stdout(), _scratch_in(scratch):
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(results_dir=str(layout.root), **arguments)
        except AutomlDeftError:
            raise
        except RuntimeError as exc:
            raise _task_error(exc, errors) from exc
    return LocalRun(layout.kfp_root, time.monotonic() - start)


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
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        shutil.rmtree(scratch, ignore_errors=True)


class _RedactingWriter(io.TextIOBase):
    """A text stream that masks secret values, a whole line at a time, onto ``target``.

    kfp.local prints every line a task writes (``print(line, end='')``) to
    ``sys.stdout``; this stands in for it while the pipeline runs.
    """

    def __init__(self, target: IO[str]) -> None:
        super().__init__()
        self._target = target
        self._pending = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        self._pending += text
        cut = self._pending.rfind("\n") + 1
        if cut:
            self._target.write(redact(self._pending[:cut]))
            self._pending = self._pending[cut:]
        return len(text)

    def flush(self) -> None:
        # A partial line stays until its end comes (a secret is masked only whole).
        self._target.flush()

    def close_line(self) -> None:
        if self._pending:
            self._target.write(redact(self._pending))
            self._pending = ""
        self._target.flush()


@contextlib.contextmanager
def _redacted_stdout() -> Iterator[None]:
    writer = _RedactingWriter(sys.stdout)
    try:
        with contextlib.redirect_stdout(writer):  # type: ignore[type-var]
            yield
    finally:
        writer.close_line()


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


def _task_error(exc: RuntimeError, errors: Path) -> AutomlDeftError:
    """kfp.local's "task failed" as the failing task's own project error, when it had one.

    The error is the last complete record of ``task_errors.jsonl`` (a torn last line,
    from a task killed while writing it, is skipped), with secret values masked.
    """
    message = str(exc).splitlines()[0] if str(exc) else "a pipeline task failed"
    last = _last_task_error(errors)
    if last is not None:
        cls = UserError if last.get("exit_code") == UserError.exit_code else InfrastructureError
        return cls(redact(f"{str(last['step']).removesuffix('_step')}: {last['message']}"))
    return InfrastructureError(redact(f"{message}; the task's output is above"))


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
