"""The embedded default: run a pipeline function on this machine with ``kfp.local``.

No compilation, no cluster: every component runs as a subprocess of this
Python (``SubprocessRunner(use_venv=False)``, so the installed project is
importable), the Optuna backend trains in-process, and artifacts land under
``<results>/kfp/``. Resources, volumes and node placement are cluster-only
settings that ``kfp.local`` ignores; retries are switched off (a local failure
is a real error, and re-running resumes from the state on disk).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl_deft.errors import AutomlDeftError, InfrastructureError, UserError

NO_RETRY_ENV = "AUTOML_DEFT_NO_RETRY"
ERROR_FILE = "task_errors.jsonl"
KFP_ROOT = "kfp"


@dataclass
class LocalRun:
    pipeline_root: Path
    seconds: float


def run_local(
    pipeline: Callable[..., Any],
    arguments: dict[str, Any],
    *,
    pipeline_root: str | os.PathLike[str],
    quiet: bool = False,
) -> LocalRun:
    """Execute ``pipeline(**arguments)`` through ``kfp.local``.

    Raises:
        UserError: a task failed on a project error (its one-line message is kept).
        InfrastructureError: a task failed otherwise.
    """
    from kfp import local

    _hide_docker_folder()
    root = Path(pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    from automl_deft.steps import ERROR_FILE_ENV

    errors = root / ERROR_FILE
    errors.unlink(missing_ok=True)
    saved = {key: os.environ.get(key) for key in (NO_RETRY_ENV, ERROR_FILE_ENV)}
    os.environ[NO_RETRY_ENV] = "1"
    os.environ[ERROR_FILE_ENV] = str(errors)
    try:
        pipeline = _rebuilt(pipeline)
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            raise_on_error=True,
        )
        if quiet:
            logging.getLogger().setLevel(logging.WARNING)
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=".*have no effect in the current local runner.*"
            )
            try:
                pipeline(**arguments)
            except AutomlDeftError:
                raise
            except RuntimeError as exc:
                raise _task_error(exc, errors) from exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return LocalRun(root, time.monotonic() - start)


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


def _rebuilt(pipeline: Callable[..., Any]) -> Callable[..., Any]:
    """``pipeline`` built again, now that ``NO_RETRY_ENV`` is set.

    ``@dsl.pipeline`` builds the graph, retry policies included, when the pipelines
    module is imported, i.e. before this runner could set the variable; kfp.local
    honours retries (with their 60 s backoff), so without this a failed task would
    be re-run before its error is reported. The original object is left as it was.
    """
    from kfp.dsl.graph_component import GraphComponent

    if not isinstance(pipeline, GraphComponent):
        return pipeline
    return GraphComponent(
        component_spec=copy.deepcopy(pipeline.component_spec),
        pipeline_func=pipeline.pipeline_func,
        pipeline_config=pipeline.pipeline_config,
    )


def _task_error(exc: RuntimeError, errors: Path) -> AutomlDeftError:
    """kfp.local's "task failed" as the failing task's own project error, when it had one."""
    message = str(exc).splitlines()[0] if str(exc) else "a pipeline task failed"
    if errors.is_file():
        lines = [ln for ln in errors.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if lines:
            last = json.loads(lines[-1])
            cls = UserError if last.get("exit_code") == UserError.exit_code else InfrastructureError
            return cls(f"{last['step'].removesuffix('_step')}: {last['message']}")
    return InfrastructureError(f"{message}; the task's output is above")
