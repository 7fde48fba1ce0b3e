"""Hard negatives: do SDG's PASS pairs lower the untouched hold-out FAR more than mining alone?

On one workspace and one run config, per seed, every arm starts from one checkpoint:

- ``start``: the shared start. The workspace spec with the pins every AutoML trial
  gets (``automl.num_epochs`` epochs, ``automl.batch_size`` and ``automl.pinned`` —
  configs/smt.yaml reads the lights at 64 px, tiled in a grid), trained once with
  ``train.seed`` + seed, then pre-seeded into each DEFT arm's results directory with
  :func:`automl_deft.handoff.seed_baseline`, so no arm retrains it. Its row is the
  start as DEFT evaluated it (the first DEFT arm's baseline step).
- ``hard_negatives``: ``automl-deft deft`` with the run config's ``deft:`` section and
  ``sdg.hard_negatives: true`` (the default): weak PASS rows (false alarms) get mined
  look-alikes *and* generated benign variations.
- ``mining_only``: ``sdg.hard_negatives: false``: weak PASS rows go to mining only
  (SDG still makes defect pairs for weak defect rows).
- ``sdg_only``: hard negatives with ``mining.enabled: false``: new rows from SDG alone.
- ``control``: DEFT's control (:func:`ablation.control_from`): as many fine-tunings as
  the ``hard_negatives`` arm trained (the first DEFT arm run, without it), with its
  epochs and seeds, from the same start, on the base training set — no new rows.

Each DEFT arm's state carries its config (``seed_baseline`` records it; the loop
resumes with the state's own config, so ``deft`` runs without ``-c``); the arm's config
is also written to ``OUT/seed<s>/<arm>.yaml``. Seed ``s`` adds ``s`` to ``deft.seed``
and to the start's ``train.seed``; seed 0 is the config as written.

Every choice is made on the steering (KPI) set, as DEFT makes it: an arm's row is the
step DEFT's pick-best names (lowest steering FAR, the earlier on a tie;
``best_model.json``). Only then is every evaluated step scored on the untouched
hold-out (``kpi/holdout_set.csv``; :func:`automl_deft.scorecard.score_holdout`, the
step's steering threshold as the deployed one; the scores go where finalize puts
them, ``RUN/holdout/<step>_scores.csv``). Per seed, each arm is compared with
``mining_only`` and with ``control`` on the hold-out: the difference in percentage
points with a paired 95% interval (the same stratified bootstrap resamples of the
hold-out rows for both models).

Everything goes under ``--out`` (default: a new temp dir): ``seed<s>/start/`` (the
shared start), one DEFT results directory per arm, ``control/``, the arm configs and
logs, ``table.txt`` and, with ``--json``, ``results.json``.

    .venv/bin/python benchmarks/hard_negatives.py WS -c CONFIG [--seeds N] [--out DIR]
        [--json] [--arms hard_negatives,mining_only,sdg_only,control]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from ablation import ArmResult, Scorer, automl_deft_cli, bench_inputs, control_from, say

from automl_deft.application import get_application
from automl_deft.deft.config import DeftConfig, config_from_dict
from automl_deft.deft.loop import workspace_inputs
from automl_deft.deft.stages import MINED_SOURCE, SDG_SOURCE, Stages
from automl_deft.deft.state import HARD_STOPPED, DeftState
from automl_deft.handoff import seed_baseline
from automl_deft.io import atomic_write_json, atomic_write_text
from automl_deft.jsontypes import JSONObject
from automl_deft.kpi import compute_kpi, format_far
from automl_deft.layout import RunLayout
from automl_deft.model.spec import Spec, deep_merge, load_spec, save_spec
from automl_deft.phases import BASELINE, iteration_number
from automl_deft.records import Deliverable, HygieneSummary, rank_by_far
from automl_deft.run_config import RunConfig, run_config_from_dict
from automl_deft.scorecard import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, steering_interval
from automl_deft.workspace import (
    PASS_LABEL,
    SCORE_COLUMN,
    Workspace,
    defect_mask,
    normalize_label,
    read_dataset_csv,
)

ARMS: dict[str, str] = {
    "start": "shared start (baseline, no DEFT)",
    "hard_negatives": "hard negatives (mining + SDG PASS)",
    "mining_only": "mining only (no SDG PASS)",
    "sdg_only": "SDG only (PASS + defects, no mining)",
    "control": "DEFT's control (base set, no new rows)",
}
"""Row keys and their titles, in table order (``start`` is read from the first DEFT arm)."""

ARM_CHANGES: dict[str, JSONObject] = {
    "hard_negatives": {"sdg": {"hard_negatives": True}},
    "mining_only": {"sdg": {"hard_negatives": False}},
    "sdg_only": {"sdg": {"hard_negatives": True}, "mining": {"enabled": False}},
}
"""What each DEFT arm changes in the run config's ``deft:`` section."""

