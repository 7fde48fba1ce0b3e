"""Import a DeepPCB download into an AOI workspace.

DeepPCB (``PCBData/trainval.txt``, ``PCBData/test.txt``, aligned template/tested
image pairs with ``x1 y1 x2 y2 type`` boxes) becomes the workspace layout of
:mod:`automl_deft.workspace`:

- one defect crop per annotated box, centred on the box, labelled with the
  defect type name; its golden crop is the same window of the template;
- up to ``pass_per_image`` PASS crops per pair, from windows no box touches;
- ``test.txt`` pairs become the KPI test set and the untouched hold-out
  (``holdout_fraction`` of them, by pair, stratified by group:
  :func:`automl_deft.holdout.split_holdout_frame`); ``trainval.txt`` pairs are
  split *by pair* into train / validation / mining pool, so the overlapping
  crops of one board image never land in two sets. Hold-out crops stay under
  ``deeppcb/test/`` (the DeepPCB split they come from).

Every input is checked before the first image is written; images are written
first and the CSVs last (atomically), so an interrupted import never leaves a
CSV that points to missing files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from automl_deft.errors import SpecError, UserError, WorkspaceError
from automl_deft.holdout import split_holdout_frame
from automl_deft.io import atomic_write_csv
from automl_deft.model.spec import (
    Spec,
    default_spec_dict,
    merge_overrides,
    save_spec,
    spec_from_dict,
)
from automl_deft.workspace import (
    HOLDOUT_ROLE,
    MAX_LISTED,
    PASS_LABEL,
    REQUIRED_COLUMNS,
    ImageNaming,
    Workspace,
    resolve_image_path,
    summarize,
)

DEFECT_TYPES: dict[int, str] = {
    1: "open",
    2: "short",
    3: "mousebite",
    4: "spur",
    5: "copper",
    6: "pin-hole",
}
"""DeepPCB type id → workspace label (5 is "spurious copper"; 0, background, is unused)."""

TRAINVAL_LIST = "trainval.txt"
TEST_LIST = "test.txt"
PCBDATA_DIR = "PCBData"
TESTED_SUFFIX = "_test"
TEMPLATE_SUFFIX = "_temp"

PASS_MARGIN = 4
"""Pixels a PASS window keeps clear of every box of its pair."""

PASS_TRIES_PER_CROP = 50
"""Random windows tried per wanted PASS crop before giving up on the rest of that pair."""

SEVERITY_LEVELS: tuple[tuple[float, str], ...] = ((0.05, "low"), (0.25, "medium"))
"""(box area / crop area upper bound, name); at or above the last bound it is ``high``."""

SEVERITY_HIGH = "high"
SEVERITY_OVERSIZE = "oversize"
"""Severity of a box wider or taller than the crop (the crop is still centred on it)."""

ROLE_DIRS: dict[str, str] = {
    "train": "train",
    "validation": "validation",
    "kpi_test": "test",
    "mining_pool": "pool",
}
"""Workspace role (a key of :meth:`Workspace.csvs`) → folder under ``<images>/deeppcb``."""

IMAGES_SUBDIR = "deeppcb"

COLUMNS: tuple[str, ...] = (
    *REQUIRED_COLUMNS,
    "boardname",
    "severity",
    "source_image",
    "bbox",
    "crop_box",
)
"""CSV columns: the required four, then metadata (``bbox`` empty on PASS rows;
``crop_box`` is the crop window ``x0 y0 x1 y1`` in the source image)."""


@dataclass(frozen=True)
class Box:
    """One annotated defect, in pixels of the DeepPCB image (``x2``/``y2`` exclusive)."""

    x1: int
    y1: int
    x2: int
    y2: int
    type_id: int
    line: int

    @property
    def label(self) -> str:
        return DEFECT_TYPES[self.type_id]

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_text(self) -> str:
        return f"{self.x1} {self.y1} {self.x2} {self.y2}"


@dataclass(frozen=True)
class Pair:
    """One listed template/tested pair and its boxes; paths relative to ``PCBData/``."""

    group: str
    stem: str
    tested: str
    template: str
    annotation: str
    boxes: tuple[Box, ...] = ()

    @property
    def key(self) -> str:
        """The split unit: every crop of one board image shares it."""
        return f"{self.group}/{self.stem}"


@dataclass
class ImportSummary:
    """What :func:`import_deeppcb` wrote, per workspace role (``holdout`` only when one
    was written)."""

    workspace: Path
    pairs: dict[str, int]
    rows: dict[str, int]
    labels: dict[str, dict[str, int]]
    oversize_boxes: int = 0
    pass_shortfall: int = 0
    """PASS crops wanted but not found (no free window left after the bounded tries)."""
    warnings: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A fixed-width table: one line per role with pairs, rows and labels."""
        head = f"{'set':<12} {'pairs':>6} {'rows':>6}  labels"
        lines = [head, "-" * len(head)]
        for role, n in self.rows.items():
            dist = ", ".join(f"{k}={v}" for k, v in self.labels[role].items())
            lines.append(f"{role:<12} {self.pairs[role]:>6} {n:>6}  {dist}")
        return "\n".join(lines)


