"""The AOI workspace: layout, CSV schema, image path resolution, validation, leakage.

A workspace is a directory laid out the way the original workflow expects::

    <ws>/train/base/training_set.csv     base training set
    <ws>/train/base/validation_set.csv   validation set (HPO metric, checkpoint selection)
    <ws>/kpi/testing_set.csv             KPI test set (never used for HPO; it steers DEFT)
    <ws>/kpi/holdout_set.csv             untouched hold-out (optional; read by no phase)
    <ws>/kpi/images/                     images root for every CSV
    <ws>/inputs/mining_pool.csv          labelled mining pool (images under the same root)
    <ws>/specs/baseline_spec.yaml        the baseline training spec

The KPI test set steers the workflow (DEFT mines and synthesises around its
failures, the deliverable is chosen on it), so its FAR is optimistic. The
hold-out comes from the same distribution and is read by no phase: only the
final step scores it (through :func:`automl_deft.holdout.read_holdout`), and
only validation and leakage checks look at it otherwise. That is why
:meth:`Workspace.csvs` leaves it out unless asked (``include_holdout=True``).
``automl-deft split-holdout`` makes one from an existing KPI set.

CSV paths are *directories* relative to the images root; the file of a row for a
given light is ``{images_dir}/{input_path}/{object_name}_{light}{ext}``.
:func:`resolve_image_path` is the only place that rule is written down. A path
must stay inside the workspace: absolute paths are refused by the schema check,
``..`` or a symlink that leads out by :func:`check_image_locations` (a DEFT run
directory may hold the generated images its CSVs name).

Decoding and hashing every image is what makes a check slow, so
:class:`ImageIndex` keeps each file's digest and size in
``<ws>/.automl-deft-cache/hashes.json`` (:data:`HASH_CACHE`), keyed by path, size
and ``mtime_ns``: the folder is safe to delete and ignores itself in git.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from automl_deft.errors import WorkspaceError, first_line
from automl_deft.io import atomic_write_text

log = logging.getLogger(__name__)

REQUIRED_COLUMNS: tuple[str, ...] = ("input_path", "golden_path", "label", "object_name")
"""Columns every dataset CSV must have."""

LEAKAGE_KEY_COLUMNS: tuple[str, ...] = (
    "input_path",
    "golden_path",
    "label",
    "object_name",
    "boardname",
)
"""The row identity used for leakage checks (``boardname`` is optional)."""

PASS_LABEL = "PASS"
SCORE_COLUMN = "siamese_score"

TRAIN_CSV = "train/base/training_set.csv"
VAL_CSV = "train/base/validation_set.csv"
KPI_CSV = "kpi/testing_set.csv"
POOL_CSV = "inputs/mining_pool.csv"
HOLDOUT_CSV = "kpi/holdout_set.csv"
HOLDOUT_ROLE = "holdout"
"""The hold-out's role name (in validation tables and leakage messages)."""
IMAGES_DIR = "kpi/images"
SPEC_FILE = "specs/baseline_spec.yaml"
CACHE_DIR = ".automl-deft-cache"
"""A workspace's cache folder (safe to delete; it holds a ``.gitignore`` of ``*``)."""
HASH_CACHE = f"{CACHE_DIR}/hashes.json"
"""Per image file: content digest and decoded size, keyed by (path, size, mtime_ns)."""
HASH_CACHE_VERSION = 1
PLACEHOLDER_LABELS: frozenset[str] = frozenset(
    {"", "nan", "none", "null", "na", "n/a", "nil", "?", "-", "unknown", "undefined", "todo", "tbd"}
)
"""Normalised labels that look like a missing value, not a defect class."""

MAX_LISTED = 5
"""How many offending rows/files an error message names before it just counts."""


def is_pass(label: object) -> bool:
    """Ground truth of one label: ``PASS`` (any case, stripped) is good, anything else a defect."""
    return str(label).strip().upper() == PASS_LABEL


