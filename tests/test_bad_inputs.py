"""Every bad input is one line with exit status 2: no traceback, nothing half-written.

A data-driven corpus: each case is a small mutation of a copy of the tiny
workspace (or of what a command is given), the command (run in-process with
click's CliRunner), the message fragment its one ``error:`` line must hold, and
what it may leave behind (by default: no file created or changed, no temporary
file, no new folder). A few cases passed before the corpus existed (a bad CSV
column, a corrupt checkpoint, an unknown spec key); they stay as the yardstick.

Read-only and full results directories are injected (:func:`fail_writes_under`),
so the corpus means the same as root (whom ``chmod`` does not stop) and as a user;
one subprocess test checks a real read-only folder where the platform allows it.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner, Result

from automl_deft.cli import cli, os_error_line
from automl_deft.workspace import Workspace, read_dataset_csv

CACHE_DIR = ".automl-deft-cache"
"""The workspace's image cache (a command may fill it; it is no output)."""

# --- helpers ---------------------------------------------------------------------------------


def invoke(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result: Result, fragment: str) -> str:
    """Exit status 2, no traceback, exactly one ``error:`` line on stderr holding ``fragment``."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        pytest.fail(f"exception escaped the CLI (exit {result.exit_code}):\n{tb}")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.output
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (the workspace's image cache left out) → content digest;
    every folder → ``"<dir>"``."""
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if CACHE_DIR in p.relative_to(root).parts:
            continue
        if p.is_dir():
            out[rel] = "<dir>"
        elif p.is_file():
            out[rel] = hashlib.sha1(p.read_bytes(), usedforsecurity=False).hexdigest()
    return out


def assert_nothing_half_written(
    before: dict[str, str], root: Path, allowed: tuple[str, ...] = ()
) -> None:
    """No temporary file anywhere, no file changed, nothing new but ``allowed`` (globs)."""
    after = snapshot(root)
    temps = [p for p in after if p.endswith(".tmp")]
    assert not temps, f"temporary files left: {temps}"
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, f"changed or removed: {changed}"
    new = [p for p in after if p not in before and not any(fnmatch.fnmatch(p, a) for a in allowed)]
    assert not new, f"half-written output left: {new}"


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (a few bytes: PIL refuses or warns
    on opening it, by its decompression-bomb limit, before it decodes anything)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def image_of(ws: Path, csv: Path, *, min_bytes: int = 0) -> Path:
    """An input image of ``csv`` (the first one of at least ``min_bytes``)."""
    frame = read_dataset_csv(csv, role="test")
    images = Workspace.at(ws).images_dir
    for rel, obj in zip(frame["input_path"], frame["object_name"], strict=True):
        p = images / rel / f"{obj}_SolderLight.png"
        if p.stat().st_size >= min_bytes:
            return p
    raise AssertionError(f"no image of {min_bytes}+ bytes in {csv}")


