"""The consolidated pre-flight: one summary, one gate, before anything with side effects.

:func:`build_preflight` looks at the workspace, the environment and the run config
and returns a :class:`Preflight` with exactly nine sections, in this order:

1. Workspace & platform   2. Credentials          3. Container images
4. Datasets              5. Phase 1 (AutoML)     6. Phase 2 (DEFT)
7. Phase 3 (AutoML warm-started)                 8. Compute estimate
9. Confirmation

Problems that would stop the run later (leakage, missing files, the KPI set used
for validation, a config that cannot work) are collected in ``blocking``, one line
each with the fix; :attr:`Preflight.ok` is False while any remain. After the user
confirms, only the hard safety gates that section 9 names can stop the run.

Nothing here writes files, and credential *values* are never read: only whether
each variable is set (:func:`automl_deft.cluster.credentials.credential_status`).
The same object renders for a terminal (:meth:`Preflight.text`), for the KFP
dashboard (:meth:`Preflight.markdown`) and as JSON (:meth:`Preflight.to_dict`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl_deft.cluster.credentials import credential_status
from automl_deft.deft.config import DeftConfig, config_from_dict
from automl_deft.deft.state import (
    BASELINE,
    COMPLETE,
    HARD_STOPPED,
    NEEDS_REVIEW,
    DeftState,
    iteration_label,
    stages_of,
)
from automl_deft.errors import AutomlDeftError, SpecError, UserError, WorkspaceError
from automl_deft.hpo.algorithms import canonical
from automl_deft.hpo.base import BACKENDS
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import Param, SearchSpace
from automl_deft.model.spec import Spec, load_spec
from automl_deft.run_config import RunConfig
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    VAL_CSV,
    CsvSummary,
    ImageNaming,
    Workspace,
    read_dataset_csv,
    refuse_kpi_set,
    summarize,
)

PHASES: tuple[str, ...] = ("automl", "deft", "phase3")
"""The phases a pipeline may run, in run order."""

PHASE_NAMES: dict[str, str] = {
    "automl": "Phase 1 (AutoML)",
    "deft": "Phase 2 (DEFT)",
    "phase3": "Phase 3 (AutoML warm-started)",
}

SECTION_TITLES: tuple[str, ...] = (
    "Workspace & platform",
    "Credentials",
    "Container images",
    "Datasets",
    "Phase 1 (AutoML)",
    "Phase 2 (DEFT)",
    "Phase 3 (AutoML warm-started)",
    "Compute estimate",
    "Confirmation",
)
"""The nine sections of the single gate, in the order the facts file gives."""

PRESENT, MISSING, UNKNOWN = "PRESENT", "MISSING", "UNKNOWN"
IMAGE_STATUSES: tuple[str, ...] = (PRESENT, MISSING, UNKNOWN)

DOCKER_TIMEOUT_S = 3.0
"""How long the local docker daemon gets to answer before an image counts as UNKNOWN."""

RULE_IMAGE_SIDE = 224
"""The GPU memory rule of thumb is for the original ChangeNet at 224 px."""
GPU_BATCH_RULE: tuple[tuple[float, int], ...] = ((30.0, 8), (60.0, 16))
"""(GPU memory below this many GB, largest batch the rule allows): 24 GB-class ≤ 8,
48 GB-class ≤ 16. Larger GPUs: the rule says nothing, so nothing is claimed."""
RULE_TEXT = f"ChangeNet at {RULE_IMAGE_SIDE} px: batch ≤ 16 on a 48 GB GPU, ≤ 8 on 24 GB"

NO_TIME = "job counts only (set compute.per_job_minutes for a time estimate)"

ImageProbe = Callable[[str], str]
"""Answers for one fully resolved image reference: ``PRESENT``, ``MISSING`` or
``UNKNOWN``, optionally followed by `` (reason)``."""


# --- the result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyValue:
    """One ``key: value`` line of a section."""

    key: str
    value: str


@dataclass(frozen=True)
class Table:
    """A small table (rendered aligned in the terminal, as a table in Markdown)."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Note:
    """A free-text line."""

    text: str


Block = KeyValue | Table | Note


