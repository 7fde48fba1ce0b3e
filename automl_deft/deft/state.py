"""The loop's state on disk: ``deft_state.json``, ``loop_log.jsonl`` and a lock.

A stage is *committed* by one atomic write of ``deft_state.json`` after its
outputs exist; the matching ``loop_log.jsonl`` line is appended right after. The
state remembers the last log entry it committed, so a run killed between the two
writes appends the missing line when it resumes: every committed stage is
logged exactly once and ``seq`` stays contiguous. A torn last line (a full disk, a
power loss) is cut off before anything is appended, and the entry it held is
appended again the same way.

Iterations are keyed ``baseline``, ``iter1``, ``iter2``, … and ``final_automl``
(Phase 3's winner, registered by the pipeline). Within an iteration the stages
run in a fixed order; ``stage_completed`` names the last one committed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from automl_deft.config import typed_from_dict
from automl_deft.deft.config import DeftConfig
from automl_deft.errors import SpecError, UserError
from automl_deft.io import atomic_write_json, atomic_write_text, exclusive_lock
from automl_deft.layout import RunLayout, was_moved
from automl_deft.phases import BASELINE, FINAL_AUTOML, iteration_label, iteration_number
from automl_deft.records import BestPointer, IterationRecord, LogEntry, RunInputs, StageFailure

__all__ = [
    "BASELINE",
    "COMPLETE",
    "FINAL_AUTOML",
    "HARD_STOPPED",
    "IN_PROGRESS",
    "NEEDS_REVIEW",
    "DeftState",
    "iteration_label",
    "iteration_number",
    "read_log",
    "run_lock",
    "stages_of",
]

STATE_FILE = RunLayout.STATE
LOG_FILE = RunLayout.LOG
LOCK_FILE = RunLayout.LOCK
STATE_VERSION = 1

BASELINE_STAGES: tuple[str, ...] = ("train", "evaluate", "rca")
ITERATION_STAGES: tuple[str, ...] = (
    "routing",
    "sdg",
    "mining",
    "data_merge",
    "train",
    "evaluate",
    "rca",
)
LOOP_STOP = "loop_stop"

# Loop-level status values.
IN_PROGRESS = "in_progress"
COMPLETE = "complete"
HARD_STOPPED = "hard_stopped"
NEEDS_REVIEW = "needs_review"


def now_iso() -> str:
    """UTC ISO-8601 with seconds, e.g. ``2026-11-26T14:02:08Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stages_of(label: str) -> tuple[str, ...]:
    return BASELINE_STAGES if label == BASELINE else ITERATION_STAGES


