"""``command``: run your own generator through a file contract.

Options (``sdg.options``):

* ``command`` (required): the argv, a list of strings or one string split with
  :func:`shlex.split`. ``{request}`` and ``{out_dir}`` anywhere in an argument
  are replaced by the absolute paths of the request file and the output folder.
* ``timeout_s`` (default 3600): seconds before the command (its whole process
  group) is killed and the stage fails.
* ``labels`` (optional): the labels the generator can make (normalised: ``PASS``
  upper case, defects lower case); absent or null means any defect label. List
  ``PASS`` to make hard negatives (benign pairs for the weak PASS rows, with
  ``sdg.hard_negatives`` on): the SDG stage checks each PASS pair it gets back with the
  independent PASS check (:func:`~automl_deft.deft.sdg.difference.pass_check`) and
  leaves out those that fail.
* ``secret_env`` (optional): names of environment variables the generator reads
  whose values are secret (an API key). Their values, like those of the known
  credential variables (:data:`automl_deft.credentials.CREDENTIALS`: ``HF_TOKEN``,
  ``NGC_API_KEY``, …), are masked as ``***`` in everything the command prints
  before it is stored: the two log files, error lines, the loop's state and log,
  the report (:func:`automl_deft.redact.redact`).

The contract, version 1:

1. The backend writes ``<work_dir>/sdg_request.json``::

       {
         "version": 1,
         "iteration": 1,                      # DEFT iteration
         "seed": 0,                           # use it for a reproducible output
         "image_ext": ".png",                 # extension of every image file
         "lights": ["SolderLight"],           # one file per light for each image
         "image_size": [64, 64],              # (width, height) the model reads
         "requests": [
           {"label": "open", "count": 12,
            "weak_samples": [{"object_name": "...", "label": "open", "boardname": "E"}]}
         ],
         "clean_sources": [                   # PASS rows of the training set
           {"object_name": "...", "boardname": "A",
            "golden_files": ["/abs/..._SolderLight.png"],   # one per light, in "lights" order
            "input_files": ["/abs/..._SolderLight.png"]}
         ],
         "out_dir": "/abs/<work_dir>/out"     # empty; write everything under here
       }

   Weak samples are KPI test rows, so they carry metadata only (which labels,
   which boards the model misses): handing their image files to a generator
   would make it easy to copy test pixels into training data, a leak that the
   content checks catch only for byte-identical copies. Build on the clean
   sources (training rows) instead.
2. The command runs with ``cwd = <work_dir>`` and the environment plus
   ``AUTOML_DEFT_SDG_REQUEST`` (the request file) and ``AUTOML_DEFT_SDG_OUT``
   (``out_dir``). Its stdout and stderr go to ``<work_dir>/sdg_command.stdout.log``
   and ``sdg_command.stderr.log``, secret values masked (see ``secret_env``).
   Exit status 0 means success.
3. The command writes its images under ``out_dir`` and ``<out_dir>/generated.csv``,
   one row per pair (input = defective image, golden = its clean reference):

   * ``label``: one of the requested labels;
   * ``input_file``, ``golden_file`` (single light), or for every light ``L``
     ``input_file_L``, ``golden_file_L``: paths relative to ``out_dir``;
   * ``source`` (optional): the ``object_name`` of the clean source used; its
     ``boardname`` is copied onto the new row.

   At most ``count`` rows per label. The images may use any format Pillow reads;
   those not in ``image_ext`` are re-encoded.
4. The backend checks the CSV (columns, labels, counts, every file inside
   ``out_dir``, decodable, golden and input of one size) before it copies
   anything, then copies the files into the workspace naming rule under
   ``ctx.out_images_dir`` and returns the rows. A non-zero exit, a timeout or a
   bad CSV is a :class:`~automl_deft.errors.StageError` with the tail of stderr.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from automl_deft.deft.sdg.base import (
    PairWriter,
    SDGBackend,
    SDGContext,
    SDGRequest,
    check_options,
    clean_sources,
    object_name,
    read_image,
    register_sdg_backend,
    row_files,
    warn_short,
)
from automl_deft.errors import StageError, first_line
from automl_deft.io import atomic_write_json
from automl_deft.jsontypes import JSONObject
from automl_deft.redact import redact
from automl_deft.workspace import is_absolute, normalize_label

log = logging.getLogger(__name__)

CONTRACT_VERSION = 1
REQUEST_FILE = "sdg_request.json"
OUT_DIR = "out"
GENERATED_CSV = "generated.csv"
STDOUT_LOG = "sdg_command.stdout.log"
STDERR_LOG = "sdg_command.stderr.log"
ENV_REQUEST = "AUTOML_DEFT_SDG_REQUEST"
ENV_OUT = "AUTOML_DEFT_SDG_OUT"
DEFAULT_TIMEOUT_S = 3600.0
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 600
OPTIONS = ("command", "timeout_s", "labels", "secret_env")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OUTPUT_CHUNK = 64 * 1024
MAX_PENDING = 1024 * 1024
"""Output held back while waiting for the end of a line (a secret is masked only whole)."""
DRAIN_WAIT_S = 10.0
"""How long to wait for the output after the command ended (a detached child may hold it)."""


@dataclass(frozen=True)
class CommandOptions:
    """The parsed ``sdg.options`` of the command backend."""

    argv: tuple[str, ...]
    timeout_s: float = DEFAULT_TIMEOUT_S
    labels: frozenset[str] | None = None
    secret_env: tuple[str, ...] = ()

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> CommandOptions:
        """Check and parse the options.

        Raises:
            StageError: unknown key, missing or empty ``command``, a ``timeout_s``
                that is not a positive number, ``labels`` that is not a list of strings,
                or ``secret_env`` that is not a list of variable names.
        """
        check_options(CommandSDG.name, options, OPTIONS)
        raw = options.get("command")
        if isinstance(raw, str):
            argv = tuple(shlex.split(raw))
        elif isinstance(raw, Sequence) and all(isinstance(a, str) for a in raw):
            argv = tuple(raw)
        else:
            argv = ()
        if not argv:
            raise StageError(
                "sdg.options.command must be a non-empty list of strings or a string, e.g. "
                "['python', 'generate.py', '{request}', '{out_dir}']"
            )
        timeout = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise StageError(f"sdg.options.timeout_s must be a positive number, got {timeout!r}")
        labels = options.get("labels")
        if labels is not None:
            if isinstance(labels, str) or not isinstance(labels, Sequence):
                raise StageError(
                    f"sdg.options.labels must be a list of labels or null, got {labels!r}"
                )
            if not all(isinstance(v, str) for v in labels):
                raise StageError(f"sdg.options.labels must hold strings, got {labels!r}")
            labels = frozenset(normalize_label(v) for v in labels)
        secret_env = options.get("secret_env") or []
        if (
            isinstance(secret_env, str)
            or not isinstance(secret_env, Sequence)
            or not all(isinstance(v, str) and ENV_NAME.match(v) for v in secret_env)
        ):
            raise StageError(
                "sdg.options.secret_env must be a list of environment variable names, e.g. "
                f"[MY_API_KEY], got {secret_env!r}"
            )
        return cls(argv, float(timeout), labels, tuple(secret_env))


@register_sdg_backend
class CommandSDG(SDGBackend):
    """Runs an external generator (see the module docstring for the contract)."""

    name = "command"

    def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
        """``sdg.options.labels``, or None (any label) when not set.

        Raises:
            StageError: bad options.
        """
        return CommandOptions.parse(ctx.options).labels

    def generate(self, requests: Sequence[SDGRequest], ctx: SDGContext) -> pd.DataFrame:
        """Write the request, run the command, check and import its pairs.

        Raises:
            StageError: bad options; the command cannot start, fails or times out;
                ``generated.csv`` is missing or breaks the contract.
        """
        opts = CommandOptions.parse(ctx.options)
        writer = PairWriter(ctx, self.name)
        wanted = [r for r in requests if r.count > 0]
        if not wanted:
            return writer.frame()
        work = Path(ctx.work_dir).resolve()
        out_dir = work / OUT_DIR
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        request_file = work / REQUEST_FILE
        sources = clean_sources(ctx)
        atomic_write_json(request_file, _request(wanted, ctx, sources, out_dir))
        _run(opts, work, request_file, out_dir)
        pairs = _read_generated(out_dir, wanted, ctx.naming.lights, ctx.naming.ext)
        boards = (
            dict(zip(sources["object_name"], sources["boardname"], strict=True))
            if "boardname" in sources.columns
            else {}
        )
        first = {r.label: r.first_index for r in wanted}
        for pair in pairs:
            writer.write(
                object_name(ctx, pair.label, writer.claim(pair.label, 1, first[pair.label])[0]),
                pair.label,
                pair.inputs,
                pair.goldens,
                boardname=str(boards.get(pair.source, "")),
                source=pair.source,
            )
        made = Counter(p.label for p in pairs)
        for r in wanted:
            warn_short(self.name, r, made[r.label], "the command generated fewer")
        return writer.frame()


def _request(
    requests: Sequence[SDGRequest], ctx: SDGContext, sources: pd.DataFrame, out_dir: Path
) -> JSONObject:
    def meta(row: pd.Series, key: str) -> str:
        return str(row[key]) if key in row else ""

    return {
        "version": CONTRACT_VERSION,
        "iteration": ctx.iteration,
        "seed": ctx.seed,
        "image_ext": ctx.naming.ext,
        "lights": list(ctx.naming.lights),
        "image_size": list(ctx.image_size),
        "requests": [
            {
                "label": r.label,
                "count": r.count,
                "weak_samples": [
                    {
                        "object_name": meta(row, "object_name"),
                        "label": normalize_label(meta(row, "label")),
                        "boardname": meta(row, "boardname"),
                    }
                    for _, row in r.weak_rows.iterrows()
                ],
            }
            for r in requests
        ],
        "clean_sources": [
            {
                "object_name": meta(row, "object_name"),
                "boardname": meta(row, "boardname"),
                "golden_files": [str(p.resolve()) for p in row_files(ctx, row, "golden_path")],
                "input_files": [str(p.resolve()) for p in row_files(ctx, row, "input_path")],
            }
            for _, row in sources.iterrows()
        ],
        "out_dir": str(out_dir),
    }


def _run(opts: CommandOptions, work: Path, request_file: Path, out_dir: Path) -> None:
    """Run the command in its own process group; a timeout kills the whole group.

    Its output reaches the log files through :func:`_copy_redacted`, so no secret
    value is ever written to disk (nor into the errors that quote the log).
    """
    argv = [
        a.replace("{request}", str(request_file)).replace("{out_dir}", str(out_dir))
        for a in opts.argv
    ]
    env = {**os.environ, ENV_REQUEST: str(request_file), ENV_OUT: str(out_dir)}
    secret = opts.secret_env
    stderr_log = work / STDERR_LOG
    # Closed by the copies (or below when the command cannot start).
    logs = [open(work / name, "wb") for name in (STDOUT_LOG, STDERR_LOG)]  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        for fh in logs:
            fh.close()
        raise StageError(
            redact(
                f"SDG command {argv[0]!r} cannot start ({exc.strerror or exc}); "
                "fix sdg.options.command",
                extra_names=secret,
            )
        ) from None
    assert proc.stdout is not None and proc.stderr is not None  # both are pipes
    copies = [
        threading.Thread(
            target=_copy_redacted, args=(pipe, fh, secret), name=f"sdg-{name}", daemon=True
        )
        for pipe, fh, name in ((proc.stdout, logs[0], "stdout"), (proc.stderr, logs[1], "stderr"))
    ]
    for copy in copies:
        copy.start()
    try:
        rc = proc.wait(timeout=opts.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        _join(copies)
        raise StageError(
            redact(
                f"SDG command timed out after {opts.timeout_s:g} s{_tail(stderr_log)}; "
                f"raise sdg.options.timeout_s or speed up the generator (log: {stderr_log})",
                extra_names=secret,
            )
        ) from None
    except BaseException:  # e.g. KeyboardInterrupt: never leave the generator running
        _kill_group(proc)
        _join(copies)
        raise
    _join(copies)
    if rc != 0:
        raise StageError(
            redact(
                f"SDG command exited with status {rc}{_tail(stderr_log)}; "
                f"fix the generator (log: {stderr_log})",
                extra_names=secret,
            )
        )


def _copy_redacted(pipe: IO[bytes], out: IO[bytes], secret_env: Sequence[str]) -> None:
    """Copy ``pipe`` to ``out`` a line at a time with every secret value masked.

    Whole lines are masked (a value split across reads is still found); a line longer
    than :data:`MAX_PENDING` is written in pieces.
    """

    def write(data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        out.write(redact(text, extra_names=secret_env).encode("utf-8", "surrogateescape"))
        out.flush()

    with pipe, out:
        pending = b""
        while chunk := pipe.read1(OUTPUT_CHUNK):  # type: ignore[attr-defined]
            pending += chunk
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1
            if not cut and len(pending) >= MAX_PENDING:
                cut = len(pending)
            if cut:
                write(pending[:cut])
                pending = pending[cut:]
        if pending:
            write(pending)


def _join(copies: Sequence[threading.Thread]) -> None:
    for copy in copies:
        copy.join(DRAIN_WAIT_S)
        if copy.is_alive():
            log.warning(
                "the SDG command's %s is still open (a child process left running?); "
                "not waiting for the rest of it",
                copy.name.removeprefix("sdg-"),
            )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _tail(path: Path) -> str:
    """``": <last lines of stderr>"`` on one line, or nothing when stderr is empty."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()][-STDERR_TAIL_LINES:]
    tail = " | ".join(lines)
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "..." + tail[-STDERR_TAIL_CHARS:]
    return f": {tail}" if tail else ""