@dataclass
class Section:
    """One numbered section of the pre-flight.

    Attributes:
        number: 1..9.
        title: one of :data:`SECTION_TITLES`.
        lines: the section as plain lines (``key: value``, table rows, notes).
        data: the same facts, structured (JSON-ready).
        blocks: the layout ``lines`` was rendered from (for aligned text and Markdown).
    """

    number: int
    title: str
    lines: list[str]
    data: dict[str, Any]
    blocks: list[Block] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def of(cls, number: int, blocks: list[Block], data: dict[str, Any]) -> Section:
        """A section whose ``lines`` are rendered from ``blocks``."""
        lines: list[str] = []
        for b in blocks:
            if isinstance(b, KeyValue):
                lines.append(f"{b.key}: {b.value}")
            elif isinstance(b, Table):
                lines.extend(_table_lines(b))
            else:
                lines.append(b.text)
        return cls(number, SECTION_TITLES[number - 1], lines, data, blocks)


@dataclass
class Preflight:
    """The consolidated pre-flight summary.

    Attributes:
        sections: exactly nine, in :data:`SECTION_TITLES` order.
        blocking: problems that stop the run, one line each with the fix.
        warnings: things worth knowing that do not stop the run.
    """

    sections: list[Section]
    blocking: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """True when nothing blocks the run."""
        return not self.blocking

    def _verdict(self) -> str:
        state = "OK" if self.ok else "BLOCKED"
        return (
            f"{state} ({_count(len(self.blocking), 'blocking problem')}, "
            f"{_count(len(self.warnings), 'warning')})"
        )

    def text(self) -> str:
        """The summary for a terminal: numbered headers and aligned ``key: value`` lines.

        Blocking problems and warnings are listed just before the confirmation line,
        so the last thing a reader sees is what to fix or what to approve.
        """
        out = [f"AutoML + DEFT pre-flight: {self._verdict()}", ""]
        for s in self.sections:
            if s.number == len(SECTION_TITLES):
                out.extend(_issues_text("Blocking (fix before running)", self.blocking))
                out.extend(_issues_text("Warnings", self.warnings))
            out.append(f"{s.number}. {s.title}")
            out.extend("   " + line for line in _section_text(s))
            out.append("")
        return "\n".join(out).rstrip() + "\n"

    def markdown(self) -> str:
        """The summary as Markdown (the KFP ``Markdown`` artifact shown on the dashboard)."""
        out = [f"# AutoML + DEFT pre-flight: {self._verdict()}", ""]
        for heading, items in (("Blocking problems", self.blocking), ("Warnings", self.warnings)):
            if items:
                out += [f"## {heading}", "", *(f"- {_md(i)}" for i in items), ""]
        for s in self.sections:
            out += [f"## {s.number}. {s.title}", "", *_section_markdown(s)]
        return "\n".join(out).rstrip() + "\n"

    def to_dict(self) -> dict[str, Any]:
        """``{ok, blocking, warnings, sections: [{number, title, lines, data}]}`` (``--json``)."""
        return {
            "ok": self.ok,
            "blocking": list(self.blocking),
            "warnings": list(self.warnings),
            "sections": [
                {"number": s.number, "title": s.title, "lines": list(s.lines), "data": s.data}
                for s in self.sections
            ],
        }


# --- rendering helpers --------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _table_lines(t: Table) -> list[str]:
    widths = [len(c) for c in t.columns]
    for row in t.rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    last = len(t.columns) - 1

    def line(cells: Sequence[str]) -> str:
        return "  ".join(v if i == last else v.ljust(widths[i]) for i, v in enumerate(cells))

    return [line(t.columns), *(line(r) for r in t.rows)]


def _section_text(s: Section) -> list[str]:
    if not s.blocks:
        return list(s.lines)
    width = max((len(b.key) for b in s.blocks if isinstance(b, KeyValue)), default=0)
    out: list[str] = []
    for b in s.blocks:
        if isinstance(b, KeyValue):
            out.append(f"{(b.key + ':').ljust(width + 1)} {b.value}")
        elif isinstance(b, Table):
            out.extend(_table_lines(b))
        else:
            out.append(b.text)
    return out


def _issues_text(heading: str, items: list[str]) -> list[str]:
    if not items:
        return []
    return [f"{heading}:", *(f"   - {i}" for i in items), ""]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section_markdown(s: Section) -> list[str]:
    if not s.blocks:
        return [*(_md(line) + "  " for line in s.lines), ""]
    out: list[str] = []
    pending: list[KeyValue] = []

    def flush() -> None:
        if pending:
            out.extend(["| setting | value |", "|---|---|"])
            out.extend(f"| {_md(kv.key)} | {_md(kv.value)} |" for kv in pending)
            out.append("")
            pending.clear()

    for b in s.blocks:
        if isinstance(b, KeyValue):
            pending.append(b)
            continue
        flush()
        if isinstance(b, Table):
            out.append("| " + " | ".join(_md(c) for c in b.columns) + " |")
            out.append("|" + "---|" * len(b.columns))
            out.extend("| " + " | ".join(_md(v) for v in row) + " |" for row in b.rows)
        else:
            out.append(_md(b.text))
        out.append("")
    flush()
    return out


