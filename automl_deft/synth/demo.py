"""The embedded default dataset: a whole synthetic AOI workspace, with a planned shift.

:func:`generate_demo_workspace` writes the layout described in
:mod:`automl_deft.workspace` (five CSVs, the images, the baseline spec) plus a
``README.md``. The distribution shift between the sets is deliberate, so the
data-improvement loop has something to find:

* **train / validation** (same distribution, disjoint): ~85% PASS, board
  families A–D only, ``mousebite`` and ``pin-hole`` rare, mostly medium/high
  severity at full contrast.
* **KPI test**: >= 90% PASS, all six families and all six defect types,
  more low-severity and low-contrast defects.
* **mining pool**: four times the training set, labelled, all families and
  types in even measure.
* **untouched hold-out** (``kpi/holdout_set.csv``): more rows of the KPI
  distribution, 30% of all of them (:data:`~automl_deft.holdout.HOLDOUT_FRACTION`),
  with the same exact label and family quotas as the KPI set. They are drawn after
  every other set from their own seed stream (split id 4), so the KPI set (and
  every other set) is byte-identical to a demo without a hold-out.

Every row is drawn from its own seed, ``SeedSequence([seed, split, row, attempt])``,
so the output is byte-identical for a seed whatever the number of worker
processes. Measured on 2 shared CPU cores (another job running): ``tiny``
1.3–2.7 s (one process), ``small`` 6–12 s with two workers (10–12 s with one);
the hold-out's 13% more rows (``small``: 514) were lost in that noise.
Creating ~8k small files is a large part of it, so workers write their own images.

Extra CSV columns beyond the workspace schema: ``boardname`` (family),
``severity`` and ``contrast`` (empty for PASS), and ``bbox`` (``"x0 y0 x1 y1"``,
the changed pixels of the defect, ``x1``/``y1`` exclusive; empty for PASS).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image

from automl_deft.errors import UserError
from automl_deft.holdout import HOLDOUT_FRACTION
from automl_deft.io import atomic_write_csv, atomic_write_text
from automl_deft.model.spec import default_spec_dict, save_spec
from automl_deft.synth.defects import DEFECT_TYPES, SEVERITIES, sample_contrast, synthesize_sample
from automl_deft.synth.render import BOARD_FAMILIES, DEFAULT_SIZE
from automl_deft.workspace import (
    HOLDOUT_ROLE,
    PASS_LABEL,
    REQUIRED_COLUMNS,
    ImageNaming,
    Workspace,
    resolve_image_path,
)

CSV_COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "boardname",
    "severity",
    "contrast",
    "bbox",
)


def holdout_rows(n_kpi: int, fraction: float = HOLDOUT_FRACTION) -> int:
    """Hold-out rows beside ``n_kpi`` KPI rows: ``fraction`` of the KPI-distribution
    rows, ``round(n_kpi / (1 - fraction))``, are the hold-out's."""
    return round(n_kpi / (1.0 - fraction)) - n_kpi


SCALES: dict[str, dict[str, int]] = {
    name: {**counts, "holdout": holdout_rows(counts["kpi"])}
    for name, counts in {
        "tiny": {"train": 80, "val": 40, "kpi": 150, "pool": 320},
        "small": {"train": 480, "val": 240, "kpi": 1200, "pool": 2000},
        "medium": {"train": 1920, "val": 960, "kpi": 4800, "pool": 8000},
    }.items()
}
"""Rows per set for each scale (hold-out: tiny 64, small 514, medium 2057)."""

PARALLEL_MIN_ROWS = 1000
"""Below this many rows one process is faster than starting workers."""
MAX_WORKERS = 2
CHUNK_ROWS = 128
MAX_CONTENT_RETRIES = 10
"""Re-draws of a row whose tested image repeats an earlier one (never needed in practice)."""


@dataclass(frozen=True)
class SplitPlan:
    """How one set is drawn.

    Attributes:
        name: short name, used in image folders and object names.
        role: the role name of :meth:`Workspace.csvs` (``include_holdout=True``).
        split_id: mixed into every row seed.
        pass_share: share of PASS rows.
        families: board families, drawn in even measure.
        type_weights: relative weight of each defect type among the defect rows.
        severity_weights: relative weight of each severity among the defect rows.
        low_contrast_share: share of defect rows painted at low contrast.
    """

    name: str
    role: str
    split_id: int
    pass_share: float
    families: tuple[str, ...]
    type_weights: dict[str, float]
    severity_weights: dict[str, float]
    low_contrast_share: float


