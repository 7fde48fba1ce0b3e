"""Routing: which weak samples go to mining, which to synthetic data generation.

The original's rule: a weak sample goes to *mining* when its label exists in the
mining pool, to *SDG* when the generator supports its label (``PASS`` included when
it makes hard negatives); it may go to both.
Labels that go nowhere are reported as dropped. When weak samples exist but
neither branch takes any, the stage fails (the loop would retrain on the same
data).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from automl_deft.errors import StageError
from automl_deft.jsontypes import JSONObject
from automl_deft.workspace import PASS_LABEL, normalize_label


@dataclass
class Routing:
    """Weak rows per label, per branch."""

    mining: dict[str, pd.DataFrame] = field(default_factory=dict)
    sdg: dict[str, pd.DataFrame] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> JSONObject:
        """The JSON form (:class:`~automl_deft.records.RoutingSummary` parses it)."""
        return {
            "mining": sorted(self.mining),
            "sdg": sorted(self.sdg),
            "dropped": sorted(self.dropped),
            "rows": {
                "mining": {k: len(v) for k, v in sorted(self.mining.items())},
                "sdg": {k: len(v) for k, v in sorted(self.sdg.items())},
            },
        }

    def summary(self) -> str:
        parts = [
            f"mining {','.join(sorted(self.mining)) or '-'}",
            f"sdg {','.join(sorted(self.sdg)) or '-'}",
        ]
        if self.dropped:
            parts.append(f"dropped {','.join(sorted(self.dropped))}")
        return " · ".join(parts)


def route(
    weak: pd.DataFrame,
    *,
    pool_labels: Iterable[str] | None,
    sdg_labels: frozenset[str] | None,
    mining_enabled: bool = True,
    sdg_enabled: bool = True,
) -> Routing:
    """Split weak rows by label into the mining and SDG branches.

    Args:
        weak: RCA weak rows (dataset columns; ``label`` any case).
        pool_labels: labels present in the mining pool (None: no pool).
        sdg_labels: labels the SDG backend makes (``PASS`` among them when it makes hard
            negatives); None: any label except PASS (a generator that names no labels
            is taken to make defects).
        mining_enabled: False turns the mining branch off.
        sdg_enabled: False turns the SDG branch off.

    Raises:
        StageError: there are weak rows but no branch takes any of them.
    """
    out = Routing()
    if weak.empty:
        return out
    pool = {normalize_label(x) for x in pool_labels} if pool_labels is not None else set()
    labels = weak["label"].map(normalize_label)
    for label in sorted(set(labels)):
        rows = weak[labels == label]
        to_mining = mining_enabled and label in pool
        to_sdg = sdg_enabled and (
            label in sdg_labels if sdg_labels is not None else label != PASS_LABEL
        )
        if to_mining:
            out.mining[label] = rows
        if to_sdg:
            out.sdg[label] = rows
        if not (to_mining or to_sdg):
            out.dropped.append(label)
    if not out.mining and not out.sdg:
        raise StageError(
            f"no weak sample can be routed (labels {', '.join(out.dropped)}: not in the mining "
            "pool and not supported by the SDG backend); add pool rows of these labels or "
            "choose an SDG backend that supports them"
        )
    return out
