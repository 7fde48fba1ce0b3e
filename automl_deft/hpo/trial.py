"""One trial: a search problem + sampled values in, a trained, validated model out.

A trial trains through the problem's application
(:meth:`automl_deft.application.Application.train_trial`; ``aoi-changenet`` by
default), never a trainer directly. Both backends run trials through
:func:`run_trial`: Optuna in-process, Katib as
``python -m automl_deft.hpo.trial --problem P`` in a Job, with its name in
``AUTOML_DEFT_TRIAL_NAME`` and the sampled values in ``AUTOML_DEFT_PARAM_<NAME>`` env
vars (no shell parses them),
which prints ``<RFC 3339 time> far_pct=<v>`` and ``… val_loss=<v>`` lines for
Katib's StdOut metrics collector. The problem a pod reads has every path
re-rooted at the workspace volume's mount path (:meth:`SearchProblem.for_pods`).
Each trial keeps its spec, checkpoints and a ``trial.json`` under
``<results>/trials/<trial-name>/``; a re-run of the same trial resumes its
training from ``latest.pt``."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from automl_deft.application import (
    DEFAULT_APPLICATION,
    Application,
    EpochCallback,
    EpochMetrics,
    MetricValue,
    application_class,
    get_application,
    metric_counts,
    metric_value,
)
from automl_deft.errors import AutomlDeftError, UserError
from automl_deft.hpo.space import Param, ParamValue, ParamValues, SearchSpace
from automl_deft.io import atomic_write_json
from automl_deft.jsontypes import JSONObject, SpecTree
from automl_deft.layout import SearchLayout
from automl_deft.model.spec import Spec, deep_merge, save_spec, spec_from_dict
from automl_deft.mount import WorkspaceMount
from automl_deft.workspace import Workspace, read_dataset_csv, refuse_kpi_set

Metric = Literal["far_pct", "val_loss"]
PROBLEM_FILE = SearchLayout.PROBLEM


@dataclass(frozen=True)
class SearchProblem:
    """Everything a trial needs, serialisable so a pod on the cluster can load it.

    Attributes:
        workspace: the workspace root (the images root and KPI set come from it).
        train_csv, val_csv: training and evaluation sets (never the KPI set).
        base_spec: the spec every trial starts from (a plain dict).
        params, pinned: the search space (see :class:`SearchSpace`).
        extra: free-form JSON kept in ``search_problem.json`` (unused by the library).
        results_dir: where ``trials/`` and the study live.
        metric: what the search minimises, measured on ``val_csv``.
        warm_start: a checkpoint every trial starts from (Phase 3), or None.
        application: the registry name or ``module:Class`` of the
            :class:`~automl_deft.application.Application` trials train.
    """

    workspace: str
    train_csv: str
    val_csv: str
    base_spec: SpecTree
    params: tuple[Param, ...]
    pinned: SpecTree
    results_dir: str
    metric: Metric = "far_pct"
    warm_start: str | None = None
    application: str = DEFAULT_APPLICATION
    extra: JSONObject = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workspace: str | os.PathLike[str],
        space: SearchSpace,
        base_spec: Spec,
        results_dir: str | os.PathLike[str],
        *,
        train_csv: str | os.PathLike[str] | None = None,
        val_csv: str | os.PathLike[str] | None = None,
        metric: Metric = "far_pct",
        warm_start: str | os.PathLike[str] | None = None,
        application: str = DEFAULT_APPLICATION,
    ) -> SearchProblem:
        """Build and check a problem; the KPI test set (and the hold-out) is refused as the
        evaluation set: by path, by any of its rows, and by its images under other names."""
        ws = Workspace.at(workspace)
        train_path = Path(train_csv or ws.train_csv).resolve()
        val_path = Path(val_csv or ws.val_csv).resolve()
        refuse_kpi_set(
            ws, val_path, used_as="the search's evaluation set", naming=base_spec.naming()
        )
        if metric not in ("far_pct", "val_loss"):
            raise UserError(f"unknown search metric {metric!r}; use far_pct or val_loss")
        space.check_against(base_spec)
        application_class(application)  # an unknown name fails here, not in every trial
        return cls(
            workspace=str(ws.root),
            train_csv=str(train_path),
            val_csv=str(val_path),
            base_spec=base_spec.to_dict(),
            params=tuple(space.params),
            pinned=dict(space.pinned),
            results_dir=str(Path(results_dir).resolve()),
            metric=metric,
            warm_start=str(Path(warm_start).resolve()) if warm_start else None,
            application=application,
        )

    @property
    def space(self) -> SearchSpace:
        return SearchSpace(self.params, dict(self.pinned))

    @property
    def spec(self) -> Spec:
        return spec_from_dict(self.base_spec)

    def make_application(self) -> Application:
        """The application trials train, on the workspace's images and the base spec."""
        return get_application(self.application, Workspace.at(self.workspace).images_dir, self.spec)

    def trial_dir(self, trial_name: str) -> Path:
        return SearchLayout(Path(self.results_dir)).trial_dir(trial_name)

    def for_pods(self, mount: WorkspaceMount) -> SearchProblem:
        """This problem as a trial pod reads it: every path re-rooted at ``mount``.

        Raises:
            UserError: a path (a CSV, the results directory, the warm start, a
                spec's weights file) lies outside the workspace, where no pod can read it.
        """
        spec_paths: SpecTree = {}
        for key in SPEC_PATH_KEYS:
            value = _dotted(self.base_spec, key)
            if value:
                spec_paths[key] = mount.to_pod(str(value), what=f"the spec's {key}")
        base_spec = deep_merge(self.base_spec, spec_paths) if spec_paths else self.base_spec
        warm = self.warm_start
        return replace(
            self,
            workspace=mount.to_pod(self.workspace, what="the workspace"),
            train_csv=mount.to_pod(self.train_csv, what="the training CSV"),
            val_csv=mount.to_pod(self.val_csv, what="the validation CSV"),
            results_dir=mount.to_pod(self.results_dir, what="the results directory"),
            warm_start=mount.to_pod(warm, what="the warm-start checkpoint") if warm else None,
            base_spec=base_spec,
        )

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write ``search_problem.json`` (params as ``{name, key, type, low, …}`` objects)."""
        target = Path(path or Path(self.results_dir) / PROBLEM_FILE)
        atomic_write_json(target, asdict(self))
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchProblem:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read search problem {path} ({type(exc).__name__})") from exc
        params = tuple(
            Param(**{**p, "choices": tuple(p.get("choices", ()))}) for p in data.pop("params")
        )
        return cls(**data, params=params)


SPEC_PATH_KEYS = ("train.pretrained_model_path", "model.backbone.pretrained_backbone_path")
"""Spec keys that hold a file path (re-rooted for pods by :meth:`SearchProblem.for_pods`)."""


def _dotted(tree: SpecTree, key: str) -> object:
    node: object = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


@dataclass
class TrialOutcome:
    """What one trial produced (also written to ``trial.json``)."""

    name: str
    params: ParamValues
    status: Literal["complete", "failed"]
    metric: Metric
    value: float | None
    far_pct: float | None
    val_loss: float | None
    pred_counts: dict[str, int]
    """Per-class predictions on the evaluation set at the metric's decision rule: the
    recall-100 threshold for far_pct, argmax (0.5) for val_loss."""
    best_epoch: int | None
    epochs_run: int
    checkpoint: str | None
    history: list[EpochMetrics] = field(default_factory=list)

    def objective(self) -> float:
        """The value to minimise (``inf`` when unavailable)."""
        return math.inf if self.value is None else float(self.value)


def trial_spec(problem: SearchProblem, values: Mapping[str, ParamValue]) -> Spec:
    """The base spec with the pinned values, the trial's values and the warm start."""
    base = problem.spec
    overrides = problem.space.overrides(values, base)
    if problem.warm_start:
        overrides["train.pretrained_model_path"] = problem.warm_start
    return base.with_overrides(overrides)


