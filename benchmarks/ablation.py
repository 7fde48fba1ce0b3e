"""Ablation: which part of the pipeline earns its keep, measured on the untouched hold-out.

On one workspace and one run config (the same budget everywhere), per seed:

1. ``full``: the product pipeline, ``automl-deft run WS -c CONFIG --yes`` (Phase 1 →
   DEFT → warm-started Phase 3); its deliverable as finalize picked and scored it.
2. ``phase1``: the Phase 1 winner. Not re-run: the full run's ``baseline`` step *is*
   the Phase 1 winner (the search is deterministic for a seed), so its steering and
   hold-out numbers are read from the full run's ``pipeline_summary.json``; the wall
   column shows the time the Phase 1 tasks took inside the full run.
3. ``deft_only``: ``automl-deft run … --pipeline deft-only``: DEFT trains its own
   baseline from the hand-written workspace spec, then loops; its own finalize.
4. ``phase3_scratch``: the full run's Phase 3 search (same config, centroid = the
   Phase 1 winning spec, architecture pinned to the Phase 1 winner's, the same
   augmented training CSV) without the warm start: every trial trains from scratch.
5. ``deft_control``: DEFT without new data. From the checkpoint DEFT started from
   (the Phase 1 winner), as many fine-tunings as DEFT ran iterations, each with
   DEFT's epochs and seed, on the BASE training set; each warm-starts from the best
   step so far on the steering set and keeps best_val or latest by steering FAR
   (DEFT's evaluate); the step reported is picked by DEFT's rule (lowest steering
   FAR, the earlier on a tie, the start included). :func:`control_from` runs it for any
   DEFT run's state (``benchmarks/hard_negatives.py`` imports it).

Two reference rows cost no training: ``ref_deft_pick`` is the full run's DEFT-loop
pick before Phase 3 (what ``deft_control`` competes with) and ``ref_phase3_warm`` the
full run's Phase 3 winner (what ``phase3_scratch`` competes with).

Arms 1 and 3 are scored on the hold-out by the pipeline's own finalize; arms 4 and 5
with :func:`automl_deft.scorecard.score_holdout` (their final checkpoint, their
steering-set threshold as the deployed threshold), after every choice is made.
Only the Phase 1 winner (checkpoint, winning spec) and the augmented training CSV of
the full run are reused; nothing else crosses arms.

Seed ``s`` adds ``s`` to the config's search seed (``automl.seed``), DEFT's seed
(``deft.seed``) and the trials' training seed (``train.seed``, pinned in
``automl.pinned``; default: the workspace spec's); seed 0 is the config as written,
so it reproduces ``automl-deft run``.

Everything goes under ``--out`` (default: a new temp dir): one folder per seed and
arm, the seeded run configs, each pipeline's log, ``table.txt`` and, with
``--json``, ``results.json``.

    .venv/bin/python benchmarks/ablation.py WS [-c CONFIG] [--seeds N] [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from automl_deft.application import Application, get_application
from automl_deft.deft.deliverable import final_training_set
from automl_deft.deft.stages import evaluate_checkpoints
from automl_deft.deft.state import DeftState
from automl_deft.errors import UserError
from automl_deft.holdout import read_holdout
from automl_deft.hpo.search import automl_search
from automl_deft.hpo.space import ARCHITECTURE_KEYS
from automl_deft.kpi import format_far, read_inference_csv
from automl_deft.layout import RunLayout
from automl_deft.model.checkpoint import BEST_NAME, LATEST_NAME, load_checkpoint, spec_of
from automl_deft.model.spec import Spec, load_spec
from automl_deft.phases import BASELINE, FINAL_AUTOML, Phase, iteration_label, iteration_number
from automl_deft.plan import plan_run
from automl_deft.records import HoldoutScore, PipelineSummary, far_or_inf, rank_by_far
from automl_deft.run_config import RunConfig, run_config_from_dict
from automl_deft.scorecard import interval_of, score_holdout
from automl_deft.workspace import SCORE_COLUMN, Workspace, read_dataset_csv

ARMS: dict[str, str] = {
    "full": "full pipeline (P1 → DEFT → P3)",
    "phase1": "Phase 1 only (full run's baseline)",
    "deft_only": "DEFT only (hand-written spec)",
    "phase3_scratch": "Phase 3 without warm start",
    "deft_control": "DEFT control (base set, no new rows)",
    "ref_deft_pick": "ref: full run's DEFT pick (pre-P3)",
    "ref_phase3_warm": "ref: full run's Phase 3 (warm)",
}
"""Row keys and their titles, in table order (``ref_*``: read from the full run)."""

LOCAL_BACKEND = "optuna"
"""What ``automl-deft run`` searches with (kfp.local)."""

log = logging.getLogger("ablation")


@dataclass
class ArmResult:
    """One table row: an arm on one seed."""

    arm: str
    seed: int
    steering_far: float | None
    steering_ci95: list[float] | None
    holdout_far: float | None
    holdout_ci95: list[float] | None
    wall_s: float | None
    """Seconds this arm ran (None: nothing ran; see ``reused_s``)."""
    reused_s: float | None = None
    """For a reused arm: the seconds its part took inside the full run, when known."""
    picked: str | None = None
    """Which step the number belongs to (``iter2``, ``final_automl``, ``ctrl1``, …)."""
    results_dir: str | None = None
    note: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def finite(self) -> bool:
        return all(
            v is not None and math.isfinite(v) for v in (self.steering_far, self.holdout_far)
        )


# --- configs and seeds --------------------------------------------------------------------


def seeded_config(doc: dict[str, Any], seed: int, spec_seed: int) -> dict[str, Any]:
    """The run config document with ``seed`` added to every seed it sets (0: unchanged)."""
    out = json.loads(json.dumps(doc))  # a deep copy of plain YAML data
    if seed == 0:
        return out
    automl = out.setdefault("automl", {})
    deft = out.setdefault("deft", {})
    automl["seed"] = int(automl.get("seed", 0)) + seed
    deft["seed"] = int(deft.get("seed", 0)) + seed
    pinned = automl.setdefault("pinned", {})
    pinned["train.seed"] = int(pinned.get("train.seed", spec_seed)) + seed
    return out


def write_config(doc: dict[str, Any], path: Path) -> RunConfig:
    """Write the config YAML and return it checked (as ``automl-deft run`` reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return run_config_from_dict(doc, str(path))


# --- the pipeline arms (subprocess) -------------------------------------------------------

_TASK_LINE = re.compile(
    r"^(\d\d):(\d\d):(\d\d(?:\.\d+)?) - INFO - "
    r"(?:Executing task '(?P<start>[^']+)'|Task '(?P<end>[^']+)' finished)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def task_seconds(log_text: str) -> dict[str, tuple[float, float]]:
    """``{task: (start, end)}`` in seconds since the first task, from kfp.local's log."""
    spans: dict[str, list[float]] = {}
    first: float | None = None
    last = 0.0
    day = 0.0
    for raw in log_text.splitlines():
        m = _TASK_LINE.match(_ANSI.sub("", raw))
        if not m:
            continue
        t = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)) + day
        if t < last:  # past midnight
            day += 86400
            t += 86400
        last = t
        first = t if first is None else first
        if m.group("start"):
            spans[m.group("start")] = [t - first, math.nan]
        elif m.group("end") in spans:
            spans[m.group("end")][1] = t - first
    return {k: (v[0], v[1]) for k, v in spans.items() if not math.isnan(v[1])}


