"""Fault campaign: kill runs at random moments, resume them, demand the uninterrupted result.

The project promises that a killed run resumes where it stopped and ends with the
result an uninterrupted run gives. This script checks that promise from the outside,
the way a user meets it: through the ``automl-deft`` CLI, with real signals.

1. Builds the ``--scale`` demo workspace and a small, fast config per target
   (``deft``: 1 iteration x 1 epoch, the tests' TINY_CONFIG; ``run``: the whole
   pipeline with 2 trials x 2 epochs in Phase 1, 1 DEFT iteration, 2 Phase 3 trials).
2. Runs one uninterrupted reference of each target and times it (D seconds; later
   lowered to any trial that finished before its kill: a shared machine's load, and the
   reference's cold caches, make durations vary).
3. Then ``--n`` trials per target, from ``random.Random(--seed)``: the same command in
   a new session (its own process group), killed after a delay drawn uniformly in
   [5%, 95%] of D with SIGKILL or SIGTERM (alternating, SIGKILL first) sent to the whole
   group (one that outlives SIGTERM by 60 s is SIGKILLed, and reported), then resumed
   once with the very same command (``--results R`` again, as a user re-runs it;
   ``deft --resume R`` is the same thing with the stored config) to completion. One
   kill and one resume per trial: the resume is never killed, and a kill that would land
   after the run already finished is no kill (kills 0, resumed NO).
4. Checks every trial: the resume exits with the reference's exit status;
   ``loop_log.jsonl`` is whole JSON lines with ``seq`` 1..n; every (iter, stage) is
   committed (``status: ok``) once and the committed set is the reference's; no
   assembled training CSV (``*/dataset/train_combined_iter*.csv``) has a duplicate row
   or leakage key; and, bit for bit against the reference: the run's final status and
   best label, every iteration's far_pct, threshold, train_rows (and its checkpoint's
   kind and weights), each assembled training set (its bytes, with the results
   directory's name normalised), and the deliverable (``best_model.json``: iteration,
   far_pct, threshold and the SHA-256 of its checkpoint's ``state_dict`` tensors —
   dtype, shape and bytes, not the file, which also holds timestamps and paths).
5. Prints one row per trial and a total per target, then one line per failed check
   naming the field that differed (reference vs resumed value), and exits 1 when any
   trial did not complete or is not identical. ``--json FILE`` also writes the results.

Each trial's runs and CLI logs stay under ``--out`` (default: a temp dir, removed when
everything is identical unless ``--keep``; its path is printed otherwise)::

    .venv/bin/python benchmarks/fault_campaign.py [--n 3] [--seed 0] [--target deft|run|both]
        [--scale tiny] [--out DIR] [--keep] [--json [FILE]]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from automl_deft.layout import RunLayout
from automl_deft.workspace import leakage_keys

TARGETS = ("deft", "run")
DEFT_CONFIG: dict[str, Any] = {
    "kpi_target": "FAR < 0.1% at recall=100%",  # out of reach: every stage runs
    "max_iterations": 1,
    "num_epochs": 1,
    "sdg": {"num_sdg": 4},
    "mining": {"top_k_per_target": 1},
    "rca": {"top_k_per_label": 5},
}
RUN_CONFIG: dict[str, Any] = {
    "automl": {
        "max_trials": 2,
        "num_epochs": 2,
        "parallel_trials": 1,
        "guards": {"allow_no_gain_over_zero_shot": True},
    },
    "deft": {"max_iterations": 1, "num_epochs": 1, "kpi_target": "FAR < 1% at recall=100%"},
    "phase3": {"max_trials": 2, "num_epochs": 1},
}
DELAY_RANGE = (0.05, 0.95)
"""The kill lands this fraction of the way through the reference's wall time."""
SIGNALS = (signal.SIGKILL, signal.SIGTERM)
GROUP_GRACE_S = 60.0
"""How long a signalled process group may take to disappear before it is SIGKILLed."""
RUN_TIMEOUT_FACTOR = 6.0
"""A run (or a resume) taking more than this many reference durations (+2 min) is hung."""
ITERATION_FIELDS = (
    "status",
    "stage_completed",
    "best_ckpt_kind",
    "far_pct",
    "threshold",
    "train_rows",
    "sdg_rows",
    "mined_rows",
)
DELIVERABLE_FIELDS = ("iteration", "far_pct", "threshold")
SUMMARY_FIELDS = (
    "deft_status", "phase1.rec_id", "phase1.far_pct", "phase3.rec_id", "phase3.far_pct",
    "phase3_kept", "holdout.far_pct", "holdout.threshold", "kpi_met",
)  # fmt: skip
"""``run`` only: ``pipeline_summary.json`` (Phase 1 and 3 winners, the hold-out score)."""
PHASE_OF = {"run": {"baseline:train": "phase1", "final_automl:evaluate": "phase3"}}
"""What the first uncommitted stage means when a whole phase precedes it."""