def import_deeppcb(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    crop_size: int = 64,
    pass_per_image: int = 8,
    val_fraction: float = 0.2,
    pool_fraction: float = 0.4,
    holdout_fraction: float = 0.3,
    seed: int = 0,
    force: bool = False,
) -> ImportSummary:
    """Turn a DeepPCB download into a workspace at ``dest``.

    Args:
        src: the folder that holds ``PCBData/``, or ``PCBData/`` itself.
        dest: the workspace directory to create.
        crop_size: side of the square crops, in pixels.
        pass_per_image: PASS crops wanted per pair (fewer when no free window fits); 1
            or more.
        val_fraction: share of ``trainval.txt`` pairs for the validation set.
        pool_fraction: share of ``trainval.txt`` pairs for the mining pool; the
            rest is the base training set.
        holdout_fraction: share of ``test.txt`` pairs set aside as the untouched
            hold-out (``kpi/holdout_set.csv``), by pair and stratified by group; 0
            writes none. When the test pairs are too few for both sides to hold PASS
            and defect rows, none is written and a warning says so.
        seed: makes the split and the PASS windows reproducible.
        force: overwrite ``dest`` when it is already a workspace.

    Returns:
        Pair, row and label counts per workspace role.

    Raises:
        UserError: bad arguments, a missing list, image or annotation file, a
            malformed annotation line or an unknown type id (nothing is written), or
            a training, validation or KPI set that would hold a single class (its
            crops are removed again).
        WorkspaceError: ``dest`` is already a workspace and ``force`` is off.
    """
    _check_args(crop_size, pass_per_image, val_fraction, pool_fraction, seed)
    if not 0 <= holdout_fraction < 1:
        raise UserError(
            f"holdout_fraction must be in [0, 1) (0: no hold-out), got {holdout_fraction:g}"
        )
    spec = baseline_spec(crop_size)
    root = locate_pcbdata(src)
    ws = Workspace.at(dest)
    _check_dest(ws, force=force)

    trainval = read_pair_list(root, TRAINVAL_LIST)
    test = read_pair_list(root, TEST_LIST)
    if not test:
        raise UserError(
            f"{root / TEST_LIST} lists no pairs; the KPI test set comes from it, list some"
        )
    _check_disjoint(trainval, test)
    _check_files_exist(root, [*trainval, *test])
    trainval = [_with_boxes(root, p) for p in trainval]
    test = [_with_boxes(root, p) for p in test]
    _check_images(root, [*trainval, *test], crop_size)

    roles = split_pairs(trainval, val_fraction=val_fraction, pool_fraction=pool_fraction, seed=seed)
    roles.update({p.key: "kpi_test" for p in test})

    _clear_previous(ws)
    rows: dict[str, list[dict[str, str]]] = {role: [] for role in ROLE_DIRS}
    pair_counts = dict.fromkeys(ROLE_DIRS, 0)
    seen: set[str] = set()
    oversize = shortfall = 0
    all_pairs = [*trainval, *test]
    for pair in tqdm(all_pairs, desc="deeppcb", unit="pair", disable=None):
        role = roles[pair.key]
        pair_counts[role] += 1
        writer = _CropWriter(ws.images_dir, spec.naming(), pair, role, crop_size, root)
        for i, box in enumerate(pair.boxes):
            window = defect_window(box, crop_size, width=writer.width, height=writer.height)
            sev = severity(box, crop_size)
            oversize += sev == SEVERITY_OVERSIZE
            seen.add(_digest(writer.tested, window, crop_size))
            rows[role].append(
                writer.write(f"{pair.stem}_d{i:02d}", box.label, window, sev, box.as_text())
            )
        windows = pass_windows(
            writer.tested,
            pair.boxes,
            crop_size,
            count=pass_per_image,
            rng=np.random.default_rng([seed, zlib.crc32(pair.key.encode())]),
            seen=seen,
        )
        shortfall += pass_per_image - len(windows)
        for i, window in enumerate(windows):
            rows[role].append(writer.write(f"{pair.stem}_p{i:02d}", PASS_LABEL, window, "", ""))

    frames = {role: pd.DataFrame(r, columns=list(COLUMNS)) for role, r in rows.items()}
    warnings = []
    if holdout_fraction > 0:
        kept, holdout = split_holdout_frame(
            frames["kpi_test"], fraction=holdout_fraction, seed=seed, group_by="source_image"
        )
        if all(_both_classes(f) for f in (kept, holdout)):
            frames["kpi_test"], frames[HOLDOUT_ROLE] = kept, holdout
            pair_counts["kpi_test"] = kept["source_image"].nunique()
            pair_counts[HOLDOUT_ROLE] = holdout["source_image"].nunique()
        else:
            warnings.append(
                f"no hold-out written: {len(test)} test pair(s) are too few to set "
                f"{holdout_fraction:g} of them aside with PASS and defect rows on both sides; "
                "list more test pairs, or pass holdout_fraction=0 (--holdout-fraction 0)"
            )
    single = [r for r in ("train", "validation", "kpi_test") if not _both_classes(frames[r])]
    if single:
        _clear_previous(ws)
        raise UserError(
            f"the import would leave {', '.join(single)} with a single class (it needs PASS "
            "and defect rows); list more pairs or raise pass_per_image (no workspace written)"
        )
    paths = ws.csvs(include_holdout=True)
    save_spec(spec, ws.spec_path)
    # The hold-out before the KPI set it was cut from (as split_holdout does).
    for role in sorted(frames, key=lambda r: r != HOLDOUT_ROLE):
        atomic_write_csv(paths[role], frames[role])

    summaries = {role: summarize(f, role=role, path=paths[role]) for role, f in frames.items()}
    if shortfall:
        warnings.append(
            f"{shortfall} PASS crop(s) of {pass_per_image * len(all_pairs)} wanted could not be "
            "placed clear of the boxes; lower pass_per_image or crop_size for more"
        )
    return ImportSummary(
        workspace=ws.root,
        pairs=pair_counts,
        rows={role: s.rows for role, s in summaries.items()},
        labels={role: s.labels for role, s in summaries.items()},
        oversize_boxes=oversize,
        pass_shortfall=shortfall,
        warnings=warnings,
    )


