"""Sections 1–4 of the gate: workspace & platform, credentials, container images, datasets."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from automl_deft.credentials import credential_status
from automl_deft.errors import SpecError, WorkspaceError, first_line
from automl_deft.holdout import NO_HOLDOUT_WARNING
from automl_deft.preflight import probes
from automl_deft.preflight.context import Context
from automl_deft.preflight.model import Block, KeyValue, Note, Section, Table
from automl_deft.preflight.probes import (
    MISSING,
    RULE_IMAGE_SIDE,
    RULE_TEXT,
    UNKNOWN,
    ImageProbe,
    gpu_batch_limit,
    parse_probe,
    resolve_image_ref,
)
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    CsvSummary,
    ImageNaming,
    Workspace,
    read_dataset_csv,
    refuse_kpi_set,
    summarize,
)

if TYPE_CHECKING:
    from automl_deft.model.spec import Spec


def platform_section(ctx: Context) -> Section:
    import torch

    plan = ctx.plan
    spec = plan.spec
    cls = spec.dataset.classify if spec is not None else None
    # The JSON's batch_size_automl: Phase 1's, unless only Phase 3 searches.
    shown = plan.phase3 if plan.runs("phase3") and not plan.runs("automl") else plan.phase1
    deft_batch = plan.deft.batch_size
    search_batches = {s.phase: s.batch_size for s in plan.searches}
    batches: list[int | None] = list(search_batches.values())
    if plan.runs("deft"):
        batches.append(deft_batch)
    gpu_text = (
        "; ".join(f"{g.name} ({g.memory_gib:.1f} GiB)" for g in ctx.gpus)
        if ctx.gpus
        else "none (CPU)"
    )
    blocks: list[Block] = [
        KeyValue("workspace", str(ctx.ws.root)),
        KeyValue("host", platform.node() or "unknown"),
        KeyValue(
            "platform",
            f"{platform.system()} {platform.release()} · Python {platform.python_version()}"
            f" · torch {torch.__version__}",
        ),
        KeyValue("GPU", gpu_text),
    ]
    data: dict[str, Any] = {
        "workspace": str(ctx.ws.root),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "gpus": [{"name": g.name, "memory_gib": round(g.memory_gib, 1)} for g in ctx.gpus],
        "spec": str(ctx.ws.spec_path),
    }
    if spec is not None and cls is not None:
        arch = (
            f"{spec.model.backbone.type} backbone, learnable_difference_modules "
            f"{spec.model.classify.learnable_difference_modules}"
        )
        blocks += [
            KeyValue("network_arch", arch),
            KeyValue("image size", f"{cls.image_width}x{cls.image_height} px"),
        ]
        data.update(
            backbone=spec.model.backbone.type,
            learnable_difference_modules=spec.model.classify.learnable_difference_modules,
            image_width=cls.image_width,
            image_height=cls.image_height,
        )
    else:
        blocks.append(
            KeyValue("network_arch", f"unknown (the spec {ctx.ws.spec_path} did not load)")
        )
    batch_parts = []
    if len(set(search_batches.values())) == 1:
        batch_parts.append(f"{next(iter(search_batches.values()))} (AutoML trials, pinned)")
    else:
        names = {"phase1": "Phase 1", "phase3": "Phase 3"}
        batch_parts += [f"{b} ({names[p]} trials, pinned)" for p, b in search_batches.items()]
    if plan.runs("deft"):
        batch_parts.append(f"{deft_batch} (DEFT)")
    blocks.append(KeyValue("batch size", ", ".join(batch_parts) or "n/a"))
    rule = gpu_memory_rule(ctx)
    blocks.append(KeyValue("GPU memory rule", RULE_TEXT if rule is None else rule.text))
    data.update(batch_size_automl=shown.batch_size, batch_size_deft=deft_batch)
    if rule is not None:
        data.update(gpu_batch_limit=rule.limit, gpu_batch_limit_measured=rule.measured)
    side = min(cls.image_width, cls.image_height) if cls is not None else None
    worst = max((b for b in batches if b is not None), default=0)
    if rule is not None and rule.limit is not None and worst > rule.limit:
        ctx.warn(rule.warning(worst, side))
    return Section.of(1, blocks, data)


@dataclass(frozen=True)
class GpuMemoryRule:
    """The largest batch the first GPU takes, and how it was found."""

    gpu: str
    limit: int | None
    """None: the rule of thumb says nothing for a GPU this size."""
    measured: bool
    """True: from a measured training step of the run's spec; False: the rule of thumb."""
    text: str
    memory_gb: float

    def warning(self, batch: int, side: int | None) -> str:
        """The warning for a batch above :attr:`limit` (images ``side`` px)."""
        fix = "lower automl.batch_size / deft.batch_size"
        if self.measured:
            return (
                f"batch size {batch} exceeds the measured GPU memory limit for {self.gpu} "
                f"({self.text}); {fix}, or training runs out of memory"
            )
        smaller = (
            f"; these images are {side} px, smaller than {RULE_IMAGE_SIDE} px, so it may still fit"
            if side is not None and side < RULE_IMAGE_SIDE
            else ""
        )
        return (
            f"batch size {batch} exceeds the GPU memory rule of thumb for {self.gpu} "
            f"({self.memory_gb:.0f} GB: batch ≤ {self.limit} at {RULE_IMAGE_SIDE} px){smaller}; "
            f"{fix} if training runs out of memory"
        )


