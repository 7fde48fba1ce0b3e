"""The untouched hold-out (``kpi/holdout_set.csv``): how it is made and the one reader.

The KPI test set steers the workflow, so its FAR is optimistic. The hold-out is
drawn from the same distribution and no phase reads it; only the final step
(``finalize``, :func:`automl_deft.steps.with_evidence`) scores it, through
:func:`read_holdout`. Validation and leakage checks look at it directly
(:func:`automl_deft.validate.validate_workspace`), since checking is not using.

* :func:`split_holdout_frame` splits rows stratified by (label, board family).
* :func:`split_holdout` moves a share of a workspace's KPI set into the hold-out
  (``automl-deft split-holdout``).
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl_deft.errors import WorkspaceError
from automl_deft.io import atomic_write_csv
from automl_deft.workspace import (
    HOLDOUT_CSV,
    HOLDOUT_ROLE,
    KPI_CSV,
    PASS_LABEL,
    Workspace,
    find_duplicates,
    is_pass,
    leakage_keys,
    normalize_label,
    read_dataset_csv,
)

__all__ = [
    "HOLDOUT_FRACTION",
    "NO_HOLDOUT_WARNING",
    "HoldoutSplit",
    "check_fraction",
    "read_holdout",
    "split_holdout",
    "split_holdout_frame",
]

HOLDOUT_FRACTION = 0.3
"""Default share of the KPI-distribution rows that go to the hold-out."""

NO_HOLDOUT_WARNING = (
    "no untouched hold-out (kpi/holdout_set.csv): every FAR will be measured on the KPI set "
    "that steers the workflow; make one with `automl-deft split-holdout WORKSPACE`"
)
"""What ``validate``, the pre-flight and the run's summary say when a workspace has none."""

FAMILY_COLUMN = "boardname"
"""The board family of a row (one stratum per label when the column is absent)."""

_DEFECT = "<defect>"


def check_fraction(fraction: float) -> None:
    """Raises: WorkspaceError: ``fraction`` is not strictly between 0 and 1."""
    if not 0 < fraction < 1:
        raise WorkspaceError(
            f"hold-out fraction must be in (0, 1), got {fraction:g}; e.g. 0.3 holds out 30%"
        )