@dataclass(frozen=True)
class _Pair:
    label: str
    inputs: list[Path | np.ndarray]
    goldens: list[Path | np.ndarray]
    source: str


def _read_generated(
    out_dir: Path, requests: Sequence[SDGRequest], lights: Sequence[str], ext: str
) -> list[_Pair]:
    """The pairs of ``generated.csv``, checked against the contract (nothing copied yet)."""
    csv = out_dir / GENERATED_CSV
    if not csv.is_file():
        raise StageError(
            f"SDG command finished but wrote no {csv}; write one row per pair with columns "
            "label, input_file, golden_file"
        )
    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = first_line(exc)
        raise StageError(f"{csv} cannot be parsed ({first}); fix the generator") from None
    columns = _file_columns(frame, lights, csv)
    asked: Counter[str] = Counter()
    for r in requests:
        asked[r.label] += r.count
    made: Counter[str] = Counter()
    pairs = []
    for line, row in enumerate(frame.to_dict("records"), start=2):
        label = normalize_label(row["label"])
        if label not in asked:
            raise StageError(
                f"{csv} line {line}: label {row['label']!r} was not requested "
                f"(requested: {', '.join(sorted(asked))}); fix the generator"
            )
        made[label] += 1
        if made[label] > asked[label]:
            raise StageError(
                f"{csv}: more than the {asked[label]} requested {label!r} pairs; "
                "generate at most 'count' pairs per request"
            )
        files = {
            kind: [_checked_file(out_dir, row[c], csv, line) for c in cols]
            for kind, cols in columns.items()
        }
        for light, fi, fg in zip(lights, files["input"], files["golden"], strict=True):
            si, sg = _size(fi, csv, line), _size(fg, csv, line)
            if si != sg:
                raise StageError(
                    f"{csv} line {line}: {light} input is {si[0]}x{si[1]} but golden "
                    f"{sg[0]}x{sg[1]}; write both at one size"
                )
        source = str(row["source"]).strip() if "source" in frame.columns else ""
        pairs.append(
            _Pair(
                label,
                [_importable(f, ext) for f in files["input"]],
                [_importable(f, ext) for f in files["golden"]],
                source,
            )
        )
    return pairs