def fail_writes_under(monkeypatch: pytest.MonkeyPatch, root: Path, code: int) -> None:
    """Make every write under ``root`` fail with ``code`` (EACCES: a read-only folder;
    ENOSPC: a full disk, whose write() names no file), whoever the test runs as."""
    root = Path(os.path.abspath(root))
    real_mkstemp, real_mkdir, real_open = tempfile.mkstemp, os.mkdir, builtins.open

    def inside(p: Any) -> bool:
        try:
            return Path(os.path.abspath(os.fsdecode(p))).is_relative_to(root)
        except TypeError:
            return False

    def refuse(p: Any | None) -> None:
        args = [] if p is None else [os.fsdecode(p)]
        raise OSError(code, os.strerror(code), *args)

    def mkstemp(suffix: Any = None, prefix: Any = None, dir: Any = None, text: bool = False) -> Any:
        if dir is not None and inside(dir):
            refuse(None if code == errno.ENOSPC else Path(dir) / f"{prefix or ''}x{suffix or ''}")
        return real_mkstemp(suffix, prefix, dir, text)

    def mkdir(path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        if inside(path) and not os.path.exists(path):
            refuse(path)
        real_mkdir(path, mode, **kwargs)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int) and any(c in mode for c in "wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained checkpoint of the tiny workspace's spec (no training: the corpus is fast)."""
    from automl_deft.model.checkpoint import save_checkpoint
    from automl_deft.model.network import ChangeNetLite
    from automl_deft.model.spec import load_spec

    torch.manual_seed(0)
    spec = load_spec(Workspace.at(tiny_ws).spec_path)
    model = ChangeNetLite(spec).eval()
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(
        path,
        {
            "state_dict": model.state_dict(),
            "spec": spec.to_dict(),
            "arch": model.arch,
            "epoch": 0,
            "step": 0,
            "metrics": {},
        },
    )
    return path


@pytest.fixture(scope="module")
def scored_csv(tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The KPI set with made-up scores (what ``kpi`` reads)."""
    frame = pd.read_csv(Workspace.at(tiny_ws).kpi_csv, dtype=str, keep_default_na=False)
    frame["siamese_score"] = np.random.default_rng(0).random(len(frame))
    path = tmp_path_factory.mktemp("scored") / "kpi_inference.csv"
    frame.to_csv(path, index=False)
    return path


@dataclass
class Ctx:
    """What a case may mutate and point at: everything under ``tmp`` is snapshotted."""

    tmp: Path
    ws: Path
    checkpoint: Path
    scored: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def train_csv(self) -> Path:
        return Workspace.at(self.ws).train_csv

    @property
    def kpi_csv(self) -> Path:
        return Workspace.at(self.ws).kpi_csv

    @property
    def spec(self) -> Path:
        return Workspace.at(self.ws).spec_path


@dataclass
class Run:
    """A case's command, the fragments its error line must hold, and what it may leave."""

    args: list[object]
    fragments: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    """Globs (relative to ``tmp``) of files the failed command may leave (none by default)."""
    check: Callable[[], None] | None = None
    inject: tuple[Path, int] | None = None
    """Fail every write under this folder with this errno (see :func:`fail_writes_under`)."""


CASES: dict[str, Callable[[Ctx], Run]] = {}
PASSED_BEFORE: set[str] = set()
"""Cases that were already one line + exit 2 before this corpus (the yardstick)."""


def case(name: str, *, passed_before: bool = False) -> Callable[[Callable[[Ctx], Run]], Any]:
    def register(fn: Callable[[Ctx], Run]) -> Callable[[Ctx], Run]:
        CASES[name] = fn
        if passed_before:
            PASSED_BEFORE.add(name)
        return fn

    return register


EPOCH = ("--set", "train.num_epochs=1")


# --- 1. missing, zero-byte and truncated images ------------------------------------------------


@case("train-missing-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.train_csv)
    image.unlink()
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (image.name,))


@case("train-zero-byte-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.train_csv)
    image.write_bytes(b"")
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (image.name, "cannot be decoded"))


@case("train-truncated-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.train_csv, min_bytes=1024)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (image.name, "cannot be decoded"))


@case("infer-missing-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.kpi_csv)
    image.unlink()
    return Run(["infer", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv"], (image.name, "missing"))


@case("infer-zero-byte-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.kpi_csv)
    image.write_bytes(b"")
    return Run(
        ["infer", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv"],
        (image.name, "cannot be decoded"),
    )


@case("evaluate-truncated-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.kpi_csv, min_bytes=1024)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    args = ["evaluate", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv", "--plot", c.out / "p.png"]
    return Run(args, (image.name, "cannot be decoded"))


@case("zero-shot-missing-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.kpi_csv)
    image.unlink()
    return Run(["zero-shot", c.kpi_csv, "-o", c.out / "s.csv"], (image.name, "missing"))


@case("deft-missing-image")
def _(c: Ctx) -> Run:
    image = image_of(c.ws, c.train_csv)
    image.unlink()
    run = c.out / "run"

    def check() -> None:
        # Refused before the first stage (nothing to resume), or a recorded hard stop;
        # never a stage left in progress by a crash.
        state = run / "deft_state.json"
        if state.is_file():
            doc = json.loads(state.read_text(encoding="utf-8"))
            assert doc["status"] == "hard_stopped", doc["status"]
            assert image.name in doc["stop_reason"]

    args = ["deft", c.ws, "--results", run, "--num-epochs", "1", "--max-iterations", "1"]
    return Run(args, (image.name,), allowed=("out/*", "out/**"), check=check)


# --- 2. images over PIL's decompression-bomb limit -----------------------------------------------


def _bomb(c: Ctx, csv: Path, pixels: tuple[int, int]) -> Path:
    image = image_of(c.ws, csv)
    png_header(image, *pixels)
    return image


BOMB = (20000, 20000)  # over twice PIL's limit: DecompressionBombError
BOMB_WARNING = (10000, 10000)  # over the limit, under twice it: DecompressionBombWarning


@case("validate-bomb")
def _(c: Ctx) -> Run:
    return Run(["validate", c.ws], (_bomb(c, c.train_csv, BOMB).name,))


@case("preflight-bomb")
def _(c: Ctx) -> Run:
    return Run(["preflight", c.ws], (_bomb(c, c.train_csv, BOMB).name,))


@case("train-bomb")
def _(c: Ctx) -> Run:
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (_bomb(c, c.train_csv, BOMB).name,))


@case("train-bomb-warning")
def _(c: Ctx) -> Run:
    image = _bomb(c, c.train_csv, BOMB_WARNING)
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (image.name,))


@case("infer-bomb")
def _(c: Ctx) -> Run:
    image = _bomb(c, c.kpi_csv, BOMB)
    args = ["infer", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv"]
    return Run(args, (image.name, "too large"))


@case("infer-bomb-warning")
def _(c: Ctx) -> Run:
    image = _bomb(c, c.kpi_csv, BOMB_WARNING)
    args = ["infer", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv"]
    return Run(args, (image.name, "too large"))


@case("validate-bomb-warning", passed_before=True)
def _(c: Ctx) -> Run:
    return Run(["validate", c.ws], (_bomb(c, c.train_csv, BOMB_WARNING).name,))


# --- 3. read-only or full results directories, outputs in the way --------------------------------


@case("kpi-read-only-results")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    args = ["kpi", c.scored, "--sweep-csv", c.out / "s.csv", "--plot", c.out / "p.png"]
    return Run(
        args,
        ("cannot write", str(c.out / "s.csv"), "Permission denied", f"chmod u+w {c.out}"),
        inject=(c.out, errno.EACCES),
    )


@case("infer-full-disk")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    return Run(
        ["infer", c.checkpoint, c.kpi_csv, "-o", c.out / "s.csv"],
        ("cannot write", str(c.out / "s.csv"), "No space left on device"),
        inject=(c.out, errno.ENOSPC),
    )


@case("evaluate-read-only-results")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    return Run(
        ["evaluate", c.checkpoint, c.kpi_csv, "--sweep-csv", c.out / "w.csv"],
        ("cannot write", "w.csv", "Permission denied"),
        inject=(c.out, errno.EACCES),
    )


@case("deft-read-only-results")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    return Run(
        ["deft", c.ws, "--results", c.out / "run", "--num-epochs", "1"],
        ("cannot write", str(c.out / "run"), "Permission denied"),
        inject=(c.out, errno.EACCES),
    )


@case("deft-resume-read-only-results")
def _(c: Ctx) -> Run:
    from automl_deft.deft.config import DeftConfig
    from automl_deft.deft.loop import workspace_inputs
    from automl_deft.deft.state import IN_PROGRESS, DeftState

    run = c.out / "run"
    DeftState.create(run, config=DeftConfig(num_epochs=1), inputs=workspace_inputs(c.ws))

    def check() -> None:
        assert DeftState.load(run, reconcile=False).status == IN_PROGRESS  # resumable

    return Run(
        ["deft", c.ws, "--resume", run],
        ("cannot write", str(run), "Permission denied"),
        inject=(run, errno.EACCES),
        check=check,
    )


@case("demo-workspace-read-only")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    return Run(
        ["demo-workspace", c.out / "ws", "--scale", "tiny"],
        ("cannot write", "Permission denied"),
        inject=(c.out, errno.EACCES),
    )


@case("train-out-is-a-file")
def _(c: Ctx) -> Run:
    c.out.write_text("not a folder\n")
    return Run(["train", c.ws, *EPOCH, "-o", c.out], (str(c.out), "a file of that name exists"))


@case("deft-results-is-a-file")
def _(c: Ctx) -> Run:
    c.out.write_text("not a folder\n")
    args = ["deft", c.ws, "--results", c.out, "--num-epochs", "1"]
    return Run(args, (str(c.out), "a file of that name exists"))


@case("kpi-plot-is-a-directory")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    args = ["kpi", c.scored, "--sweep-csv", c.out / "s.csv", "--plot", c.out]
    return Run(args, (str(c.out), "is a directory"))


@case("infer-out-is-a-directory")
def _(c: Ctx) -> Run:
    c.out.mkdir()
    return Run(["infer", c.checkpoint, c.kpi_csv, "-o", c.out], (str(c.out), "is a directory"))


# --- 4. specs, --set values and states that cannot be read ---------------------------------------


@case("spec-not-utf8")
def _(c: Ctx) -> Run:
    c.spec.write_bytes(b"train:\n  num_epochs: 1  # caf\xe9\n")
    return Run(["train", c.ws, "-o", c.out], (str(c.spec), "not UTF-8", "line 2"))


@case("set-unparsable-value")
def _(c: Ctx) -> Run:
    return Run(["train", c.ws, "--set", "train.num_epochs=[[[", "-o", c.out], ("not valid YAML",))


@case("spec-nested-too-deeply")
def _(c: Ctx) -> Run:
    c.spec.write_text("train: " + "[" * 3000 + "]" * 3000 + "\n")
    return Run(["train", c.ws, "-o", c.out], (str(c.spec), "nested too deeply"))


@case("state-without-config")
def _(c: Ctx) -> Run:
    from automl_deft.deft.config import DeftConfig
    from automl_deft.deft.loop import workspace_inputs
    from automl_deft.deft.state import DeftState

    run = c.out / "run"
    DeftState.create(run, config=DeftConfig(num_epochs=1), inputs=workspace_inputs(c.ws))
    state = run / "deft_state.json"
    doc = json.loads(state.read_text(encoding="utf-8"))
    del doc["config"]
    state.write_text(json.dumps(doc), encoding="utf-8")
    return Run(["deft", c.ws, "--resume", run], (str(state), "'config'"))


# --- 5. YAML anchors and aliases (a "billion laughs" grows to GBs in deep_merge) ----------------

ALIASES = "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcd", "bcde", strict=True)
)
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + ALIASES
"""9**5 strings once expanded (small enough to be harmless on a reader that expands it)."""


def _alias_file(c: Ctx) -> Path:
    path = c.tmp / "bomb.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    return path


ALIAS_MESSAGE = "YAML aliases/anchors are not allowed"


@case("spec-alias-bomb")
def _(c: Ctx) -> Run:
    return Run(["train", c.ws, "-s", _alias_file(c), "-o", c.out], (ALIAS_MESSAGE, "line 1"))


@case("deft-config-alias-bomb")
def _(c: Ctx) -> Run:
    args = ["deft", c.ws, "-c", _alias_file(c), "--results", c.out / "run"]
    return Run(args, (ALIAS_MESSAGE, "DEFT config"))


@case("run-config-alias-bomb")
def _(c: Ctx) -> Run:
    return Run(["preflight", c.ws, "-c", _alias_file(c)], (ALIAS_MESSAGE, "run config"))


@case("set-alias")
def _(c: Ctx) -> Run:
    args = ["train", c.ws, *EPOCH, "--set", "model=[&a 1, *a]", "-o", c.out]
    return Run(args, (ALIAS_MESSAGE, "--set"))


# --- the yardstick: cases that were already one line + exit 2 ------------------------------------


@case("train-csv-without-label-column", passed_before=True)
def _(c: Ctx) -> Run:
    frame = pd.read_csv(c.train_csv, dtype=str, keep_default_na=False)
    frame.drop(columns=["label"]).to_csv(c.train_csv, index=False)
    return Run(["train", c.ws, *EPOCH, "-o", c.out], ("label",))


@case("evaluate-corrupt-checkpoint", passed_before=True)
def _(c: Ctx) -> Run:
    bad = c.tmp / "bad.pt"
    bad.write_bytes(b"garbage")
    return Run(["evaluate", bad, c.kpi_csv, "-o", c.out / "s.csv"], ("bad.pt", "checkpoint"))


@case("train-unknown-spec-key", passed_before=True)
def _(c: Ctx) -> Run:
    args = ["train", c.ws, "--set", "train.bogus=1", "-o", c.out]
    return Run(args, ("unknown spec key", "train.bogus"))


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_half_written(
    name: str,
    tiny_ws_copy: Path,
    tmp_path: Path,
    checkpoint: Path,
    scored_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ctx = Ctx(tmp=tmp_path, ws=tiny_ws_copy, checkpoint=checkpoint, scored=scored_csv)
    run = CASES[name](ctx)
    before = snapshot(tmp_path)
    with monkeypatch.context() as patch:
        if run.inject is not None:
            fail_writes_under(patch, *run.inject)
        result = invoke(*run.args)
    line = assert_one_line_error(result, run.fragments[0])
    for fragment in run.fragments[1:]:
        assert fragment in line, line
    assert_nothing_half_written(before, tmp_path, run.allowed)
    if run.check is not None:
        run.check()


def test_the_corpus_covers_every_kind_of_bad_input() -> None:
    kinds = ("image", "bomb", "read-only", "full-disk", "is-a-", "utf8", "set-", "config", "alias")
    for kind in kinds:
        assert any(kind in name for name in CASES), kind
    assert set(CASES) > PASSED_BEFORE


# --- what the corpus does not show by itself ------------------------------------------------------


def test_debug_shows_the_os_error(
    tmp_path: Path, scored_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    fail_writes_under(monkeypatch, out, errno.EACCES)
    with pytest.raises(PermissionError):
        CliRunner().invoke(
            cli,
            ["--debug", "kpi", str(scored_csv), "--sweep-csv", str(out / "s.csv")],
            catch_exceptions=False,
        )


def test_os_errors_that_name_no_file_are_not_swallowed() -> None:
    assert os_error_line(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) is None
    assert os_error_line(OSError("image file is truncated")) is None  # a library's message
    full = os_error_line(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert full is not None and "No space left on device" in full


def test_a_real_read_only_folder(tmp_path: Path, scored_csv: Path) -> None:
    """As a subprocess: the real exit status, and stderr is the one line (no traceback)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cmd = [sys.executable, "-m", "automl_deft.cli", "kpi", str(scored_csv)]
    cmd += ["--sweep-csv", str(ro / "s.csv"), "--plot", str(ro / "p.png")]
    if os.geteuid() == 0:  # chmod does not stop root: run as an unprivileged user instead
        unshare = shutil.which("unshare")
        if unshare is None:
            pytest.skip("running as root without unshare(1)")
        cmd = [unshare, "--user", "--map-user=1000", "--map-group=1000", *cmd]
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    ro.chmod(0o555)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    finally:
        ro.chmod(0o755)
    if proc.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespaces here: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot write {ro / 's.csv'}: Permission denied (make {ro} writable for this "
        f"user, e.g. chmod u+w {ro}, or choose another output directory with -o/--results)"
    ]
    assert list(ro.iterdir()) == []


def test_a_stage_that_meets_a_missing_image_hard_stops_the_loop(
    tiny_ws_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop itself (its workspace pre-check left out): the stage's one-line reason is
    recorded as a hard stop, not a crash that leaves the stage in progress."""
    from automl_deft.deft import loop
    from automl_deft.deft.config import DeftConfig

    monkeypatch.setattr(loop, "check_inputs", lambda *a, **k: None, raising=False)
    image = image_of(tiny_ws_copy, Workspace.at(tiny_ws_copy).train_csv)
    image.unlink()
    run = tmp_path / "run"
    cfg = DeftConfig(num_epochs=1, max_iterations=1)
    outcome = loop.run_deft(tiny_ws_copy, cfg, results_dir=run, status=None)
    assert outcome.status == "hard_stopped"
    doc = json.loads((run / "deft_state.json").read_text(encoding="utf-8"))
    assert doc["status"] == "hard_stopped"
    assert image.name in doc["stop_reason"] and "\n" not in doc["stop_reason"]
    assert doc["iterations"]["baseline"]["error"]["stage"] == "train"


def test_an_image_error_a_stage_meets_is_a_stage_error(tmp_path: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    from automl_deft.deft.stages import _input_errors_stop
    from automl_deft.errors import StageError

    class FakeStages:
        images_dir = tmp_path

    def raising(exc: BaseException) -> Callable[[Any, str], Any]:
        @_input_errors_stop
        def stage(self: Any, label: str) -> Any:
            raise exc

        return stage

    image = str(tmp_path / "a" / "x_SolderLight.png")
    for exc in (
        FileNotFoundError(errno.ENOENT, "No such file or directory", image),
        UnidentifiedImageError(f"cannot identify image file {image!r}"),
        Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit"),
    ):
        with pytest.raises(StageError):
            raising(exc)(FakeStages(), "iter1")
    # Not an input image (a results file): stays an OSError, the stage stays resumable.
    elsewhere = FileNotFoundError(errno.ENOENT, "No such file or directory", "/elsewhere/r.csv")
    with pytest.raises(FileNotFoundError):
        raising(elsewhere)(FakeStages(), "iter1")


def test_yaml_aliases_are_refused_before_anything_expands() -> None:
    from automl_deft.errors import SpecError
    from automl_deft.yamlio import dump_yaml, load_yaml

    laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
    assert len(laughs) < 400  # 9**9 strings once expanded
    with pytest.raises(SpecError, match=r"aliases/anchors are not allowed .*\(line 1\)"):
        load_yaml(laughs, what="spec file x.yaml")
    with pytest.raises(SpecError, match=r"\(line 2\)"):
        load_yaml("a: 1\nb: {<<: *x}\n", what="spec")
    shared = [1, 2]
    assert load_yaml(dump_yaml({"a": shared, "b": shared}), what="t") == {"a": [1, 2], "b": [1, 2]}


def test_a_checkpoint_written_to_a_full_disk_is_a_full_disk_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.save reports a full disk as a RuntimeError ("unexpected pos"): the write is
    named as what it is (ENOSPC, the file), so the CLI can say it in one line."""
    from automl_deft.model.checkpoint import save_checkpoint

    class Full:
        f_bavail, f_frsize = 0, 4096

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", no_room)
    monkeypatch.setattr(os, "statvfs", lambda _: Full())
    target = tmp_path / "best_val.pt"
    with pytest.raises(OSError) as caught:
        save_checkpoint(target, {"state_dict": {}})
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert "No space left on device" in (os_error_line(caught.value) or "")
    assert list(tmp_path.iterdir()) == []
