"""Sections 5–9 of the gate: the three phases, the compute estimate and the confirmation.

Each renders the :class:`~automl_deft.plan.RunPlan`: the values shown are the ones
the run uses, because the steps take them from the same plan.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import Param
from automl_deft.phases import SOURCE_PHASE1, SOURCE_TRAINED_HERE
from automl_deft.plan import BaselineSource, DeftPlan, ResumePoint, SearchPhasePlan, ValueSource
from automl_deft.preflight.context import Context
from automl_deft.preflight.model import Block, KeyValue, Note, Section, Table
from automl_deft.preflight.plugins import (
    backbone_problems,
    deft_plugin_problems,
    without_backbone_echoes,
)
from automl_deft.preflight.render import count, join, minutes, num
from automl_deft.workspace import VAL_CSV

NO_TIME = "job counts only (set compute.per_job_minutes for a time estimate)"

BASELINE_SOURCES: dict[str, str] = {
    SOURCE_PHASE1: f"Phase 1 winner ({SOURCE_PHASE1}) — no baseline training",
    SOURCE_TRAINED_HERE: f"trained here from the workspace spec ({SOURCE_TRAINED_HERE})",
}
"""How a baseline source recorded in ``deft_state.json`` reads."""

EPOCH_SOURCES: dict[ValueSource, str] = {
    ValueSource.CONFIG: "(deft.num_epochs)",
    ValueSource.RESUMED_SPEC: "(the resumed run's spec)",
    ValueSource.PHASE1_WINNER: "(the Phase 1 winner's spec)",
    ValueSource.WORKSPACE_SPEC: "(the workspace spec's)",
}


def _param_range(p: Param) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(str(c) for c in p.choices) + "}"
    assert p.low is not None and p.high is not None
    kind = " (log)" if p.log else (" (int)" if p.type == "int" else "")
    return f"{num(p.low)}–{num(p.high)}{kind}"


def _metric_text(cfg: AutomlConfig) -> str:
    if cfg.metric == "far_pct":
        return f"far_pct (FAR at 100% recall) on the validation set ({VAL_CSV})"
    return f"val_loss on the validation set ({VAL_CSV}), guarded by per-class prediction counts"


def zero_shot_level(ctx: Context, cfg: AutomlConfig) -> float | None:
    """far_pct of the training-free scorer on the validation set: the level Phase 1's
    winner must beat (the zero-shot guard's comparison, seconds before any training).

    None (and a warning saying why) when the images are not to be decoded or cannot be
    scored; a blocking problem found earlier is reported once, where it was found.
    """
    from automl_deft.application import get_application
    from automl_deft.errors import AutomlDeftError
    from automl_deft.hpo.guards import application_zero_shot_far

    spec = ctx.plan.spec
    if spec is None or ctx.blocking:
        return None
    try:
        app = get_application(cfg.application, ctx.ws.images_dir, spec)
        return application_zero_shot_far(app, ctx.ws.val_csv, cfg.guards.zero_shot_method)
    except AutomlDeftError as exc:
        ctx.warn(f"the zero-shot level could not be computed: {exc}")
        return None


def phase1_section(ctx: Context, *, check_images: bool = True) -> Section:
    plan = ctx.plan
    if not plan.runs("automl"):
        return Section.of(5, [Note(ctx.skipped())], {"enabled": False})
    search = plan.phase1
    cfg = search.config
    backbone = backbone_problems(cfg.pinned, cfg.search_space, where="automl")
    ctx.block(*(without_backbone_echoes(search.problems) if backbone else search.problems))
    ctx.block(*backbone)
    space = search.space
    swept = [(p.name, p.key, _param_range(p)) for p in space.params] if space else []
    pinned = dict(space.pinned) if space else {}
    guards = cfg.guards
    zero_shot = (
        "must beat the zero-shot scorer"
        if search.zero_shot_gate
        else "zero-shot comparison reported only (allow_no_gain_over_zero_shot)"
    )
    level = zero_shot_level(ctx, cfg) if check_images else None
    if level is not None:
        must = "must beat it" if search.zero_shot_gate else "is compared with it (reported only)"
        level_text = (
            f"{level:.2f}% FAR at 100% recall on the validation set "
            f"({guards.zero_shot_method}, no training): Phase 1's winner {must}"
        )
    else:
        level_text = "not computed (--no-images, or a problem above)"
    blocks: list[Block] = [
        KeyValue("backend", search.backend),
        KeyValue("algorithm", search.algorithm),
        KeyValue("zero-shot level", level_text),
        KeyValue("sweep size", f"{cfg.max_trials} trials"),
        KeyValue("parallel trials", str(cfg.parallel_trials or "auto (cores and memory)")),
        KeyValue("metric", _metric_text(cfg)),
        KeyValue(
            "early stopping",
            f"on (pruning from epoch {cfg.prune_start_epoch})" if cfg.early_stopping else "off",
        ),
        KeyValue(
            "guards",
            f"collapsed winners skipped; a winner > {num(guards.lucky_factor)}x better than "
            f"the runner-up is re-run with a fresh seed; {zero_shot} "
            f"({guards.zero_shot_method})",
        ),
        KeyValue("spec source", str(ctx.ws.spec_path)),
        KeyValue("HPs pinned", ", ".join(f"{k}={v}" for k, v in pinned.items()) or "none"),
        KeyValue("HPs swept", f"{len(swept)}" if swept else "none"),
    ]
    if swept:
        blocks.append(Table(("param", "spec key", "range"), tuple(swept)))
    data = {
        "enabled": True,
        "backend": search.backend,
        "algorithm": search.algorithm,
        "max_trials": cfg.max_trials,
        "parallel_trials": cfg.parallel_trials,
        "metric": search.metric,
        "val_csv": str(ctx.ws.val_csv),
        "early_stopping": cfg.early_stopping,
        "swept": [
            {
                "name": p.name,
                "key": p.key,
                "type": p.type,
                "low": p.low,
                "high": p.high,
                "log": p.log,
                "choices": list(p.choices),
            }
            for p in (space.params if space else ())
        ],
        "pinned": pinned,
        "spec": str(ctx.ws.spec_path),
        "zero_shot_gate": search.zero_shot_gate,
        "zero_shot_far_pct": level,
    }
    return Section.of(5, blocks, data)


def resume_text(resume: ResumePoint) -> str:
    """Where a resumed run continues: ``iter1 · sdg (stopped for review: …)``."""
    if resume.complete:
        return "already complete (nothing left to run)"
    where = f"{resume.label} · {resume.stage}"
    if resume.hard_stopped:
        return f"{where} (retrying after a hard stop: {resume.stop_reason})"
    if resume.needs_review:
        return f"{where} (stopped for review: {resume.stop_reason})"
    return where


def baseline_text(deft: DeftPlan) -> str:
    if deft.baseline_recorded:
        return BASELINE_SOURCES.get(deft.baseline_recorded, deft.baseline_recorded)
    if deft.baseline is BaselineSource.RESUMED:
        return "already trained in the resumed run"
    if deft.baseline is BaselineSource.PHASE1:
        return BASELINE_SOURCES[SOURCE_PHASE1]
    return "trained here from the workspace spec"


def _epochs_text(deft: DeftPlan) -> str:
    if deft.epochs_source is ValueSource.UNKNOWN:
        return "unknown (the spec did not load)"
    return f"{deft.epochs} {EPOCH_SOURCES[deft.epochs_source]}"


def phase2_section(ctx: Context) -> Section:
    plan = ctx.plan
    if not plan.runs("deft"):
        return Section.of(6, [Note(ctx.skipped())], {"enabled": False})
    deft = plan.deft
    cfg = deft.config
    ctx.block(*deft.problems)
    ctx.block(*deft_plugin_problems(cfg))
    target = str(deft.target) if deft.target is not None else f"{cfg.kpi_target} (invalid)"
    epochs = _epochs_text(deft)
    negatives = "hard negatives for weak PASS rows" if cfg.sdg.hard_negatives else "defects only"
    sdg = (
        f"{cfg.sdg.backend}, num_sdg {cfg.sdg.num_sdg} per iteration, {negatives}"
        if cfg.sdg.enabled
        else "off"
    )
    h = cfg.hygiene
    hygiene = (
        f"duplicates refused (pair cosine ≥ {num(h.near_duplicate_similarity)} where goldens "
        f"correlate ≥ {num(h.golden_similarity)}), likely label errors "
        + ("flagged and left out" if h.label_errors == "exclude" else "flagged (kept)")
        if h.enabled
        else "off"
    )
    m = cfg.mining
    mining = (
        f"top_k_per_target {m.top_k_per_target}, min_similarity {num(m.min_similarity)} "
        f"({m.metric}), embedder {m.embedder}, on_empty_pool {m.on_empty_pool}"
        if m.enabled
        else "off"
    )
    r = cfg.regression
    regression = (
        f"tolerance {num(r.tolerance_pp)} pp, patience {r.patience} → needs_review"
        if r.enabled
        else "off"
    )
    n_gpus = len(ctx.gpus)
    resume = plan.resume
    if resume is not None:
        run = f"resuming {resume.results_dir} at {resume_text(resume)}"
    elif plan.results_dir is not None:
        run = f"fresh: {plan.results_dir}"
    else:
        run = f"fresh: {ctx.ws.results_dir}/run_<YYYYmmdd_HHMMSS> (default)"
    baseline = baseline_text(deft)
    blocks: list[Block] = [
        KeyValue("KPI target", target),
        KeyValue("max_iterations", str(deft.max_iterations)),
        KeyValue("fine-tune epochs", epochs),
        KeyValue("SDG", sdg),
        KeyValue("mining", mining),
        KeyValue("row hygiene", hygiene),
        KeyValue("regression gate", regression),
        KeyValue("GPUs", str(n_gpus) if n_gpus else "0 (CPU)"),
        KeyValue("run", run),
        KeyValue("baseline", baseline),
    ]
    data = {
        "enabled": True,
        "kpi_target": cfg.kpi_target,
        "max_iterations": deft.max_iterations,
        "num_epochs": cfg.num_epochs,
        "epochs": epochs,
        "sdg": {
            "enabled": cfg.sdg.enabled,
            "backend": cfg.sdg.backend,
            "num_sdg": cfg.sdg.num_sdg,
            "hard_negatives": cfg.sdg.hard_negatives,
        },
        "hygiene": {"enabled": h.enabled, "label_errors": h.label_errors},
        "mining": {
            "enabled": m.enabled,
            "top_k_per_target": m.top_k_per_target,
            "min_similarity": m.min_similarity,
            "embedder": m.embedder,
            "on_empty_pool": m.on_empty_pool,
        },
        "regression": dataclasses.asdict(r),
        "gpus": n_gpus,
        "resuming": resume is not None,
        "results_dir": str(resume.results_dir)
        if resume is not None
        else (str(plan.results_dir) if plan.results_dir is not None else None),
        "resume_point": resume_text(resume) if resume is not None else None,
        "baseline_source": baseline,
        "preseeded": deft.baseline_trainings == 0,
    }
    return Section.of(6, blocks, data)


def phase3_section(ctx: Context) -> Section:
    plan = ctx.plan
    if not plan.in_pipeline("phase3"):
        return Section.of(7, [Note(ctx.skipped())], {"enabled": False})
    if not plan.phase3_gate.enabled:
        return Section.of(7, [Note("disabled (phase3.enabled: false)")], {"enabled": False})
    search = plan.phase3
    cfg = search.config
    # Phase 1 blocked its own problems already when it runs in this pipeline; Phase 3's
    # pins (phase3.pinned) can add more.
    seen = set(plan.phase1.problems) if plan.runs("automl") else set()
    backbone = backbone_problems(plan.config.phase3.pinned, None, where="phase3")
    own = [p for p in search.problems if p not in seen]
    ctx.block(*(without_backbone_echoes(own) if backbone else own))
    ctx.block(*backbone)
    warm = (
        "every trial starts from the best DEFT iteration's checkpoint; architecture pinned; "
        f"centred on the Phase 1 winner (factor {num(cfg.centroid_factor)})"
    )
    blocks: list[Block] = [
        KeyValue("enabled", "yes"),
        KeyValue("sweep size", f"{cfg.max_trials} trials"),
        KeyValue("metric", f"{_metric_text(cfg)} (same as Phase 1)"),
        KeyValue("algorithm", f"{search.algorithm} (same as Phase 1)"),
        KeyValue("epochs per trial", str(search.epochs)),
        KeyValue("warm start", warm),
        KeyValue("validation set", f"{ctx.ws.val_csv} (same as Phase 1)"),
        KeyValue("training set", "the last DEFT iteration's train_combined CSV"),
        KeyValue("skipped if", "DEFT hard-stops or stops for review (needs_review)"),
    ]
    data = {
        "enabled": True,
        "max_trials": cfg.max_trials,
        "metric": search.metric,
        "algorithm": search.algorithm,
        "num_epochs": search.epochs,
        "centroid_factor": cfg.centroid_factor,
        "warm_start": warm,
        "val_csv": str(ctx.ws.val_csv),
    }
    return Section.of(7, blocks, data)


def compute_section(ctx: Context) -> Section:
    plan = ctx.plan
    per_job = plan.compute.per_job_minutes
    per_iter = plan.compute.iteration_minutes
    blocks: list[Block] = []
    data: dict[str, Any] = {
        "per_job_minutes": per_job,
        "per_iteration_minutes": plan.compute.per_iteration_minutes,
    }
    totals = {"trainings": 0, "max_trainings": 0, "minutes": 0.0, "max_minutes": 0.0}

    def add(key: str, label: str, entry: dict[str, Any], text: str) -> None:
        blocks.append(KeyValue(label, text))
        data[key] = entry
        totals["trainings"] += entry["trainings"]
        totals["max_trainings"] += entry["max_trainings"]
        totals["minutes"] += entry.get("minutes", 0.0)
        totals["max_minutes"] += entry.get("max_minutes", 0.0)

    def search(key: str, label: str, s: SearchPhasePlan) -> None:
        n, most = s.trainings, s.max_trainings
        entry: dict[str, Any] = {"trainings": n, "max_trainings": most}
        if s.lucky_rerun:
            text = f"{n} trainings (≤ {most} with a lucky-winner re-run)"
        else:
            text = f"{n} trainings (no lucky-winner re-run)"
        if per_job is not None:
            entry.update(minutes=n * per_job, max_minutes=most * per_job)
            text += f" × {num(per_job)} min = {minutes(entry['minutes'])}"
            if s.lucky_rerun:
                text += f" (≤ {minutes(entry['max_minutes'])})"
        add(key, label, entry, text)

    if plan.runs("automl"):
        search("phase1", "Phase 1", plan.phase1)
    if plan.runs("deft"):
        deft = plan.deft
        iters, baseline = deft.max_iterations, deft.baseline_trainings
        entry: dict[str, Any] = {
            "iterations": iters,
            "baseline_trainings": baseline,
            "trainings": deft.trainings,
            "max_trainings": deft.trainings,
            "evaluations": deft.evaluations,
        }
        text = (
            f"{iters} iteration trainings"
            + (" + 1 baseline training" if baseline else " (baseline pre-seeded: no training)")
            + f"; ≤ {deft.evaluations} KPI evaluations (best_val and latest, baseline + "
            f"{iters} iterations)"
        )
        if per_job is not None and per_iter is not None:
            spent = iters * per_iter + baseline * per_job
            entry.update(minutes=spent, max_minutes=spent)
            parts = [f"{iters} × {num(per_iter)} min"]
            if baseline:
                parts.append(f"1 × {num(per_job)} min")
            text += f"; {' + '.join(parts)} = {minutes(spent)}"
        add("phase2", "Phase 2", entry, text)
    if plan.runs("phase3"):
        search("phase3", "Phase 3", plan.phase3)
    total_text = f"{totals['trainings']} trainings (≤ {totals['max_trainings']})"
    if per_job is not None:
        total_text += f"; {minutes(totals['minutes'])} (≤ {minutes(totals['max_minutes'])})"
        data["total"] = totals
    else:
        data["total"] = {k: totals[k] for k in ("trainings", "max_trainings")}
    blocks.append(KeyValue("total", total_text))
    if per_job is None:
        blocks.append(KeyValue("time", NO_TIME))
    else:
        blocks.append(
            Note(
                "minutes are summed job time (per_job_minutes per training, "
                "per_iteration_minutes per DEFT iteration); parallel trials shorten the wall "
                "clock"
            )
        )
    if plan.resume is not None:
        blocks.append(
            Note("resuming: finished DEFT stages are skipped, so Phase 2 is an upper bound")
        )
    return Section.of(8, blocks, data)


def confirmation_section(ctx: Context) -> Section:
    gates = list(ctx.plan.safety_gates)
    if ctx.blocking:
        line = (
            f"Cannot proceed: fix the {count(len(ctx.blocking), 'blocking problem')} above, "
            "then run the pre-flight again."
        )
    elif gates:
        line = (
            "Proceed? After this, nothing asks again; only these gates can still stop the run: "
            f"{join(gates)}."
        )
    else:
        line = "Proceed? After this, nothing asks again; only an error can still stop the run."
    return Section.of(9, [Note(line)], {"line": line, "gates": gates, "ok": not ctx.blocking})