def run_trial(
    problem: SearchProblem,
    trial_name: str,
    values: Mapping[str, ParamValue],
    *,
    on_epoch_end: EpochCallback | None = None,
    seed: int | None = None,
    progress: bool | None = False,
) -> TrialOutcome:
    """Train one configuration through the problem's application and judge it on the
    evaluation set."""
    spec = trial_spec(problem, values)
    if seed is not None:
        spec = spec.with_overrides({"train.seed": seed})
    out = problem.trial_dir(trial_name)
    out.mkdir(parents=True, exist_ok=True)
    save_spec(spec, out / "spec.yaml")
    result = problem.make_application().train_trial(
        spec,
        read_dataset_csv(problem.train_csv, role="train"),
        read_dataset_csv(problem.val_csv, role="validation"),
        out,
        on_epoch_end=on_epoch_end,
        progress=progress,
    )
    best = result.val_metrics
    epoch = best.get("epoch")
    outcome = TrialOutcome(
        name=trial_name,
        params=dict(values),
        status="complete",
        metric=problem.metric,
        value=metric_value(best, problem.metric),
        far_pct=metric_value(best, "far_pct"),
        val_loss=metric_value(best, "val_loss"),
        pred_counts=dict(
            (
                metric_counts(best, "pred_counts_at_threshold")
                if problem.metric == "far_pct"
                else None
            )
            or metric_counts(best, "pred_counts")
            or {}
        ),
        best_epoch=None if isinstance(epoch, dict) else cast(int | None, epoch),
        epochs_run=len(result.history),
        checkpoint=str(result.best_checkpoint),
        history=result.history,
    )
    atomic_write_json(out / "trial.json", asdict(outcome))
    return outcome