def phase1_seconds(log_text: str) -> float | None:
    """Seconds from the pre-flight to the end of the quality check (Phase 1, with the gate)."""
    spans = task_seconds(log_text)
    done = spans.get("quality-check")
    return None if done is None else done[1]


def automl_deft_cli() -> list[str]:
    """``automl-deft`` of this interpreter's environment."""
    script = Path(sys.executable).with_name("automl-deft")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "automl_deft.cli"]


def run_pipeline(
    ws: Workspace, config: Path, results: Path, pipeline: str, log_path: Path
) -> tuple[PipelineSummary, float, str]:
    """``automl-deft run WS -c CONFIG --results RESULTS --pipeline P --yes``.

    Returns:
        (the run's pipeline summary, wall seconds, the run's output).

    Raises:
        RuntimeError: the run failed (its log's tail in the message).
    """
    cmd = [
        *automl_deft_cli(),
        "run",
        str(ws.root),
        "-c",
        str(config),
        "--results",
        str(results),
        "--pipeline",
        pipeline,
        "--yes",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    text = done.stdout + done.stderr
    log_path.write_text(f"$ {' '.join(cmd)}\n{text}", encoding="utf-8")
    summary_path = RunLayout(results).summary
    if done.returncode != 0 or not summary_path.is_file():
        tail = "\n".join(text.splitlines()[-25:])
        raise RuntimeError(
            f"{pipeline} run failed (exit {done.returncode}; log {log_path}):\n{tail}"
        )
    return PipelineSummary.read(summary_path), wall, text


def _held(h: HoldoutScore | None) -> tuple[float | None, list[float] | None]:
    return (None, None) if h is None else (h.far_pct, h.ci95)


def summary_row(
    arm: str, seed: int, summary: PipelineSummary, wall: float | None, root: Path
) -> ArmResult:
    """The deliverable of a pipeline run, as its finalize picked and scored it."""
    best = summary.best
    far, ci = _held(summary.holdout)
    return ArmResult(
        arm=arm,
        seed=seed,
        steering_far=best.far_pct if best is not None else None,
        steering_ci95=summary.far_pct_ci95,
        holdout_far=far,
        holdout_ci95=ci,
        wall_s=wall,
        picked=best.iteration if best is not None else None,
        results_dir=str(root),
        detail={
            "trajectory": [
                {
                    "step": s.step,
                    "steering_far": s.far_pct,
                    "holdout_far": s.holdout.far_pct if s.holdout else None,
                }
                for s in summary.trajectory
            ],
            "deft_status": summary.deft_status,
            "deft_stop_reason": summary.deft_stop_reason,
        },
    )


def step_row(
    arm: str, seed: int, summary: PipelineSummary, label: str, root: Path, **extra: Any
) -> ArmResult:
    """One step of a pipeline run's trajectory (finalize scored it on the hold-out)."""
    step = next((s for s in summary.trajectory if s.step == label), None)
    if step is None:
        return ArmResult(arm, seed, None, None, None, None, None, note=f"no {label} step")
    far, ci = _held(step.holdout)
    return ArmResult(
        arm=arm,
        seed=seed,
        steering_far=step.far_pct,
        steering_ci95=step.far_pct_ci95,
        holdout_far=far,
        holdout_ci95=ci,
        wall_s=None,
        picked=label,
        results_dir=str(root),
        **extra,
    )


# --- the in-process arms --------------------------------------------------------------------


class Scorer:
    """Steering-set evaluation and (after the arm's choices) hold-out scoring."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.kpi = read_dataset_csv(ws.kpi_csv, role="KPI test")
        self._holdout: pd.DataFrame | None = None

    def evaluate(
        self, app: Application, candidates: dict[str, Path], out: Path, title: str
    ) -> tuple[Path, float | None, float | None, list[float] | None]:
        """DEFT's evaluate: the candidate with the lowest steering FAR (best_val on a tie).

        Returns:
            (kept checkpoint, steering FAR, its recall-100 threshold, its 95% interval).
        """
        kind, result, _ = evaluate_checkpoints(app, candidates, self.kpi, out, title=title)
        if kind is None or result is None:
            raise UserError(f"{title}: no checkpoint among {sorted(map(str, candidates.values()))}")
        scored = read_inference_csv(out / RunLayout.KPI_SCORES)
        ci = interval_of(scored["label"], scored[SCORE_COLUMN].to_numpy(dtype=np.float64))
        return candidates[kind], result.far_pct, result.threshold, ci

    def holdout(
        self, app: Application, checkpoint: Path, threshold: float | None, out_csv: Path
    ) -> HoldoutScore:
        if self._holdout is None:
            frame = read_holdout(self.ws)
            if frame is None:
                raise UserError(f"{self.ws.root} has no kpi/holdout_set.csv")
            self._holdout = frame
        return score_holdout(
            app, checkpoint, self._holdout, deployed_threshold=threshold, out_csv=out_csv
        )


def _dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def phase1_winner(full_root: Path) -> tuple[dict[str, Any], Path]:
    """The full run's Phase 1 winning overrides and the checkpoint DEFT started from."""
    result = RunLayout(full_root).search(Phase.PHASE1).root / "automl_result.json"
    best = json.loads(result.read_text(encoding="utf-8"))["best"]
    state = DeftState.load(full_root, reconcile=False)
    start = state.path_of(BASELINE, "best_ckpt_path")
    if start is None:
        raise UserError(f"{full_root}: the DEFT baseline has no checkpoint")
    return dict(best["specs"]), start


def phase3_scratch(
    ws: Workspace, cfg: RunConfig, full_root: Path, out: Path, seed: int, scorer: Scorer
) -> ArmResult:
    """Arm 4: the full run's Phase 3 search on its augmented set, no warm-start checkpoint."""
    t0 = time.perf_counter()
    state = DeftState.load(full_root, reconcile=False)
    train_csv = (
        state.path_of(FINAL_AUTOML, "train_csv") if FINAL_AUTOML in state.iterations else None
    )
    if train_csv is None:
        train_csv = final_training_set(state)[1]
    specs, start = phase1_winner(full_root)
    centroid = load_spec(ws.spec_path).with_overrides(specs)
    # The warm start pins the architecture to its checkpoint's (the Phase 1 winner's):
    # pin the same values here so that only the initial weights differ.
    start_tree = spec_of(load_checkpoint(start), start).to_dict()
    arch = {k: _dotted(start_tree, k) for k in ARCHITECTURE_KEYS}
    cfg = dataclasses.replace(
        cfg, phase3=dataclasses.replace(cfg.phase3, pinned={**arch, **cfg.phase3.pinned})
    )
    search_cfg = plan_run(ws.root, cfg, hpo_backend=LOCAL_BACKEND).search_config("phase3")
    detail: dict[str, Any] = {"train_csv": str(train_csv), "train_rows": _rows(train_csv)}
    try:
        result = automl_search(
            ws.root,
            search_cfg,
            results_dir=out / "search",
            phase=Phase.PHASE3.value,
            base_spec=centroid,
            train_csv=train_csv,
            warm_start=None,
            centroid=centroid,
        )
    except UserError as exc:  # as in the pipeline: a search without a usable winner
        reason = str(exc).splitlines()[0]
        return ArmResult(
            "phase3_scratch",
            seed,
            None,
            None,
            None,
            None,
            time.perf_counter() - t0,
            note=f"no usable winner: {reason}",
            results_dir=str(out),
            detail=detail,
        )
    app = get_application(cfg.deft.application, ws.images_dir, centroid)
    # finalize judges a Phase 3 winner by its best-validation checkpoint only
    ckpt, far, thr, ci = scorer.evaluate(
        app, {"best_val": Path(result.best.checkpoint)}, out / "inference", "phase3 scratch"
    )
    held = scorer.holdout(app, ckpt, thr, out / "holdout_scores.csv")
    detail.update(rec_id=result.best.rec_id, val_far_pct=result.best.far_pct, threshold=thr)
    return ArmResult(
        arm="phase3_scratch",
        seed=seed,
        steering_far=far,
        steering_ci95=ci,
        holdout_far=held.far_pct,
        holdout_ci95=held.ci95,
        wall_s=time.perf_counter() - t0,
        picked=result.best.rec_id,
        results_dir=str(out),
        detail=detail,
    )


@dataclass
class ControlStep:
    label: str
    n: int
    checkpoint: Path
    far: float | None
    threshold: float | None
    ci95: list[float] | None
    kind: str = "best_val"
    warm_from: str | None = None


def deft_control(ws: Workspace, full_root: Path, out: Path, seed: int, scorer: Scorer) -> ArmResult:
    """Arm 5: DEFT's fine-tunings without DEFT's data (see the module docstring)."""
    state = DeftState.load(full_root, reconcile=False)
    summary = PipelineSummary.read(RunLayout(full_root).summary)
    # the start's steering interval, as finalize gives it
    start_ci95 = next((s.far_pct_ci95 for s in summary.trajectory if s.step == BASELINE), None)
    return control_from(ws, state, out, seed, scorer, start_ci95=start_ci95)


def control_from(
    ws: Workspace,
    state: DeftState,
    out: Path,
    seed: int,
    scorer: Scorer,
    *,
    arm: str = "deft_control",
    start_ci95: list[float] | None = None,
) -> ArmResult:
    """DEFT's control for the loop recorded in ``state``: its fine-tunings without its data.

    From the checkpoint the loop started from (its evaluated baseline), as many
    fine-tunings as the loop trained iterations, each with the loop's epochs and seed
    (``deft.seed + n``), on the workspace's base training set; each warm-starts from the
    best step so far on the steering set and keeps best_val or latest by steering FAR
    (DEFT's evaluate). The step reported is DEFT's pick (lowest steering FAR, the
    earlier on a tie, the start included); every step is then scored on the hold-out.

    Args:
        ws: the workspace the loop ran on.
        state: the loop's state (its config, baseline record and iterations).
        out: the control's folder (trainings, KPI scores, hold-out scores).
        seed: the benchmark seed, for the row.
        scorer: steering evaluation and hold-out scoring.
        arm: the row's arm key.
        start_ci95: the start's steering-set interval (reported when the start is picked).

    Raises:
        UserError: the loop's baseline has no checkpoint.
    """
    t0 = time.perf_counter()
    dcfg = state.config  # the settings the loop ran with (seed included)
    ran = sorted(
        n
        for label in state.iterations
        if (n := iteration_number(label)) and state.done(label, "train")
    )
    start = state.path_of(BASELINE, "best_ckpt_path")
    if start is None:
        raise UserError(f"{state.results_dir}: the DEFT baseline has no checkpoint")
    base = state.iterations[BASELINE]
    start_spec: Spec = spec_of(load_checkpoint(start), start)
    app = get_application(dcfg.application, ws.images_dir, start_spec)
    train = read_dataset_csv(ws.train_csv, role="train")
    val = read_dataset_csv(ws.val_csv, role="validation")
    steps = [ControlStep(BASELINE, 0, start, base.far_pct, base.threshold, start_ci95)]

    def best_so_far() -> ControlStep:  # DEFT's rule: lowest steering FAR, the earlier on a tie
        return min(steps, key=lambda s: (far_or_inf(s.far), s.n))

    for n in ran:
        label = f"ctrl{n}"
        warm = best_so_far()
        trained = app.train(
            train,
            val,
            out / iteration_label(n) / RunLayout.TRAIN,
            pretrained=warm.checkpoint,
            num_epochs=dcfg.num_epochs,
            seed=dcfg.seed + n,
        )
        best = trained.best_checkpoint
        candidates = {"best_val": best, "latest": best.with_name(LATEST_NAME)}
        if best.name != BEST_NAME:
            candidates = {"best_val": best}
        ckpt, far, thr, ci = scorer.evaluate(
            app, candidates, out / iteration_label(n) / RunLayout.INFERENCE, label
        )
        kind = next(k for k, v in candidates.items() if v == ckpt)
        steps.append(ControlStep(label, n, ckpt, far, thr, ci, kind, warm.label))
    picked = best_so_far()
    # Every choice is made: only now the hold-out (each step, for the record).
    held_csv = {s.label: out / "holdout" / f"{s.label}.csv" for s in steps}
    held = {
        s.label: scorer.holdout(app, s.checkpoint, s.threshold, held_csv[s.label]) for s in steps
    }
    last = steps[-1]
    note = None
    if not ran:
        note = "DEFT ran no iteration: nothing to control for (the start is reported)"
    elif last is not picked:
        note = f"last step {last.label}: hold-out {format_far(held[last.label].far_pct)}"
    return ArmResult(
        arm=arm,
        seed=seed,
        steering_far=picked.far,
        steering_ci95=picked.ci95,
        holdout_far=held[picked.label].far_pct,
        holdout_ci95=held[picked.label].ci95,
        wall_s=time.perf_counter() - t0,
        picked=picked.label,
        results_dir=str(out),
        note=note,
        detail={
            "epochs_per_step": dcfg.num_epochs,
            "iterations": len(ran),
            "steps": [
                {
                    "step": s.label,
                    "warm_from": s.warm_from,
                    "kept": s.kind,
                    "steering_far": s.far,
                    "holdout_far": held[s.label].far_pct,
                    "holdout_ci95": held[s.label].ci95,
                    "holdout_csv": str(held_csv[s.label]),
                    "checkpoint": str(s.checkpoint),
                }
                for s in steps
            ],
        },
    )


def _rows(csv: Path) -> int:
    return len(pd.read_csv(csv, usecols=[0]))


# --- one seed ---------------------------------------------------------------------------


def run_seed(
    ws: Workspace,
    doc: dict[str, Any],
    seed: int,
    out: Path,
    scorer: Scorer,
    say: Callable[[str], None],
) -> list[ArmResult]:
    spec_seed = load_spec(ws.spec_path).train.seed
    config_path = out / "run_config.yaml"
    cfg = write_config(seeded_config(doc, seed, spec_seed), config_path)
    rows: list[ArmResult] = []

    say(f"[seed {seed}] 1/5 full pipeline (automl-deft run) …")
    full_root = out / "full"
    summary, wall, text = run_pipeline(ws, config_path, full_root, "automl-deft", out / "full.log")
    rows.append(summary_row("full", seed, summary, wall, full_root))
    say(f"[seed {seed}]     done in {wall / 60:.1f} min")

    state = DeftState.load(full_root, reconcile=False)
    rows.append(
        step_row(
            "phase1",
            seed,
            summary,
            BASELINE,
            full_root,
            reused_s=phase1_seconds(text),
            note="reused: the full run's baseline is the Phase 1 winner (deterministic search)",
        )
    )
    deft_ranked = rank_by_far(state.iterations, include_final=False)
    if deft_ranked:
        rows.append(
            step_row("ref_deft_pick", seed, summary, deft_ranked[0], full_root, note="no training")
        )
    if FINAL_AUTOML in state.iterations:
        rows.append(
            step_row("ref_phase3_warm", seed, summary, FINAL_AUTOML, full_root, note="no training")
        )

    say(f"[seed {seed}] 2/5 Phase 1 only: reused from the full run")
    say(f"[seed {seed}] 3/5 DEFT only (--pipeline deft-only) …")
    deft_root = out / "deft_only"
    summary_d, wall_d, _ = run_pipeline(
        ws, config_path, deft_root, "deft-only", out / "deft_only.log"
    )
    rows.append(summary_row("deft_only", seed, summary_d, wall_d, deft_root))
    say(f"[seed {seed}]     done in {wall_d / 60:.1f} min")

    say(f"[seed {seed}] 4/5 Phase 3 from scratch on the full run's augmented set …")
    row = phase3_scratch(ws, cfg, full_root, out / "phase3_scratch", seed, scorer)
    rows.append(row)
    say(f"[seed {seed}]     done in {(row.wall_s or 0) / 60:.1f} min")

    say(f"[seed {seed}] 5/5 DEFT control (base set, DEFT's epochs and iterations) …")
    row = deft_control(ws, full_root, out / "deft_control", seed, scorer)
    rows.append(row)
    say(f"[seed {seed}]     done in {(row.wall_s or 0) / 60:.1f} min")
    order = list(ARMS)
    return sorted(rows, key=lambda r: order.index(r.arm))


# --- output -------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _wall(r: ArmResult) -> str:
    if r.wall_s is not None:
        return _duration(r.wall_s)
    if r.reused_s is not None:
        return f"reused ({_duration(r.reused_s)} in full)"
    return "reused"


def render(rows: list[ArmResult]) -> str:
    """The per-seed table, the per-arm means and the notes."""
    from tabulate import tabulate

    table = tabulate(
        [
            [
                ARMS[r.arm],
                r.seed,
                r.picked or "",
                format_far(r.steering_far, r.steering_ci95),
                format_far(r.holdout_far, r.holdout_ci95),
                _wall(r),
            ]
            for r in rows
        ],
        headers=["arm", "seed", "step", "steering FAR [95% CI]", "hold-out FAR [95% CI]", "wall"],
        tablefmt="simple",
    )
    means = []
    for arm, title in ARMS.items():
        held = [r.holdout_far for r in rows if r.arm == arm and r.holdout_far is not None]
        seeds = sum(r.arm == arm for r in rows)
        if not seeds:
            continue
        mean = statistics.fmean(held) if held else None
        spread = f"{min(held):.2f}–{max(held):.2f}" if len(held) > 1 else ""
        means.append([title, f"{len(held)}/{seeds}", format_far(mean), spread])
    mean_table = tabulate(
        means,
        headers=["arm", "seeds scored", "mean hold-out FAR", "range"],
        tablefmt="simple",
    )
    notes = [f"seed {r.seed} {r.arm}: {r.note}" for r in rows if r.note]
    text = (
        "FAR at 100% recall; steering = the KPI set the run chose on, hold-out = "
        "kpi/holdout_set.csv (steered nothing).\n\n"
        f"{table}\n\nmean over seeds:\n{mean_table}\n"
    )
    if notes:
        text += "\nnotes:\n" + "\n".join(f"  {n}" for n in notes) + "\n"
    return text


def say(line: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(line, file=sys.stderr, flush=True)


def bench_inputs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, name: str
) -> tuple[Workspace, dict[str, Any], Path]:
    """A benchmark's workspace (it must have a hold-out), its run-config document and a
    fresh output folder (``--out`` or a new temp dir); ``parser.error`` on bad input."""
    ws = Workspace.at(args.workspace)
    if not ws.has_holdout:
        parser.error(f"{ws.root} has no kpi/holdout_set.csv (automl-deft demo-workspace makes one)")
    doc: dict[str, Any] = {}
    if args.config is not None:
        doc = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
    out = (args.out or Path(tempfile.mkdtemp(prefix=f"automl-deft-{name}-"))).resolve()
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} is not empty: the arms must start fresh (pick a new folder)")
    out.mkdir(parents=True, exist_ok=True)
    return ws, doc, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("-c", "--config", type=Path, help="Run config YAML (default: defaults).")
    parser.add_argument("--seeds", type=int, default=1, help="Seeds 0..N-1 (default 1).")
    parser.add_argument("--out", type=Path, help="Output folder (default: a new temp dir).")
    parser.add_argument("--json", action="store_true", help="Also write OUT/results.json.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    ws, doc, out = bench_inputs(parser, args, "ablation")
    run_config_from_dict(doc, str(args.config or "defaults"))  # fail now on a bad config

    say(f"ablation on {ws.root} with {args.config or 'the default config'}; out: {out}")
    t0 = time.perf_counter()
    scorer = Scorer(ws)
    rows: list[ArmResult] = []
    for seed in range(args.seeds):
        rows += run_seed(ws, doc, seed, out / f"seed{seed}", scorer, say)
    total = time.perf_counter() - t0
    text = render(rows) + f"\ntotal wall time: {total / 60:.1f} min\n"
    (out / "table.txt").write_text(text, encoding="utf-8")
    print(text, end="")
    if args.json:
        results = {
            "workspace": str(ws.root),
            "config": str(args.config.resolve()) if args.config else None,
            "seeds": args.seeds,
            "wall_s": round(total, 1),
            "arms": ARMS,
            "rows": [{**dataclasses.asdict(r), "finite": r.finite} for r in rows],
        }
        (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"results: {out / 'results.json'}")
    print(f"out:     {out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