def _file_columns(frame: pd.DataFrame, lights: Sequence[str], csv: Path) -> dict[str, list[str]]:
    """The file columns of each kind, one per light, in light order."""
    per_light = {
        "input": [f"input_file_{light}" for light in lights],
        "golden": [f"golden_file_{light}" for light in lights],
    }
    if all(c in frame.columns for cols in per_light.values() for c in cols):
        columns = per_light
    elif len(lights) == 1 and {"input_file", "golden_file"} <= set(frame.columns):
        columns = {"input": ["input_file"], "golden": ["golden_file"]}
    else:
        expected = ", ".join(["label", *per_light["input"], *per_light["golden"]])
        if len(lights) == 1:
            expected = "label, input_file, golden_file"
        raise StageError(
            f"{csv} has columns {', '.join(frame.columns) or 'none'}; expected {expected}"
        )
    if "label" not in frame.columns:
        raise StageError(f"{csv} has no 'label' column; add the label of each pair")
    return columns


def _checked_file(out_dir: Path, rel: str, csv: Path, line: int) -> Path:
    rel = str(rel).strip()
    if not rel or is_absolute(rel):
        raise StageError(
            f"{csv} line {line}: file {rel!r} must be a path relative to {out_dir}; fix the "
            "generator"
        )
    path = (out_dir / rel).resolve()
    if not path.is_relative_to(out_dir.resolve()):
        raise StageError(f"{csv} line {line}: file {rel!r} is outside {out_dir}; keep it inside")
    if not path.is_file():
        raise StageError(f"{csv} line {line}: file {rel!r} does not exist in {out_dir}")
    return path


def _size(path: Path, csv: Path, line: int) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise StageError(f"{csv} line {line}: {path.name} cannot be decoded as an image") from None


def _importable(path: Path, ext: str) -> Path | np.ndarray:
    """The file itself when it is in ``ext`` already (copied byte for byte), else its pixels."""
    return path if path.suffix.lower() == ext.lower() else read_image(path)