def _join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b, and c``."""
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def _num(value: float) -> str:
    return f"{value:g}"


def _minutes(value: float) -> str:
    text = f"{_num(round(value, 1))} min"
    return f"{text} ({_num(round(value / 60, 1))} h)" if value >= 90 else text


# --- container images ---------------------------------------------------------------------


def resolve_image_ref(ref: str) -> str:
    """The fully qualified form docker uses: registry, repository and tag (or digest).

    ``python`` → ``docker.io/library/python:latest``; ``you/app:1`` →
    ``docker.io/you/app:1``; ``ghcr.io/x/y`` → ``ghcr.io/x/y:latest``.
    """
    ref = ref.strip()
    name, at, digest = ref.partition("@")
    parts = name.split("/")
    if len(parts) == 1:
        name = f"docker.io/library/{name}"
    elif not ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        name = f"docker.io/{name}"
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}{at}{digest}"


def docker_image_probe(timeout_s: float = DOCKER_TIMEOUT_S) -> ImageProbe:
    """A probe that asks the local docker daemon whether it holds an image.

    The daemon is asked once whether it answers (within ``timeout_s``); without a
    ``docker`` CLI or a reachable daemon every image is ``UNKNOWN`` with the reason.
    Nothing is pulled.
    """
    reachable: list[str | None] = []  # filled once: None = reachable, else why not

    def daemon_problem() -> str | None:
        if not reachable:
            if shutil.which("docker") is None:
                reachable.append("no docker CLI")
            else:
                try:
                    done = subprocess.run(
                        ["docker", "version", "--format", "{{.Server.Version}}"],
                        capture_output=True,
                        text=True,
                        timeout=timeout_s,
                        check=False,
                    )
                    ok = done.returncode == 0 and done.stdout.strip() != ""
                    reachable.append(None if ok else "daemon not reachable")
                except (subprocess.TimeoutExpired, OSError):
                    reachable.append("daemon not reachable")
        return reachable[0]

    def probe(ref: str) -> str:
        problem = daemon_problem()
        if problem is not None:
            return f"{UNKNOWN} ({problem})"
        try:
            done = subprocess.run(
                ["docker", "image", "inspect", ref],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{UNKNOWN} (docker image inspect timed out)"
        except OSError as exc:
            return f"{UNKNOWN} ({exc.__class__.__name__})"
        if done.returncode == 0:
            return PRESENT
        err = done.stderr.strip()
        if "no such image" in err.lower():
            return f"{MISSING} (not in the local docker daemon)"
        first = err.splitlines()[0] if err else f"exit status {done.returncode}"
        return f"{UNKNOWN} ({first})"

    return probe


def _parse_probe(answer: str) -> tuple[str, str]:
    word, _, rest = answer.strip().partition(" ")
    status = word.upper()
    detail = rest.strip().removeprefix("(").removesuffix(")").strip()
    if status not in IMAGE_STATUSES:
        return UNKNOWN, f"probe answered {answer.strip()!r}"
    return status, detail


# --- GPU ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """One visible CUDA device."""

    name: str
    memory_bytes: int

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 1024**3

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / 1e9


def visible_gpus() -> list[GpuInfo]:
    """The CUDA devices torch sees (empty on a CPU-only machine)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append(GpuInfo(props.name, int(props.total_memory)))
    return out


def gpu_batch_limit(memory_gb: float) -> int | None:
    """The rule of thumb's largest batch for a GPU of this size (None: the rule is silent)."""
    for below, limit in GPU_BATCH_RULE:
        if memory_gb < below:
            return limit
    return None


# --- the sections -------------------------------------------------------------------------


@dataclass
class _Context:
    ws: Workspace
    config: RunConfig
    phases: tuple[str, ...]
    results_dir: Path | None
    spec: Spec | None
    gpus: list[GpuInfo]
    blocking: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    state: DeftState | None = None
    deft: DeftConfig = field(default_factory=DeftConfig)

    def block(self, problem: str) -> None:
        if problem not in self.blocking:
            self.blocking.append(problem)

    def warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def runs(self, phase: str) -> bool:
        return phase in self.phases

    def skipped(self) -> str:
        names = [PHASE_NAMES[p] for p in self.phases]
        return f"skipped (this pipeline runs {_join(names)} only)"

    @property
    def preseeded(self) -> bool:
        """True when DEFT's baseline comes ready-trained (Phase 1 winner or a resumed state)."""
        if self.state is not None:
            return BASELINE in self.state.iterations and self.state.done(BASELINE, "train")
        return self.runs("automl")

    def automl_space(self, cfg: AutomlConfig) -> SearchSpace | None:
        try:
            return cfg.space()
        except SpecError as exc:
            self.block(f"automl.search_space: {exc}")
            return None


