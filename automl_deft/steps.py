"""The pipeline's steps as plain library calls (the KFP components only wrap these).

Every step takes paths and plain values, does its work on the run's results
directory (on the workspace volume, so state survives pod restarts), writes the
files its component publishes as artifacts, and returns a JSON-ready dict. The
same functions run under ``kfp.local`` (the embedded default) and in a pod.

Layout of one run (``RESULTS``)::

    RESULTS/automl_phase1/      Phase 1 search (automl_result.json, leaderboard, trials/)
    RESULTS/deft_state.json …   Phase 2 (the DEFT loop's own layout)
    RESULTS/final_automl/       Phase 3 search and its KPI-set evaluation
    RESULTS/pipeline_summary.json, best_model.json, DEFT_Loop_Report.html
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from automl_deft.deft.state import BASELINE, FINAL_AUTOML, DeftState, iteration_number
from automl_deft.errors import AutomlDeftError, UserError, WorkspaceError
from automl_deft.io import atomic_copy, atomic_write_json, atomic_write_text
from automl_deft.run_config import RunConfig, load_run_config
from automl_deft.workspace import Workspace, new_run_dir

log = logging.getLogger(__name__)

PHASE1_DIR = "automl_phase1"
PHASE3_DIR = FINAL_AUTOML
SUMMARY_FILE = "pipeline_summary.json"
DATASET_MANIFEST = "manifest.json"
PHASES = ("automl", "deft", "phase3")


ERROR_FILE_ENV = "AUTOML_DEFT_ERROR_FILE"
"""When set, a step that fails on a project error appends ``{step, message, exit_code}``
to this JSON-lines file, so a local runner can report the task's own one-line error."""


def step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for the public steps: record project errors for the local runner."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AutomlDeftError as exc:
            path = os.environ.get(ERROR_FILE_ENV)
            if path:
                line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                record = {"step": fn.__name__, "message": line, "exit_code": exc.exit_code}
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
            raise

    return wrapper