def gpu_memory_rule(ctx: Context) -> GpuMemoryRule | None:
    """The batch limit on the first visible GPU (None: no GPU).

    Measured when it can be (:func:`~automl_deft.preflight.probes.gpu_step_memory`: one
    training step of the run's spec at two batch sizes), against the GPU's free memory
    less what training's on-device data cache will hold; else the ChangeNet rule of
    thumb, saying why.
    """
    if not ctx.gpus:
        return None
    from automl_deft.model.memory import DEFAULT_HEADROOM
    from automl_deft.model.train import MB

    g = ctx.gpus[0]
    try:
        spec = _trained_spec(ctx)
        step = probes.gpu_step_memory(spec, spec.geometry().channels)
        cache = _device_cache_bytes(ctx, spec, step.free_bytes)
        limit = step.batch_limit(step.free_bytes - cache)
    except Exception as exc:  # a failed measurement falls back; it never stops the gate
        text = f"{RULE_TEXT} (rule of thumb: the measurement failed: {first_line(exc)})"
        return GpuMemoryRule(g.name, gpu_batch_limit(g.memory_gb), False, text, g.memory_gb)
    cached = f", {cache / MB:.0f} MB of it for the data cache" if cache else ""
    text = (
        f"batch ≤ {limit} by a measured peak of {step.describe()} (this run's spec on "
        f"{g.name}; {DEFAULT_HEADROOM:.0%} of {step.free_bytes / 1e9:.1f} GB free{cached})"
    )
    return GpuMemoryRule(g.name, limit, True, text, g.memory_gb)


def _trained_spec(ctx: Context) -> Spec:
    """The spec the searches train with (Phase 1's pinned values applied), ``color_mode:
    auto`` decided from the training set's first row (headers only).

    Raises:
        WorkspaceError, SpecError: the spec or the training set does not load.
    """
    from automl_deft.model.data import resolve_color_mode

    spec = ctx.plan.spec
    if spec is None:
        raise SpecError(f"the spec {ctx.ws.spec_path} did not load")
    space = ctx.plan.phase1.space if ctx.plan.runs("automl") else None
    if space is not None and space.pinned:
        spec = spec.with_overrides(dict(space.pinned))
    train = read_dataset_csv(ctx.ws.train_csv, role="train")
    return resolve_color_mode(spec, train.head(1), ctx.ws.images_dir)