# --- the CLI ----------------------------------------------------------------------------


def cli() -> list[str]:
    """``automl-deft`` next to this interpreter (what a user runs), else ``python -m``."""
    script = Path(sys.executable).with_name("automl-deft")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "automl_deft.cli"]


def command(target: str, ws: Path, cfg: Path, results: Path) -> list[str]:
    if target == "deft":
        return [*cli(), "deft", str(ws), "-c", str(cfg), "--results", str(results)]
    flags = ["--results", str(results), "--yes", "--no-images"]
    return [*cli(), "run", str(ws), "-c", str(cfg), *flags]


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_group_gone(pgid: int, grace_s: float) -> bool:
    """Wait until group ``pgid`` is gone; SIGKILL it after ``grace_s``. True if it had to."""
    deadline = time.monotonic() + grace_s
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            while _group_alive(pgid):
                time.sleep(0.1)
            return True
        time.sleep(0.1)
    return False


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip


def run_to_end(argv: list[str], log: Path, timeout_s: float) -> tuple[int, float]:
    """Run ``argv`` in its own session until it exits: (exit status, seconds)."""
    t0 = time.monotonic()
    proc = _start(argv, log)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"\n[fault_campaign] hung: killed after {timeout_s:.0f}s\n")
    _wait_group_gone(proc.pid, GROUP_GRACE_S)
    return rc, time.monotonic() - t0


# --- what a finished run is -------------------------------------------------------------


def state_dict_sha256(path: Path) -> str:
    """SHA-256 over a checkpoint's ``state_dict`` tensors (name, dtype, shape, bytes)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(ckpt["state_dict"]):
        t = ckpt["state_dict"][name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _weights(root: Path, stored: str | None) -> str | None:
    if not stored:
        return None
    path = RunLayout(root).path(stored)
    if not path.is_file():
        return f"missing {stored}"
    try:
        return state_dict_sha256(path)
    except Exception as exc:  # a torn or foreign file: report it, do not crash the campaign
        return f"unreadable {stored} ({type(exc).__name__})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _strict_log(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every line of ``loop_log.jsonl``; a line that is not JSON is a problem, not skipped."""
    if not path.is_file():
        return [], [f"{path.name} is missing"]
    entries, problems = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            problems.append(f"{path.name} line {n} is not JSON (torn): {line[:80]!r}")
    return entries, problems


def ok_stages(root: Path) -> list[str]:
    entries, _ = _strict_log(RunLayout(root).log)
    return [f"{e['iter']}:{e['stage']}" for e in entries if e.get("status") == "ok"]


def fingerprint(root: Path, ws: Path) -> dict[str, Any]:
    """The fields of a finished run that must be identical to the uninterrupted one."""
    layout = RunLayout(root)
    out: dict[str, Any] = {}
    state = _read_json(layout.state)
    if not isinstance(state, dict):
        return {"state": "missing or unreadable"}
    out["state.status"] = state.get("status")
    out["state.best"] = (state.get("best") or {}).get("label")
    for label, rec in (state.get("iterations") or {}).items():
        for name in ITERATION_FIELDS:
            out[f"state.iterations.{label}.{name}"] = rec.get(name)
        out[f"state.iterations.{label}.weights"] = _weights(root, rec.get("best_ckpt_path"))
    best = _read_json(layout.deliverable)
    if not isinstance(best, dict):
        out["best_model"] = "missing or unreadable"
    else:
        for name in DELIVERABLE_FIELDS:
            out[f"best_model.{name}"] = best.get(name)
        out["best_model.weights"] = _weights(root, best.get("checkpoint"))
    images = Path((state.get("config") or {}).get("paths", {}).get("images_dir") or ws)
    run_rel = os.path.relpath(root.resolve(), images.resolve())
    for csv in sorted(root.glob(f"*/{RunLayout.DATASET}/train_combined_iter*.csv")):
        text = csv.read_text(encoding="utf-8").replace(run_rel + "/", "<RUN>/")
        key = f"dataset.{csv.relative_to(root).as_posix()}.sha256"
        out[key] = hashlib.sha256(text.encode()).hexdigest()
    summary = _read_json(layout.summary)
    if isinstance(summary, dict):
        for dotted in SUMMARY_FIELDS:
            value: Any = summary
            for part in dotted.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            out[f"pipeline_summary.{dotted}"] = value
    out["log.committed"] = sorted(ok_stages(root))
    return out