def _platform_section(ctx: _Context) -> Section:
    import torch

    spec = ctx.spec
    cls = spec.dataset.classify if spec is not None else None
    phase_batch = _pinned(ctx.config.automl, "dataset.classify.batch_size", None)
    # DEFT trains from the Phase 1 winner's spec (pinned batch merged in) when Phase 1 runs.
    deft_batch = ctx.deft.batch_size
    if deft_batch is None:
        deft_batch = phase_batch if ctx.runs("automl") else (cls.batch_size if cls else None)
    batches = []
    if ctx.runs("automl") or ctx.runs("phase3"):
        batches.append(phase_batch)
    if ctx.runs("deft"):
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
    if ctx.runs("automl") or ctx.runs("phase3"):
        batch_parts.append(f"{phase_batch} (AutoML trials, pinned)")
    if ctx.runs("deft"):
        batch_parts.append(f"{deft_batch} (DEFT)")
    blocks.append(KeyValue("batch size", ", ".join(batch_parts) or "n/a"))
    blocks.append(KeyValue("GPU memory rule", RULE_TEXT))
    data.update(batch_size_automl=phase_batch, batch_size_deft=deft_batch)
    side = min(cls.image_width, cls.image_height) if cls is not None else None
    for g in ctx.gpus[:1]:
        limit = gpu_batch_limit(g.memory_gb)
        worst = max((b for b in batches if b is not None), default=0)
        if limit is not None and worst > limit:
            smaller = (
                f"; these images are {side} px, smaller than {RULE_IMAGE_SIDE} px, so it may "
                "still fit"
                if side is not None and side < RULE_IMAGE_SIDE
                else ""
            )
            ctx.warn(
                f"batch size {worst} exceeds the GPU memory rule of thumb for {g.name} "
                f"({g.memory_gb:.0f} GB: batch ≤ {limit} at {RULE_IMAGE_SIDE} px){smaller}; "
                "lower automl.batch_size / deft.batch_size if training runs out of memory"
            )
    return Section.of(1, blocks, data)


def _credentials_section(env: Mapping[str, str] | None) -> Section:
    rows = credential_status(env)
    blocks: list[Block] = [
        Table(("variable", "status", "purpose"), tuple((n, s, p) for n, s, p in rows)),
        Note("values are never shown; set them as Kubernetes Secrets for pipeline pods"),
    ]
    data = {"credentials": [{"name": n, "status": s, "purpose": p} for n, s, p in rows]}
    return Section.of(2, blocks, data)


def _images_section(ctx: _Context, probe: ImageProbe) -> Section:
    wanted = [("component", ctx.config.images.component)]
    if ctx.config.images.sdg:
        wanted.append(("sdg", ctx.config.images.sdg))
    rows = []
    entries = []
    for role, ref in wanted:
        if not ref.strip():
            ctx.block(f"images.{role} is empty; set it to the image the cluster tasks run")
            continue
        resolved = resolve_image_ref(ref)
        try:
            status, detail = _parse_probe(probe(resolved))
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


def _datasets_section(ctx: _Context, check_images: bool) -> Section:
    mining = ctx.deft.mining
    needs_pool = ctx.runs("deft") and mining.enabled
    require_pool = needs_pool and mining.on_empty_pool == "hard_stop"
    problems: list[str] = []
    summaries: list[CsvSummary] = []
    overlapping: int | None = None
    images_checked = 0
    image_check = check_images and ctx.spec is not None
    naming = ctx.spec.naming() if ctx.spec is not None else None
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
        for w in report.warnings:
            ctx.warn(w)
    except WorkspaceError as exc:
        problems.extend(exc.problems)
        summaries = _readable_summaries(ctx.ws)
    try:
        refuse_kpi_set(ctx.ws, ctx.ws.val_csv, used_as="the validation set")
    except WorkspaceError as exc:
        problems.extend(exc.problems)
    for p in problems:
        ctx.block(p)

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
    blocks: list[Block] = [Table(("set", "rows", "PASS", "defect"), tuple(rows))]
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
    if ctx.runs("deft") and "mining_pool" not in by_role and not ctx.ws.pool_csv.exists():
        if not mining.enabled:
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


