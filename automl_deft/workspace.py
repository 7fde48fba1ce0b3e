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
:func:`resolve_image_path` is the only place that rule is written down.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from automl_deft.errors import WorkspaceError

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
    """
    if is_absolute(rel_dir):
        raise WorkspaceError(
            f"path {rel_dir!r} is absolute; CSV paths must be directories relative to the "
            f"images root ({images_dir})"
        )
    return Path(images_dir) / rel_dir / f"{object_name}_{light}{ext}"


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


def is_absolute(rel: str) -> bool:
    """True for POSIX or Windows absolute paths (a CSV may come from either)."""
    return PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()


def row_paths(
    frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming, column: str
) -> list[list[Path]]:
    """For each row, the files of ``column`` (``input_path`` or ``golden_path``), one per light."""
    return [
        [resolve_image_path(images_dir, rel, obj, light, naming.ext) for light in naming.lights]
        for rel, obj in zip(frame[column], frame["object_name"], strict=True)
    ]


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


def input_content_hashes(
    frame: pd.DataFrame, images_dir: str | os.PathLike[str], naming: ImageNaming
) -> list[str]:
    """Per row, one digest over the bytes of all its *input* (test) images.

    Golden images are left out on purpose: one golden reference may legitimately
    serve rows in several sets; a tested image may not.
    """
    out = []
    for files in row_paths(frame, images_dir, naming, "input_path"):
        h = hashlib.sha1(usedforsecurity=False)
        for f in files:
            h.update(file_digest(f).encode())
        out.append(h.hexdigest())
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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

    @property
    def has_holdout(self) -> bool:
        return self.holdout is not None

    def table(self) -> str:
        """A fixed-width table: one line per CSV (the hold-out last) with counts and labels."""
        head = f"{'set':<12} {'rows':>6} {'PASS':>6} {'defect':>6}  labels"
        lines = [head, "-" * len(head)]
        for s in [*self.summaries, *([self.holdout] if self.holdout else [])]:
            dist = ", ".join(f"{k}={v}" for k, v in s.labels.items())
            lines.append(f"{s.role:<12} {s.rows:>6} {s.n_pass:>6} {s.n_defect:>6}  {dist}")
        return "\n".join(lines)


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
    frame: pd.DataFrame, images_dir: Path, naming: ImageNaming, *, role: str
) -> tuple[list[str], int]:
    """Every file exists, decodes, and golden/input sizes agree. Returns problems, files checked."""
    missing: list[Path] = []
    unreadable: list[Path] = []
    mismatched: list[str] = []
    sizes: dict[Path, tuple[int, int] | None] = {}

    def size_of(p: Path) -> tuple[int, int] | None:
        if p not in sizes:
            if not p.is_file():
                missing.append(p)
                sizes[p] = None
            else:
                try:
                    with Image.open(p) as im:
                        im.load()
                        sizes[p] = im.size
                except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
                    unreadable.append(p)
                    sizes[p] = None
        return sizes[p]

    inputs = row_paths(frame, images_dir, naming, "input_path")
    goldens = row_paths(frame, images_dir, naming, "golden_path")
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


def _names(paths: Sequence[Path], root: Path) -> str:
    shown = []
    for p in paths[:MAX_LISTED]:
        try:
            shown.append(str(p.relative_to(root)))
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


def refuse_kpi_set(ws: Workspace, csv: Path, *, used_as: str) -> None:
    """The KPI test set must never choose checkpoints or steer a search: refuse it as
    ``used_as`` by path, and by content (a copy under another name). The untouched
    hold-out is refused the same way: nothing but the final scoring may read it.

    Raises:
        WorkspaceError: ``csv`` is the KPI test set or the hold-out, or holds only
            rows of one of them.
    """
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
    rows: set[str] | None = None
    for path, role, name in (
        (ws.kpi_csv, "kpi_test", "KPI test"),
        (ws.holdout_csv, HOLDOUT_ROLE, "hold-out"),
    ):
        if not path.is_file():
            continue
        if rows is None:
            rows = set(leakage_keys(read_dataset_csv(csv, role="evaluation")))
        protected = set(leakage_keys(read_dataset_csv(path, role=role)))
        if rows and rows <= protected:
            what = "KPI test set" if role == "kpi_test" else "untouched hold-out"
            raise WorkspaceError(f"{csv} holds {name} rows; the {what} cannot be {used_as}")