RUNNABLE = ("hard_negatives", "mining_only", "sdg_only", "control")
"""The arms ``--arms`` picks from (in run order: the control counts a DEFT arm's steps)."""

REFERENCES = ("mining_only", "control")
"""The arms every other arm is compared with."""

START_SOURCE = "benchmark_shared_start"
"""``iterations.baseline.source`` of a start seeded by this benchmark."""

PAIRED_NOTE = (
    "paired: every arm starts from the same checkpoint and is scored on the same hold-out "
    "rows, and each difference's interval resamples those rows once for both models. "
    "One seed is one draw of the training randomness, and with intervals this wide (one "
    "hard defect sets the threshold) a difference settles little unless its interval "
    "excludes 0 on several seeds."
)

log = logging.getLogger("hard_negatives")


# --- configs --------------------------------------------------------------------------------


def arm_config(cfg: RunConfig, arm: str, seed: int) -> DeftConfig:
    """The DEFT config of ``arm`` on ``seed``: the run config's ``deft:`` plus the arm's change.

    Raises:
        SpecError: the merged config is invalid (it names the key).
    """
    doc = deep_merge(cfg.deft.to_dict(), ARM_CHANGES[arm])
    doc["seed"] = int(doc["seed"]) + seed
    return config_from_dict(doc, f"{arm} arm")


def start_spec(ws: Workspace, cfg: RunConfig, seed: int) -> Spec:
    """The workspace spec with the pins every AutoML trial gets, ``train.seed`` + ``seed``."""
    spec = load_spec(ws.spec_path).with_overrides(dict(cfg.automl.space().pinned))
    return spec.with_overrides({"train.seed": spec.train.seed + seed})


# --- the shared start -----------------------------------------------------------------------


@dataclass(frozen=True)
class SharedStart:
    """The checkpoint every arm of a seed starts from."""

    spec_path: Path
    checkpoint: Path
    val_far_pct: float | None
    seconds: float


def train_start(ws: Workspace, cfg: RunConfig, seed: int, out: Path) -> SharedStart:
    """Train the shared start once (:func:`start_spec`, no warm start) under ``out``."""
    spec = start_spec(ws, cfg, seed)
    spec_path = out / "baseline_spec.yaml"
    out.mkdir(parents=True, exist_ok=True)
    save_spec(spec, spec_path)
    app = get_application(cfg.deft.application, ws.images_dir, spec)
    trained = app.train(
        read_dataset_csv(ws.train_csv, role="train"),
        read_dataset_csv(ws.val_csv, role="validation"),
        out / RunLayout.TRAIN,
        pretrained=None,
        num_epochs=spec.train.num_epochs,
        seed=spec.train.seed,
    )
    far = trained.val_metrics.get("far_pct")
    return SharedStart(
        spec_path=spec_path,
        checkpoint=trained.best_checkpoint,
        val_far_pct=float(far) if isinstance(far, int | float) else None,
        seconds=trained.seconds,
    )


def seed_arm(ws: Workspace, start: SharedStart, dcfg: DeftConfig, results: Path) -> DeftState:
    """Pre-seed ``results`` with the shared start and the arm's config (no retraining there)."""
    return seed_baseline(
        results,
        checkpoint=start.checkpoint,
        train_metric=start.val_far_pct,
        config=dcfg,
        inputs=workspace_inputs(ws.root, spec_path=start.spec_path),
        source=START_SOURCE,
    )


# --- a DEFT arm -----------------------------------------------------------------------------