def normalize_label(label: object) -> str:
    """``PASS`` stays upper case; every defect label is stripped and lower-cased."""
    return PASS_LABEL if is_pass(label) else str(label).strip().lower()


def defect_mask(labels: Iterable[object]) -> np.ndarray:
    """Boolean array, True where the label is a defect (the KPI's positive class)."""
    return np.array([not is_pass(v) for v in labels], dtype=bool)


@dataclass(frozen=True)
class ImageNaming:
    """How a row's files are named: one file per light, all with one extension."""

    lights: tuple[str, ...] = ("SolderLight",)
    ext: str = ".png"


def resolve_image_path(
    images_dir: str | os.PathLike[str], rel_dir: str, object_name: str, light: str, ext: str
) -> Path:
    """The one rule that turns a CSV row into a file path.

    Args:
        images_dir: the images root (``<ws>/kpi/images`` by default).
        rel_dir: ``input_path`` or ``golden_path`` of the row, a relative directory.
        object_name: the row's ``object_name``.
        light: the light name (a key of ``dataset.classify.input_map``).
        ext: the image extension including the dot.

    Raises:
        WorkspaceError: when ``rel_dir`` is absolute.

    The path is lexical: whether it stays inside the workspace (no ``..`` or
    symlink out of it) is checked by :func:`check_image_locations`, which the
    workspace check runs before any command reads the images.
    """
    _refuse_absolute(images_dir, rel_dir)
    return Path(images_dir) / rel_dir / _file_name(object_name, light, ext)


def _file_name(object_name: str, light: str, ext: str) -> str:
    return f"{object_name}_{light}{ext}"


def _refuse_absolute(images_dir: str | os.PathLike[str], rel_dir: str) -> None:
    if is_absolute(rel_dir):
        raise WorkspaceError(
            f"path {rel_dir!r} is absolute; CSV paths must be directories relative to the "
            f"images root ({images_dir})"
        )


def relative_image_dir(
    images_dir: str | os.PathLike[str], directory: str | os.PathLike[str]
) -> str:
    """The CSV form (``input_path``/``golden_path``) of ``directory``, relative to the root.

    The inverse of :func:`resolve_image_path` for generated data (SDG images under a
    results directory): the result may start with ``..`` when ``directory`` lies outside
    the images root, and is always POSIX-style so the CSV resolves the same in a pod.
    """
    rel = os.path.relpath(Path(directory).resolve(), Path(images_dir).resolve())
    return PurePosixPath(*Path(rel).parts).as_posix()


@functools.lru_cache(maxsize=65536)
def is_absolute(rel: str) -> bool:
    """True for POSIX or Windows absolute paths (a CSV may come from either)."""
    return PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()


def row_paths(
    frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming, column: str
) -> list[list[Path]]:
    """For each row, the files of ``column`` (``input_path`` or ``golden_path``), one per light."""
    dirs: dict[str, Path] = {}
    out = []
    for rel, obj in zip(frame[column], frame["object_name"], strict=True):
        directory = dirs.get(rel)
        if directory is None:
            _refuse_absolute(images_dir, rel)
            directory = dirs[rel] = Path(images_dir) / rel
        out.append([directory / _file_name(obj, light, naming.ext) for light in naming.lights])
    return out


def row_files(
    frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming, column: str
) -> list[list[str]]:
    """:func:`row_paths` as plain strings (the checks of big sets: no pathlib per file)."""
    root = os.fspath(images_dir)
    dirs: dict[str, str] = {}
    out = []
    for rel, obj in zip(frame[column], frame["object_name"], strict=True):
        directory = dirs.get(rel)
        if directory is None:
            _refuse_absolute(images_dir, rel)
            directory = dirs[rel] = os.path.join(root, rel)
        out.append(
            [os.path.join(directory, _file_name(obj, light, naming.ext)) for light in naming.lights]
        )
    return out