class DeftState:
    """``deft_state.json`` in memory; every change goes through :meth:`save` (atomic).

    The iteration records are typed (:class:`~automl_deft.records.IterationRecord`,
    frozen); :meth:`commit` and :meth:`update` replace them. Paths inside the run
    directory are stored relative to it (:meth:`path_of` resolves them), so a moved
    run directory still resumes, reports and delivers.

    Attributes:
        results_dir: the run's results directory (where the file was found).
        layout: every path inside it.
    """

    def __init__(
        self,
        results_dir: Path,
        *,
        config: DeftConfig,
        inputs: RunInputs,
        started_at: str,
        iterations: dict[str, IterationRecord] | None = None,
        status: str = IN_PROGRESS,
        stop_reason: str | None = None,
        current_iteration: int = 0,
        acknowledged: list[str] | None = None,
        log_seq: int = 0,
        log_last: LogEntry | None = None,
        best: BestPointer | None = None,
        updated_at: str | None = None,
        created_in: str | None = None,
    ) -> None:
        self.results_dir = results_dir
        self.layout = RunLayout(results_dir)
        self.config = config
        self.inputs = inputs
        self.started_at = started_at
        self.updated_at = updated_at or started_at
        self.iterations: dict[str, IterationRecord] = dict(iterations or {})
        self.status = status
        self.stop_reason = stop_reason
        self.current_iteration = current_iteration
        self.acknowledged: list[str] = list(acknowledged or [])
        self.log_seq = log_seq
        self.log_last = log_last
        self.best = best
        self.created_in = created_in or str(results_dir.resolve())

    # --- files ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.layout.state

    @property
    def log_path(self) -> Path:
        return self.layout.log

    @property
    def kpi_target(self) -> str:
        return self.config.kpi_target

    @property
    def max_iterations(self) -> int:
        return self.config.max_iterations

    @classmethod
    def exists(cls, results_dir: str | os.PathLike[str]) -> bool:
        return RunLayout.at(results_dir).state.is_file()

    @classmethod
    def create(
        cls, results_dir: str | os.PathLike[str], *, config: DeftConfig, inputs: RunInputs
    ) -> DeftState:
        """A fresh state (saved at once)."""
        root = Path(results_dir)
        root.mkdir(parents=True, exist_ok=True)
        state = cls(root, config=config, inputs=inputs, started_at=now_iso())
        state.save()
        return state

    @classmethod
    def load(cls, results_dir: str | os.PathLike[str], *, reconcile: bool = True) -> DeftState:
        """Read the state and re-append a log line lost to a kill between the two writes.

        ``reconcile=False`` reads without writing anything (the report is read-only).

        Raises:
            UserError: missing, unreadable or foreign-version state.
        """
        root = Path(results_dir)
        path = RunLayout(root).state
        if not path.is_file():
            raise UserError(
                f"no {STATE_FILE} in {root}; start a run there first (without --resume)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(
                f"{path} is not valid JSON ({exc.__class__.__name__}); restore it or start a new "
                "results directory"
            ) from exc
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise UserError(
                f"{path} has version {data.get('version') if isinstance(data, dict) else '?'}, "
                f"this tool reads version {STATE_VERSION}; use the matching automl-deft release"
            )
        state = cls.from_json(root, data, str(path))
        if reconcile:
            state._reconcile_log()
        return state

    @classmethod
    def from_json(cls, root: Path, data: dict[str, Any], where: str) -> DeftState:
        """The state in ``data`` (``where`` names it in errors).

        Raises:
            UserError: no ``config`` mapping with its ``paths`` (the run's settings and
                inputs: nothing can resume without them), or a field of the wrong type.
        """
        config_doc = data.get("config")
        if not isinstance(config_doc, dict) or not isinstance(config_doc.get("paths"), dict):
            missing = "config" if not isinstance(config_doc, dict) else "config.paths"
            raise UserError(
                f"{where} has no {missing!r} mapping (the run's settings and input paths); "
                "restore the file from a backup or start a new results directory"
            )
        try:
            config_doc = dict(config_doc)
            inputs = RunInputs.from_json(config_doc.pop("paths", {}), f"{where} config.paths")
            config: DeftConfig = typed_from_dict(DeftConfig, config_doc, "", f"{where} config")
            iterations = {
                str(label): IterationRecord.from_json(rec, f"{where} iterations.{label}")
                for label, rec in (data.get("iterations") or {}).items()
            }
            log = data.get("log") or {}
            last = log.get("last")
            best = data.get("best")
            return cls(
                root,
                config=config,
                inputs=inputs,
                started_at=str(data.get("started_at") or now_iso()),
                updated_at=data.get("updated_at"),
                iterations=iterations,
                status=str(data.get("status") or IN_PROGRESS),
                stop_reason=data.get("stop_reason"),
                current_iteration=int(data.get("current_iteration") or 0),
                acknowledged=[str(a) for a in data.get("acknowledged") or []],
                log_seq=int(log.get("seq") or 0),
                log_last=None if last is None else LogEntry.from_json(last, f"{where} log.last"),
                best=None if best is None else BestPointer.from_json(best, f"{where} best"),
                created_in=data.get("results_dir"),
            ).with_moved_workspace()
        except (SpecError, TypeError, ValueError) as exc:
            raise UserError(f"{where} is not a DEFT state this tool can read: {exc}") from exc

    def with_moved_workspace(self) -> DeftState:
        """Follow a workspace that was moved or copied with this run inside it.

        A run created at ``<ws>/results/run_x`` records the workspace's inputs as
        absolute paths. When the run is found at the same place under another
        directory that has the workspace layout, its inputs are read from there:
        the whole workspace travelled together (``mv``, ``cp -r``, a restored backup).
        A run moved out of its workspace keeps the recorded paths.
        """
        old_ws = self.inputs.workspace
        if not old_ws or not was_moved(self.created_in, self.results_dir):
            return self
        old_root = Path(os.path.normpath(old_ws))
        old_run = Path(os.path.normpath(str(self.created_in)))
        if not old_run.is_relative_to(old_root):
            return self
        depth = len(old_run.relative_to(old_root).parts)
        here = self.results_dir.resolve()
        if not 0 < depth <= len(here.parents):
            return self
        new_root = here.parents[depth - 1]
        if here.relative_to(new_root) != old_run.relative_to(old_root):
            return self
        if new_root == old_root or not (new_root / "kpi").is_dir():
            return self
        self.inputs = self.inputs.rebased(old_root, new_root)
        return self

    def to_json(self) -> dict[str, Any]:
        """The document ``deft_state.json`` holds (its documented field names)."""
        return {
            "version": STATE_VERSION,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "kpi_target": self.kpi_target,
            "results_dir": self.created_in,
            "max_iterations": self.max_iterations,
            "current_iteration": self.current_iteration,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "config": {**self.config.to_dict(), "paths": self.inputs.to_json()},
            "iterations": {label: rec.to_json() for label, rec in self.iterations.items()},
            "acknowledged": list(self.acknowledged),
            "log": {
                "seq": self.log_seq,
                "last": None if self.log_last is None else self.log_last.to_json(),
            },
            "best": None if self.best is None else self.best.to_json(),
        }

    def save(self) -> None:
        self.updated_at = now_iso()
        atomic_write_json(self.path, self.to_json())

    # --- iterations ----------------------------------------------------------------------

    def iteration(self, label: str) -> IterationRecord:
        """The record of ``label`` (a fresh ``pending`` one when new; nothing is saved)."""
        return self.iterations.get(label) or IterationRecord()

    def path_of(self, label: str, member: str) -> Path | None:
        """A path field of iteration ``label`` resolved against this run directory."""
        rec = self.iterations.get(label)
        return None if rec is None else self.layout.maybe_path(getattr(rec, member))

    def update(self, label: str, **changes: Any) -> IterationRecord:
        """Replace fields of ``label``'s record (paths made run-relative); not saved."""
        for name in IterationRecord.PATHS & changes.keys():
            changes[name] = self.layout.rel(changes[name])
        rec = self.iteration(label).replace(**changes)
        self.iterations[label] = rec
        return rec

    def done(self, label: str, stage: str) -> bool:
        """True when ``stage`` of ``label`` is committed."""
        rec = self.iterations.get(label)
        if not rec or rec.stage_completed is None:
            return False
        order = stages_of(label)
        completed = rec.stage_completed
        if completed not in order or stage not in order:
            return False
        return order.index(completed) >= order.index(stage)

    def next_stage(self, label: str) -> str | None:
        """The first stage of ``label`` not yet committed (None when all are)."""
        for stage in stages_of(label):
            if not self.done(label, stage):
                return stage
        return None

    def commit(
        self, label: str, stage: str, *, summary: str, duration_sec: float, **changes: Any
    ) -> LogEntry:
        """Record ``stage`` of ``label`` as done (call only once its outputs exist).

        ``changes`` are fields of the iteration record (see
        :class:`~automl_deft.records.IterationRecord`).

        Returns:
            The log entry written.
        """
        durations = {**self.iteration(label).durations, stage: round(duration_sec, 2)}
        self.update(
            label,
            **changes,
            stage_completed=stage,
            status="complete" if stage == stages_of(label)[-1] else "in_progress",
            durations=durations,
        )
        n = iteration_number(label)
        if n is not None:
            self.current_iteration = max(self.current_iteration, n)
        return self.log_event(label, stage, "ok", summary, duration_sec)

    def record_error(self, label: str, stage: str, message: str, duration_sec: float) -> None:
        """A stage failed: the loop hard-stops with ``message`` (logged once)."""
        self.update(label, status="failed", error=StageFailure(stage, message))
        self.status = HARD_STOPPED
        self.stop_reason = f"{label} {stage}: {message}"
        self.log_event(label, stage, "error", message, duration_sec)

    def stop(self, status: str, reason: str, *, label: str) -> None:
        """End the loop with ``status`` (complete / hard_stopped / needs_review)."""
        self.status = status
        self.stop_reason = reason
        self.log_event(label, LOOP_STOP, "ok", f"{status}: {reason}", 0.0)

    def reopen(self) -> None:
        """Continue a stopped loop (after an acknowledgement or a raised max_iterations)."""
        self.status = IN_PROGRESS
        self.stop_reason = None
        self.save()

    # --- log -----------------------------------------------------------------------------

    def log_event(
        self, label: str, stage: str, status: str, summary: str, duration_sec: float
    ) -> LogEntry:
        entry = LogEntry(
            seq=self.log_seq + 1,
            ts=now_iso(),
            iter=label,
            stage=stage,
            status=status,
            summary=summary,
            duration_sec=round(float(duration_sec), 2),
        )
        previous = self.log_last
        self.log_seq, self.log_last = entry.seq, entry
        self.save()
        append_log_line(
            self.log_path,
            entry.to_json(),
            previous=None if previous is None else previous.to_json(),
        )
        return entry

    def _reconcile_log(self) -> None:
        """Make the log end with the last committed entry, once.

        A torn last line is cut off first (:func:`repair_log`); the entry the state
        committed last is then re-appended when the log lacks it (a kill between the
        two writes, or the torn line itself), so ``seq`` stays contiguous.
        """
        repair_log(self.log_path)
        entries = read_log(self.log_path)
        logged = entries[-1]["seq"] if entries else 0
        committed = self.log_seq
        if logged == committed - 1 and self.log_last is not None:
            append_log_line(self.log_path, self.log_last.to_json())
        elif logged > committed:
            # Only possible if the state file was restored from a backup: keep them consistent.
            kept = [e for e in entries if e["seq"] <= committed]
            atomic_write_text(self.log_path, "".join(json.dumps(e) + "\n" for e in kept))