def baseline_spec(crop_size: int) -> Spec:
    """The workspace's baseline spec: the defaults with the image size set to the crop.

    Its :meth:`Spec.naming` (lights, extension) is how the crops are named.

    Raises:
        SpecError: when ``crop_size`` is not a valid image size for training.
    """
    override = {"dataset": {"classify": {"image_width": crop_size, "image_height": crop_size}}}
    try:
        return spec_from_dict(merge_overrides(default_spec_dict(), override))
    except SpecError as exc:
        raise SpecError(f"crop_size {crop_size} is not usable ({exc}); pick another") from exc


def locate_pcbdata(src: str | os.PathLike[str]) -> Path:
    """The ``PCBData/`` folder of a download, given it or the folder that holds it.

    Raises:
        UserError: when no ``trainval.txt`` and ``test.txt`` are found there.
    """
    src = Path(src)
    root = src / PCBDATA_DIR if (src / PCBDATA_DIR).is_dir() else src
    missing = [name for name in (TRAINVAL_LIST, TEST_LIST) if not (root / name).is_file()]
    if missing:
        raise UserError(
            f"{src} is not a DeepPCB download: {', '.join(f'{PCBDATA_DIR}/{m}' for m in missing)} "
            f"not found; pass the folder that contains {PCBDATA_DIR}/ (or {PCBDATA_DIR}/ itself)"
        )
    return root