TRIAL_NAME_ENV = "AUTOML_DEFT_TRIAL_NAME"
"""A Katib trial gets its name (``${trialSpec.Name}``) in this env var."""
PARAM_ENV_PREFIX = "AUTOML_DEFT_PARAM_"
"""A Katib trial gets each sampled value in the env var ``<prefix><NAME>`` (see
:func:`param_env`): an env var never passes through a shell, so a value with a space
or a shell metacharacter reaches the trial intact through Katib's ``sh -c`` wrapper."""


def param_env(name: str) -> str:
    """The env var that carries the search param ``name`` (``lr`` → ``AUTOML_DEFT_PARAM_LR``)."""
    return PARAM_ENV_PREFIX + name.upper()


def _parse_param(item: str, space: SearchSpace) -> tuple[str, ParamValue]:
    name, sep, raw = item.partition("=")
    if not sep:
        raise UserError(f"--param {item!r}: expected NAME=VALUE")
    return name, space.param(name).parse(raw)


def trial_values(
    space: SearchSpace, items: list[str], env: Mapping[str, str]
) -> dict[str, ParamValue]:
    """A trial's values: ``--param NAME=VALUE`` items, then the params' env vars."""
    values = dict(_parse_param(item, space) for item in items)
    for p in space.params:
        raw = env.get(param_env(p.name))
        if p.name not in values and raw is not None:
            values[p.name] = p.parse(raw)
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point of a Katib trial (``python -m automl_deft.hpo.trial``)."""
    parser = argparse.ArgumentParser(prog="python -m automl_deft.hpo.trial", description=__doc__)
    parser.add_argument("--problem", required=True, help="search_problem.json on the shared volume")
    parser.add_argument(
        "--trial-name",
        default=os.environ.get(TRIAL_NAME_ENV),
        help=f"the trial's name: its folder under trials/ (default: ${TRIAL_NAME_ENV})",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"a value (default: from the env var {PARAM_ENV_PREFIX}<NAME>, as Katib sets it)",
    )
    args = parser.parse_args(argv)
    if not args.trial_name:
        parser.error(f"--trial-name is required (or set {TRIAL_NAME_ENV})")
    try:
        problem = SearchProblem.load(args.problem)
        values = trial_values(problem.space, args.param, os.environ)
        outcome = run_trial(problem, args.trial_name, values, on_epoch_end=_print_metrics)
    except AutomlDeftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    # The best checkpoint's metrics last: Katib's "latest" strategy reads these.
    _print_metrics(
        outcome.best_epoch or 0, {"far_pct": outcome.far_pct, "val_loss": outcome.val_loss}
    )
    return 0


_last_stamp_ns = 0


def metric_timestamp() -> str:
    """Now as RFC 3339 with nanoseconds, UTC, strictly increasing within the process.

    Katib's StdOut collector reads a line's leading RFC 3339 time as the metric's time;
    without one every metric is stored at 0001-01-01T00:00:00Z, and "latest" (and
    median-stop's "first start_step values") would be picked in no defined order.
    """
    global _last_stamp_ns
    now = max(time.time_ns(), _last_stamp_ns + 1)
    _last_stamp_ns = now
    seconds, nanos = divmod(now, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _print_metrics(epoch: int, metrics: Mapping[str, MetricValue]) -> None:
    """``<RFC 3339 time> name=value`` lines for Katib's StdOut collector (per epoch: early
    stopping sees them). Unavailable values are left out: the collector parses numbers."""
    for name in ("far_pct", "val_loss"):
        value = metric_value(metrics, name)
        if value is not None and math.isfinite(value):
            print(f"{metric_timestamp()} {name}={value}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


__all__ = [
    "PARAM_ENV_PREFIX",
    "PROBLEM_FILE",
    "SPEC_PATH_KEYS",
    "TRIAL_NAME_ENV",
    "SearchProblem",
    "TrialOutcome",
    "main",
    "metric_timestamp",
    "param_env",
    "run_trial",
    "trial_spec",
    "trial_values",
]