def structural_problems(root: Path) -> dict[str, list[str]]:
    """The checks that need no reference: the log and the assembled training sets."""
    problems: dict[str, list[str]] = {}
    entries, torn = _strict_log(RunLayout(root).log)
    seqs = [e.get("seq") for e in entries]
    gap = next((i for i, s in enumerate(seqs) if s != i + 1), None)
    if gap is not None:
        torn.append(f"seq not contiguous 1..{len(seqs)}: line {gap + 1} has seq {seqs[gap]!r}")
    if torn:
        problems["log.seq"] = torn
    committed = [f"{e['iter']}:{e['stage']}" for e in entries if e.get("status") == "ok"]
    twice = sorted({s for s in committed if committed.count(s) > 1})
    if twice:
        problems["log.once"] = [f"committed more than once: {', '.join(twice)}"]
    for csv in sorted(root.glob(f"*/{RunLayout.DATASET}/train_combined_iter*.csv")):
        name = csv.relative_to(root).as_posix()
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        dup_rows = int(frame.duplicated().sum())
        dup_keys = int(leakage_keys(frame).duplicated().sum())
        if dup_rows or dup_keys:
            problems.setdefault("dataset.duplicates", []).append(
                f"{name}: {dup_rows} duplicate row(s), {dup_keys} duplicate leakage key(s)"
            )
    return problems


# --- one campaign -----------------------------------------------------------------------


@dataclass
class Reference:
    target: str
    exit: int
    seconds: float
    stages: list[str]
    fingerprint: dict[str, Any]
    fastest: float = 0.0
    """The fastest uninterrupted run so far (kills are drawn within it): the reference,
    or a trial that finished before its kill (a loaded machine makes durations vary)."""


@dataclass
class Trial:
    target: str
    index: int
    signal: str
    delay_s: float
    delay_pct: float
    killed: bool = False
    first_exit: int | None = None
    interrupted: str = ""
    escalated: bool = False
    resumed: bool = False
    exit: int | None = None
    completed: bool = False
    identical: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    """One line per failed check: ``check: what differed``."""


def _setup(target: str, pristine: Path, base: Path) -> tuple[Path, Path]:
    """The workspace and config a target runs with (``run`` writes into its workspace)."""
    base.mkdir(parents=True, exist_ok=True)
    cfg = base / f"{target}.yaml"
    cfg.write_text(yaml.safe_dump(DEFT_CONFIG if target == "deft" else RUN_CONFIG), "utf-8")
    return (pristine if target == "deft" else base / "ws"), cfg


def _fresh_workspace(target: str, pristine: Path, ws: Path) -> None:
    """``run``'s Phase 1 handoff writes a spec into the workspace: each run gets a copy
    at the same path, so the reference and every trial see the same inputs."""
    if ws != pristine:
        shutil.rmtree(ws, ignore_errors=True)
        shutil.copytree(pristine, ws)


def reference(target: str, pristine: Path, base: Path) -> Reference:
    ws, cfg = _setup(target, pristine, base)
    _fresh_workspace(target, pristine, ws)
    root = base / "reference"
    shutil.rmtree(root, ignore_errors=True)
    rc, seconds = run_to_end(command(target, ws, cfg, root), base / "reference.log", 3600)
    return Reference(target, rc, seconds, ok_stages(root), fingerprint(root, ws), seconds)


def _interrupted(done: list[str], ref: Reference) -> str:
    """The stage a kill landed in: the first the reference committed that this run had not."""
    if done != ref.stages[: len(done)]:
        return "?(" + ",".join(done[-2:]) + ")"
    if len(done) >= len(ref.stages):
        return "after last stage"
    stage = ref.stages[len(done)]
    return PHASE_OF.get(ref.target, {}).get(stage, stage)


def _diff(ref: dict[str, Any], got: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted(set(ref) | set(got)):
        a, b = ref.get(key, "<absent>"), got.get(key, "<absent>")
        if a != b or type(a) is not type(b):
            lines.append(f"{key}: reference {a!r} != resumed {b!r}")
    return lines


def trial(
    target: str, index: int, rng: random.Random, ref: Reference, pristine: Path, base: Path
) -> Trial:
    ws, cfg = _setup(target, pristine, base)
    _fresh_workspace(target, pristine, ws)
    sig = SIGNALS[index % len(SIGNALS)]
    frac = rng.uniform(*DELAY_RANGE)
    delay = frac * ref.fastest
    t = Trial(target, index + 1, sig.name, round(delay, 1), round(100 * frac, 1))
    root = base / f"trial{index + 1}"
    shutil.rmtree(root, ignore_errors=True)
    argv = command(target, ws, cfg, root)
    log = base / f"trial{index + 1}.log"
    timeout_s = RUN_TIMEOUT_FACTOR * ref.seconds + 120
    t0 = time.monotonic()

    proc = _start(argv, log)
    try:
        t.first_exit = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, sig)
        t.killed = True
        t.first_exit = proc.wait()
    t.escalated = _wait_group_gone(proc.pid, GROUP_GRACE_S)
    t.interrupted = _interrupted(ok_stages(root), ref) if t.killed else "-"
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n[fault_campaign] {sig.name} at {t.delay_s}s killed={t.killed}\n")

    if t.killed:
        t.resumed = True
        t.exit, _ = run_to_end(argv, log, timeout_s)
    else:
        t.exit = t.first_exit
    t.seconds = round(time.monotonic() - t0, 1)
    if not t.killed:
        ref.fastest = min(ref.fastest, t.seconds)
    t.completed = t.exit == ref.exit
    if not t.completed:
        t.failures.append(f"completed: exit {t.exit}, reference exit {ref.exit} (see {log})")
    if t.escalated:
        t.failures.append(f"signal: the process group outlived {sig.name} by {GROUP_GRACE_S}s")
    for check, lines in structural_problems(root).items():
        t.failures += [f"{check}: {line}" for line in lines]
    diffs = _diff(ref.fingerprint, fingerprint(root, ws))
    t.failures += [f"identical: {line}" for line in diffs]
    t.identical = t.completed and not diffs
    return t