_TRAIN_TYPES = {
    "open": 0.24,
    "short": 0.24,
    "mousebite": 0.08,
    "spur": 0.18,
    "copper": 0.18,
    "pin-hole": 0.08,
}
_EVEN_TYPES = dict.fromkeys(DEFECT_TYPES, 1.0)
_TRAIN_FAMILIES = ("A", "B", "C", "D")
_TRAIN_PLAN = SplitPlan(
    "train",
    "train",
    0,
    pass_share=0.85,
    families=_TRAIN_FAMILIES,
    type_weights=_TRAIN_TYPES,
    severity_weights={"low": 0.2, "medium": 0.45, "high": 0.35},
    low_contrast_share=0.2,
)

_KPI_PLAN = SplitPlan(
    "kpi",
    "kpi_test",
    2,
    0.92,
    BOARD_FAMILIES,
    _EVEN_TYPES,
    {"low": 0.4, "medium": 0.35, "high": 0.25},
    0.35,
)

SPLITS: tuple[SplitPlan, ...] = (
    # train and validation: one distribution, disjoint rows
    _TRAIN_PLAN,
    replace(_TRAIN_PLAN, name="val", role="validation", split_id=1),
    _KPI_PLAN,
    SplitPlan(
        "pool",
        "mining_pool",
        3,
        0.7,
        BOARD_FAMILIES,
        _EVEN_TYPES,
        {"low": 1.0, "medium": 1.0, "high": 1.0},
        0.3,
    ),
    # the KPI distribution again, its own seed stream; drawn last so that adding it
    # changed no earlier row (``unique_rows`` re-draws only later rows)
    replace(_KPI_PLAN, name="holdout", role=HOLDOUT_ROLE, split_id=4),
)
"""The five sets, in the order they are drawn (the CSVs are written hold-out first)."""