def run_deft(ws: Workspace, results: Path, log_path: Path) -> tuple[int, float]:
    """``automl-deft deft WS -o RESULTS`` (a seeded run: its state holds the config).

    Returns:
        (exit status, wall seconds); the output goes to ``log_path`` as it comes.
    """
    cmd = [*automl_deft_cli(), "deft", str(ws.root), "-o", str(results)]
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    return done.returncode, time.perf_counter() - t0


@dataclass(frozen=True)
class RowsAdded:
    """New training rows of one iteration, as assembled (after hygiene and de-duplication)."""

    sdg_pass: int = 0
    sdg_defect: int = 0
    mined: int = 0
    mined_pass: int = 0

    def __add__(self, other: RowsAdded) -> RowsAdded:
        return RowsAdded(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )

    def text(self) -> str:
        """``SDG PASS 12 + defect 3, mined 20``."""
        return f"SDG PASS {self.sdg_pass} + defect {self.sdg_defect}, mined {self.mined}"


def rows_added(state: DeftState, label: str) -> RowsAdded:
    """What ``label`` added, from its assembled set's provenance (nothing before data_merge)."""
    n = iteration_number(label)
    csv = state.path_of(label, "train_csv") if n else None
    prov = None if csv is None else csv.parent / RunLayout.provenance_name(n or 0)
    if prov is None or not prov.is_file():
        return RowsAdded()
    frame = pd.read_csv(prov, dtype=str, keep_default_na=False)
    new = frame[frame["iteration_added"] == str(n)]
    is_pass = new["label"].map(normalize_label) == PASS_LABEL
    sdg = new["source"] == SDG_SOURCE
    mined = new["source"] == MINED_SOURCE
    return RowsAdded(
        sdg_pass=int((sdg & is_pass).sum()),
        sdg_defect=int((sdg & ~is_pass).sum()),
        mined=int(mined.sum()),
        mined_pass=int((mined & is_pass).sum()),
    )


HYGIENE_COUNTS = (
    "candidates",
    "exact_duplicates",
    "near_duplicates",
    "flagged_label_errors",
    "excluded_label_errors",
)


def hygiene_totals(records: Sequence[HygieneSummary | None]) -> dict[str, int] | None:
    """The hygiene counts summed over iterations (None: no iteration recorded any)."""
    present = [r for r in records if r is not None]
    if not present:
        return None
    return {k: sum(int(getattr(r, k)) for r in present) for k in HYGIENE_COUNTS}


def _labels_in_order(state: DeftState) -> list[str]:
    numbered = [
        (n, label) for label in state.iterations if (n := iteration_number(label)) is not None
    ]
    return [label for _, label in sorted(numbered)]