def _pinned(cfg: AutomlConfig, key: str, default: Any) -> Any:
    try:
        return cfg.space().pinned.get(key, default)
    except SpecError:
        return default


def _param_range(p: Param) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(str(c) for c in p.choices) + "}"
    assert p.low is not None and p.high is not None
    kind = " (log)" if p.log else (" (int)" if p.type == "int" else "")
    return f"{_num(p.low)}–{_num(p.high)}{kind}"


def _metric_text(cfg: AutomlConfig) -> str:
    if cfg.metric == "far_pct":
        return f"far_pct (FAR at 100% recall) on the validation set ({VAL_CSV})"
    return f"val_loss on the validation set ({VAL_CSV}), guarded by per-class prediction counts"


def _check_search(ctx: _Context, cfg: AutomlConfig, space: SearchSpace | None) -> None:
    try:
        canonical(cfg.algorithm)
    except UserError as exc:
        ctx.block(f"automl.algorithm: {exc}")
    if space is not None and ctx.spec is not None:
        try:
            space.check_against(ctx.spec)
        except SpecError as exc:
            ctx.block(f"automl.search_space: {exc}")


def _phase1_section(ctx: _Context, hpo_backend: str | None) -> Section:
    if not ctx.runs("automl"):
        return Section.of(5, [Note(ctx.skipped())], {"enabled": False})
    cfg = ctx.config.automl
    backend = hpo_backend or cfg.backend
    if backend not in BACKENDS:
        ctx.block(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    space = ctx.automl_space(cfg)
    _check_search(ctx, cfg, space)
    swept = [(p.name, p.key, _param_range(p)) for p in space.params] if space else []
    pinned = dict(space.pinned) if space else {}
    guards = cfg.guards
    zero_shot = (
        "must beat the zero-shot scorer"
        if not guards.allow_no_gain_over_zero_shot
        else "zero-shot comparison reported only (allow_no_gain_over_zero_shot)"
    )
    blocks: list[Block] = [
        KeyValue("backend", backend),
        KeyValue("algorithm", cfg.algorithm),
        KeyValue("sweep size", f"{cfg.max_trials} trials"),
        KeyValue("parallel trials", str(cfg.parallel_trials or "auto (cores and memory)")),
        KeyValue("metric", _metric_text(cfg)),
        KeyValue(
            "early stopping",
            f"on (pruning from epoch {cfg.prune_start_epoch})" if cfg.early_stopping else "off",
        ),
        KeyValue(
            "guards",
            f"collapsed winners skipped; a winner > {_num(guards.lucky_factor)}x better than "
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
        "backend": backend,
        "algorithm": cfg.algorithm,
        "max_trials": cfg.max_trials,
        "parallel_trials": cfg.parallel_trials,
        "metric": cfg.metric,
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
        "zero_shot_gate": not guards.allow_no_gain_over_zero_shot,
    }
    return Section.of(5, blocks, data)


def _resume_point(state: DeftState) -> str:
    status = state.data.get("status")
    if status == COMPLETE:
        return "already complete (nothing left to run)"
    n = int(state.data.get("current_iteration", 0))
    label = iteration_label(n)
    stage = state.next_stage(label)
    if stage is None:
        label, stage = iteration_label(n + 1), stages_of(iteration_label(n + 1))[0]
    where = f"{label} · {stage}"
    if status == HARD_STOPPED:
        return f"{where} (retrying after a hard stop: {state.data.get('stop_reason')})"
    if status == NEEDS_REVIEW:
        return f"{where} (stopped for review: {state.data.get('stop_reason')})"
    return where


BASELINE_SOURCES: dict[str, str] = {
    "automl_phase1": "Phase 1 winner (automl_phase1) — no baseline training",
    "trained_here": "trained here from the workspace spec (trained_here)",
}


def _phase2_section(ctx: _Context) -> Section:
    if not ctx.runs("deft"):
        return Section.of(6, [Note(ctx.skipped())], {"enabled": False})
    cfg = ctx.deft
    try:
        target = str(cfg.target())
    except AutomlDeftError as exc:
        ctx.block(f"deft.kpi_target: {exc}")
        target = f"{cfg.kpi_target} (invalid)"
    if cfg.num_epochs is not None:
        epochs = f"{cfg.num_epochs} (deft.num_epochs)"
    elif ctx.runs("automl"):
        epochs = (
            f"{_pinned(ctx.config.automl, 'train.num_epochs', '?')} (the Phase 1 winner's spec)"
        )
    elif ctx.spec is not None:
        epochs = f"{ctx.spec.train.num_epochs} (the workspace spec's)"
    else:
        epochs = "unknown (the spec did not load)"
    sdg = (
        f"{cfg.sdg.backend}, num_sdg {cfg.sdg.num_sdg} per iteration" if cfg.sdg.enabled else "off"
    )
    m = cfg.mining
    mining = (
        f"top_k_per_target {m.top_k_per_target}, min_similarity {_num(m.min_similarity)} "
        f"({m.metric}), embedder {m.embedder}, on_empty_pool {m.on_empty_pool}"
        if m.enabled
        else "off"
    )
    r = cfg.regression
    regression = (
        f"tolerance {_num(r.tolerance_pp)} pp, patience {r.patience} → needs_review"
        if r.enabled
        else "off"
    )
    n_gpus = len(ctx.gpus)
    state = ctx.state
    if state is not None:
        run = f"resuming {state.results_dir} at {_resume_point(state)}"
    elif ctx.results_dir is not None:
        run = f"fresh: {ctx.results_dir}"
    else:
        run = f"fresh: {ctx.ws.results_dir}/run_<YYYYmmdd_HHMMSS> (default)"
    if (
        state is not None
        and BASELINE in state.iterations
        and state.iterations[BASELINE].get("source")
    ):
        source_key = str(state.iterations[BASELINE]["source"])
        baseline = BASELINE_SOURCES.get(source_key, source_key)
    elif state is not None and state.done(BASELINE, "train"):
        baseline = "already trained in the resumed run"
    elif ctx.runs("automl"):
        baseline = BASELINE_SOURCES["automl_phase1"]
    else:
        baseline = "trained here from the workspace spec"
    blocks: list[Block] = [
        KeyValue("KPI target", target),
        KeyValue("max_iterations", str(cfg.max_iterations)),
        KeyValue("fine-tune epochs", epochs),
        KeyValue("SDG", sdg),
        KeyValue("mining", mining),
        KeyValue("regression gate", regression),
        KeyValue("GPUs", str(n_gpus) if n_gpus else "0 (CPU)"),
        KeyValue("run", run),
        KeyValue("baseline", baseline),
    ]
    data = {
        "enabled": True,
        "kpi_target": cfg.kpi_target,
        "max_iterations": cfg.max_iterations,
        "num_epochs": cfg.num_epochs,
        "epochs": epochs,
        "sdg": {"enabled": cfg.sdg.enabled, "backend": cfg.sdg.backend, "num_sdg": cfg.sdg.num_sdg},
        "mining": {
            "enabled": m.enabled,
            "top_k_per_target": m.top_k_per_target,
            "min_similarity": m.min_similarity,
            "embedder": m.embedder,
            "on_empty_pool": m.on_empty_pool,
        },
        "regression": dataclasses.asdict(r),
        "gpus": n_gpus,
        "resuming": state is not None,
        "results_dir": str(state.results_dir)
        if state is not None
        else (str(ctx.results_dir) if ctx.results_dir is not None else None),
        "resume_point": _resume_point(state) if state is not None else None,
        "baseline_source": baseline,
        "preseeded": ctx.preseeded,
    }
    return Section.of(6, blocks, data)


def _phase3_section(ctx: _Context) -> Section:
    if not ctx.runs("phase3"):
        return Section.of(7, [Note(ctx.skipped())], {"enabled": False})
    if not ctx.config.phase3.enabled:
        return Section.of(7, [Note("disabled (phase3.enabled: false)")], {"enabled": False})
    cfg = ctx.config.phase3_automl()
    if not ctx.runs("automl"):
        # Phase 1 checked these already when it runs in the same pipeline.
        _check_search(ctx, cfg, ctx.automl_space(cfg))
    warm = (
        "every trial starts from the best DEFT iteration's checkpoint; architecture pinned; "
        f"centred on the Phase 1 winner (factor {_num(cfg.centroid_factor)})"
    )
    blocks: list[Block] = [
        KeyValue("enabled", "yes"),
        KeyValue("sweep size", f"{cfg.max_trials} trials"),
        KeyValue("metric", f"{_metric_text(cfg)} (same as Phase 1)"),
        KeyValue("algorithm", f"{cfg.algorithm} (same as Phase 1)"),
        KeyValue("epochs per trial", str(cfg.num_epochs)),
        KeyValue("warm start", warm),
        KeyValue("validation set", f"{ctx.ws.val_csv} (same as Phase 1)"),
        KeyValue("training set", "the last DEFT iteration's train_combined CSV"),
        KeyValue("skipped if", "DEFT hard-stops or stops for review (needs_review)"),
    ]
    data = {
        "enabled": True,
        "max_trials": cfg.max_trials,
        "metric": cfg.metric,
        "algorithm": cfg.algorithm,
        "num_epochs": cfg.num_epochs,
        "centroid_factor": cfg.centroid_factor,
        "warm_start": warm,
        "val_csv": str(ctx.ws.val_csv),
    }
    return Section.of(7, blocks, data)


def _phase3_runs(ctx: _Context) -> bool:
    return ctx.runs("phase3") and ctx.config.phase3.enabled


def _compute_section(ctx: _Context) -> Section:
    compute = ctx.config.compute
    per_job = compute.per_job_minutes
    per_iter = compute.per_iteration_minutes or per_job
    blocks: list[Block] = []
    data: dict[str, Any] = {
        "per_job_minutes": per_job,
        "per_iteration_minutes": compute.per_iteration_minutes,
    }
    totals = {"trainings": 0, "max_trainings": 0, "minutes": 0.0, "max_minutes": 0.0}

    def search(key: str, label: str, trials: int) -> None:
        entry: dict[str, Any] = {"trainings": trials, "max_trainings": trials + 1}
        text = f"{trials} trainings (≤ {trials + 1} with a lucky-winner re-run)"
        if per_job is not None:
            entry.update(minutes=trials * per_job, max_minutes=(trials + 1) * per_job)
            text += (
                f" × {_num(per_job)} min = {_minutes(entry['minutes'])} "
                f"(≤ {_minutes(entry['max_minutes'])})"
            )
        blocks.append(KeyValue(label, text))
        data[key] = entry
        totals["trainings"] += trials
        totals["max_trainings"] += trials + 1
        totals["minutes"] += entry.get("minutes", 0.0)
        totals["max_minutes"] += entry.get("max_minutes", 0.0)

    if ctx.runs("automl"):
        search("phase1", "Phase 1", ctx.config.automl.max_trials)
    if ctx.runs("deft"):
        iters = ctx.deft.max_iterations
        baseline = 0 if ctx.preseeded else 1
        evaluations = 2 * (iters + 1)
        entry: dict[str, Any] = {
            "iterations": iters,
            "baseline_trainings": baseline,
            "trainings": iters + baseline,
            "max_trainings": iters + baseline,
            "evaluations": evaluations,
        }
        text = (
            f"{iters} iteration trainings"
            + (" + 1 baseline training" if baseline else " (baseline pre-seeded: no training)")
            + f"; ≤ {evaluations} KPI evaluations (best_val and latest, baseline + "
            f"{iters} iterations)"
        )
        if per_job is not None and per_iter is not None:
            minutes = iters * per_iter + baseline * per_job
            entry.update(minutes=minutes, max_minutes=minutes)
            parts = [f"{iters} × {_num(per_iter)} min"]
            if baseline:
                parts.append(f"1 × {_num(per_job)} min")
            text += f"; {' + '.join(parts)} = {_minutes(minutes)}"
        blocks.append(KeyValue("Phase 2", text))
        data["phase2"] = entry
        totals["trainings"] += entry["trainings"]
        totals["max_trainings"] += entry["max_trainings"]
        totals["minutes"] += entry.get("minutes", 0.0)
        totals["max_minutes"] += entry.get("max_minutes", 0.0)
    if _phase3_runs(ctx):
        search("phase3", "Phase 3", ctx.config.phase3_automl().max_trials)
    total_text = f"{totals['trainings']} trainings (≤ {totals['max_trainings']})"
    if per_job is not None:
        total_text += f"; {_minutes(totals['minutes'])} (≤ {_minutes(totals['max_minutes'])})"
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
    if ctx.state is not None:
        blocks.append(
            Note("resuming: finished DEFT stages are skipped, so Phase 2 is an upper bound")
        )
    return Section.of(8, blocks, data)


def _safety_gates(ctx: _Context) -> list[str]:
    """The hard gates that can still stop an approved run, in the order they may fire."""
    gates = []
    automl_runs = ctx.runs("automl") or _phase3_runs(ctx)
    if ctx.runs("deft"):
        gates += ["leakage or missing files in an assembled set", "a DEFT stage error"]
        if ctx.deft.regression.enabled:
            gates.append("the regression gate (needs_review)")
    if automl_runs and not ctx.config.automl.guards.allow_no_gain_over_zero_shot:
        gates.append("the Phase 1 winner failing to beat zero-shot")
    return gates


def _confirmation_section(ctx: _Context) -> Section:
    gates = _safety_gates(ctx)
    if ctx.blocking:
        line = (
            f"Cannot proceed: fix the {_count(len(ctx.blocking), 'blocking problem')} above, "
            "then run the pre-flight again."
        )
    elif gates:
        line = (
            "Proceed? After this, nothing asks again; only these gates can still stop the run: "
            f"{_join(gates)}."
        )
    else:
        line = "Proceed? After this, nothing asks again; only an error can still stop the run."
    return Section.of(9, [Note(line)], {"line": line, "gates": gates, "ok": not ctx.blocking})


# --- entry point --------------------------------------------------------------------------


def _load_state(ctx: _Context) -> None:
    """The resumed run's state and settings (a resumed run keeps the settings it started with)."""
    if ctx.results_dir is None or not DeftState.exists(ctx.results_dir):
        return
    try:
        ctx.state = DeftState.load(ctx.results_dir)
        saved = {k: v for k, v in ctx.state.data["config"].items() if k != "paths"}
        ctx.deft = config_from_dict(saved, f"{ctx.results_dir}/deft_state.json")
    except UserError as exc:
        ctx.block(str(exc))
        ctx.state = None
        return
    differs = sorted(
        k for k, v in ctx.config.deft.to_dict().items() if k in saved and saved[k] != v
    )
    if differs:
        ctx.warn(
            f"resuming {ctx.results_dir}: its deft_state.json settings are used, not this "
            f"config's ({', '.join(differs)} differ); start a new results directory to change them"
        )


def build_preflight(
    workspace: str | os.PathLike[str],
    config: RunConfig,
    *,
    results_dir: str | os.PathLike[str] | None = None,
    phases: Sequence[str] = PHASES,
    hpo_backend: str | None = None,
    env: Mapping[str, str] | None = None,
    check_images: bool = True,
    image_probe: ImageProbe | None = None,
) -> Preflight:
    """Look at everything a run depends on and summarise it in nine sections.

    Nothing is written and nothing is started; credential values are never read.

    Args:
        workspace: the workspace root.
        config: the whole run's config.
        results_dir: the run's results directory; one holding ``deft_state.json`` is
            reported as a resumed run (default: a fresh timestamped directory).
        phases: the phases this pipeline runs (``automl``, ``deft``, ``phase3``);
            the sections of the others say they are skipped.
        hpo_backend: the search backend the pipeline uses (default: ``config.automl.backend``).
        env: the environment to check credentials in (default: ``os.environ``).
        check_images: decode every dataset image and compare content for leakage
            (slower); without it leakage is checked by row key only.
        image_probe: answers ``PRESENT``/``MISSING``/``UNKNOWN`` for a resolved image
            reference (default: :func:`docker_image_probe`).

    Returns:
        The summary; ``ok`` is False while ``blocking`` lists problems.

    Raises:
        UserError: ``phases`` names an unknown phase.
    """
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise UserError(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    ws = Workspace.at(workspace)
    ctx = _Context(
        ws=ws,
        config=config,
        phases=tuple(p for p in PHASES if p in phases),
        results_dir=Path(results_dir) if results_dir is not None else None,
        spec=None,
        gpus=visible_gpus(),
        deft=config.deft,
    )
    if ws.spec_path.is_file():
        try:
            ctx.spec = load_spec(ws.spec_path)
        except SpecError as exc:
            ctx.block(str(exc))
    _load_state(ctx)
    sections = [
        _platform_section(ctx),
        _credentials_section(env),
        _images_section(ctx, image_probe or docker_image_probe()),
        _datasets_section(ctx, check_images),
        _phase1_section(ctx, hpo_backend),
        _phase2_section(ctx),
        _phase3_section(ctx),
        _compute_section(ctx),
    ]
    sections.append(_confirmation_section(ctx))
    return Preflight(sections=sections, blocking=ctx.blocking, warnings=ctx.warnings)


__all__ = [
    "IMAGE_STATUSES",
    "MISSING",
    "PHASES",
    "PRESENT",
    "SECTION_TITLES",
    "UNKNOWN",
    "Block",
    "GpuInfo",
    "ImageProbe",
    "KeyValue",
    "Note",
    "Preflight",
    "Section",
    "Table",
    "build_preflight",
    "docker_image_probe",
    "gpu_batch_limit",
    "resolve_image_ref",
    "visible_gpus",
]