def _device_cache_bytes(ctx: Context, spec: Spec, free_bytes: float) -> int:
    """GPU memory training's decoded-once cache of the training and validation sets will
    hold (:func:`~automl_deft.model.train.fits_on_device`, the rule training applies)."""
    from automl_deft.model.data import PRELOAD_LIMIT_BYTES
    from automl_deft.model.train import fits_on_device

    pair = 2 * math.prod(spec.geometry().shape)
    sizes: list[int | None] = []
    for path, role in ((ctx.ws.train_csv, "train"), (ctx.ws.val_csv, "val")):
        n = len(read_dataset_csv(path, role=role)) * pair
        sizes.append(n if n <= PRELOAD_LIMIT_BYTES else None)
    fits = fits_on_device(sizes, free_bytes)
    return sum(n for n, f in zip(sizes, fits, strict=True) if f and n is not None)


def credentials_section(env: Mapping[str, str] | None) -> Section:
    rows = credential_status(env)
    blocks: list[Block] = [
        Table(("variable", "status", "purpose"), tuple((n, s, p) for n, s, p in rows)),
        Note("values are never shown; set them as Kubernetes Secrets for pipeline pods"),
    ]
    data = {"credentials": [{"name": n, "status": s, "purpose": p} for n, s, p in rows]}
    return Section.of(2, blocks, data)


def images_section(ctx: Context, probe: ImageProbe) -> Section:
    images = ctx.plan.config.images
    wanted = [("component", images.component)]
    if images.sdg:
        wanted.append(("sdg", images.sdg))
    rows = []
    entries = []
    for role, ref in wanted:
        if not ref.strip():
            ctx.block(f"images.{role} is empty; set it to the image the cluster tasks run")
            continue
        resolved = resolve_image_ref(ref)
        try:
            status, detail = parse_probe(probe(resolved))
        except Exception as exc:  # a probe that breaks must not stop the summary
            status, detail = UNKNOWN, f"probe failed: {exc.__class__.__name__}"
        rows.append((role, resolved, status, detail))
        entries.append(
            {"role": role, "ref": ref, "resolved": resolved, "status": status, "detail": detail}
        )
        if status == MISSING:
            ctx.warn(
                f"image {resolved} is not present locally; push it to the cluster's registry "
                "(make image) before a cluster run"
            )
    blocks: list[Block] = [
        Table(("image", "reference", "status", "detail"), tuple(rows)),
        Note("MISSING is not a blocker: the cluster pulls from its registry"),
    ]
    return Section.of(3, blocks, {"images": entries})


def _model_input(ctx: Context) -> str | None:
    """What the model sees per side, e.g. ``4 lights, RGB, linear of 128x128 -> 3x512x128``:
    the spec the searches (and so DEFT and Phase 3) train with, colour or greyscale as
    ``color_mode`` decides, the lights tiled as ``concat_type`` says."""
    if ctx.plan.spec is None:
        return None
    try:
        resolved = _trained_spec(ctx)
    except (WorkspaceError, SpecError):
        return None
    mode = ctx.plan.spec.dataset.classify.color_mode
    how = "decided from the images (color_mode: auto)" if mode == "auto" else f"color_mode: {mode}"
    return f"{resolved.geometry().describe()}; {how}"


