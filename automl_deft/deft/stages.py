"""The DEFT loop's stages: each writes its outputs and returns the record fields to commit.

:class:`Stages` holds what every stage reads (the state, the config, the
workspace frames, the application) and has one method per stage,
``stage_<name>(label) -> (fields, summary)``. The driver
(:mod:`automl_deft.deft.loop`) runs them in order and commits each one; a stage
never writes ``deft_state.json`` itself.

Bad input met by a stage is a :class:`~automl_deft.errors.UserError` (a missing or
undecodable image is a ``WorkspaceError`` from the data loader), which the driver
records as a hard stop; an image error that escapes as PIL's or the OS's own
exception (a backend decoding a file itself) is turned into a
:class:`~automl_deft.errors.StageError` by :func:`_input_errors_stop`.
Other ``OSError`` (a full or read-only results directory) passes through: the stage
stays uncommitted and the run resumes once the disk is fixed.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from PIL import Image, UnidentifiedImageError

from automl_deft.application import Application, get_application
from automl_deft.deft.assemble import assemble, validate_training_set, write_assembled
from automl_deft.deft.config import DeftConfig
from automl_deft.deft.state import DeftState
from automl_deft.errors import StageError, first_line
from automl_deft.io import atomic_write_csv, atomic_write_json
from automl_deft.kpi import KPIResult, KPITarget, judge_scored_frame, read_inference_csv
from automl_deft.layout import RunLayout, relocated_rows
from automl_deft.model.checkpoint import BEST_NAME, LATEST_NAME
from automl_deft.model.spec import Spec, load_spec
from automl_deft.phases import BASELINE, SOURCE_TRAINED_HERE, iteration_label, iteration_number
from automl_deft.records import (
    KPISummary,
    MiningSummary,
    RoutingSummary,
    SDGSummary,
    far_or_inf,
    rank_by_far,
)
from automl_deft.workspace import PASS_LABEL, SCORE_COLUMN, normalize_label, read_dataset_csv

Fields = dict[str, Any]
"""Changes to an :class:`~automl_deft.records.IterationRecord` (field name → value)."""

_Stage = TypeVar("_Stage", bound=Callable[..., tuple[Fields, str]])


def _input_errors_stop(method: _Stage) -> _Stage:
    """A stage whose input images cannot be read raises :class:`StageError` (a hard
    stop with the one-line reason), not PIL's or the OS's exception (a crash that
    leaves the stage in progress for ever)."""

    @functools.wraps(method)
    def stage(self: Stages, label: str) -> tuple[Fields, str]:
        try:
            return method(self, label)
        except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise StageError(
                f"an input image cannot be decoded ({first_line(exc)}); {_FIX}"
            ) from exc
        except FileNotFoundError as exc:
            missing = Path(exc.filename) if isinstance(exc.filename, str) else None
            if missing is None or not missing.is_relative_to(self.images_dir):
                raise
            raise StageError(f"image file missing: {missing}; {_FIX}") from exc

    return stage  # type: ignore[return-value]  # same signature as ``method``


SDG_SOURCE, MINED_SOURCE = "sdg", "mining_pool"
"""The ``source`` of new rows (as in the provenance CSV)."""
TOP_UP_ROUNDS = 2
"""Times the SDG stage re-offers a shortfall (pairs a label could not make) to the labels
that delivered in full, so the budget is spent where the backend can spend it."""

_FIX = "restore it or remove its row (`automl-deft validate WORKSPACE` lists every problem)"


class Stages:
    """The stage implementations over one run's state."""

    def __init__(self, state: DeftState, cfg: DeftConfig, say: Any) -> None:
        self.state = state
        self.cfg = cfg
        self.say = say
        self.target: KPITarget = cfg.target()
        self.layout: RunLayout = state.layout
        inputs = state.inputs
        self.images_dir = inputs.path("images_dir")
        self._frames: dict[str, pd.DataFrame] = {}
        self.app: Application = get_application(cfg.application, self.images_dir, self._base_spec())

    # --- inputs -------------------------------------------------------------------------

    def _base_spec(self) -> Spec:
        spec = load_spec(self.state.inputs.path("spec"))
        if self.cfg.batch_size is not None:
            spec = spec.with_overrides({"dataset.classify.batch_size": self.cfg.batch_size})
        return spec

    def frame(self, role: str) -> pd.DataFrame:
        if role not in self._frames:
            self._frames[role] = read_dataset_csv(
                self.state.inputs.path(role), role=role.replace("_", " ")
            )
        return self._frames[role]

    def pool(self) -> pd.DataFrame | None:
        path = self.state.inputs.path("pool_csv")
        if not path.is_file():
            return None
        frame = self.frame("pool_csv")
        return frame if len(frame) else None

    def dir(self, label: str, *parts: str) -> Path:
        return self.layout.stage_dir(label, *parts)

    def best_label(self) -> str:
        """The lowest-far_pct DEFT iteration so far (the warm start of the next training)."""
        ranked = rank_by_far(self.state.iterations, include_final=False)
        if not ranked:
            raise StageError("no evaluated checkpoint to start from; the baseline failed")
        return ranked[0]

    def best_far(self, *, before: str | None = None) -> float | None:
        """The lowest DEFT far_pct so far (leaving out ``before``), by the one ranking."""
        others = {k: v for k, v in self.state.iterations.items() if k != before}
        ranked = rank_by_far(others, include_final=False)
        return others[ranked[0]].far_pct if ranked else None

    def _checkpoint(self, label: str) -> Path:
        path = self.state.path_of(label, "best_ckpt_path")
        if path is None:
            raise StageError(f"{label} has no checkpoint; re-run its training")
        return path

    # --- baseline / shared stages -------------------------------------------------------

    @_input_errors_stop
    def stage_train(self, label: str) -> tuple[Fields, str]:
        n = iteration_number(label) or 0
        out = self.dir(label, RunLayout.TRAIN)
        if n == 0:
            train_csv = self.state.inputs.path("train_csv")
            train_frame = self.frame("train_csv")
            pretrained = None
        else:
            csv = self.state.path_of(label, "train_csv")
            assert csv is not None  # data_merge committed it
            train_csv = csv
            train_frame = self.run_rows(read_dataset_csv(train_csv, role=f"{label} training"))
            self.validate(train_frame, where=str(train_csv))
            pretrained = self._checkpoint(self.best_label())
        trained = self.app.train(
            train_frame,
            self.frame("val_csv"),
            out,
            pretrained=pretrained,
            num_epochs=self.cfg.num_epochs,
            seed=self.cfg.seed + n,
        )
        vm = trained.val_metrics
        fields: Fields = {
            "best_ckpt_path": trained.best_checkpoint,
            "best_ckpt_kind": "best_val",
            "train_csv": train_csv,
            "train_rows": len(train_frame),
            "val_far_pct": vm.get("far_pct"),
            "val_loss": vm.get("val_loss"),
            "train_metric": vm.get("far_pct"),
            "train_seconds": round(trained.seconds, 1),
            "spec_path": trained.spec_path,
            "warm_start_from": pretrained,
        }
        if n == 0:
            fields["source"] = SOURCE_TRAINED_HERE
        val = vm.get("far_pct")
        shown = "n/a" if val is None else f"{val:.2f}%"
        warm = f" warm from {pretrained.parent.parent.name}" if pretrained else ""
        return fields, f"trained {len(train_frame)} rows{warm} · val FAR {shown}"

    @_input_errors_stop
    def stage_evaluate(self, label: str) -> tuple[Fields, str]:
        best = self._checkpoint(label)
        candidates = {"best_val": best, "latest": best.with_name(LATEST_NAME)}
        if best.name != BEST_NAME:
            candidates = {"best_val": best}
        out = self.dir(label, RunLayout.INFERENCE)
        kind, result, results = evaluate_checkpoints(
            self.app, candidates, self.frame("kpi_csv"), out, title=label
        )
        if kind is None or result is None:
            raise StageError(f"{label}: checkpoint {best} is missing; re-run its training")
        far = result.far_pct
        fields: Fields = {
            "best_ckpt_path": candidates[kind],
            "best_ckpt_kind": kind,
            "far_pct": far,
            "threshold": result.threshold,
            "candidates": {k: v.far_pct for k, v in results.items()},
            "inference_csv": out / RunLayout.KPI_SCORES,
            "kpi": KPISummary.of(result),
        }
        n = iteration_number(label) or 0
        if n:
            best_before = self.best_far(before=label)
            fields["regression"] = bool(
                far is not None
                and best_before is not None
                and far > best_before + self.cfg.regression.tolerance_pp
            )
        thr = "n/a" if result.threshold is None else f"{result.threshold:.4g}"
        shown = "unavailable" if far is None else f"{far:.2f}%"
        return fields, f"FAR={shown} threshold={thr} ({kind})"

    @_input_errors_stop
    def stage_rca(self, label: str) -> tuple[Fields, str]:
        from automl_deft.deft.rca import analyse, write_rca

        scores = self.state.path_of(label, "inference_csv")
        assert scores is not None  # evaluate committed it
        # analyse() checks and converts the scores (a KPIError, not a crash, on bad ones).
        scored = read_inference_csv(scores)
        out = self.dir(label, RunLayout.RCA)
        clear_dir(out)
        result = analyse(
            scored, self.target, self.cfg.rca, images_dir=self.images_dir, naming=self.app.naming()
        )
        write_rca(result, out, title=label)
        fields: Fields = {
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

    def previous(self, label: str) -> str:
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
            out_images_dir=self.layout.sdg_images(label),
            work_dir=self.dir(label, RunLayout.SDG),
            seed=self.cfg.seed,
            iteration=iteration_number(label) or 0,
            options=dict(self.cfg.sdg.options),
            hard_negatives=self.cfg.sdg.hard_negatives,
            pass_check_max_blob_px=self.cfg.sdg.pass_check_max_blob_px,
        )

    def _sdg_setup(self, label: str) -> tuple[Any, Any]:
        """The SDG backend and its context for this iteration's training set."""
        return self._sdg_backend(), self._sdg_context(label, self.previous_train(label)[0])

    def _sdg_labels(self, gen: Any, ctx: Any) -> frozenset[str] | None:
        """What the SDG backend makes in ``ctx`` (PASS only with ``sdg.hard_negatives``)."""
        labels = gen.supported_labels(ctx)
        if labels is not None and not self.cfg.sdg.hard_negatives:
            labels = labels - {PASS_LABEL}
        return labels

    def previous_train(self, label: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The training set the iteration builds on, and its provenance (None for the base)."""
        prev = self.previous(label)
        if prev == BASELINE:
            return self.frame("train_csv"), None
        csv = self.state.path_of(prev, "train_csv")
        assert csv is not None  # the previous data_merge committed it
        prov = csv.with_name(csv.stem + "_provenance.csv")
        provenance = pd.read_csv(prov, dtype=str, keep_default_na=False) if prov.is_file() else None
        return self.run_rows(read_dataset_csv(csv, role=f"{prev} training")), provenance

    def run_rows(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A training set this run assembled, its generated rows found where the run is now."""
        return relocated_rows(frame, self.images_dir, self.state.created_in, self.state.results_dir)

    @_input_errors_stop
    def stage_routing(self, label: str) -> tuple[Fields, str]:
        from automl_deft.deft.rca import load_weak
        from automl_deft.deft.routing import route

        prev = self.previous(label)
        if self.state.iteration(prev).reachable is False:
            raise StageError(f"{prev}: KPI unreachable, nothing to route")
        weak = load_weak(self.dir(prev, RunLayout.RCA))
        pool = self.pool() if self.cfg.mining.enabled else None
        if self.cfg.mining.enabled and pool is None:
            msg = f"mining pool {self.state.inputs.pool_csv} is missing or empty"
            if self.cfg.mining.on_empty_pool == "hard_stop":
                raise StageError(f"{msg}; add pool rows or set mining.on_empty_pool: skip")
            self.say(f"warning: {msg}; mining skipped (mining.on_empty_pool: skip)")
        pool_labels = None if pool is None else set(pool["label"].map(normalize_label))
        sdg_labels = self._sdg_labels(*self._sdg_setup(label)) if self.cfg.sdg.enabled else None
        routing = route(
            weak,
            pool_labels=pool_labels,
            sdg_labels=sdg_labels,
            mining_enabled=pool is not None,
            sdg_enabled=self.cfg.sdg.enabled,
        )
        out = self.dir(label, RunLayout.ROUTING)
        clear_dir(out)
        for branch, groups in (("mining", routing.mining), ("sdg", routing.sdg)):
            frame = pd.concat(groups.values(), ignore_index=True) if groups else weak.iloc[:0]
            atomic_write_csv(out / f"{branch}_targets.csv", frame)
        summary = RoutingSummary.from_json(routing.to_dict(), "routing")
        atomic_write_json(out / "routing.json", summary.to_json())
        return {"routing": summary}, routing.summary()

    def _targets(self, label: str, branch: str) -> pd.DataFrame:
        path = self.dir(label, RunLayout.ROUTING, f"{branch}_targets.csv")
        return pd.read_csv(path, dtype=str, keep_default_na=False)

    @_input_errors_stop
    def stage_sdg(self, label: str) -> tuple[Fields, str]:
        from automl_deft.deft.rca import load_weak
        from automl_deft.deft.sdg import SDGRequest, allocate_budget

        out = self.dir(label, RunLayout.SDG)
        clear_dir(out)
        clear_dir(self.layout.sdg_images(label))
        targets = self._targets(label, "sdg")
        backend = self.cfg.sdg.backend
        weak = load_weak(self.dir(self.previous(label), RunLayout.RCA))
        weak_labels = set(weak["label"].map(normalize_label)) if len(weak) else set()
        if not self.cfg.sdg.enabled:
            atomic_write_csv(out / "sdg_rows.csv", pd.DataFrame(columns=["object_name"]))
            info = SDGSummary(backend=backend, budget=0)
            return {"sdg": info}, f"no SDG pairs ({self._no_sdg_reason(targets)})"
        gen, ctx = self._sdg_setup(label)
        unrouted = self._unrouted(gen, ctx, weak_labels)
        if targets.empty or self.cfg.sdg.num_sdg == 0:
            atomic_write_csv(out / "sdg_rows.csv", pd.DataFrame(columns=["object_name"]))
            info = SDGSummary(backend=backend, budget=0, unrouted=unrouted)
            return {"sdg": info}, f"no SDG pairs ({self._no_sdg_reason(targets)})"
        labels = targets["label"].map(normalize_label)
        need = {lab: int((labels == lab).sum()) for lab in sorted(set(labels))}
        budget = allocate_budget(self.cfg.sdg.num_sdg, need)
        asked: dict[str, int] = {}
        made: dict[str, int] = {}
        parts: list[pd.DataFrame] = []
        checks: dict[str, int] = {}
        for _ in range(TOP_UP_ROUNDS + 1):  # the split, then the shortfall to labels that delivered
            requests = [
                SDGRequest(
                    label=lab,
                    count=k,
                    weak_rows=targets[labels == lab],
                    first_index=asked.get(lab, 0),
                )
                for lab, k in budget.items()
                if k > 0
            ]
            if not requests:
                break
            rows = gen.generate(requests, ctx)
            for key, value in getattr(gen, "pass_checks", {}).items():
                checks[key] = checks.get(key, 0) + value
            rows, refused = self._check_pass_rows(rows, ctx)
            checks["refused"] = checks.get("refused", 0) + refused
            parts.append(rows)
            got = rows["label"].map(normalize_label).value_counts().to_dict() if len(rows) else {}
            for r in requests:
                asked[r.label] = asked.get(r.label, 0) + r.count
                made[r.label] = made.get(r.label, 0) + int(got.get(r.label, 0))
            short = self.cfg.sdg.num_sdg - sum(made.values())
            delivered = {
                lab: need[lab] for lab in need if asked.get(lab, 0) and made[lab] == asked[lab]
            }
            if short <= 0 or not delivered or len(rows) == 0:
                break
            budget = allocate_budget(short, delivered)
        rows = (
            pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["object_name"])
        )
        atomic_write_csv(out / "sdg_rows.csv", rows)
        if checks.get("checked") is not None:
            checks["passed"] = checks["checked"] - checks.get("refused", 0)
        warnings = [
            f"{lab}: {made.get(lab, 0)} of {n} made"
            for lab, n in sorted(asked.items())
            if made.get(lab, 0) < n
        ]
        info = SDGSummary(
            backend=backend,
            requested=dict(sorted(asked.items())),
            generated={k: v for k, v in sorted(made.items()) if v},
            warnings=warnings,
            budget=self.cfg.sdg.num_sdg,
            unrouted=unrouted,
            pass_check={k: checks[k] for k in ("checked", "passed", "refused") if k in checks},
        )
        return {"sdg": info, "sdg_rows": len(rows)}, info.line()

    def _no_sdg_reason(self, targets: pd.DataFrame) -> str:
        if not self.cfg.sdg.enabled:
            return "sdg.enabled is false"
        if self.cfg.sdg.num_sdg == 0:
            return "sdg.num_sdg is 0"
        return "no weak label the backend makes" if targets.empty else "nothing asked"

    def _unrouted(self, gen: Any, ctx: Any, weak_labels: set[str]) -> dict[str, str]:
        """Weak labels the SDG backend cannot make, each with the backend's reason."""
        made = self._sdg_labels(gen, ctx)
        return {
            lab: gen.unsupported_reason(lab, ctx)
            for lab in sorted(weak_labels)
            if (lab not in made if made is not None else lab == PASS_LABEL)
        }

    def _check_pass_rows(self, rows: pd.DataFrame, ctx: Any) -> tuple[pd.DataFrame, int]:
        """Generated PASS rows that carry no PASS check (an external generator's) checked
        here (:func:`~automl_deft.deft.sdg.difference.pass_check` against their golden);
        the failures are left out. Returns the rows kept and how many were refused."""
        from automl_deft.deft.sdg.base import read_image, row_files
        from automl_deft.deft.sdg.difference import pass_check

        if rows.empty:
            return rows, 0
        keep = []
        for _, row in rows.iterrows():
            if normalize_label(row["label"]) != PASS_LABEL or str(row.get("sdg_check", "")):
                keep.append(True)
                continue
            tests = [read_image(p) for p in row_files(ctx, row, "input_path")]
            goldens = [read_image(p) for p in row_files(ctx, row, "golden_path")]
            check = pass_check(tests, goldens, max_blob_px=self.cfg.sdg.pass_check_max_blob_px)
            keep.append(check.ok)
            rows.loc[row.name, "sdg_check"] = f"{check.provenance()} (checked by the SDG stage)"
        mask = pd.Series(keep, index=rows.index)
        return rows[mask].reset_index(drop=True), int((~mask).sum())

    @_input_errors_stop
    def stage_mining(self, label: str) -> tuple[Fields, str]:
        from automl_deft.deft.mining import MiningLedger, mine

        out = self.dir(label, RunLayout.MINING)
        clear_dir(out)
        targets = self._targets(label, "mining")
        pool = self.pool()
        n = iteration_number(label) or 0
        if targets.empty or pool is None:
            atomic_write_csv(out / "mined_rows.csv", pd.DataFrame(columns=["object_name"]))
            return {"mining": MiningSummary()}, "no mining targets"
        ledger = MiningLedger.load(self.layout.ledger)
        ledger.entries = {k: v for k, v in ledger.entries.items() if v < n}
        best = self._checkpoint(self.best_label())
        embedder = self.app.embedder(best, self.cfg.mining.embedder)
        naming = self.app.naming()
        target_emb = embedder.embed(targets, self.images_dir, naming)
        pool_emb = embedder.embed(pool, self.images_dir, naming)
        previous = self.state.iteration(self.previous(label)).mined_rows
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
        summary = MiningSummary.from_json(result.to_dict(), "mining")
        atomic_write_json(out / "mining.json", summary.to_json())
        for w in result.warnings:
            self.say(f"warning: {w}")
        return {"mining": summary, "mined_rows": len(result.rows)}, (
            f"{len(result.rows)} pool rows ≥ {self.cfg.mining.min_similarity:g} similarity "
            f"for {len(targets)} targets"
        )

    @_input_errors_stop
    def stage_data_merge(self, label: str) -> tuple[Fields, str]:
        from automl_deft.deft.mining import MiningLedger
        from automl_deft.workspace import leakage_keys

        n = iteration_number(label) or 0
        out = self.dir(label, RunLayout.DATASET)
        previous, provenance = self.previous_train(label)
        sdg = read_rows(self.dir(label, RunLayout.SDG, "sdg_rows.csv"))
        mined = read_rows(self.dir(label, RunLayout.MINING, "mined_rows.csv"))
        hygiene = None
        if self.cfg.hygiene.enabled:
            hygiene, sdg, mined = self._hygiene(label, previous, sdg, mined, out)
        assembled = assemble(previous, provenance, sdg_rows=sdg, mined_rows=mined, iteration=n)
        new_rows = assembled.frame.iloc[assembled.previous_rows :]
        self.validate(assembled.frame, where=f"{label} assembled set", check_rows=new_rows)
        csv_path, _ = write_assembled(assembled, out, n)
        if mined is not None and len(mined):
            ledger = MiningLedger.load(self.layout.ledger)
            ledger.add(list(leakage_keys(mined)), n)
            ledger.save()
        fields: Fields = {
            "train_csv": csv_path,
            "train_rows": len(assembled.frame),
            "sdg_rows": assembled.sdg_rows,
            "mined_rows": assembled.mined_rows,
            "added_rows": assembled.added_rows,
            "skipped_duplicates": assembled.skipped_duplicates,
        }
        screened = ""
        if hygiene is not None:
            fields["hygiene"] = hygiene
            refused = hygiene.exact_duplicates + hygiene.near_duplicates
            screened = f" · hygiene: {refused} duplicate(s) refused, "
            screened += f"{hygiene.flagged_label_errors} flagged as likely label errors"
            if hygiene.excluded_label_errors:
                screened += f" ({hygiene.excluded_label_errors} excluded)"
        return fields, (
            f"{assembled.previous_rows} + {assembled.sdg_rows} sdg + {assembled.mined_rows} mined "
            f"= {len(assembled.frame)} rows{screened}"
        )

    def _hygiene(
        self,
        label: str,
        previous: pd.DataFrame,
        sdg: pd.DataFrame | None,
        mined: pd.DataFrame | None,
        out: Path,
    ) -> tuple[Any, pd.DataFrame | None, pd.DataFrame | None]:
        """Screen the iteration's new rows (:func:`~automl_deft.deft.hygiene.screen_new_rows`)
        with the current model's out-of-sample scores; write what it found under ``out``.
        Returns the summary and the generated and mined rows that go on to assemble."""
        from automl_deft.deft.hygiene import ScoreReference, screen_new_rows, write_screened

        parts = [
            rows.assign(source=source)
            for source, rows in ((SDG_SOURCE, sdg), (MINED_SOURCE, mined))
            if rows is not None and len(rows)
        ]
        if not parts:
            return None, sdg, mined
        candidates = pd.concat(parts, ignore_index=True).fillna("").astype(str)
        best = self._checkpoint(self.best_label())
        scores = self.app.score(best, candidates)[SCORE_COLUMN].to_numpy(dtype=float)
        val = self.frame("val_csv")
        val_scores = self.app.score(best, val)[SCORE_COLUMN].to_numpy(dtype=float)
        screened = screen_new_rows(
            candidates,
            previous,
            images_dir=self.images_dir,
            naming=self.app.naming(),
            cfg=self.cfg.hygiene,
            scores=scores,
            reference=ScoreReference(labels=val["label"], scores=val_scores),
        )
        write_screened(screened, out)
        kept = screened.kept
        split = [
            kept[kept["source"] == source].drop(columns=["source"]).reset_index(drop=True)
            for source in (SDG_SOURCE, MINED_SOURCE)
        ]
        return screened.summary, split[0], split[1]

    def validate(
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


def evaluate_checkpoints(
    app: Application,
    candidates: dict[str, Path],
    kpi_frame: pd.DataFrame,
    out_dir: Path,
    *,
    title: str,
) -> tuple[str | None, KPIResult | None, dict[str, KPIResult]]:
    """Score each existing candidate checkpoint on the KPI set; keep the lowest far_pct.

    Writes ``kpi_scores_<kind>.csv`` per candidate and, for the kept one,
    ``kpi_scores.csv``, ``kpi_sweep.csv``, ``kpi_scores.png`` and ``kpi.json`` to
    ``out_dir``. Ties go to ``best_val``.

    Returns:
        (kept kind or None when no candidate exists, its KPIResult, {kind: KPIResult}).
    """
    scored_by: dict[str, pd.DataFrame] = {}
    results: dict[str, KPIResult] = {}
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
        inference_csv=out_dir / RunLayout.KPI_SCORES,
        sweep_csv=out_dir / "kpi_sweep.csv",
        plot=out_dir / "kpi_scores.png",
        title=f"{title} ({kind}) on the KPI set",
    )
    atomic_write_json(out_dir / "kpi.json", {"kind": kind, **result.to_dict()})
    return kind, result, results


def clear_dir(directory: Path) -> None:
    """Empty a stage's output folder so a redone stage starts clean."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)


def read_rows(path: Path) -> pd.DataFrame | None:
    """A stage's row CSV, or None when missing or empty."""
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame if len(frame) else None