def deft_row(
    ws: Workspace,
    arm: str,
    seed: int,
    results: Path,
    scorer: Scorer,
    *,
    wall_s: float,
    exit_code: int,
    log_path: Path,
) -> ArmResult:
    """A DEFT arm's row: DEFT's pick, every evaluated step on the hold-out, its new rows."""
    state = DeftState.load(results, reconcile=False)
    app = Stages(state, state.config, lambda _line: None).app  # the loop's own model setup
    deliverable = state.layout.deliverable
    ranked = rank_by_far(state.iterations)
    picked = (
        Deliverable.read(deliverable).iteration
        if deliverable.is_file()
        else (ranked[0] if ranked else None)
    )
    steps: list[dict[str, Any]] = []
    total = RowsAdded()
    for label in _labels_in_order(state):
        rec = state.iterations[label]
        added = rows_added(state, label)
        total += added
        step: dict[str, Any] = {
            "step": label,
            "steering_far": rec.far_pct,
            "steering_ci95": None,
            "holdout_far": None,
            "holdout_ci95": None,
            "holdout_csv": None,
            "train_rows": rec.train_rows,
            "added": dataclasses.asdict(added),
            "sdg_line": rec.sdg.line() if rec.sdg is not None else None,
            "sdg": rec.sdg.to_json() if rec.sdg is not None else None,
            "hygiene": rec.hygiene.to_json() if rec.hygiene is not None else None,
        }
        ckpt = state.path_of(label, "best_ckpt_path")
        if rec.evaluated and ckpt is not None:
            out_csv = state.layout.holdout_scores(label)
            held = scorer.holdout(app, ckpt, rec.threshold, out_csv)
            step.update(
                steering_ci95=steering_interval(state, label),
                holdout_far=held.far_pct,
                holdout_ci95=held.ci95,
                holdout_csv=str(out_csv),
            )
        steps.append(step)
    chosen = next((s for s in steps if s["step"] == picked), None)
    notes = []
    if exit_code != 0:  # a hard stop is an outcome (scored as it stands); anything else failed
        failed = "" if state.status == HARD_STOPPED else "failed: "
        notes.append(
            f"{failed}deft exit {exit_code} ({state.status}: {state.stop_reason}; log {log_path})"
        )
    if chosen is None:
        notes.append("no evaluated step")
    return ArmResult(
        arm=arm,
        seed=seed,
        steering_far=chosen["steering_far"] if chosen else None,
        steering_ci95=chosen["steering_ci95"] if chosen else None,
        holdout_far=chosen["holdout_far"] if chosen else None,
        holdout_ci95=chosen["holdout_ci95"] if chosen else None,
        wall_s=wall_s,
        picked=picked,
        results_dir=str(results),
        note="; ".join(notes) or None,
        detail={
            "config": state.config.to_dict(),
            "deft_status": state.status,
            "deft_stop_reason": state.stop_reason,
            "iterations": sum(1 for s in steps if s["step"] != BASELINE),
            "holdout_csv": chosen["holdout_csv"] if chosen else None,
            "added": dataclasses.asdict(total),
            "hygiene": hygiene_totals(
                [state.iterations[s["step"]].hygiene for s in steps if s["step"] != BASELINE]
            ),
            "sdg_lines": [f"{s['step']}: {s['sdg_line']}" for s in steps if s["sdg_line"]],
            "steps": steps,
        },
    )


def start_row(first: ArmResult, start: SharedStart) -> ArmResult:
    """The shared start as the first DEFT arm evaluated it (its baseline step)."""
    step = next((s for s in first.detail.get("steps", []) if s["step"] == BASELINE), None)
    if step is None:
        return ArmResult(
            "start", first.seed, None, None, None, None, start.seconds, note="no baseline"
        )
    return ArmResult(
        arm="start",
        seed=first.seed,
        steering_far=step["steering_far"],
        steering_ci95=step["steering_ci95"],
        holdout_far=step["holdout_far"],
        holdout_ci95=step["holdout_ci95"],
        wall_s=start.seconds,
        picked=BASELINE,
        results_dir=str(start.checkpoint.parent.parent),
        note=f"evaluated in the {first.arm} arm",
        detail={"holdout_csv": step["holdout_csv"], "checkpoint": str(start.checkpoint)},
    )


def failed_row(arm: str, seed: int, why: str, wall_s: float | None = None) -> ArmResult:
    return ArmResult(arm, seed, None, None, None, None, wall_s, note=f"failed: {why}")


# --- differences ----------------------------------------------------------------------------