def read_pair_list(root: Path, name: str) -> list[Pair]:
    """Parse one list file: ``groupG/G/S.jpg groupG/G_not/S.txt`` per line (no boxes yet).

    Raises:
        UserError: a line without exactly two paths, or a pair listed twice.
    """
    path = root / name
    pairs: list[Pair] = []
    keys: set[str] = set()
    for lineno, line in _lines(path):
        parts = line.split()
        image = PurePosixPath(parts[0].replace("\\", "/")) if parts else None
        if len(parts) != 2 or image is None or len(image.parts) < 2:
            raise UserError(
                f"{path}:{lineno}: malformed line {line!r}; expected "
                "'groupGGGGG/GGGGG/SSSSSSSS.jpg groupGGGGG/GGGGG_not/SSSSSSSS.txt'"
            )
        stem, suffix = image.stem, image.suffix or ".jpg"
        pair = Pair(
            group=image.parts[0],
            stem=stem,
            tested=str(image.with_name(f"{stem}{TESTED_SUFFIX}{suffix}")),
            template=str(image.with_name(f"{stem}{TEMPLATE_SUFFIX}{suffix}")),
            annotation=parts[1].replace("\\", "/"),
        )
        if pair.key in keys:
            raise UserError(f"{path}:{lineno}: pair {pair.key} is listed twice; remove one line")
        keys.add(pair.key)
        pairs.append(pair)
    return pairs


def read_annotations(path: str | os.PathLike[str]) -> tuple[Box, ...]:
    """Boxes of one annotation file: ``x1 y1 x2 y2 type`` per line, spaces or commas.

    Blank lines and surrounding whitespace are ignored.

    Raises:
        UserError: a malformed line or an unknown type id, naming ``file:line``.
    """
    path = Path(path)
    boxes = []
    for lineno, line in _lines(path):
        fields = [f for f in re.split(r"[,\s]+", line) if f]
        try:
            x1, y1, x2, y2, type_id = (int(f) for f in fields)
        except ValueError:
            raise UserError(
                f"{path}:{lineno}: malformed annotation line {line!r}; expected "
                "'x1 y1 x2 y2 type' (five integers, separated by spaces or commas)"
            ) from None
        if type_id not in DEFECT_TYPES:
            known = ", ".join(f"{k} {v}" for k, v in DEFECT_TYPES.items())
            raise UserError(
                f"{path}:{lineno}: unknown defect type id {type_id}; DeepPCB types are {known}"
            )
        if not (0 <= x1 < x2 and 0 <= y1 < y2):
            raise UserError(
                f"{path}:{lineno}: box {x1} {y1} {x2} {y2} is empty or inverted; "
                "expected 0 <= x1 < x2 and 0 <= y1 < y2"
            )
        boxes.append(Box(x1, y1, x2, y2, type_id, lineno))
    return tuple(boxes)