@dataclass
class DemoSummary:
    """What :func:`generate_demo_workspace` wrote.

    Attributes:
        root: the workspace directory.
        seed: the seed.
        scale: the scale name.
        counts: rows per set, by role (``train``, ``validation``, ``kpi_test``,
            ``mining_pool``, ``holdout``).
        labels: per role, rows per label (``PASS`` first, then :data:`DEFECT_TYPES` order).
        families: per role, rows per board family.
        seconds: wall time of the generation.
    """

    root: Path
    seed: int
    scale: str
    counts: dict[str, int]
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    families: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        """One line per set: rows, PASS share, labels and families."""
        lines = []
        for role, n in self.counts.items():
            labs = self.labels.get(role, {})
            share = labs.get(PASS_LABEL, 0) / n if n else 0.0
            mix = ", ".join(f"{k}={v}" for k, v in labs.items())
            fams = "".join(sorted(self.families.get(role, {})))
            lines.append(f"{role:<12} {n:>6} rows  PASS {share:5.1%}  families {fams:<6}  {mix}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RowPlan:
    """One planned row: which set, which seed index, and its drawn quotas."""

    split: str
    split_id: int
    index: int
    label: str
    family: str
    severity: str
    low_contrast: bool


@dataclass(frozen=True)
class DrawJob:
    """What a worker needs to draw and write rows (picklable)."""

    seed: int
    size: int
    images_dir: Path
    plans: list[RowPlan]


@dataclass(frozen=True)
class DrawnRow:
    """A drawn row whose images are already on disk."""

    plan: RowPlan
    record: dict[str, str]
    digest: str
    """SHA-1 of the tested image's bytes (content identity; every light for several)."""


class DrawRow(Protocol):
    """Draws one row from its own seed and writes its images (``attempt`` > 0: a re-draw)."""

    def __call__(
        self, plan: RowPlan, seed: int, size: int, images_dir: Path, *, attempt: int
    ) -> DrawnRow: ...


@dataclass(frozen=True)
class DemoKind:
    """What makes one kind of synthetic workspace; :func:`build_workspace` does the rest.

    Attributes:
        name: the ``--kind`` name.
        splits: the five sets, in the order they are drawn (hold-out last).
        defect_types: every defect label, in summary order.
        columns: the CSV columns, in order.
        draw_job: draws one :class:`DrawJob` (a module-level function: it is pickled).
        draw_row: draws one row (the uniqueness check re-draws with it).
        write_spec: writes ``specs/baseline_spec.yaml`` for ``size``-pixel images.
        readme: the workspace ``README.md`` from the summary and the image size.
    """

    name: str
    splits: tuple[SplitPlan, ...]
    defect_types: tuple[str, ...]
    columns: tuple[str, ...]
    draw_job: Callable[[DrawJob], list[DrawnRow]]
    draw_row: DrawRow
    write_spec: Callable[[Path, int], None]
    readme: Callable[[DemoSummary, int], str]


def generate_demo_workspace(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    scale: str = "small",
    force: bool = False,
    size: int = DEFAULT_SIZE,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """Write a complete synthetic AOI workspace (images, CSVs, baseline spec, README).

    Images are written first and the CSVs last, so an interrupted run never
    leaves a CSV that points at missing images.

    Args:
        root: the workspace directory (created when missing).
        seed: non-negative; the same seed gives byte-identical files.
        scale: a key of :data:`SCALES` (``tiny``, ``small``, ``medium``).
        force: replace an existing workspace's CSVs, images, spec and README.
        size: image side in pixels.
        workers: processes drawing rows; None picks 1 for small jobs and up to
            :data:`MAX_WORKERS` otherwise. Does not change the output.
        progress: called as ``progress(rows_done, rows_total)`` while drawing.

    Raises:
        UserError: unknown scale, negative seed, or ``root`` already holds a
            workspace and ``force`` is False.
    """
    return build_workspace(
        PCB_KIND,
        root,
        seed=seed,
        scale=scale,
        force=force,
        size=size,
        workers=workers,
        progress=progress,
    )


def build_workspace(
    kind: DemoKind,
    root: str | os.PathLike[str],
    *,
    seed: int,
    scale: str,
    force: bool,
    size: int,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
) -> DemoSummary:
    """Write a whole synthetic workspace of ``kind`` (see :func:`generate_demo_workspace`).

    Every kind shares the planning (exact quotas per set), the per-row seeds, the
    worker pool, the uniqueness check and the write order (images, spec, CSVs with
    the hold-out first, README last).
    """
    start = time.perf_counter()
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}; pass a non-negative integer")
    ws = Workspace.at(root)
    prepare_root(ws, force=force)

    plans = [
        row for split in kind.splits for row in plan_split(split, SCALES[scale][split.name], seed)
    ]
    for rel in sorted({d for p in plans for d in rel_dirs(p)}):
        (ws.images_dir / rel).mkdir(parents=True, exist_ok=True)
    drawn = draw_rows(plans, seed, size, ws.images_dir, workers, progress, kind.draw_job)
    rows = unique_rows(list(drawn), seed, size, ws.images_dir, kind.draw_row)
    role_of = {s.name: s.role for s in kind.splits}
    frames = {
        split.role: pd.DataFrame(
            [r.record for r in rows if role_of[r.plan.split] == split.role],
            columns=list(kind.columns),
        )
        for split in kind.splits
    }

    kind.write_spec(ws.spec_path, size)

    csv_paths = ws.csvs(include_holdout=True)
    # The hold-out first, like split_holdout: a KPI set never exists beside a missing one.
    for split in sorted(kind.splits, key=lambda s: s.role != HOLDOUT_ROLE):
        atomic_write_csv(csv_paths[split.role], frames[split.role])

    summary = DemoSummary(
        root=ws.root,
        seed=seed,
        scale=scale,
        counts={s.role: len(frames[s.role]) for s in kind.splits},
        labels={s.role: _label_mix(frames[s.role], kind.defect_types) for s in kind.splits},
        families={
            s.role: dict(sorted(Counter(frames[s.role]["boardname"]).items())) for s in kind.splits
        },
    )
    summary.seconds = time.perf_counter() - start
    atomic_write_text(ws.root / "README.md", kind.readme(summary, size))
    return summary


def _write_pcb_spec(path: Path, size: int) -> None:
    spec = default_spec_dict()
    spec["dataset"]["classify"]["image_width"] = size
    spec["dataset"]["classify"]["image_height"] = size
    save_spec(spec, path)


def prepare_root(ws: Workspace, *, force: bool) -> None:
    """Create ``ws.root``, or clear a workspace there when ``force`` (else refuse)."""
    if ws.root.exists() and not ws.root.is_dir():
        raise UserError(f"{ws.root} is a file; pass a directory for the workspace")
    csvs = list(ws.csvs(include_holdout=True).values())
    owned = [*csvs, ws.spec_path, ws.images_dir]
    if any(p.exists() for p in owned):
        if not force:
            raise UserError(
                f"{ws.root} already contains a workspace; use --force or another directory"
            )
        # CSVs go first: a crash half-way through never leaves rows without images.
        for p in [*csvs, ws.spec_path, ws.root / "README.md"]:
            p.unlink(missing_ok=True)
        shutil.rmtree(ws.images_dir, ignore_errors=True)
    ws.root.mkdir(parents=True, exist_ok=True)


def allocate(n: int, weights: dict[str, float]) -> list[str]:
    """``n`` items split by ``weights`` (largest remainder), each key at least once if n allows."""
    keys = list(weights)
    total = sum(weights.values())
    exact = np.array([n * weights[k] / total for k in keys])
    counts = np.floor(exact).astype(int)
    if n >= len(keys):
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while counts.sum() < n:
        counts[order[i % len(keys)]] += 1
        i += 1
    return [k for k, c in zip(keys, counts, strict=True) for _ in range(int(c))]


def plan_split(split: SplitPlan, n: int, seed: int) -> list[RowPlan]:
    """Exact quotas for labels, families, severities and contrast, in a seeded random order.

    Every defect type of ``split.type_weights`` gets at least one row when ``n`` allows.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, split.split_id]))
    n_defect = min(n, max(len(split.type_weights), round(n * (1.0 - split.pass_share))))
    n_pass = n - n_defect
    even = dict.fromkeys(split.families, 1.0)
    labels = allocate(n_defect, split.type_weights)
    severities = allocate(n_defect, split.severity_weights)
    n_low = round(n_defect * split.low_contrast_share)
    low = [True] * n_low + [False] * (n_defect - n_low)
    defect_families = allocate(n_defect, even)
    for items in (labels, severities, low, defect_families):
        rng.shuffle(items)
    rows = [
        (lab, fam, sev, lo)
        for lab, fam, sev, lo in zip(labels, defect_families, severities, low, strict=True)
    ]
    rows += [(PASS_LABEL, fam, "", False) for fam in allocate(n_pass, even)]
    order = rng.permutation(len(rows))
    return [RowPlan(split.name, split.split_id, i, *rows[j]) for i, j in enumerate(order.tolist())]


def draw_rows(
    plans: list[RowPlan],
    seed: int,
    size: int,
    images_dir: Path,
    workers: int | None,
    progress: Callable[[int, int], None] | None,
    draw_job: Callable[[DrawJob], list[DrawnRow]],
) -> Iterator[DrawnRow]:
    """Draw and write every row, in plan order, in one process or several.

    Chunks of :data:`CHUNK_ROWS` go to ``draw_job``; each row comes from its own
    seed, so the output does not depend on ``workers``.
    """
    if workers is None:
        workers = 1 if len(plans) < PARALLEL_MIN_ROWS else min(MAX_WORKERS, os.cpu_count() or 1)
    jobs = [
        DrawJob(seed, size, images_dir, plans[i : i + CHUNK_ROWS])
        for i in range(0, len(plans), CHUNK_ROWS)
    ]
    done = 0
    if workers <= 1:
        for chunk in map(draw_job, jobs):
            done += len(chunk)
            if progress:
                progress(done, len(plans))
            yield from chunk
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers) as pool:
        for chunk in pool.imap(draw_job, jobs):
            done += len(chunk)
            if progress:
                progress(done, len(plans))
            yield from chunk


def _draw_job(job: DrawJob) -> list[DrawnRow]:
    return [_draw_row(p, job.seed, job.size, job.images_dir, attempt=0) for p in job.plans]


def _draw_row(plan: RowPlan, seed: int, size: int, images_dir: Path, *, attempt: int) -> DrawnRow:
    """Draw one row from its own seed and write its golden and tested images."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, plan.split_id, plan.index, attempt]))
    contrast = None
    if plan.label != PASS_LABEL:
        contrast = sample_contrast(rng, low=plan.low_contrast)
    sample = synthesize_sample(
        plan.family,
        plan.label,
        rng,
        severity=plan.severity or SEVERITIES[1],
        contrast=contrast,
        size=size,
    )
    test_dir, golden_dir = rel_dirs(plan)
    record = {
        "input_path": test_dir,
        "golden_path": golden_dir,
        "label": plan.label,
        "object_name": f"{plan.split}_{plan.index:06d}",
        "boardname": plan.family,
        "severity": plan.severity,
        "contrast": "" if sample.contrast is None else f"{sample.contrast:.2f}",
        "bbox": "" if sample.bbox is None else " ".join(str(v) for v in sample.bbox),
    }
    naming = ImageNaming()
    test_png = _png(sample.test)
    for rel, data in ((test_dir, test_png), (golden_dir, _png(sample.golden))):
        path = resolve_image_path(
            images_dir, rel, record["object_name"], naming.lights[0], naming.ext
        )
        path.write_bytes(data)
    digest = hashlib.sha1(test_png, usedforsecurity=False).hexdigest()
    return DrawnRow(plan, record, digest)


def rel_dirs(plan: RowPlan) -> tuple[str, str]:
    """``input_path`` and ``golden_path`` of a row (directories under the images root)."""
    return f"{plan.split}/{plan.family}/test", f"{plan.split}/{plan.family}/golden"


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def unique_rows(
    rows: list[DrawnRow], seed: int, size: int, images_dir: Path, draw_row: DrawRow
) -> list[DrawnRow]:
    """Re-draw (in order, so deterministically) any row whose tested image repeats another."""
    seen: set[str] = set()
    out = []
    for row in rows:
        attempt = 0
        while row.digest in seen and attempt < MAX_CONTENT_RETRIES:
            attempt += 1
            row = draw_row(row.plan, seed, size, images_dir, attempt=attempt)
        seen.add(row.digest)
        out.append(row)
    return out


def _label_mix(frame: pd.DataFrame, defect_types: tuple[str, ...]) -> dict[str, int]:
    counts = Counter(frame["label"])
    return {k: counts[k] for k in (PASS_LABEL, *defect_types) if counts[k]}


def _readme(summary: DemoSummary, size: int) -> str:
    lines = [
        "# Synthetic AOI demo workspace",
        "",
        "Generated by `automl_deft.synth.generate_demo_workspace` "
        f"(seed {summary.seed}, scale `{summary.scale}`, {size}x{size} grayscale PNGs).",
        "",
        "Binarised bare-board copper patches of six board families (A-F); each row has a",
        "golden (clean) image and a tested image with benign nuisance (1-px misregistration,",
        "edge jitter, speckle, intensity variation) and, for defect rows, one painted defect.",
        "",
        "The sets differ on purpose: training/validation hold families A-D only, few",
        "`mousebite`/`pin-hole` and few subtle defects; the KPI test set and the mining pool",
        "hold all families and types, the KPI set more low-severity, low-contrast defects.",
        "",
        "`kpi/holdout_set.csv` is the untouched hold-out: more rows of the KPI distribution",
        f"({HOLDOUT_FRACTION:.0%} of all of them, the same label and family mix). The KPI",
        "set steers the workflow, so its FAR is optimistic; no phase reads the hold-out,",
        "only the final step scores it: the number to trust for unseen boards.",
        "",
        "```",
        summary.table(),
        "```",
        "",
    ]
    return "\n".join(lines)


PCB_KIND = DemoKind(
    name="pcb",
    splits=SPLITS,
    defect_types=DEFECT_TYPES,
    columns=CSV_COLUMNS,
    draw_job=_draw_job,
    draw_row=_draw_row,
    write_spec=_write_pcb_spec,
    readme=_readme,
)
"""The bare-board copper demo (greyscale, one light, 64 px): ``--kind pcb``."""