def append_log_line(
    path: Path, entry: dict[str, Any], *, previous: dict[str, Any] | None = None
) -> None:
    """Append one JSON line and fsync, never onto a torn last line.

    A last line cut short (a full disk, a power loss) is cut off first
    (:func:`repair_log`), so the new line is not glued to it. When that drops
    ``previous`` (the entry logged before ``entry``, which the state still holds), it
    is written again first, so ``seq`` stays contiguous.
    """
    with open(path, "ab+") as fh:
        _drop_torn_tail(fh)
        lines = [entry]
        if previous is not None and _last_seq(fh) == int(previous["seq"]) - 1:
            lines.insert(0, previous)
        fh.write("".join(json.dumps(e) + "\n" for e in lines).encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def repair_log(path: Path) -> None:
    """Cut a torn last line off a JSON-lines file (nothing when it ends cleanly).

    A last line that parses but lost only its newline gets the newline back.
    """
    if path.is_file():
        with open(path, "ab+") as fh:
            if _drop_torn_tail(fh):
                fh.flush()
                os.fsync(fh.fileno())


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every line of ``loop_log.jsonl`` that parses (a torn last line is ignored)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _entry(line: bytes | str) -> dict[str, Any] | None:
    """A log line as its entry, or None when it is not one (torn, garbage, blank)."""
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) and "seq" in entry else None


