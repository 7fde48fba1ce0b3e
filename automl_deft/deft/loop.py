"""The DEFT loop: a disk-backed state machine, resumable after every stage.

Baseline: train (skipped when pre-seeded by Phase 1) → evaluate → rca.
Iteration N: routing → sdg → mining → data_merge → train → evaluate → rca, then
the gates: KPI met → stop; regression gate → stop for review; N == max → stop.

Every stage writes its outputs under ``<results>/<label>/…`` first and is then
committed in ``deft_state.json`` (see :mod:`automl_deft.deft.state`). A stage
that did not commit is redone from scratch on resume (its output folder is
cleared first); training itself continues from its ``latest.pt``. A stage that
raises a project error (:class:`~automl_deft.errors.AutomlDeftError`) hard-stops
the loop with the reason in the state, the log and the report; any other
exception (a crash, Ctrl-C) leaves the state as it was, ready to resume.

The loop ends with the pick-best safety net: ``best_model.json`` and
``best_model_inference_spec.yaml`` describe the lowest-far_pct checkpoint over
the baseline and every iteration, even if the last iteration regressed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from automl_deft.deft.application import Application, get_application
from automl_deft.deft.assemble import (
    assemble,
    validate_training_set,
    write_assembled,
)
from automl_deft.deft.config import DeftConfig, config_from_dict
from automl_deft.deft.state import (
    BASELINE,
    COMPLETE,
    HARD_STOPPED,
    IN_PROGRESS,
    NEEDS_REVIEW,
    DeftState,
    iteration_label,
    iteration_number,
    run_lock,
    stages_of,
)
from automl_deft.errors import AutomlDeftError, StageError, UserError
from automl_deft.handoff import (
    BEST_MODEL_FILE,
    far_or_inf,
    final_training_set,
    pick_best,
    write_deliverable,
)
from automl_deft.io import atomic_write_csv, atomic_write_json
from automl_deft.kpi import KPITarget, judge_scored_frame, read_inference_csv
from automl_deft.model.checkpoint import BEST_NAME, LATEST_NAME
from automl_deft.model.spec import Spec, load_spec
from automl_deft.workspace import Workspace, new_run_dir, normalize_label, read_dataset_csv

log = logging.getLogger(__name__)

FAULT_ENV = "AUTOML_DEFT_FAULT"
"""Testing hook: ``<label>:<stage>`` makes the process SIGKILL itself inside that stage,
after its outputs are written and before it commits (the worst moment to die)."""

REPORT_FILE = "DEFT_Loop_Report.html"
LEDGER_FILE = "mining_ledger.json"
Status = Callable[[str], None]


@dataclass
class LoopOutcome:
    """What the loop hands on (to Phase 3, the pipeline, or the user)."""

    results_dir: Path
    status: str
    stop_reason: str | None
    best_label: str | None
    best_checkpoint: Path | None
    best_far_pct: float | None
    best_threshold: float | None
    n_final: int
    final_train_csv: Path
    kpi_met: bool
    report: Path | None

    @property
    def hard_stopped(self) -> bool:
        return self.status == HARD_STOPPED

    @property
    def needs_review(self) -> bool:
        return self.status == NEEDS_REVIEW

    def to_dict(self) -> dict[str, Any]:
        return {
            "results_dir": str(self.results_dir),
            "status": self.status,
            "stop_reason": self.stop_reason,
            "best_label": self.best_label,
            "best_checkpoint": str(self.best_checkpoint) if self.best_checkpoint else None,
            "best_far_pct": self.best_far_pct,
            "best_threshold": self.best_threshold,
            "n_final": self.n_final,
            "final_train_csv": str(self.final_train_csv),
            "kpi_met": self.kpi_met,
            "hard_stopped": self.hard_stopped,
            "needs_review": self.needs_review,
            "report": str(self.report) if self.report else None,
        }


def workspace_paths(
    workspace: str | os.PathLike[str], *, spec_path: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """The absolute paths the loop reads, as recorded in ``config.paths``."""
    ws = Workspace.at(workspace)
    return {
        "workspace": str(ws.root.resolve()),
        "train_csv": str(ws.train_csv.resolve()),
        "val_csv": str(ws.val_csv.resolve()),
        "kpi_csv": str(ws.kpi_csv.resolve()),
        "pool_csv": str(ws.pool_csv.resolve()),
        "images_dir": str(ws.images_dir.resolve()),
        "spec": str(Path(spec_path or ws.spec_path).resolve()),
    }


def _print(line: str) -> None:
    print(line, flush=True)


def run_deft(
    workspace: str | os.PathLike[str],
    config: DeftConfig | None = None,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    spec_path: str | os.PathLike[str] | None = None,
    acknowledge_regression: bool = False,
    status: Status | None = _print,
) -> LoopOutcome:
    """Run (or resume) the DEFT loop on a workspace.

    Args:
        workspace: the workspace root (layout in :mod:`automl_deft.workspace`).
        config: the loop's settings; ignored when resuming (the state's own are used).
        results_dir: where state and outputs go; an existing ``deft_state.json`` there
            is resumed (this is also how a Phase 1 pre-seeded baseline is picked up).
            Default: ``<ws>/results/run_<timestamp>``.
        spec_path: the training spec for a baseline trained here (default: the
            workspace's ``specs/baseline_spec.yaml``).
        acknowledge_regression: continue a run stopped by the regression gate.
        status: receives the one-line status after every stage (None: silent).

    Returns:
        The outcome; a hard stop is reported there, not raised.

    Raises:
        UserError: a bad workspace/config, or another loop holds the results directory.
    """
    root = Path(results_dir) if results_dir else new_run_dir(workspace)
    with run_lock(root):
        if DeftState.exists(root):
            state = DeftState.load(root)
            cfg = config_from_dict(
                {k: v for k, v in state.data["config"].items() if k != "paths"},
                f"{root}/deft_state.json",
            )
        else:
            cfg = config or DeftConfig()
            state = DeftState.create(
                root,
                kpi_target=cfg.kpi_target,
                max_iterations=cfg.max_iterations,
                config=cfg.to_dict(),
                paths=workspace_paths(workspace, spec_path=spec_path),
            )
        loop = _Loop(state, cfg, status)
        return loop.run(acknowledge_regression=acknowledge_regression)


class _Loop:
    def __init__(self, state: DeftState, cfg: DeftConfig, status: Status | None) -> None:
        self.state = state
        self.cfg = cfg
        self.status = status
        self.target: KPITarget = cfg.target()
        paths = state.data["config"]["paths"]
        self.paths = {k: Path(v) for k, v in paths.items()}
        self.images_dir = self.paths["images_dir"]
        self._frames: dict[str, pd.DataFrame] = {}
        self.app: Application = get_application(cfg.application, self.images_dir, self._base_spec())

    # --- inputs -------------------------------------------------------------------------

    def _base_spec(self) -> Spec:
        spec = load_spec(self.paths["spec"])
        if self.cfg.batch_size is not None:
            spec = spec.with_overrides({"dataset.classify.batch_size": self.cfg.batch_size})
        return spec

    def frame(self, role: str) -> pd.DataFrame:
        if role not in self._frames:
            self._frames[role] = read_dataset_csv(self.paths[role], role=role.replace("_", " "))
        return self._frames[role]

    def pool(self) -> pd.DataFrame | None:
        path = self.paths["pool_csv"]
        if not path.is_file():
            return None
        frame = self.frame("pool_csv")
        return frame if len(frame) else None

    def dir(self, label: str, *parts: str) -> Path:
        return self.state.results_dir.joinpath(label, *parts)

    # --- driver -------------------------------------------------------------------------

    def run(self, *, acknowledge_regression: bool) -> LoopOutcome:
        st = self.state
        current = st.data.get("status")
        if current == NEEDS_REVIEW:
            if not acknowledge_regression:
                self._say(f"stopped for review: {st.data.get('stop_reason')}")
                self._say("re-run with --acknowledge-regression to continue")
                return self._finish()
            label = iteration_label(st.data.get("current_iteration", 0))
            st.data.setdefault("acknowledged", []).append(label)
            st.reopen()
        elif current == HARD_STOPPED:
            self._say(f"retrying after hard stop: {st.data.get('stop_reason')}")
            st.reopen()
        elif current == COMPLETE:
            return self._finish()

        try:
            for label in self._labels():
                for stage in stages_of(label):
                    if st.done(label, stage):
                        continue
                    self._run_stage(label, stage)
                stop = self._gates(label)
                if stop:
                    st.stop(stop[0], stop[1], label=label)
                    break
        except AutomlDeftError as exc:
            # _run_stage recorded it; the deliverable still names the best so far.
            log.debug("hard stop", exc_info=exc)
        return self._finish()

    def _labels(self) -> list[str]:
        return [iteration_label(n) for n in range(self.cfg.max_iterations + 1)]

    def _run_stage(self, label: str, stage: str) -> None:
        start = time.monotonic()
        before = self._best_far()
        try:
            fields, summary = getattr(self, f"stage_{stage}")(label)
        except AutomlDeftError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.state.record_error(label, stage, message, time.monotonic() - start)
            self._say(f"[{self._where(label, stage)}] HARD STOP: {message}")
            self._render_report()
            raise
        _fault_point(label, stage)
        duration = time.monotonic() - start
        self.state.commit(label, stage, fields=fields, summary=summary, duration_sec=duration)
        self._say(self._status_line(label, stage, summary, duration, before))
        if stage == "rca":
            self._render_report()

    # --- gates --------------------------------------------------------------------------

    def _gates(self, label: str) -> tuple[str, str] | None:
        rec = self.state.iterations[label]
        far = rec.get("far_pct")
        n = iteration_number(label) or 0
        if self.target.is_met(far):
            return COMPLETE, f"KPI met at {label}: FAR {far:.2f}% ({self.target})"
        if (
            n
            and self.cfg.regression.enabled
            and self._regression_streak() >= (self.cfg.regression.patience)
        ):
            return (
                NEEDS_REVIEW,
                f"{self._regression_streak()} iteration(s) in a row worse than the best so far by "
                f"more than {self.cfg.regression.tolerance_pp:g} pp (last: {label} "
                f"FAR {far_or_inf(far):.2f}%)",
            )
        if n >= self.cfg.max_iterations:
            return COMPLETE, f"max_iterations ({self.cfg.max_iterations}) reached"
        if rec.get("reachable") is False:
            return HARD_STOPPED, f"KPI unreachable at {label}: {rec.get('unreachable_reason')}"
        return None

    def _regression_streak(self) -> int:
        acknowledged = set(self.state.data.get("acknowledged", []))
        streak = 0
        for n in range(1, self.cfg.max_iterations + 1):
            rec = self.state.iterations.get(iteration_label(n))
            if not rec or rec.get("far_pct") is None:
                break
            if iteration_label(n) in acknowledged:
                streak = 0
            elif rec.get("regression"):
                streak += 1
            else:
                streak = 0
        return streak

    def _best_far(self, *, before: str | None = None) -> float | None:
        fars = [
            far_or_inf(rec.get("far_pct"))
            for label, rec in self.state.iterations.items()
            if label != before and iteration_number(label) is not None
        ]
        fars = [f for f in fars if f != float("inf")]
        return min(fars) if fars else None

    def _best_label(self) -> str:
        label = pick_best(self.state, include_final=False)
        if label is None:
            raise StageError("no evaluated checkpoint to start from; the baseline failed")
        return label

    # --- baseline / shared stages -------------------------------------------------------

    def stage_train(self, label: str) -> tuple[dict[str, Any], str]:
        n = iteration_number(label) or 0
        out = self.dir(label, "train")
        if n == 0:
            train_csv = self.paths["train_csv"]
            train_frame = self.frame("train_csv")
            pretrained = None
        else:
            train_csv = Path(self.state.iterations[label]["train_csv"])
            train_frame = read_dataset_csv(train_csv, role=f"{label} training")
            self._validate(train_frame, where=str(train_csv))
            pretrained = Path(self.state.iterations[self._best_label()]["best_ckpt_path"])
        trained = self.app.train(
            train_frame,
            self.frame("val_csv"),
            out,
            pretrained=pretrained,
            num_epochs=self.cfg.num_epochs,
            seed=self.cfg.seed + n,
        )
        vm = trained.val_metrics
        fields = {
            "best_ckpt_path": str(trained.best_checkpoint),
            "best_ckpt_kind": "best_val",
            "train_csv": str(train_csv),
            "train_rows": len(train_frame),
            "val_far_pct": vm.get("far_pct"),
            "val_loss": vm.get("val_loss"),
            "train_metric": vm.get("far_pct"),
            "train_seconds": round(trained.seconds, 1),
            "spec_path": str(trained.spec_path) if trained.spec_path else None,
            "warm_start_from": str(pretrained) if pretrained else None,
        }
        if n == 0:
            fields["source"] = "trained_here"
        val = vm.get("far_pct")
        shown = "n/a" if val is None else f"{val:.2f}%"
        warm = f" warm from {pretrained.parent.parent.name}" if pretrained else ""
        return fields, f"trained {len(train_frame)} rows{warm} · val FAR {shown}"

    def stage_evaluate(self, label: str) -> tuple[dict[str, Any], str]:
        rec = self.state.iterations[label]
        best = Path(rec["best_ckpt_path"])
        candidates = {"best_val": best, "latest": best.with_name(LATEST_NAME)}
        if best.name != BEST_NAME:
            candidates = {"best_val": best}
        kind, result, results = evaluate_checkpoints(
            self.app,
            candidates,
            self.frame("kpi_csv"),
            self.dir(label, "inference"),
            title=label,
        )
        if kind is None:
            raise StageError(f"{label}: checkpoint {best} is missing; re-run its training")
        out = self.dir(label, "inference")
        far = result.far_pct
        fields: dict[str, Any] = {
            "best_ckpt_path": str(candidates[kind]),
            "best_ckpt_kind": kind,
            "far_pct": far,
            "threshold": result.threshold,
            "candidates": {k: v.far_pct for k, v in results.items()},
            "inference_csv": str(out / "kpi_scores.csv"),
            "kpi": result.to_dict(),
        }
        n = iteration_number(label) or 0
        if n:
            best_before = self._best_far(before=label)
            fields["regression"] = bool(
                far is not None
                and best_before is not None
                and far > best_before + self.cfg.regression.tolerance_pp
            )
        thr = "n/a" if result.threshold is None else f"{result.threshold:.4g}"
        shown = "unavailable" if far is None else f"{far:.2f}%"
        return fields, f"FAR={shown} threshold={thr} ({kind})"

    def stage_rca(self, label: str) -> tuple[dict[str, Any], str]:
        from automl_deft.deft.rca import analyse, write_rca

        # analyse() checks and converts the scores (a KPIError, not a crash, on bad ones).
        scored = read_inference_csv(self.state.iterations[label]["inference_csv"])
        out = self.dir(label, "rca_results")
        _clear(out)
        result = analyse(
            scored,
            self.target,
            self.cfg.rca,
            images_dir=self.images_dir,
            naming=self.app.naming(),
        )
        write_rca(result, out, title=label)
        fields = {
            "reachable": result.reachable,
            "unreachable_reason": result.reason,
            "rca_target_defects": list(result.target_defects),
            "rca_target_labels": list(result.target_labels),
            "need": dict(result.need),
            "weak_rows": len(result.weak),
            "findings": list(result.findings),
        }
        if not result.reachable:
            return fields, f"KPI unreachable: {result.reason}"
        tops = ", ".join(f"{k}={v}" for k, v in list(result.need.items())[:4]) or "none"
        return fields, f"{len(result.weak)} weak rows ({tops})"

    # --- iteration stages ---------------------------------------------------------------

    def _previous(self, label: str) -> str:
        n = iteration_number(label) or 0
        return iteration_label(n - 1)

    def _sdg_backend(self) -> Any:
        from automl_deft.deft.sdg import get_sdg_backend

        return get_sdg_backend(self.cfg.sdg.backend)

    def _sdg_context(self, label: str, train_frame: pd.DataFrame) -> Any:
        from automl_deft.deft.sdg import SDGContext

        return SDGContext(
            images_dir=self.images_dir,
            naming=self.app.naming(),
            image_size=self.app.image_size(),
            train_frame=train_frame,
            out_images_dir=self.dir(label, "dataset", "images", "sdg"),
            work_dir=self.dir(label, "sdg"),
            seed=self.cfg.seed,
            iteration=iteration_number(label) or 0,
            options=dict(self.cfg.sdg.options),
        )

    def _previous_train(self, label: str) -> tuple[pd.DataFrame, Path, pd.DataFrame | None]:
        prev = self._previous(label)
        if prev == BASELINE:
            return self.frame("train_csv"), self.paths["train_csv"], None
        csv = Path(self.state.iterations[prev]["train_csv"])
        prov = csv.with_name(csv.stem + "_provenance.csv")
        provenance = pd.read_csv(prov, dtype=str, keep_default_na=False) if prov.is_file() else None
        return read_dataset_csv(csv, role=f"{prev} training"), csv, provenance

    def stage_routing(self, label: str) -> tuple[dict[str, Any], str]:
        from automl_deft.deft.rca import load_weak
        from automl_deft.deft.routing import route

        prev = self._previous(label)
        if self.state.iterations[prev].get("reachable") is False:
            raise StageError(f"{prev}: KPI unreachable, nothing to route")
        weak = load_weak(self.dir(prev, "rca_results"))
        pool = self.pool() if self.cfg.mining.enabled else None
        if self.cfg.mining.enabled and pool is None:
            msg = f"mining pool {self.paths['pool_csv']} is missing or empty"
            if self.cfg.mining.on_empty_pool == "hard_stop":
                raise StageError(f"{msg}; add pool rows or set mining.on_empty_pool: skip")
            self._say(f"warning: {msg}; mining skipped (mining.on_empty_pool: skip)")
        pool_labels = None if pool is None else set(pool["label"].map(normalize_label))
        sdg_labels = None
        if self.cfg.sdg.enabled:
            train_frame, _, _ = self._previous_train(label)
            sdg_labels = self._sdg_backend().supported_labels(self._sdg_context(label, train_frame))
        routing = route(
            weak,
            pool_labels=pool_labels,
            sdg_labels=sdg_labels,
            mining_enabled=pool is not None,
            sdg_enabled=self.cfg.sdg.enabled,
        )
        out = self.dir(label, "routing_results")
        _clear(out)
        for branch, groups in (("mining", routing.mining), ("sdg", routing.sdg)):
            frame = pd.concat(groups.values(), ignore_index=True) if groups else weak.iloc[:0]
            atomic_write_csv(out / f"{branch}_targets.csv", frame)
        atomic_write_json(out / "routing.json", routing.to_dict())
        return {"routing": routing.to_dict()}, routing.summary()

    def _targets(self, label: str, branch: str) -> pd.DataFrame:
        path = self.dir(label, "routing_results", f"{branch}_targets.csv")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return frame

    def stage_sdg(self, label: str) -> tuple[dict[str, Any], str]:
        from automl_deft.deft.sdg import SDGRequest, allocate_budget

        out = self.dir(label, "sdg")
        images = self.dir(label, "dataset", "images", "sdg")
        _clear(out)
        _clear(images)
        targets = self._targets(label, "sdg")
        if targets.empty or not self.cfg.sdg.enabled or self.cfg.sdg.num_sdg == 0:
            atomic_write_csv(out / "sdg_rows.csv", pd.DataFrame(columns=["object_name"]))
            return {"sdg": {"backend": self.cfg.sdg.backend, "generated": {}}}, "no SDG targets"
        labels = targets["label"].map(normalize_label)
        need = {lab: int((labels == lab).sum()) for lab in sorted(set(labels))}
        budget = allocate_budget(self.cfg.sdg.num_sdg, need)
        requests = [
            SDGRequest(label=lab, count=k, weak_rows=targets[labels == lab])
            for lab, k in budget.items()
            if k > 0
        ]
        train_frame, _, _ = self._previous_train(label)
        rows = self._sdg_backend().generate(requests, self._sdg_context(label, train_frame))
        atomic_write_csv(out / "sdg_rows.csv", rows)
        generated = (
            rows["label"].map(normalize_label).value_counts().sort_index().to_dict()
            if len(rows)
            else {}
        )
        made = {str(k): int(v) for k, v in generated.items()}
        info = {"backend": self.cfg.sdg.backend, "requested": budget, "generated": made}
        return {"sdg": info, "sdg_rows": len(rows)}, (
            f"{len(rows)}/{self.cfg.sdg.num_sdg} pairs via {self.cfg.sdg.backend} "
            f"({', '.join(f'{k}={v}' for k, v in made.items()) or '-'})"
        )

    def stage_mining(self, label: str) -> tuple[dict[str, Any], str]:
        from automl_deft.deft.mining import MiningLedger, mine

        out = self.dir(label, "mining_filter")
        _clear(out)
        targets = self._targets(label, "mining")
        pool = self.pool()
        n = iteration_number(label) or 0
        if targets.empty or pool is None:
            atomic_write_csv(out / "mined_rows.csv", pd.DataFrame(columns=["object_name"]))
            return {"mining": {"per_label": {}, "warnings": []}}, "no mining targets"
        ledger = MiningLedger.load(self.state.results_dir / LEDGER_FILE)
        ledger.entries = {k: v for k, v in ledger.entries.items() if v < n}
        best = Path(self.state.iterations[self._best_label()]["best_ckpt_path"])
        embedder = self.app.embedder(best, self.cfg.mining.embedder)
        naming = self.app.naming()
        target_emb = embedder.embed(targets, self.images_dir, naming)
        pool_emb = embedder.embed(pool, self.images_dir, naming)
        previous = self.state.iterations.get(self._previous(label), {}).get("mined_rows")
        result = mine(
            targets,
            target_emb,
            pool,
            pool_emb,
            top_k=self.cfg.mining.top_k_per_target,
            min_similarity=self.cfg.mining.min_similarity,
            ledger=ledger,
            iteration=n,
            previous_selected=previous,
            block_rows=self.cfg.mining.block_rows,
        )
        atomic_write_csv(out / "mined_rows.csv", result.rows)
        summary = result.to_dict()
        atomic_write_json(out / "mining.json", summary)
        for w in result.warnings:
            self._say(f"warning: {w}")
        return {"mining": summary, "mined_rows": len(result.rows)}, (
            f"{len(result.rows)} pool rows ≥ {self.cfg.mining.min_similarity:g} similarity "
            f"for {len(targets)} targets"
        )

    def stage_data_merge(self, label: str) -> tuple[dict[str, Any], str]:
        from automl_deft.deft.mining import MiningLedger

        n = iteration_number(label) or 0
        out = self.dir(label, "dataset")
        previous, _, provenance = self._previous_train(label)
        sdg = _read_rows(self.dir(label, "sdg", "sdg_rows.csv"))
        mined = _read_rows(self.dir(label, "mining_filter", "mined_rows.csv"))
        assembled = assemble(previous, provenance, sdg_rows=sdg, mined_rows=mined, iteration=n)
        new_rows = assembled.frame.iloc[assembled.previous_rows :]
        self._validate(assembled.frame, where=f"{label} assembled set", check_rows=new_rows)
        csv_path, _ = write_assembled(assembled, out, n)
        if mined is not None and len(mined):
            from automl_deft.workspace import leakage_keys

            ledger = MiningLedger.load(self.state.results_dir / LEDGER_FILE)
            ledger.add(list(leakage_keys(mined)), n)
            ledger.save()
        fields = {
            "train_csv": str(csv_path),
            "train_rows": len(assembled.frame),
            "sdg_rows": assembled.sdg_rows,
            "mined_rows": assembled.mined_rows,
            "added_rows": assembled.added_rows,
            "skipped_duplicates": assembled.skipped_duplicates,
        }
        return fields, (
            f"{assembled.previous_rows} + {assembled.sdg_rows} sdg + {assembled.mined_rows} mined "
            f"= {len(assembled.frame)} rows"
        )

    def _validate(
        self, frame: pd.DataFrame, *, where: str, check_rows: pd.DataFrame | None = None
    ) -> None:
        validate_training_set(
            frame,
            val_frame=self.frame("val_csv"),
            kpi_frame=self.frame("kpi_csv"),
            images_dir=self.images_dir,
            naming=self.app.naming(),
            check_rows=check_rows,
            where=where,
        )

    # --- output -------------------------------------------------------------------------

    def _where(self, label: str, stage: str) -> str:
        n = iteration_number(label)
        if n:
            return f"iter {n}/{self.cfg.max_iterations} · {stage}"
        return f"{label} · {stage}"

    def _status_line(
        self, label: str, stage: str, summary: str, duration: float, before: float | None
    ) -> str:
        stages = stages_of(label)
        i = stages.index(stage)
        if i + 1 < len(stages):
            nxt = stages[i + 1]
        else:
            n = iteration_number(label) or 0
            nxt = "gates" if n >= self.cfg.max_iterations else f"iter {n + 1} routing"
        text = summary
        if stage == "evaluate":
            far = self.state.iterations[label].get("far_pct")
            if before is not None and far is not None:
                text = f"FAR {before:.2f}% → {far:.2f}% (target {self.target.short()})"
            elif far is not None:
                text = f"FAR {far:.2f}% (target {self.target.short()})"
        return f"[{self._where(label, stage)}] {text} · {_duration(duration)} · next: {nxt}"

    def _say(self, line: str) -> None:
        if self.status is not None:
            self.status(line)

    def _render_report(self) -> Path | None:
        from automl_deft.deft.report import render_report

        try:
            return render_report(self.state.results_dir)
        except Exception as exc:  # a report must never stop the loop
            log.warning("report not rendered: %s", exc)
            return None

    def _finish(self) -> LoopOutcome:
        st = self.state
        best = write_deliverable(st, self.app, images_dir=self.images_dir)
        report = self._render_report()
        n_final, csv = final_training_set(st)
        status = st.data.get("status", IN_PROGRESS)
        best_far = best["far_pct"] if best else None
        outcome = LoopOutcome(
            results_dir=st.results_dir,
            status=status,
            stop_reason=st.data.get("stop_reason"),
            best_label=best["iteration"] if best else None,
            best_checkpoint=Path(best["checkpoint"]) if best else None,
            best_far_pct=best_far,
            best_threshold=best["threshold"] if best else None,
            n_final=n_final,
            final_train_csv=csv,
            kpi_met=self.target.is_met(best_far),
            report=report,
        )
        if best:
            self._say(
                f"[done · {status}] best {outcome.best_label}: FAR {best_far:.2f}% "
                f"(target {self.target.short()}) · {st.results_dir / BEST_MODEL_FILE}"
            )
        return outcome


def evaluate_checkpoints(
    app: Application,
    candidates: dict[str, Path],
    kpi_frame: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
) -> tuple[str | None, Any, dict[str, Any]]:
    """Score each existing candidate checkpoint on the KPI set; keep the lowest far_pct.

    Writes ``kpi_scores_<kind>.csv`` per candidate and, for the kept one,
    ``kpi_scores.csv``, ``kpi_sweep.csv``, ``kpi_scores.png`` and ``kpi.json`` to
    ``out_dir``. Ties go to ``best_val``.

    Returns:
        (kept kind or None when no candidate exists, its KPIResult, {kind: KPIResult}).
    """
    scored_by: dict[str, pd.DataFrame] = {}
    results: dict[str, Any] = {}
    for kind, ckpt in candidates.items():
        if not ckpt.is_file():
            continue
        scored = app.score(ckpt, kpi_frame)
        results[kind] = judge_scored_frame(scored, inference_csv=out_dir / f"kpi_scores_{kind}.csv")
        scored_by[kind] = scored
    if not results:
        return None, None, {}
    kind = min(results, key=lambda k: (far_or_inf(results[k].far_pct), k != "best_val"))
    result = judge_scored_frame(
        scored_by[kind],
        inference_csv=out_dir / "kpi_scores.csv",
        sweep_csv=out_dir / "kpi_sweep.csv",
        plot=out_dir / "kpi_scores.png",
        title=f"{title} ({kind}) on the KPI set",
    )
    atomic_write_json(out_dir / "kpi.json", {"kind": kind, **result.to_dict()})
    return kind, result, results


def _clear(directory: Path) -> None:
    """Empty a stage's output folder so a redone stage starts clean."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


def _read_rows(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame if len(frame) else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _fault_point(label: str, stage: str) -> None:
    if os.environ.get(FAULT_ENV) == f"{label}:{stage}":
        os.kill(os.getpid(), signal.SIGKILL)


def load_outcome(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The state's summary for a finished run (used by ``automl-deft report``)."""
    state = DeftState.load(results_dir)
    if not state.iterations:
        raise UserError(f"{results_dir}: no iteration recorded yet")
    return state.data
