"""The loop's state on disk: ``deft_state.json``, ``loop_log.jsonl`` and a lock.

A stage is *committed* by one atomic write of ``deft_state.json`` after its
outputs exist; the matching ``loop_log.jsonl`` line is appended right after. The
state remembers the last log entry it committed, so a run killed between the two
writes appends the missing line when it resumes: every committed stage is
logged exactly once and ``seq`` stays contiguous.

Iterations are keyed ``baseline``, ``iter1``, ``iter2``, … and ``final_automl``
(Phase 3's winner, registered by the pipeline). Within an iteration the stages
run in a fixed order; ``stage_completed`` names the last one committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from automl_deft.errors import UserError
from automl_deft.io import atomic_write_json, atomic_write_text

STATE_FILE = "deft_state.json"
LOG_FILE = "loop_log.jsonl"
LOCK_FILE = ".deft.lock"
STATE_VERSION = 1

BASELINE = "baseline"
FINAL_AUTOML = "final_automl"

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


def iteration_label(n: int) -> str:
    """``baseline`` for 0, ``iter<n>`` otherwise."""
    return BASELINE if n == 0 else f"iter{n}"


def iteration_number(label: str) -> int | None:
    """0 for ``baseline``, n for ``iter<n>``, None for anything else (``final_automl``)."""
    if label == BASELINE:
        return 0
    if label.startswith("iter") and label[4:].isdigit():
        return int(label[4:])
    return None


def stages_of(label: str) -> tuple[str, ...]:
    return BASELINE_STAGES if label == BASELINE else ITERATION_STAGES


class DeftState:
    """``deft_state.json`` in memory; every change goes through :meth:`save` (atomic).

    Attributes:
        results_dir: the run's results directory.
        data: the JSON document (see the facts file for its fields).
    """

    def __init__(self, results_dir: Path, data: dict[str, Any]) -> None:
        self.results_dir = results_dir
        self.data = data

    # --- files ---------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.results_dir / STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.results_dir / LOG_FILE

    @classmethod
    def exists(cls, results_dir: str | os.PathLike[str]) -> bool:
        return (Path(results_dir) / STATE_FILE).is_file()

    @classmethod
    def create(
        cls,
        results_dir: str | os.PathLike[str],
        *,
        kpi_target: str,
        max_iterations: int,
        config: dict[str, Any],
        paths: dict[str, str],
    ) -> DeftState:
        """A fresh state (saved at once)."""
        root = Path(results_dir)
        root.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "started_at": now_iso(),
            "updated_at": now_iso(),
            "kpi_target": kpi_target,
            "results_dir": str(root.resolve()),
            "max_iterations": max_iterations,
            "current_iteration": 0,
            "status": IN_PROGRESS,
            "stop_reason": None,
            "config": {**config, "paths": paths},
            "iterations": {},
            "acknowledged": [],
            "log": {"seq": 0, "last": None},
        }
        state = cls(root, data)
        state.save()
        return state

    @classmethod
    def load(cls, results_dir: str | os.PathLike[str]) -> DeftState:
        """Read the state and re-append a log line lost to a kill between the two writes.

        Raises:
            UserError: missing, unreadable or foreign-version state.
        """
        root = Path(results_dir)
        path = root / STATE_FILE
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
        data.setdefault("log", {"seq": 0, "last": None})
        data.setdefault("acknowledged", [])
        state = cls(root, data)
        state._reconcile_log()
        return state

    def save(self) -> None:
        self.data["updated_at"] = now_iso()
        atomic_write_json(self.path, self.data)

    # --- iterations ----------------------------------------------------------------------

    @property
    def iterations(self) -> dict[str, dict[str, Any]]:
        its: dict[str, dict[str, Any]] = self.data["iterations"]
        return its

    def iteration(self, label: str) -> dict[str, Any]:
        """The record of ``label`` (created ``pending`` when new; not saved until a commit)."""
        return self.iterations.setdefault(label, {"status": "pending", "stage_completed": None})

    def done(self, label: str, stage: str) -> bool:
        """True when ``stage`` of ``label`` is committed."""
        rec = self.iterations.get(label)
        if not rec or rec.get("stage_completed") is None:
            return False
        order = stages_of(label)
        completed = rec["stage_completed"]
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
        self,
        label: str,
        stage: str,
        *,
        fields: dict[str, Any] | None = None,
        summary: str,
        duration_sec: float,
    ) -> dict[str, Any]:
        """Record ``stage`` of ``label`` as done (call only once its outputs exist).

        Returns:
            The log entry written.
        """
        rec = self.iteration(label)
        rec.update(fields or {})
        rec["stage_completed"] = stage
        rec["status"] = "complete" if stage == stages_of(label)[-1] else "in_progress"
        rec.setdefault("durations", {})[stage] = round(duration_sec, 2)
        n = iteration_number(label)
        if n is not None:
            self.data["current_iteration"] = max(self.data.get("current_iteration", 0), n)
        return self.log_event(label, stage, "ok", summary, duration_sec)

    def record_error(self, label: str, stage: str, message: str, duration_sec: float) -> None:
        """A stage failed: the loop hard-stops with ``message`` (logged once)."""
        rec = self.iteration(label)
        rec["status"] = "failed"
        rec["error"] = {"stage": stage, "message": message}
        self.data["status"] = HARD_STOPPED
        self.data["stop_reason"] = f"{label} {stage}: {message}"
        self.log_event(label, stage, "error", message, duration_sec)

    def stop(self, status: str, reason: str, *, label: str) -> None:
        """End the loop with ``status`` (complete / hard_stopped / needs_review)."""
        self.data["status"] = status
        self.data["stop_reason"] = reason
        self.log_event(label, LOOP_STOP, "ok", f"{status}: {reason}", 0.0)

    def reopen(self) -> None:
        """Continue a stopped loop (after an acknowledgement or a raised max_iterations)."""
        self.data["status"] = IN_PROGRESS
        self.data["stop_reason"] = None
        self.save()

    # --- log -----------------------------------------------------------------------------

    def log_event(
        self, label: str, stage: str, status: str, summary: str, duration_sec: float
    ) -> dict[str, Any]:
        seq = int(self.data["log"]["seq"]) + 1
        entry = {
            "seq": seq,
            "ts": now_iso(),
            "iter": label,
            "stage": stage,
            "status": status,
            "summary": summary,
            "duration_sec": round(float(duration_sec), 2),
        }
        self.data["log"] = {"seq": seq, "last": entry}
        self.save()
        append_log_line(self.log_path, entry)
        return entry

    def _reconcile_log(self) -> None:
        entries = read_log(self.log_path)
        logged = entries[-1]["seq"] if entries else 0
        committed = int(self.data["log"]["seq"])
        last = self.data["log"].get("last")
        if logged == committed - 1 and last:
            append_log_line(self.log_path, last)
        elif logged > committed:
            # Only possible if the state file was restored from a backup: keep them consistent.
            kept = [e for e in entries if e["seq"] <= committed]
            atomic_write_text(self.log_path, "".join(json.dumps(e) + "\n" for e in kept))


def append_log_line(path: Path, entry: dict[str, Any]) -> None:
    """Append one JSON line and fsync (a torn last line is dropped by :func:`read_log`)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``loop_log.jsonl`` (a torn last line is ignored)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@contextlib.contextmanager
def run_lock(results_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``.deft.lock`` for the duration; a second loop on the same directory is refused.

    ``flock`` is released by the kernel when the process dies, so a SIGKILLed run
    never leaves a stale lock behind.

    Raises:
        UserError: another process holds the lock.
    """
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise UserError(
                f"another DEFT loop (pid {holder}) is running on {root}; wait for it to finish "
                "or use another results directory"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()