def _last_line(fh: BinaryIO) -> tuple[int, bytes]:
    """The offset and bytes of the file's last line, without its newline."""
    size = fh.seek(0, os.SEEK_END)
    end = size
    if size:
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            end = size - 1
    begin, pos, block = 0, end, 4096
    while pos > 0:
        start = max(0, pos - block)
        fh.seek(start)
        newline = fh.read(pos - start).rfind(b"\n")
        if newline >= 0:
            begin = start + newline + 1
            break
        pos = start
    fh.seek(begin)
    return begin, fh.read(end - begin)


def _drop_torn_tail(fh: BinaryIO) -> bool:
    """Truncate ``fh`` (opened ``ab+``) after its last well-formed line; True if changed."""
    changed = False
    while fh.seek(0, os.SEEK_END):
        begin, line = _last_line(fh)
        if _entry(line) is not None:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # complete, only the newline was lost
                fh.write(b"\n")
                changed = True
            break
        fh.truncate(begin)
        changed = True
    return changed


def _last_seq(fh: BinaryIO) -> int:
    """``seq`` of the file's last line (0 for an empty file)."""
    entry = _entry(_last_line(fh)[1])
    return int(entry["seq"]) if entry is not None else 0


@contextlib.contextmanager
def run_lock(results_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``.deft.lock`` for the duration; a second loop on the same directory is refused.

    Raises:
        UserError: another process holds the lock.
    """
    root = Path(results_dir)

    def busy(holder: str) -> UserError:
        return UserError(
            f"another DEFT loop (pid {holder}) is running on {root}; wait for it to finish "
            "or use another results directory"
        )

    with exclusive_lock(RunLayout(root).lock, busy):
        yield