def without_nones(obj: Any) -> Any:
    """``obj`` with None-valued dict keys dropped (recursively), for KFP parameters.

    KFP's struct parameters cannot hold nulls; readers of these dicts use ``.get()``.
    """
    if isinstance(obj, dict):
        return {str(k): without_nones(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [without_nones(v) for v in obj if v is not None]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def on_volume(artifact: Any, key: str, member: str = "") -> str | None:
    """The workspace-volume path an artifact was published from, else its local copy.

    Katib trial pods see the workspace volume but not the KFP artifact store, so a
    search prefers the original (``metadata[key]``) when this pod can see it.
    """
    if artifact is None:
        return None
    original = artifact.metadata.get(key)
    if original and Path(original).exists():
        return str(original)
    return os.path.join(artifact.path, member) if member else str(artifact.path)


def resolve_config(workspace: str | os.PathLike[str], config: str) -> RunConfig:
    """The run config: ``config`` may be absolute or relative to the workspace; '' = defaults."""
    if not config:
        return load_run_config(None)
    path = Path(config)
    if not path.is_absolute():
        path = Path(workspace) / path
    return load_run_config(path)


def resolve_results_dir(workspace: str | os.PathLike[str], results_dir: str) -> Path:
    """``results_dir`` (relative to the workspace when not absolute), or a new
    ``<ws>/results/run_<YYYYmmdd_HHMMSS>``."""
    if results_dir:
        path = Path(results_dir)
        return path if path.is_absolute() else Path(workspace) / path
    return new_run_dir(workspace)


# --- preflight ---------------------------------------------------------------------------


@step
def preflight_step(
    workspace: str,
    config: str,
    results_dir: str,
    hpo_backend: str,
    *,
    phases: Sequence[str] = PHASES,
    summary_md: str | os.PathLike[str] | None = None,
    check_images: bool = True,
) -> dict[str, Any]:
    """The single gate's checks at the start of a run; blocking problems fail it.

    Returns:
        ``{results_dir, ok, warnings}`` (the resolved results directory every later
        step uses).

    Raises:
        WorkspaceError: leakage, missing data, the KPI set used as validation set, …
    """
    from automl_deft.preflight import build_preflight

    cfg = resolve_config(workspace, config)
    root = resolve_results_dir(workspace, results_dir)
    pre = build_preflight(
        workspace,
        cfg,
        results_dir=root,
        phases=tuple(phases),
        hpo_backend=hpo_backend or None,
        check_images=check_images,
    )
    if summary_md is not None:
        atomic_write_text(summary_md, pre.markdown())
    if pre.blocking:
        raise WorkspaceError(pre.blocking)
    root.mkdir(parents=True, exist_ok=True)
    return {"results_dir": str(root), "ok": True, "warnings": pre.warnings}


# --- AutoML (Phase 1 and 3) --------------------------------------------------------------


@step
def automl_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    phase: str,
    hpo_backend: str = "",
    train_csv: str | None = None,
    warm_start: str | None = None,
    centroid_overrides: str | None = None,
    katib: dict[str, Any] | None = None,
    out_spec: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run the Phase 1 (``phase1``) or Phase 3 (``phase3``) search.

    Phase 3 uses Phase 1's algorithm, metric and validation set, trains on
    ``train_csv`` (the last augmented set), starts every trial from
    ``warm_start``, pins the architecture to it, and centres the space on the
    Phase 1 winning spec: the workspace spec with ``centroid_overrides`` (the
    winner's HP YAML) deep-merged on top. ``katib`` overrides the config's Katib
    settings (the pipeline passes its volume, image and GPU count).

    Returns:
        ``{results_dir, rec_id, far_pct, val_loss, metric, metric_value, checkpoint,
        specs, pred_counts, guards}``; the winning spec YAML, checkpoint and HTML
        report are copied to ``out_spec``, ``out_model`` and ``out_report``.
    """
    import dataclasses

    import yaml

    from automl_deft.hpo.search import REPORT_FILE, automl_search
    from automl_deft.model.spec import load_spec

    cfg = resolve_config(workspace, config)
    search_cfg = cfg.automl if phase == "phase1" else cfg.phase3_automl()
    if hpo_backend:
        search_cfg = dataclasses.replace(search_cfg, backend=hpo_backend)  # type: ignore[arg-type]
    if katib:
        search_cfg = dataclasses.replace(search_cfg, katib={**search_cfg.katib, **katib})
    root = Path(results_dir)
    out = root / (PHASE1_DIR if phase == "phase1" else PHASE3_DIR)
    centroid = None
    if centroid_overrides:
        winning = yaml.safe_load(Path(centroid_overrides).read_text(encoding="utf-8")) or {}
        centroid = load_spec(Workspace.at(workspace).spec_path).with_overrides(winning)
    try:
        result = automl_search(
            workspace,
            search_cfg,
            results_dir=out,
            phase=phase,
            base_spec=centroid,
            train_csv=train_csv,
            warm_start=warm_start,
            centroid=centroid,
        )
    except UserError as exc:
        if phase != "phase3":
            raise
        # Phase 3 is an attempt to improve on DEFT's winner: a search that cannot hand
        # a winner on (every trial collapsed, no gain over zero-shot) loses to it,
        # recorded, instead of failing the whole run.
        reason = str(exc).splitlines()[0]
        log.warning("Phase 3 produced no usable winner: %s", reason)
        for path in (out_spec, out_model, out_report):
            if path is not None:
                atomic_write_text(path, f"Phase 3 produced no usable winner: {reason}\n")
        return {"results_dir": str(out), "phase": phase, "failed": reason, "train_csv": train_csv}
    best = result.best
    if out_spec is not None:
        atomic_write_text(out_spec, yaml.safe_dump(best["specs"], sort_keys=True))
    if out_model is not None:
        atomic_copy(best["checkpoint"], out_model)
    if out_report is not None:
        atomic_copy(out / REPORT_FILE, out_report)
    return {
        "results_dir": str(out),
        "phase": phase,
        "rec_id": best["rec_id"],
        "far_pct": best.get("far_pct"),
        "val_loss": best.get("val_loss"),
        "metric": result.metric,
        "metric_value": best.get("metric_value"),
        "checkpoint": str(best["checkpoint"]),
        "specs": best["specs"],
        "pred_counts": best.get("pred_counts"),
        "algorithm": result.algorithm,
        "backend": result.backend,
        "trials": len(result.history),
        "warm_start": warm_start,
        "train_csv": train_csv,
        "guards": result.guards,
    }


@step
def quality_check_step(search: dict[str, Any], *, out_md: str | os.PathLike[str] | None) -> dict:
    """Check the winner before handing it on: both classes predicted, and zero-shot beaten.

    The search already skipped collapsed trials and re-ran a lucky winner; this step
    re-checks the result it is handed and writes what it found for the dashboard.

    Raises:
        UserError: the winner predicts one class only (nothing else qualified).
    """
    counts = search.get("pred_counts") or {}
    predicted = {k: v for k, v in counts.items() if v}
    guards = search.get("guards") or {}
    lines = [
        f"# Quality check ({search.get('phase', 'phase1')})",
        "",
        f"- winner: `{search['rec_id']}`, validation far_pct {search.get('far_pct')}",
        f"- per-class prediction counts: {json.dumps(counts)}",
    ]
    for key, value in sorted(guards.items()):
        lines.append(f"- guard `{key}`: {json.dumps(value, default=str)}")
    if counts and len(predicted) < 2:
        raise UserError(
            f"the AutoML winner {search['rec_id']} predicts one class only ({counts}); "
            "widen the search space or raise max_trials"
        )
    lines.append("- verdict: **passed** (both classes predicted; zero-shot guard applied)")
    if out_md is not None:
        atomic_write_text(out_md, "\n".join(lines) + "\n")
    return {**search, "quality": "passed"}


# --- handoff 1 → 2 ------------------------------------------------------------------------


def search_result(search: dict[str, Any]) -> dict[str, Any]:
    """The search's own ``best`` record from its ``automl_result.json`` (exact types), or
    ``search`` itself when the file is not there (KFP parameters turn ints into floats)."""
    from automl_deft.hpo.search import RESULT_FILE

    path = Path(search.get("results_dir", "")) / RESULT_FILE
    if not search.get("results_dir") or not path.is_file():
        return search
    best = json.loads(path.read_text(encoding="utf-8"))["best"]
    return {**search, **{k: best[k] for k in ("specs", "checkpoint", "far_pct") if k in best}}


@step
def seed_deft_baseline_step(
    workspace: str, config: str, results_dir: str, search: dict[str, Any]
) -> dict[str, Any]:
    """The four-step handoff: merged spec, copied checkpoint, pre-seeded state and log."""
    from automl_deft.deft.loop import workspace_paths
    from automl_deft.handoff import AUTOML_SPEC_NAME, merge_winning_spec, seed_baseline

    search = search_result(search)
    cfg = resolve_config(workspace, config)
    ws = Workspace.at(workspace)
    spec_out = ws.spec_path.with_name(AUTOML_SPEC_NAME)
    merge_winning_spec(ws.spec_path, search["specs"], spec_out)
    state = seed_baseline(
        results_dir,
        checkpoint=search["checkpoint"],
        train_metric=search.get("far_pct"),
        kpi_target=cfg.deft.kpi_target,
        max_iterations=cfg.deft.max_iterations,
        config=cfg.deft.to_dict(),
        paths=workspace_paths(workspace, spec_path=spec_out),
    )
    base = state.iterations[BASELINE]
    return {
        "results_dir": str(state.results_dir),
        "spec": str(spec_out),
        "specs": search["specs"],
        "baseline_checkpoint": base["best_ckpt_path"],
        "source": base.get("source"),
    }


# --- Phase 2 -----------------------------------------------------------------------------


@step
def deft_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    out_dataset: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the DEFT loop in ``results_dir`` and publish its results.

    The augmented training set is published as a directory: ``train.csv`` plus
    ``manifest.json`` naming the images root and the results directory, so the
    rows resolve the same way locally and in a pod.
    """
    from automl_deft.deft.loop import run_deft

    cfg = resolve_config(workspace, config)
    outcome = run_deft(workspace, cfg.deft, results_dir=results_dir)
    if out_dataset is not None:
        publish_dataset(outcome.final_train_csv, out_dataset, workspace, results_dir)
    if out_model is not None and outcome.best_checkpoint is not None:
        atomic_copy(outcome.best_checkpoint, out_model)
    if out_report is not None and outcome.report is not None:
        atomic_copy(outcome.report, out_report)
    # Phase 3 runs only after a loop that ended normally: a hard stop or the regression
    # gate (needs_review) is one of the safety gates the pre-flight names.
    run_phase3 = cfg.phase3.enabled and not (outcome.hard_stopped or outcome.needs_review)
    return {**outcome.to_dict(), "run_phase3": run_phase3}


def publish_dataset(
    csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    workspace: str | os.PathLike[str],
    results_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Write a self-describing Dataset artifact directory (CSV + manifest)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_copy(csv, out / "train.csv")
    ws = Workspace.at(workspace)
    manifest = {
        "csv": "train.csv",
        "source_csv": str(csv),
        "images_dir": str(ws.images_dir),
        "results_dir": str(results_dir),
        "path_rule": "{images_dir}/{input_path}/{object_name}_{light}{ext}; input_path may "
        "start with ../ for generated images under results_dir",
    }
    atomic_write_json(out / DATASET_MANIFEST, manifest)
    return manifest


# --- handoff 2 → 3 and final -------------------------------------------------------------


@step
def select_warm_start_step(results_dir: str) -> dict[str, Any]:
    """Phase 3's warm start: the lowest-far_pct DEFT iteration (never final_automl)."""
    from automl_deft.handoff import select_warm_start

    return select_warm_start(DeftState.load(results_dir)).to_dict()


@step
def finalize_step(
    workspace: str,
    config: str,
    results_dir: str,
    *,
    phase1: dict[str, Any] | None,
    phase3: dict[str, Any] | None,
    out_md: str | os.PathLike[str] | None = None,
    out_model: str | os.PathLike[str] | None = None,
    out_report: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Evaluate Phase 3's winner on the KPI set, register it, pick the best, summarise.

    Phase 3 loses to the DEFT winner when it regresses: that is recorded in the
    summary (``phase3_kept: false``), not hidden.
    """
    from automl_deft.deft.application import get_application
    from automl_deft.deft.loop import _clear, evaluate_checkpoints
    from automl_deft.deft.report import render_report
    from automl_deft.handoff import register_final_automl, write_deliverable
    from automl_deft.model.spec import load_spec
    from automl_deft.workspace import read_dataset_csv

    cfg = resolve_config(workspace, config)
    state = DeftState.load(results_dir)
    paths = state.data["config"]["paths"]
    app = get_application(cfg.deft.application, paths["images_dir"], load_spec(paths["spec"]))
    if phase3 is not None and phase3.get("failed"):
        log.warning(
            "Phase 3 did not produce a winner (%s); the DEFT winner stands", phase3["failed"]
        )
    elif phase3 is not None and FINAL_AUTOML not in state.iterations:
        out = Path(results_dir) / PHASE3_DIR / "inference"
        _clear(out)
        kpi = read_dataset_csv(paths["kpi_csv"], role="KPI test")
        kind, result, _ = evaluate_checkpoints(
            app, {"best_val": Path(phase3["checkpoint"])}, kpi, out, title="final_automl"
        )
        if kind is None:
            raise UserError(f"Phase 3 checkpoint {phase3['checkpoint']} is missing")
        register_final_automl(
            state,
            checkpoint=phase3["checkpoint"],
            far_pct=result.far_pct,
            threshold=result.threshold,
            fields={
                "inference_csv": str(out / "kpi_scores.csv"),
                "kpi": result.to_dict(),
                "val_far_pct": phase3.get("far_pct"),
                "warm_start_from": phase3.get("warm_start"),
                "train_csv": phase3.get("train_csv"),
                "rec_id": phase3.get("rec_id"),
            },
        )
    best = write_deliverable(state, app, images_dir=paths["images_dir"])
    report = render_report(results_dir)
    summary = trajectory(state, phase1=phase1, phase3=phase3, best=best)
    atomic_write_json(Path(results_dir) / SUMMARY_FILE, summary)
    if out_md is not None:
        atomic_write_text(out_md, trajectory_markdown(summary))
    if out_model is not None and best is not None:
        atomic_copy(best["checkpoint"], out_model)
    if out_report is not None:
        atomic_copy(report, out_report)
    return summary


def trajectory(
    state: DeftState,
    *,
    phase1: dict[str, Any] | None,
    phase3: dict[str, Any] | None,
    best: dict[str, Any] | None,
) -> dict[str, Any]:
    """Phase 1 best → DEFT iterations → Phase 3 best, far_pct on the KPI set each."""
    steps = []
    for label, rec in state.iterations.items():
        if rec.get("far_pct") is None and label != FINAL_AUTOML:
            continue
        n = iteration_number(label)
        phase = "phase3" if label == FINAL_AUTOML else "phase2"
        if label == BASELINE and rec.get("source") == "automl_phase1":
            phase = "phase1"
        steps.append(
            {
                "step": label,
                "phase": phase,
                "far_pct": rec.get("far_pct"),
                "threshold": rec.get("threshold"),
                "train_rows": rec.get("train_rows"),
                "added_rows": rec.get("added_rows"),
                "order": -1 if n is None else n,
            }
        )
    steps.sort(key=lambda s: (s["phase"] == "phase3", s["order"]))
    for s in steps:
        s.pop("order")
    kept = best["iteration"] if best else None
    return {
        "results_dir": str(state.results_dir),
        "kpi_target": state.data.get("kpi_target"),
        "deft_status": state.data.get("status"),
        "deft_stop_reason": state.data.get("stop_reason"),
        "phase1": phase1 and {k: phase1.get(k) for k in ("rec_id", "far_pct", "val_loss")},
        "phase3": phase3 and {k: phase3.get(k) for k in ("rec_id", "far_pct", "val_loss")},
        "phase3_ran": phase3 is not None,
        "phase3_failed": (phase3 or {}).get("failed"),
        "phase3_kept": kept == FINAL_AUTOML,
        "trajectory": steps,
        "best": best,
    }


def trajectory_markdown(summary: dict[str, Any]) -> str:
    """The trajectory as a Markdown table (the dashboard's summary artifact)."""
    lines = [
        "# automl-deft: trajectory on the KPI test set",
        "",
        f"KPI target: {summary.get('kpi_target')} · DEFT: {summary.get('deft_status')}",
        "",
        "| step | phase | FAR@100% recall | threshold | training rows |",
        "|---|---|---|---|---|",
    ]
    for s in summary["trajectory"]:
        far = "n/a" if s["far_pct"] is None else f"{s['far_pct']:.2f}%"
        thr = "n/a" if s["threshold"] is None else f"{s['threshold']:.4g}"
        lines.append(f"| {s['step']} | {s['phase']} | {far} | {thr} | {s['train_rows'] or ''} |")
    best = summary.get("best")
    if best:
        lines += [
            "",
            f"**Deliverable:** `{best['iteration']}` at FAR {best['far_pct']:.2f}% "
            f"(threshold {best['threshold']:.4g}) — `{best['checkpoint']}`",
        ]
    if summary.get("phase3_ran") and not summary.get("phase3_kept"):
        lines.append("")
        lines.append("Phase 3 did not beat the best DEFT iteration; the DEFT winner is kept.")
    if summary.get("phase3_failed"):
        lines.append("")
        lines.append(f"Phase 3 produced no usable winner: {summary['phase3_failed']}")
    if not summary.get("phase3_ran"):
        lines.append("")
        lines.append("Phase 3 skipped (DEFT hard-stopped or disabled).")
    return "\n".join(lines) + "\n"