def split_pairs(
    pairs: Iterable[Pair], *, val_fraction: float, pool_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each trainval pair to ``train``, ``validation`` or ``mining_pool``.

    The split is by pair (all crops of one board image stay together) and
    depends only on the set of pair keys and ``seed``, not on list order. A
    non-zero fraction gets at least one pair.

    Raises:
        UserError: when no pair would be left for training.
    """
    keys = sorted(p.key for p in pairs)
    order = [keys[i] for i in np.random.default_rng(seed).permutation(len(keys))]
    n_val = _share(len(keys), val_fraction)
    n_pool = _share(len(keys), pool_fraction)
    if len(keys) - n_val - n_pool < 1:
        raise UserError(
            f"{TRAINVAL_LIST} lists {len(keys)} pair(s): too few for train, validation "
            f"({val_fraction:g}) and mining pool ({pool_fraction:g}); list more pairs or "
            "lower the fractions"
        )
    roles = {k: "validation" for k in order[:n_val]}
    roles.update({k: "mining_pool" for k in order[n_val : n_val + n_pool]})
    roles.update({k: "train" for k in order[n_val + n_pool :]})
    return roles


def defect_window(box: Box, crop_size: int, *, width: int, height: int) -> tuple[int, int]:
    """Top-left ``(x, y)`` of the crop centred on ``box``, clamped inside the image."""
    x = (box.x1 + box.x2 - crop_size) // 2
    y = (box.y1 + box.y2 - crop_size) // 2
    return min(max(x, 0), width - crop_size), min(max(y, 0), height - crop_size)


def severity(box: Box, crop_size: int) -> str:
    """``low`` / ``medium`` / ``high`` by box area over crop area; ``oversize`` when
    the box is wider or taller than the crop."""
    if box.width > crop_size or box.height > crop_size:
        return SEVERITY_OVERSIZE
    ratio = box.width * box.height / crop_size**2
    for bound, name in SEVERITY_LEVELS:
        if ratio < bound:
            return name
    return SEVERITY_HIGH


def touches(window: tuple[int, int], crop_size: int, box: Box, margin: int = PASS_MARGIN) -> bool:
    """True when the crop window at ``window`` comes within ``margin`` pixels of ``box``."""
    x, y = window
    return not (
        x + crop_size <= box.x1 - margin
        or x >= box.x2 + margin
        or y + crop_size <= box.y1 - margin
        or y >= box.y2 + margin
    )


def pass_windows(
    tested: np.ndarray,
    boxes: Iterable[Box],
    crop_size: int,
    *,
    count: int,
    rng: np.random.Generator,
    seen: set[str],
) -> list[tuple[int, int]]:
    """Up to ``count`` random windows that touch no box, with bounded tries.

    A window whose tested pixels equal an earlier crop's (``seen``, updated here)
    is rejected: binarised boards have many blank regions, and one image in two
    sets is leakage even under two names.
    """
    boxes = tuple(boxes)
    height, width = tested.shape
    found: list[tuple[int, int]] = []
    for _ in range(count * PASS_TRIES_PER_CROP):
        if len(found) == count:
            break
        window = (
            int(rng.integers(0, width - crop_size + 1)),
            int(rng.integers(0, height - crop_size + 1)),
        )
        if any(touches(window, crop_size, b) for b in boxes):
            continue
        digest = _digest(tested, window, crop_size)
        if digest in seen:
            continue
        seen.add(digest)
        found.append(window)
    return found


class _CropWriter:
    """Writes the crops of one pair (tested → input, template → golden) and makes their rows."""

    def __init__(
        self,
        images_dir: Path,
        naming: ImageNaming,
        pair: Pair,
        role: str,
        crop_size: int,
        root: Path,
    ):
        self.images_dir, self.naming = images_dir, naming
        self.pair, self.crop_size = pair, crop_size
        self.tested = _load_gray(root / pair.tested)
        self.template = _load_gray(root / pair.template)
        self.height, self.width = self.tested.shape
        base = PurePosixPath(IMAGES_SUBDIR, ROLE_DIRS[role], pair.group)
        self.input_dir, self.golden_dir = str(base / "input"), str(base / "golden")

    def write(
        self, name: str, label: str, window: tuple[int, int], severity: str, bbox: str
    ) -> dict[str, str]:
        x, y = window
        c = self.crop_size
        for light in self.naming.lights:
            for rel, image in ((self.input_dir, self.tested), (self.golden_dir, self.template)):
                path = resolve_image_path(self.images_dir, rel, name, light, self.naming.ext)
                _write_png(path, image[y : y + c, x : x + c])
        return {
            "input_path": self.input_dir,
            "golden_path": self.golden_dir,
            "label": label,
            "object_name": name,
            "boardname": self.pair.group,
            "severity": severity,
            "source_image": self.pair.tested,
            "bbox": bbox,
            "crop_box": f"{x} {y} {x + c} {y + c}",
        }


def _check_args(
    crop_size: int, pass_per_image: int, val_fraction: float, pool_fraction: float, seed: int
) -> None:
    if pass_per_image < 1:
        raise UserError(
            f"pass_per_image must be 1 or more, got {pass_per_image}: the PASS crops are the "
            "good class every set needs"
        )
    if not (0 <= val_fraction < 1 and 0 <= pool_fraction < 1 and val_fraction + pool_fraction < 1):
        raise UserError(
            f"val_fraction ({val_fraction:g}) and pool_fraction ({pool_fraction:g}) must each be "
            "in [0, 1) and sum to less than 1 (the rest is the training set)"
        )
    if seed < 0:
        raise UserError(f"seed must be 0 or more, got {seed}")


def _check_dest(ws: Workspace, *, force: bool) -> None:
    if ws.root.exists() and not ws.root.is_dir():
        raise WorkspaceError(f"{ws.root} is a file; choose a directory for the workspace")
    existing = [p for p in [*ws.csvs(include_holdout=True).values(), ws.spec_path] if p.exists()]
    if existing and not force:
        raise WorkspaceError(
            f"{ws.root} is already a workspace (has {existing[0].relative_to(ws.root)}); "
            "pass force=True (--force) to overwrite it, or choose another directory"
        )


def _check_disjoint(trainval: list[Pair], test: list[Pair]) -> None:
    both = sorted({p.key for p in trainval} & {p.key for p in test})
    if both:
        raise UserError(
            f"{len(both)} pair(s) listed in both {TRAINVAL_LIST} and {TEST_LIST} "
            f"(e.g. {', '.join(both[:MAX_LISTED])}); a KPI image must not be trained on: "
            "remove them from one list"
        )


def _check_files_exist(root: Path, pairs: list[Pair]) -> None:
    missing = [
        rel
        for p in pairs
        for rel in (p.tested, p.template, p.annotation)
        if not (root / rel).is_file()
    ]
    if missing:
        raise UserError(
            f"{len(missing)} listed file(s) missing under {root} "
            f"(e.g. {', '.join(missing[:MAX_LISTED])}); restore them or remove their pairs "
            f"from {TRAINVAL_LIST}/{TEST_LIST}"
        )


def _with_boxes(root: Path, pair: Pair) -> Pair:
    return dataclasses.replace(pair, boxes=read_annotations(root / pair.annotation))


def _check_images(root: Path, pairs: list[Pair], crop_size: int) -> None:
    """Sizes agree, fit the crop and contain every box (headers only, no decoding)."""
    for pair in pairs:
        size = _image_size(root / pair.tested)
        if _image_size(root / pair.template) != size:
            raise UserError(
                f"{root / pair.template}: template and tested image differ in size; "
                "DeepPCB pairs are aligned, re-download the pair or remove it from its list"
            )
        width, height = size
        if crop_size > min(width, height):
            raise UserError(
                f"crop_size {crop_size} is larger than {root / pair.tested} "
                f"({width}x{height}); use a smaller crop_size"
            )
        for box in pair.boxes:
            if box.x2 > width or box.y2 > height:
                raise UserError(
                    f"{root / pair.annotation}:{box.line}: box {box.as_text()} lies outside "
                    f"the {width}x{height} image; fix or remove the line"
                )


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path} cannot be read as an image ({exc}); re-download it") from exc


def _load_gray(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{path} cannot be decoded ({exc}); re-download it") from exc


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text file ({exc}); re-download it") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield lineno, line.strip()


def _both_classes(frame: pd.DataFrame) -> bool:
    passes = int((frame["label"] == PASS_LABEL).sum())
    return 0 < passes < len(frame)


def _share(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 and n else 0


def _digest(image: np.ndarray, window: tuple[int, int], crop_size: int) -> str:
    x, y = window
    crop = np.ascontiguousarray(image[y : y + crop_size, x : x + crop_size])
    return hashlib.sha1(crop.tobytes(), usedforsecurity=False).hexdigest()


def _clear_previous(ws: Workspace) -> None:
    """Drop the CSVs first (so no CSV ever points at a half-replaced image), then old crops."""
    for path in ws.csvs(include_holdout=True).values():
        path.unlink(missing_ok=True)
    shutil.rmtree(ws.images_dir / IMAGES_SUBDIR, ignore_errors=True)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")