# --- the report -------------------------------------------------------------------------


def table(refs: list[Reference], trials: list[Trial]) -> str:
    head = ("trial", "target", "signal", "at", "in stage", "kills", "resumed", "completed")
    rows = [(*head, "identical")]
    for t in trials:
        at = f"{t.delay_s:.1f}s ({t.delay_pct:.0f}%)"
        rows.append(
            (
                str(t.index), t.target, t.signal, at, t.interrupted, str(int(t.killed)),
                _yn(t.resumed), _yn(t.completed), _yn(t.identical),
            )
        )  # fmt: skip
    for ref in refs:
        mine = [t for t in trials if t.target == ref.target]
        rows.append(
            (
                "total", ref.target, "", f"ref {ref.seconds:.0f}s", "",
                str(sum(t.killed for t in mine)), f"{sum(t.resumed for t in mine)}/{len(mine)}",
                f"{sum(t.completed for t in mine)}/{len(mine)}",
                f"{sum(t.identical for t in mine)}/{len(mine)}",
            )
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head) + 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _yn(flag: bool) -> str:
    return "yes" if flag else "NO"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="Trials per target (default 3).")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the kill delays.")
    parser.add_argument("--target", choices=[*TARGETS, "both"], default="deft")
    parser.add_argument("--scale", choices=["tiny", "small", "medium"], default="tiny")
    parser.add_argument("--out", type=Path, help="Keep runs and logs here (default: temp dir).")
    parser.add_argument("--keep", action="store_true", help="Keep --out even when all passed.")
    parser.add_argument(
        "--json", nargs="?", const=Path("fault_campaign.json"), type=Path, metavar="FILE",
        help="Also write the results as JSON (default FILE: fault_campaign.json).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    targets = list(TARGETS) if args.target == "both" else [args.target]
    out = (args.out or Path(tempfile.mkdtemp(prefix="fault_campaign_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    t0 = time.monotonic()

    pristine = out / "workspace"
    if not (pristine / "specs").is_dir():
        subprocess.run(
            [*cli(), "demo-workspace", str(pristine), "--scale", args.scale, "--force"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    refs: list[Reference] = []
    trials: list[Trial] = []
    for target in targets:
        ref = reference(target, pristine, out / target)
        refs.append(ref)
        print(
            f"{target}: reference exit {ref.exit} in {ref.seconds:.1f}s, "
            f"{len(ref.stages)} committed stages",
            flush=True,
        )
        for i in range(args.n):
            t = trial(target, i, rng, ref, pristine, out / target)
            trials.append(t)
            print(
                f"{target} trial {t.index}: {t.signal} at {t.delay_s}s "
                f"({'in ' + t.interrupted if t.killed else 'run already finished'}) -> "
                f"exit {t.exit}, identical={t.identical} ({t.seconds:.0f}s)",
                flush=True,
            )

    failed = [t for t in trials if not (t.completed and t.identical)]
    print()
    print(table(refs, trials))
    for t in trials:
        for line in t.failures:
            print(f"FAIL {t.target} trial {t.index} ({t.signal} in {t.interrupted}): {line}")
    wall = time.monotonic() - t0
    print(f"\nfault campaign: {len(trials) - len(failed)}/{len(trials)} identical, {wall:.0f}s")
    if args.json:
        doc = {
            "n": args.n, "seed": args.seed, "scale": args.scale, "targets": targets,
            "seconds": round(wall, 1), "out": str(out),
            "references": [asdict(r) for r in refs], "trials": [asdict(t) for t in trials],
            "all_identical": not failed,
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        print(f"results: {args.json}")
    if failed or args.keep or args.out:
        print(f"runs and logs: {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