def leakage_keys(frame: pd.DataFrame) -> pd.Series:
    """The leakage key of every row, as one string (``boardname`` empty when absent)."""
    parts = [
        frame[c].astype(str) if c in frame.columns else pd.Series("", index=frame.index)
        for c in LEAKAGE_KEY_COLUMNS
    ]
    key = parts[0]
    for part in parts[1:]:
        key = key + "\x1f" + part
    return key


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-1 of a file's bytes (content identity, not security)."""
    return hashlib.sha1(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class ImageInfo:
    """What :class:`ImageIndex` knows about one image file."""

    exists: bool
    digest: str | None = None
    """SHA-1 of the bytes (None when the file is missing)."""
    size: tuple[int, int] | None = None
    """(width, height) when it decodes; None when it is missing or cannot be decoded."""
    link_target: Path | None = None
    """Where a symbolic link (the file or a directory above it) really points; None otherwise."""


class ImageIndex:
    """Content digest and decoded size of image files, cached across runs.

    The cache (:data:`HASH_CACHE` under a workspace) is keyed by the file's path,
    size and ``mtime_ns``: a file that changes is read again, an unchanged one is
    only ``stat``-ed. It is written atomically by :meth:`save`; a read-only
    workspace simply goes without (nothing fails). Without a cache file the index
    still avoids reading a file twice in one pass.
    """

    def __init__(self, cache_file: str | os.PathLike[str] | None = None) -> None:
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self._cached: dict[str, list[object]] = self._load()
        self._seen: dict[str, ImageInfo] = {}
        self._dirs: dict[str, str] = {}
        self._dirty = False

    @classmethod
    def for_workspace(cls, root: str | os.PathLike[str]) -> ImageIndex:
        return cls(Path(root) / HASH_CACHE)

    def _load(self) -> dict[str, list[object]]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            doc = json.loads(self.cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a broken cache is rebuilt, never an error
        if not isinstance(doc, dict) or doc.get("version") != HASH_CACHE_VERSION:
            return {}
        files = doc.get("files")
        return files if isinstance(files, dict) else {}

    def info(self, path: str | os.PathLike[str]) -> ImageInfo:
        """Exists, digest, decoded size and real location of one file."""
        key = os.path.abspath(path)
        found = self._seen.get(key)
        if found is None:
            found = self._seen[key] = self._probe(key)
        return found

    def _probe(self, key: str) -> ImageInfo:
        try:
            st = os.lstat(key)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(key)
                st = os.stat(key)
            else:
                folder, name = os.path.split(key)
                real = os.path.join(self._real_dir(folder), name)
        except OSError:
            return ImageInfo(exists=False)
        if not stat.S_ISREG(st.st_mode):
            return ImageInfo(exists=False)
        target = Path(real) if real != os.path.normpath(key) else None
        entry = self._cached.get(key)
        if (
            isinstance(entry, list)
            and len(entry) == 5
            and entry[0] == st.st_size
            and entry[1] == st.st_mtime_ns
        ):
            w, h = entry[3], entry[4]
            known = (int(w), int(h)) if isinstance(w, int) and isinstance(h, int) else None
            return ImageInfo(True, str(entry[2]), known, target)
        try:
            data = Path(key).read_bytes()
        except OSError:
            return ImageInfo(exists=False)
        digest = hashlib.sha1(data, usedforsecurity=False).hexdigest()
        size: tuple[int, int] | None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size = (int(im.size[0]), int(im.size[1]))
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombError,
        ):
            size = None
        self._cached[key] = [
            st.st_size,
            st.st_mtime_ns,
            digest,
            None if size is None else size[0],
            None if size is None else size[1],
        ]
        self._dirty = True
        return ImageInfo(True, digest, size, target)

    def _real_dir(self, folder: str) -> str:
        real = self._dirs.get(folder)
        if real is None:
            real = self._dirs[folder] = os.path.realpath(folder)
        return real

    def save(self) -> None:
        """Write the cache when it learnt something (best effort: errors are only logged)."""
        if self.cache_file is None or not self._dirty:
            return
        try:
            folder = self.cache_file.parent
            folder.mkdir(parents=True, exist_ok=True)
            ignore = folder / ".gitignore"
            if not ignore.exists():
                atomic_write_text(ignore, "*\n")
            # Files that are gone leave the cache (the ones seen in this pass are there).
            kept = {k: v for k, v in self._cached.items() if k in self._seen or os.path.exists(k)}
            doc = {"version": HASH_CACHE_VERSION, "files": kept}
            atomic_write_text(self.cache_file, json.dumps(doc, separators=(",", ":")))
            self._dirty = False
        except OSError as exc:
            log.debug("image hash cache not written to %s: %s", self.cache_file, exc)


def _row_digest(files: Sequence[str], index: ImageIndex | None) -> str | None:
    h = hashlib.sha1(usedforsecurity=False)
    for f in files:
        if index is None:
            h.update(file_digest(f).encode())
            continue
        digest = index.info(f).digest
        if digest is None:
            return None
        h.update(digest.encode())
    return h.hexdigest()


def input_content_hashes(
    frame: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    naming: ImageNaming,
    *,
    index: ImageIndex | None = None,
) -> list[str]:
    """Per row, one digest over the bytes of all its *input* (test) images.

    Golden images are left out on purpose: one golden reference may legitimately
    serve rows in several sets; a tested image may not. With an ``index`` the
    digests come from its cache.

    Raises:
        WorkspaceError: an input file is missing (check the images first).
    """
    out = []
    for files in row_files(frame, images_dir, naming, "input_path"):
        digest = _row_digest(files, index)
        if digest is None:
            raise WorkspaceError(f"image file missing: {files[0]}; check the images first")
        out.append(digest)
    return out


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace; see the module docstring for the layout."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> Workspace:
        return cls(Path(root).resolve())

    @property
    def train_csv(self) -> Path:
        return self.root / TRAIN_CSV

    @property
    def val_csv(self) -> Path:
        return self.root / VAL_CSV

    @property
    def kpi_csv(self) -> Path:
        return self.root / KPI_CSV

    @property
    def pool_csv(self) -> Path:
        return self.root / POOL_CSV

    @property
    def holdout_csv(self) -> Path:
        """The untouched hold-out; may be absent. Read it for scoring only through
        :func:`automl_deft.holdout.read_holdout`."""
        return self.root / HOLDOUT_CSV

    @property
    def has_holdout(self) -> bool:
        return self.holdout_csv.is_file()

    @property
    def images_dir(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    def csvs(self, *, include_holdout: bool = False) -> dict[str, Path]:
        """The dataset CSVs by role, in the order they are reported.

        The working sets only (train, validation, KPI test, mining pool) unless
        ``include_holdout``: callers that train, evaluate, mine or rank iterate
        this, and the hold-out must reach none of them. Checks (validation,
        leakage) and writers (demo, importers, which create and clear it) pass
        ``include_holdout=True``; the hold-out's path is there whether or not
        the file exists.
        """
        out = {
            "train": self.train_csv,
            "validation": self.val_csv,
            "kpi_test": self.kpi_csv,
            "mining_pool": self.pool_csv,
        }
        if include_holdout:
            out[HOLDOUT_ROLE] = self.holdout_csv
        return out


def new_run_dir(workspace: str | os.PathLike[str]) -> Path:
    """A new run's results directory: ``<ws>/results/run_<YYYYmmdd_HHMMSS>`` (UTC)."""
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    return Workspace.at(workspace).results_dir / f"run_{stamp}"


def find_images_dir(csv_path: str | os.PathLike[str]) -> Path:
    """The images root of the workspace a CSV lives in (searching upwards from the CSV).

    Raises:
        WorkspaceError: when no enclosing directory has ``kpi/images``.
    """
    start = Path(csv_path).resolve().parent
    for directory in (start, *start.parents):
        if (directory / IMAGES_DIR).is_dir():
            return directory / IMAGES_DIR
    raise WorkspaceError(
        f"cannot find the images root for {csv_path} (no {IMAGES_DIR}/ above it); pass --images-dir"
    )


def read_dataset_csv(
    path: str | os.PathLike[str], *, role: str = "dataset", require_label: bool = True
) -> pd.DataFrame:
    """Read a dataset CSV as strings and check its schema.

    ``require_label=False`` accepts rows without a ``label`` column (production rows
    to be scored); every other required column is still checked.

    Raises:
        WorkspaceError: missing file, unparsable CSV, missing required columns,
            empty cells in required columns, or absolute paths.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkspaceError(f"{role} CSV not found: {path}; create it or fix the path")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = first_line(exc)
        raise WorkspaceError(f"{role} CSV {path} cannot be parsed ({first}); fix the file") from exc
    labelled = require_label or "label" in frame.columns
    problems = check_schema(
        frame if labelled else frame.assign(label=PASS_LABEL), role=role, path=path
    )
    if problems:
        raise WorkspaceError(problems)
    return frame


def check_schema(frame: pd.DataFrame, *, role: str, path: Path | str) -> list[str]:
    """Schema problems of one CSV (required columns, empty cells, absolute paths)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        return [
            f"{role} CSV {path} is missing required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}"
        ]
    problems = []
    for col in REQUIRED_COLUMNS:
        empty = frame.index[frame[col].str.strip() == ""]
        if len(empty):
            problems.append(
                f"{role} CSV {path}: {len(empty)} row(s) with empty {col!r} "
                f"(first at line {_lines(empty)}); fill them in or drop the rows"
            )
    for col in ("input_path", "golden_path"):
        bad = frame.index[frame[col].map(is_absolute)]
        if len(bad):
            problems.append(
                f"{role} CSV {path}: {len(bad)} absolute {col} value(s) "
                f"(e.g. {frame.at[bad[0], col]!r} at line {_lines(bad)}); "
                "make them directories relative to the images root"
            )
    return problems


def _lines(index: Sequence[int] | pd.Index) -> str:
    """CSV line numbers (header is line 1) of the first few rows of ``index``."""
    shown = [str(int(i) + 2) for i in list(index)[:MAX_LISTED]]
    more = f" and {len(index) - MAX_LISTED} more" if len(index) > MAX_LISTED else ""
    return ", ".join(shown) + more


@dataclass
class CsvSummary:
    """Counts for one CSV, as shown by ``automl-deft validate``."""

    role: str
    path: Path
    rows: int
    n_pass: int
    n_defect: int
    labels: dict[str, int] = field(default_factory=dict)


@dataclass
class ValidationReport:
    """What :func:`validate_workspace` found (only returned when nothing blocks)."""

    workspace: Path
    summaries: list[CsvSummary]
    """The working sets (train, validation, KPI test, mining pool)."""
    images_checked: int
    overlapping_rows: int = 0
    warnings: list[str] = field(default_factory=list)
    holdout: CsvSummary | None = None
    """The untouched hold-out's counts; None when the workspace has none (not an
    error: warn that no number will be measured on unseen data)."""
    suspicious_labels: dict[str, str] = field(default_factory=dict)
    """Defect labels that look like a typo or a placeholder, with why (see
    :func:`label_warnings`); also one line in ``warnings``."""

    @property
    def has_holdout(self) -> bool:
        return self.holdout is not None

    def table(self) -> str:
        """A fixed-width table: one line per CSV (the hold-out last) with counts and labels.

        A label that looks like a typo or a placeholder is marked ``(!)`` and a last
        line says why (it still counts as a defect class)."""
        head = f"{'set':<12} {'rows':>6} {'PASS':>6} {'defect':>6}  labels"
        lines = [head, "-" * len(head)]
        odd = self.suspicious_labels
        for s in [*self.summaries, *([self.holdout] if self.holdout else [])]:
            dist = ", ".join(
                f"{k or repr(k)}={v}{' (!)' if k in odd else ''}" for k, v in s.labels.items()
            )
            lines.append(f"{s.role:<12} {s.rows:>6} {s.n_pass:>6} {s.n_defect:>6}  {dist}")
        if odd:
            lines.append(f"(!) {suspicious_labels_text(odd)}")
        return "\n".join(lines)


def suspicious_labels_text(labels: dict[str, str]) -> str:
    """One line naming the labels :func:`label_warnings` found."""
    listed = "; ".join(f"{k!r} ({why})" for k, why in labels.items())
    return (
        f"label(s) that look like a typo or a placeholder: {listed}; every label but PASS "
        "is a defect class: fix them if they are not"
    )


def summarize(frame: pd.DataFrame, *, role: str, path: Path) -> CsvSummary:
    """Row and label counts of one CSV (labels normalised, most frequent first)."""
    labels = Counter(normalize_label(v) for v in frame["label"])
    n_pass = labels.get(PASS_LABEL, 0)
    return CsvSummary(
        role=role,
        path=path,
        rows=len(frame),
        n_pass=n_pass,
        n_defect=len(frame) - n_pass,
        labels=dict(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def check_images(
    frame: pd.DataFrame,
    images_dir: Path,
    naming: ImageNaming,
    *,
    role: str,
    index: ImageIndex | None = None,
) -> tuple[list[str], int]:
    """Every file exists, decodes, and golden/input sizes agree. Returns problems, files checked.

    ``index`` (an :class:`ImageIndex`, e.g. the workspace's cached one) answers for
    files it has seen unchanged; without one every file is read and decoded.
    """
    index = index if index is not None else ImageIndex()
    missing: list[str] = []
    unreadable: list[str] = []
    mismatched: list[str] = []
    sizes: dict[str, tuple[int, int] | None] = {}

    def size_of(p: str) -> tuple[int, int] | None:
        if p not in sizes:
            info = index.info(p)
            if not info.exists:
                missing.append(p)
            elif info.size is None:
                unreadable.append(p)
            sizes[p] = info.size
        return sizes[p]

    inputs = row_files(frame, images_dir, naming, "input_path")
    goldens = row_files(frame, images_dir, naming, "golden_path")
    for i, (ins, gos) in enumerate(zip(inputs, goldens, strict=True)):
        for fi, fg in zip(ins, gos, strict=True):
            si, sg = size_of(fi), size_of(fg)
            if si is not None and sg is not None and si != sg:
                mismatched.append(f"line {i + 2}: input {si[0]}x{si[1]} vs golden {sg[0]}x{sg[1]}")
    problems = []
    if missing:
        problems.append(
            f"{role}: {len(missing)} image file(s) missing under {images_dir} "
            f"(e.g. {_names(missing, images_dir)}); restore them or remove their rows"
        )
    if unreadable:
        problems.append(
            f"{role}: {len(unreadable)} image file(s) cannot be decoded "
            f"(e.g. {_names(unreadable, images_dir)}); re-export them or remove their rows"
        )
    if mismatched:
        problems.append(
            f"{role}: {len(mismatched)} row(s) whose golden and input images differ in size "
            f"({'; '.join(mismatched[:MAX_LISTED])}); re-crop them to one size"
        )
    return problems, len(sizes)


def _is_under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def check_image_locations(
    frame: pd.DataFrame,
    images_dir: Path,
    naming: ImageNaming,
    *,
    role: str,
    roots: Sequence[str | os.PathLike[str]],
    index: ImageIndex | None = None,
) -> list[str]:
    """Rows whose image files resolve outside ``roots`` (``..`` in a CSV path, a symlink).

    Absolute CSV paths are refused by the schema check; this closes the other two
    ways out of the workspace. Every directory a row names is resolved (symlinks
    followed) and must lie under one of ``roots`` (the workspace root, the real
    images root, a DEFT run directory whose CSVs name generated images with ``..``).
    With an ``index``, each file is checked as well (a symlinked file).
    """
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    outside: list[str] = []
    escapes: dict[str, Path | None] = {}
    for column in ("input_path", "golden_path"):
        for i, rel in enumerate(frame[column]):
            if rel not in escapes:
                real = Path(os.path.realpath(Path(images_dir) / rel))
                escapes[rel] = None if _is_under(real, real_roots) else real
            where = escapes[rel]
            if where is not None:
                outside.append(f"line {i + 2}: {column} {rel!r} -> {where}")
    if index is not None and not outside:
        for column in ("input_path", "golden_path"):
            for i, files in enumerate(row_files(frame, images_dir, naming, column)):
                for f in files:
                    target = index.info(f).link_target
                    if target is not None and not _is_under(target, real_roots):
                        outside.append(f"line {i + 2}: {os.path.basename(f)} -> {target}")
    if not outside:
        return []
    return [
        f"{role}: {len(outside)} image path(s) lead outside the workspace "
        f"({'; '.join(outside[:MAX_LISTED])}); CSV paths must stay under the images root "
        f"{images_dir}: copy the images there and fix the paths"
    ]


def _names(paths: Sequence[str | Path], root: Path) -> str:
    shown = []
    for p in paths[:MAX_LISTED]:
        try:
            shown.append(str(Path(p).relative_to(root)))
        except ValueError:
            shown.append(str(p))
    return ", ".join(shown)


def find_duplicates(frame: pd.DataFrame, *, role: str) -> list[str]:
    """Rows that repeat the leakage key inside one CSV."""
    keys = leakage_keys(frame)
    dup = frame.index[keys.duplicated(keep="first")]
    if not len(dup):
        return []
    return [
        f"{role}: {len(dup)} duplicate row(s) (same {', '.join(LEAKAGE_KEY_COLUMNS)}) at line(s) "
        f"{_lines(dup)}; remove the duplicates"
    ]


LEAKAGE_PAIRS: tuple[tuple[str, str], ...] = (
    ("train", "validation"),
    ("train", "kpi_test"),
    ("validation", "kpi_test"),
    ("mining_pool", "validation"),
    ("mining_pool", "kpi_test"),
    ("train", HOLDOUT_ROLE),
    ("validation", HOLDOUT_ROLE),
    ("kpi_test", HOLDOUT_ROLE),
    ("mining_pool", HOLDOUT_ROLE),
)
"""Pairs of sets that must not share a row. Pool rows become training rows when
mined, so the pool must not hold validation or KPI rows either; the hold-out
shares a row with no other set (pairs whose sets are absent are skipped)."""


def find_leakage(
    frames: dict[str, pd.DataFrame],
    *,
    content: dict[str, list[str]] | None = None,
    pairs: Iterable[tuple[str, str]] = LEAKAGE_PAIRS,
) -> tuple[list[str], int]:
    """Overlaps between sets by row key and (when given) by input-image content.

    Args:
        frames: the CSVs by role.
        content: per role, the row content hashes (:func:`input_content_hashes`).
        pairs: which role pairs must be disjoint.

    Returns:
        (problems, number of overlapping rows over all pairs).
    """
    keys = {role: set(leakage_keys(f)) for role, f in frames.items()}
    problems: list[str] = []
    total = 0
    for a, b in pairs:
        if a not in frames or b not in frames:
            continue
        shared = keys[a] & keys[b]
        if shared:
            total += len(shared)
            example = next(iter(sorted(shared))).split("\x1f")
            problems.append(
                f"leakage: {len(shared)} row(s) appear in both {a} and {b} "
                f"(e.g. input_path={example[0]!r}, object_name={example[3]!r}); "
                f"remove them from one of the two sets"
            )
        if content and a in content and b in content:
            # Rows already caught by key are not counted twice.
            keys_b = leakage_keys(frames[b]).tolist()
            hashes_a = {
                h
                for h, k in zip(content[a], leakage_keys(frames[a]), strict=True)
                if k not in shared
            }
            same = [
                i
                for i, (h, k) in enumerate(zip(content[b], keys_b, strict=True))
                if k not in shared and h in hashes_a
            ]
            if same:
                total += len(same)
                row = frames[b].iloc[same[0]]
                problems.append(
                    f"leakage: {len(same)} input image(s) in {b} have identical content to "
                    f"images in {a} (e.g. {row['input_path']}/{row['object_name']}); "
                    "a copied image under another name is still the same sample: remove it"
                )
    return problems, total


def refuse_kpi_set(
    ws: Workspace,
    csv: Path,
    *,
    used_as: str,
    naming: ImageNaming | None = None,
    index: ImageIndex | None = None,
) -> None:
    """The KPI test set must never choose checkpoints or steer a search: refuse it as
    ``used_as`` by path, by row (any KPI row in ``csv``: the KPI set plus or minus some
    rows is still the KPI set), and, given the image ``naming``, by content (a copy
    under other names). The untouched hold-out is refused the same way: nothing but
    the final scoring may read it.

    Args:
        ws: the workspace whose KPI set and hold-out are protected.
        csv: the CSV about to be used as ``used_as``.
        used_as: how the message names the use (``"the validation set"``).
        naming: lights and extension; without it image content is not compared.
        index: the image cache to hash with (default: the workspace's).

    Raises:
        WorkspaceError: ``csv`` is the KPI test set or the hold-out, or holds a row or
            an input image of one of them.
    """
    csv = Path(csv)
    if csv.resolve() == ws.kpi_csv.resolve():
        raise WorkspaceError(
            f"the KPI test set cannot be {used_as}; use the validation set ({VAL_CSV})"
        )
    if ws.has_holdout and csv.resolve() == ws.holdout_csv.resolve():
        raise WorkspaceError(
            f"the untouched hold-out ({HOLDOUT_CSV}) cannot be {used_as}; only the final "
            f"step scores it: use the validation set ({VAL_CSV})"
        )
    if not csv.is_file():
        return
    frame: pd.DataFrame | None = None
    hashes: set[str] | None = None
    for path, role, name in (
        (ws.kpi_csv, "kpi_test", "KPI test"),
        (ws.holdout_csv, HOLDOUT_ROLE, "hold-out"),
    ):
        if not path.is_file():
            continue
        if frame is None:
            frame = read_dataset_csv(csv, role="evaluation")
        protected = read_dataset_csv(path, role=role)
        what = "KPI test set" if role == "kpi_test" else "untouched hold-out"
        if set(leakage_keys(frame)) & set(leakage_keys(protected)):
            raise WorkspaceError(f"{csv} holds {name} rows; the {what} cannot be {used_as}")
        if naming is None:
            continue
        if index is None:
            index = ImageIndex.for_workspace(ws.root)
        if hashes is None:
            hashes = _known_digests(frame, ws.images_dir, naming, index)
        same = hashes & _known_digests(protected, ws.images_dir, naming, index)
        index.save()
        if same:
            raise WorkspaceError(
                f"{csv} holds {name} images under other names ({len(same)} input image(s) "
                f"with the content of {name} rows); the {what} cannot be {used_as}"
            )


def _known_digests(
    frame: pd.DataFrame, images_dir: Path, naming: ImageNaming, index: ImageIndex
) -> set[str]:
    """The input-content digests of the rows whose files exist."""
    rows = (_row_digest(f, index) for f in row_files(frame, images_dir, naming, "input_path"))
    return {d for d in rows if d is not None}


def label_warnings(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Labels that are not PASS and look like a typo or a placeholder, with why.

    Defect names are free-form, so these are warnings, never errors: a label that
    normalises to a missing-value word (``nan``, ``none``, ``null``, …) or that only
    one row of the whole workspace carries (``banana``).
    """
    counts: Counter[str] = Counter()
    for frame in frames.values():
        counts.update(normalize_label(v) for v in frame["label"])
    out: dict[str, str] = {}
    for label, n in sorted(counts.items()):
        if label == PASS_LABEL:
            continue
        if label in PLACEHOLDER_LABELS:
            out[label] = "looks like a missing value"
        elif n == 1:
            out[label] = "only one row in the workspace has it"
    return out