def datasets_section(ctx: Context, check_images: bool) -> Section:
    plan = ctx.plan
    deft_runs = plan.runs("deft")
    require_pool = deft_runs and plan.deft.requires_pool
    problems: list[str] = []
    summaries: list[CsvSummary] = []
    overlapping: int | None = None
    images_checked = 0
    holdout: CsvSummary | None = None
    image_check = check_images and plan.spec is not None
    naming = plan.spec.naming() if plan.spec is not None else None
    if naming is None and ctx.ws.spec_path.is_file():
        naming = ImageNaming()  # the spec is invalid (already blocking); images are not checked
    try:
        report = validate_workspace(
            ctx.ws.root,
            naming=naming,
            check_image_files=image_check,
            require_pool=require_pool,
        )
        summaries = report.summaries
        overlapping = report.overlapping_rows
        images_checked = report.images_checked
        holdout = report.holdout
        for w in report.warnings:
            ctx.warn(w)
        if not report.has_holdout:
            ctx.warn(NO_HOLDOUT_WARNING)
    except WorkspaceError as exc:
        problems.extend(exc.problems)
        summaries = _readable_summaries(ctx.ws)
    try:
        refuse_kpi_set(ctx.ws, ctx.ws.val_csv, used_as="the validation set")
    except WorkspaceError as exc:
        problems.extend(exc.problems)
    ctx.block(*problems)

    by_role = {s.role: s for s in summaries}
    rows = []
    for role, path in ctx.ws.csvs().items():
        s = by_role.get(role)
        if s is not None:
            rows.append((role, str(s.rows), str(s.n_pass), str(s.n_defect)))
        elif role == "mining_pool" and not path.exists():
            rows.append((role, "absent", "", ""))
        else:
            rows.append((role, "unreadable", "", ""))
    if holdout is not None:
        rows.append(("holdout", str(holdout.rows), str(holdout.n_pass), str(holdout.n_defect)))
    elif not ctx.ws.has_holdout:
        rows.append(("holdout", "absent", "", ""))
    blocks: list[Block] = [Table(("set", "rows", "PASS", "defect"), tuple(rows))]
    if holdout is not None:
        blocks.append(
            Note("holdout: untouched (no phase reads it; finalize scores the result on it, once)")
        )
    kpi = by_role.get("kpi_test")
    kpi_labels = dict(kpi.labels) if kpi is not None else {}
    blocks.append(
        KeyValue(
            "KPI labels",
            ", ".join(f"{k}={v}" for k, v in kpi_labels.items()) if kpi_labels else "n/a",
        )
    )
    if overlapping is not None:
        how = "row key and image content" if image_check else "row key; image content not compared"
        blocks.append(KeyValue("leakage", f"{overlapping} overlapping rows ({how})"))
    else:
        leaks = [p for p in problems if p.startswith("leakage:")]
        blocks.append(
            KeyValue(
                "leakage",
                f"FOUND ({len(leaks)} problem(s), listed below)"
                if leaks
                else "not confirmed (fix the problems below first)",
            )
        )
    if not image_check:
        why = "check_images=False" if not check_images else "the spec did not load"
        files = f"not checked ({why})"
    elif overlapping is not None:
        files = f"{images_checked} checked (exist, decode, golden/input sizes agree)"
    else:
        files = "checked with the CSVs (any image problem is listed below)"
    blocks.append(KeyValue("image files", files))
    model_input = _model_input(ctx) if not problems else None
    if model_input is not None:
        blocks.append(KeyValue("model input", model_input))
    if deft_runs and "mining_pool" not in by_role and not ctx.ws.pool_csv.exists():
        if not plan.deft.uses_pool:
            blocks.append(KeyValue("mining pool", "not used (deft.mining.enabled: false)"))
        elif not require_pool:
            ctx.warn(
                f"no mining pool at {ctx.ws.pool_csv}; DEFT will skip mining "
                "(deft.mining.on_empty_pool: skip)"
            )
    blocks.extend(Note(f"problem: {p}") for p in problems)
    data = {
        "sets": [
            {
                "role": s.role,
                "path": str(s.path),
                "rows": s.rows,
                "pass": s.n_pass,
                "defect": s.n_defect,
                "labels": dict(s.labels),
            }
            for s in summaries
        ],
        "kpi_labels": kpi_labels,
        "overlapping_rows": overlapping,
        "images_checked": images_checked,
        "pool_required": require_pool,
        "problems": problems,
    }
    return Section.of(4, blocks, data)


def _readable_summaries(ws: Workspace) -> list[CsvSummary]:
    """Counts for every CSV that can be read (shown even when validation failed)."""
    out = []
    for role, path in ws.csvs().items():
        try:
            out.append(summarize(read_dataset_csv(path, role=role), role=role, path=path))
        except WorkspaceError:
            continue
    return out