def paired_far_difference(
    a: pd.DataFrame,
    b: pd.DataFrame,
    *,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, list[float]]:
    """FAR(a) − FAR(b) at 100% recall in percentage points, on the same scored rows.

    The interval is a stratified percentile bootstrap as in
    :func:`automl_deft.kpi.far_interval`, paired: each resample draws the defect rows and
    the PASS rows once, and both models are judged on that same draw.

    Raises:
        ValueError: the frames do not hold the same rows (labels in the same order), or
            one class is missing (FAR is undefined).
    """
    la, lb = a["label"].map(normalize_label), b["label"].map(normalize_label)
    if len(a) != len(b) or not (la.to_numpy() == lb.to_numpy()).all():
        raise ValueError("the two score frames do not hold the same rows")
    point = compute_kpi(a["label"], a[SCORE_COLUMN]).far_pct
    other = compute_kpi(b["label"], b[SCORE_COLUMN]).far_pct
    if point is None or other is None:
        raise ValueError("FAR is undefined on these rows: one class is missing")
    is_defect = defect_mask(a["label"])
    n_def, n_pass = int(is_defect.sum()), int((~is_defect).sum())
    rng = np.random.default_rng(seed)  # far_interval's draws: the defect rows, then the PASS rows
    d_idx = rng.integers(0, n_def, size=(n_resamples, n_def))
    p_idx = rng.integers(0, n_pass, size=(n_resamples, n_pass))

    def far(frame: pd.DataFrame) -> np.ndarray:
        scores = frame[SCORE_COLUMN].to_numpy(dtype=np.float64)
        threshold = scores[is_defect][d_idx].min(axis=1)
        flagged = scores[~is_defect][p_idx] >= threshold[:, None]
        return np.count_nonzero(flagged, axis=1) / n_pass * 100

    diff = far(a) - far(b)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(diff, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(point - other), [float(low), float(high)]


def _holdout_csv(row: ArmResult) -> Path | None:
    """The hold-out scores of the row's picked step."""
    if row.detail.get("holdout_csv"):
        return Path(row.detail["holdout_csv"])
    step = next((s for s in row.detail.get("steps", []) if s["step"] == row.picked), None)
    return Path(step["holdout_csv"]) if step and step.get("holdout_csv") else None


def differences(rows: Sequence[ArmResult]) -> list[dict[str, Any]]:
    """Per seed, each arm's hold-out FAR minus each reference arm's, paired (see module doc)."""
    out: list[dict[str, Any]] = []
    for seed in sorted({r.seed for r in rows}):
        by_arm = {r.arm: r for r in rows if r.seed == seed}
        for ref in REFERENCES:
            base = by_arm.get(ref)
            for arm in ARMS:
                row = by_arm.get(arm)
                if arm in (ref, "start") or row is None or base is None:
                    continue
                entry: dict[str, Any] = {"seed": seed, "arm": arm, "vs": ref, "diff_pp": None}
                entry["ci95"] = None
                if row.holdout_far is not None and base.holdout_far is not None:
                    entry["diff_pp"] = row.holdout_far - base.holdout_far
                    a, b = _holdout_csv(row), _holdout_csv(base)
                    if a is not None and b is not None and a.is_file() and b.is_file():
                        try:
                            diff, ci = paired_far_difference(pd.read_csv(a), pd.read_csv(b))
                            entry.update(diff_pp=diff, ci95=ci)
                        except ValueError as exc:
                            entry["note"] = str(exc)
                out.append(entry)
    return out


# --- one seed -------------------------------------------------------------------------------


def run_seed(
    ws: Workspace,
    cfg: RunConfig,
    arms: Sequence[str],
    seed: int,
    out: Path,
    scorer: Scorer,
    say: Callable[[str], None],
) -> list[ArmResult]:
    """Every arm of ``arms`` on one seed, from one shared start (see the module docstring)."""
    steps = len(arms) + 1
    say(f"[seed {seed}] 1/{steps} shared start: {cfg.automl.num_epochs} epochs, AutoML pins …")
    start = train_start(ws, cfg, seed, out / "start")
    say(f"[seed {seed}]     done in {_duration(start.seconds)}")
    rows: list[ArmResult] = []
    deft_states: dict[str, DeftState] = {}
    for i, arm in enumerate(arms, start=2):
        if arm == "control":
            continue
        dcfg = arm_config(cfg, arm, seed)
        results = out / arm
        atomic_write_text(out / f"{arm}.yaml", yaml.safe_dump({"deft": dcfg.to_dict()}))
        seed_arm(ws, start, dcfg, results)
        say(f"[seed {seed}] {i}/{steps} {arm}: automl-deft deft -o {results} …")
        code, wall = run_deft(ws, results, out / f"{arm}.log")
        try:
            row = deft_row(
                ws,
                arm,
                seed,
                results,
                scorer,
                wall_s=wall,
                exit_code=code,
                log_path=out / f"{arm}.log",
            )
        except Exception as exc:  # one arm's crash must not lose the others' results
            log.exception("%s: scoring failed", arm)
            row = failed_row(arm, seed, f"{exc} (log {out / f'{arm}.log'})", wall)
        else:
            deft_states[arm] = DeftState.load(results, reconcile=False)
        rows.append(row)
        say(f"[seed {seed}]     {_said(row)}")
    if deft_states:
        first = next(r for r in rows if r.arm in deft_states)
        rows.append(start_row(first, start))
    if "control" in arms:
        counted = (
            "hard_negatives" if "hard_negatives" in deft_states else next(iter(deft_states), None)
        )
        say(f"[seed {seed}] {steps}/{steps} control: {counted}'s fine-tunings on the base set …")
        if counted is None:
            rows.append(failed_row("control", seed, "no DEFT arm ran to count its fine-tunings"))
        else:
            state = deft_states[counted]
            row = control_from(
                ws,
                state,
                out / "control",
                seed,
                scorer,
                arm="control",
                start_ci95=steering_interval(state, BASELINE),
            )
            row.detail["counted_from"] = counted
            if counted != "hard_negatives":
                row.note = "; ".join(filter(None, [row.note, f"steps counted from {counted}"]))
            rows.append(row)
            say(f"[seed {seed}]     {_said(row)}")
    order = list(ARMS)
    return sorted(rows, key=lambda r: order.index(r.arm))


def _failed(row: ArmResult) -> bool:
    return bool(row.note and row.note.startswith("failed"))


def _said(row: ArmResult) -> str:
    if _failed(row):
        return row.note or ""
    return (
        f"{row.picked}: steering {format_far(row.steering_far)}, hold-out "
        f"{format_far(row.holdout_far)} in {_duration(row.wall_s or 0.0)}"
    )


# --- output ---------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _added(row: ArmResult) -> str:
    added = row.detail.get("added")
    return RowsAdded(**added).text() if added else ""


def _hygiene(row: ArmResult) -> str:
    h = row.detail.get("hygiene")
    if row.arm not in ARM_CHANGES:
        return ""
    if not h:
        return "n/a"
    refused = h["exact_duplicates"] + h["near_duplicates"]
    text = f"{refused} dup / {h['flagged_label_errors']} flagged"
    return text + (f" ({h['excluded_label_errors']} excl.)" if h["excluded_label_errors"] else "")


def _pp(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:+.2f} pp"
    return text + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")


def render(rows: Sequence[ArmResult], diffs: Sequence[dict[str, Any]]) -> str:
    """The per-seed table, hold-out FAR by step, SDG lines, the differences and the notes."""
    from tabulate import tabulate

    table = tabulate(
        [
            [
                ARMS[r.arm],
                r.seed,
                r.picked or "",
                format_far(r.steering_far, r.steering_ci95),
                format_far(r.holdout_far, r.holdout_ci95),
                _added(r),
                _hygiene(r),
                _duration(r.wall_s) if r.wall_s is not None else "",
            ]
            for r in rows
        ],
        headers=[
            "arm",
            "seed",
            "step",
            "steering FAR [95% CI]",
            "hold-out FAR [95% CI]",
            "rows added",
            "hygiene (refused / flagged)",
            "wall",
        ],
        tablefmt="simple",
    )
    by_step = tabulate(
        [
            [ARMS[r.arm], r.seed, " · ".join(_step_far(s) for s in r.detail.get("steps", []))]
            for r in rows
            if r.detail.get("steps")
        ],
        headers=["arm", "seed", "hold-out FAR of every step (steering FAR)"],
        tablefmt="simple",
    )
    diff_table = tabulate(
        [
            [ARMS[d["arm"]], f"vs {d['vs']}", d["seed"], _pp(d["diff_pp"], d["ci95"]), _verdict(d)]
            for d in diffs
        ],
        headers=["arm", "compared with", "seed", "hold-out Δ FAR [paired 95% CI]", ""],
        tablefmt="simple",
    )
    text = (
        "FAR at 100% recall; steering = the KPI set DEFT chose on, hold-out = "
        "kpi/holdout_set.csv (steered nothing). Every arm starts from the same checkpoint.\n\n"
        f"{table}\n\n{by_step}\n"
    )
    sdg = [
        f"  seed {r.seed} {r.arm} {line}" for r in rows for line in r.detail.get("sdg_lines", [])
    ]
    if sdg:
        text += "\nSDG:\n" + "\n".join(sdg) + "\n"
    if diffs:
        text += f"\ndifferences on the hold-out (arm − reference):\n{diff_table}\n"
        means = _mean_differences(diffs)
        if len({d["seed"] for d in diffs}) > 1 and means:
            text += "\nmean over seeds:\n" + "\n".join(f"  {m}" for m in means) + "\n"
    text += f"\nnote: {PAIRED_NOTE}\n"
    notes = [f"seed {r.seed} {r.arm}: {r.note}" for r in rows if r.note]
    if notes:
        text += "\nnotes:\n" + "\n".join(f"  {n}" for n in notes) + "\n"
    return text


def _step_far(step: dict[str, Any]) -> str:
    return f"{step['step']} {format_far(step['holdout_far'])} ({format_far(step['steering_far'])})"


def _verdict(d: dict[str, Any]) -> str:
    ci = d.get("ci95")
    if d.get("note"):
        return d["note"]
    if ci is None:
        return ""
    if ci[1] < 0:
        return "lower (interval excludes 0)"
    if ci[0] > 0:
        return "higher (interval excludes 0)"
    return "interval includes 0"


def _mean_differences(diffs: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    pairs = dict.fromkeys((d["arm"], d["vs"]) for d in diffs)
    for arm, ref in pairs:
        values = [
            d["diff_pp"]
            for d in diffs
            if (d["arm"], d["vs"]) == (arm, ref) and d["diff_pp"] is not None
        ]
        if not values:
            continue
        lower = sum(v < 0 for v in values)
        lines.append(
            f"{arm} vs {ref}: {_pp(statistics.fmean(values))} over {len(values)} seed(s), "
            f"lower on {lower}"
        )
    return lines


def results_json(
    ws: Workspace,
    config: Path | None,
    seeds: int,
    wall_s: float,
    rows: Sequence[ArmResult],
    diffs: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """What ``--json`` writes to ``OUT/results.json``."""
    return {
        "workspace": str(ws.root),
        "config": str(config.resolve()) if config else None,
        "seeds": seeds,
        "wall_s": round(wall_s, 1),
        "arms": ARMS,
        "rows": [{**dataclasses.asdict(r), "finite": r.finite} for r in rows],
        "differences": list(diffs),
        "note": PAIRED_NOTE,
    }


def parse_arms(text: str) -> list[str]:
    """``--arms a,b,…`` in run order.

    Raises:
        ValueError: an unknown arm, or the control without a DEFT arm to count.
    """
    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in RUNNABLE]
    if unknown:
        raise ValueError(f"unknown arm {unknown[0]!r}; choose from {', '.join(RUNNABLE)}")
    if not any(a in ARM_CHANGES for a in names):
        raise ValueError("the control counts a DEFT arm's fine-tunings: add hard_negatives")
    return [a for a in RUNNABLE if a in names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("-c", "--config", type=Path, help="Run config YAML (default: defaults).")
    parser.add_argument("--seeds", type=int, default=1, help="Seeds 0..N-1 (default 1).")
    parser.add_argument("--out", type=Path, help="Output folder (default: a new temp dir).")
    parser.add_argument("--json", action="store_true", help="Also write OUT/results.json.")
    parser.add_argument(
        "--arms",
        default=",".join(RUNNABLE),
        help=f"Comma-separated (default: {','.join(RUNNABLE)}).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    try:
        arms = parse_arms(args.arms)
    except ValueError as exc:
        parser.error(f"--arms: {exc}")
    ws, doc, out = bench_inputs(parser, args, "hardneg")
    cfg = run_config_from_dict(doc, str(args.config or "defaults"))  # fail now on a bad config
    say(f"hard negatives on {ws.root} with {args.config or 'the default config'}; out: {out}")
    t0 = time.perf_counter()
    scorer = Scorer(ws)
    rows: list[ArmResult] = []
    for seed in range(args.seeds):
        rows += run_seed(ws, cfg, arms, seed, out / f"seed{seed}", scorer, say)
    diffs = differences(rows)
    total = time.perf_counter() - t0
    text = render(rows, diffs) + f"\ntotal wall time: {total / 60:.1f} min\n"
    atomic_write_text(out / "table.txt", text)
    print(text, end="")
    if args.json:
        atomic_write_json(
            out / "results.json", results_json(ws, args.config, args.seeds, total, rows, diffs)
        )
        print(f"results: {out / 'results.json'}")
    print(f"out:     {out}")
    return 1 if any(_failed(r) for r in rows) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