def split_holdout_frame(
    frame: pd.DataFrame,
    *,
    fraction: float = HOLDOUT_FRACTION,
    seed: int = 0,
    group_by: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into (kept, holdout), about ``fraction`` of every stratum held out.

    A stratum is (normalised label, board family); the family is the ``boardname``
    column, or one family for all rows when it is absent. A stratum of n >= 2
    units holds out ``round(n * fraction)`` of them, but at least one and at most
    n - 1, so both sides see it. Strata of a single unit (a rare defect type in one
    family) are pooled and split the same way a level up: by label across
    families, then by class (PASS / defect), then all together; a unit still
    alone goes to the hold-out with probability ``fraction``. Which units go is
    drawn from ``seed`` and the stratum name alone, so the split is deterministic
    for a seed. Every row lands on exactly one side; both keep ``frame``'s row
    order (index reset).

    Args:
        frame: dataset rows (at least a ``label`` column).
        fraction: share held out, strictly between 0 and 1.
        seed: the random seed.
        group_by: a column whose equal values stay on one side (e.g. ``source_image``
            for overlapping crops of one board image). A group is then the unit, its
            stratum (any defect row → defect, else PASS; its first row's family).

    Raises:
        WorkspaceError: ``fraction`` out of range, or ``group_by`` is not a column.
    """
    check_fraction(fraction)
    if group_by is not None and group_by not in frame.columns:
        raise WorkspaceError(
            f"cannot group the hold-out split by {group_by!r}: no such column "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    n_rows = len(frame)
    labels = [normalize_label(v) for v in frame["label"]] if n_rows else []
    families = (
        frame[FAMILY_COLUMN].astype(str).tolist() if FAMILY_COLUMN in frame.columns else []
    ) or [""] * n_rows
    units = frame[group_by].astype(str).tolist() if group_by is not None else list(range(n_rows))

    unit_stratum: dict[object, tuple[str, str]] = {}
    for unit, label, family in zip(units, labels, families, strict=True):
        if unit not in unit_stratum:
            unit_stratum[unit] = (label if group_by is None else PASS_LABEL, family)
        if group_by is not None and not is_pass(label):
            unit_stratum[unit] = (_DEFECT, unit_stratum[unit][1])
    # Strata too small to split (one unit) are pooled and split a level up: the units
    # of one label across families, then one class (PASS / defect), then all of them.
    levels: tuple[Callable[[tuple[str, str]], tuple[str, ...]], ...] = (
        lambda st: ("label", *st),
        lambda st: ("label", st[0]),
        lambda st: ("class", str(is_pass(st[0]))),
        lambda st: ("all",),
    )
    order = {unit: i for i, unit in enumerate(unit_stratum)}  # first appearance
    held: set[object] = set()
    pending = list(unit_stratum)
    for level, key_of in enumerate(levels):
        strata: dict[tuple[str, ...], list[object]] = {}
        for unit in pending:
            strata.setdefault(key_of(unit_stratum[unit]), []).append(unit)
        pending = []
        for key, members in sorted(strata.items()):
            name = "\x1f".join(key).encode()
            rng = np.random.default_rng([seed, zlib.crc32(name)])
            n = len(members)
            if n >= 2:
                k = min(n - 1, max(1, int(np.floor(n * fraction + 0.5))))
            elif level < len(levels) - 1:
                pending.extend(members)
                continue
            else:
                k = int(rng.random() < fraction)
            held.update(members[i] for i in rng.permutation(n)[:k].tolist())
        pending.sort(key=order.__getitem__)

    mask = np.array([u in held for u in units], dtype=bool)
    kept = frame.loc[~mask].reset_index(drop=True)
    holdout = frame.loc[mask].reset_index(drop=True)
    return kept, holdout


@dataclass(frozen=True)
class HoldoutSplit:
    """What :func:`split_holdout` did, with rows per label before and after.

    Attributes:
        workspace: the workspace root.
        fraction: the share asked for.
        seed: the seed.
        before: rows per label of the KPI set before the split.
        kept: rows per label left in ``kpi/testing_set.csv``.
        holdout: rows per label written to ``kpi/holdout_set.csv``.
        resumed: True when an interrupted split was finished (the hold-out was
            already written; only the KPI set was rewritten).
    """

    workspace: Path
    fraction: float
    seed: int
    before: dict[str, int]
    kept: dict[str, int]
    holdout: dict[str, int]
    resumed: bool = False

    @property
    def n_before(self) -> int:
        return sum(self.before.values())

    @property
    def n_kept(self) -> int:
        return sum(self.kept.values())

    @property
    def n_holdout(self) -> int:
        return sum(self.holdout.values())

    def table(self) -> str:
        """Rows per label: the KPI set before, the KPI set after, the hold-out."""
        labels = sorted(self.before, key=lambda k: (k != PASS_LABEL, -self.before[k], k))
        head = f"{'label':<12} {'before':>7} {'kpi_test':>9} {'holdout':>8}"
        lines = [head, "-" * len(head)]
        for lab in labels:
            lines.append(
                f"{lab:<12} {self.before[lab]:>7} {self.kept.get(lab, 0):>9} "
                f"{self.holdout.get(lab, 0):>8}"
            )
        lines.append(f"{'total':<12} {self.n_before:>7} {self.n_kept:>9} {self.n_holdout:>8}")
        return "\n".join(lines)


def split_holdout(
    workspace: str | os.PathLike[str] | Workspace,
    *,
    fraction: float = HOLDOUT_FRACTION,
    seed: int = 0,
    group_by: str | None = None,
) -> HoldoutSplit:
    """Move about ``fraction`` of the KPI test set into a new untouched hold-out.

    The hold-out is written first, then the KPI set is rewritten without its rows
    (each write atomic). A crash between the two leaves a hold-out whose rows are
    all still in the KPI set; running this again detects that and finishes the
    split (only the KPI set is rewritten), whatever ``fraction`` and ``seed``.

    Raises:
        WorkspaceError: ``fraction`` not in (0, 1); a finished hold-out already
            exists (the message says how to undo it); the KPI set is missing,
            invalid or has duplicate rows; either side would lack PASS or defect rows.
    """
    check_fraction(fraction)
    ws = workspace if isinstance(workspace, Workspace) else Workspace.at(workspace)
    kpi = read_dataset_csv(ws.kpi_csv, role="kpi_test")
    duplicates = find_duplicates(kpi, role="kpi_test")
    if duplicates:
        raise WorkspaceError(
            f"{duplicates[0]} first: a repeated row could land on both sides of the split"
        )
    if ws.has_holdout:
        return _resume(ws, kpi, fraction=fraction, seed=seed)
    kept, holdout = split_holdout_frame(kpi, fraction=fraction, seed=seed, group_by=group_by)
    for side, frame in (("kpi_test", kept), (HOLDOUT_ROLE, holdout)):
        n_defect = sum(not is_pass(v) for v in frame["label"])
        if n_defect == 0 or n_defect == len(frame):
            counts = _labels(kpi)
            raise WorkspaceError(
                f"cannot split a hold-out of {fraction:g} from {KPI_CSV} "
                f"({counts.get(PASS_LABEL, 0)} PASS, {len(kpi) - counts.get(PASS_LABEL, 0)} "
                f"defect rows): the {side} side would have no "
                f"{'defect' if n_defect == 0 else PASS_LABEL} rows; add rows or change the "
                "fraction or seed"
            )
    atomic_write_csv(ws.holdout_csv, holdout)
    atomic_write_csv(ws.kpi_csv, kept)
    return HoldoutSplit(ws.root, fraction, seed, _labels(kpi), _labels(kept), _labels(holdout))


def _resume(ws: Workspace, kpi: pd.DataFrame, *, fraction: float, seed: int) -> HoldoutSplit:
    """A hold-out exists: finish an interrupted split, or refuse a second one."""
    holdout = read_dataset_csv(ws.holdout_csv, role=HOLDOUT_ROLE)
    held = set(leakage_keys(holdout))
    in_kpi = leakage_keys(kpi).isin(held).to_numpy()
    undo = (
        f"to undo it, move its rows back into {KPI_CSV} and delete it (in the workspace: "
        f"tail -n +2 {HOLDOUT_CSV} >> {KPI_CSV} && rm {HOLDOUT_CSV})"
    )
    if not held or int(in_kpi.sum()) == 0:
        raise WorkspaceError(f"{ws.holdout_csv} already exists; a hold-out is split once: {undo}")
    if int(in_kpi.sum()) != len(held):
        raise WorkspaceError(
            f"{ws.holdout_csv} already exists and {int(in_kpi.sum())} of its {len(held)} rows "
            f"are also in {KPI_CSV} (leakage; not an interrupted split): remove them from one "
            f"of the two, or {undo}"
        )
    # Interrupted after the hold-out was written: the KPI set still has every row.
    kept = kpi.loc[~in_kpi].reset_index(drop=True)
    atomic_write_csv(ws.kpi_csv, kept)
    return HoldoutSplit(
        ws.root, fraction, seed, _labels(kpi), _labels(kept), _labels(holdout), resumed=True
    )


def read_holdout(workspace: str | os.PathLike[str] | Workspace) -> pd.DataFrame | None:
    """The hold-out's rows for scoring, or None when the workspace has none.

    The one reader of the hold-out for scoring: only the final step (``finalize``)
    calls it, after the deliverable is chosen, so no phase can train, evaluate,
    mine, rank or choose a threshold on it. Checks read it through
    :func:`automl_deft.validate.validate_workspace` instead.

    Raises:
        WorkspaceError: the file exists but is not a valid dataset CSV.
    """
    ws = workspace if isinstance(workspace, Workspace) else Workspace.at(workspace)
    if not ws.has_holdout:
        return None
    return read_dataset_csv(ws.holdout_csv, role=HOLDOUT_ROLE)


def _labels(frame: pd.DataFrame) -> dict[str, int]:
    return dict(Counter(normalize_label(v) for v in frame["label"]))
