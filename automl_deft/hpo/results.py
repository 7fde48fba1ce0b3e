"""The records a search hands on: its winner, each finished trial, and the whole answer
(``automl_result.json``). Shared by the search (:mod:`automl_deft.hpo.search`) and its
page (:mod:`automl_deft.hpo.report`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from automl_deft.hpo.guards import GuardReport
from automl_deft.hpo.space import ParamValues
from automl_deft.jsontypes import SpecTree
from automl_deft.records import Record


@dataclass(frozen=True)
class SearchBest(Record):
    """The search's winner (``best`` of ``automl_result.json``).

    ``specs`` are the winning overrides (dotted spec keys, pinned values included);
    ``metric_value`` is the value it was ranked by (after the lucky-winner guard);
    ``checkpoint`` is the winning trial's best-validation checkpoint (absolute).
    """

    ALWAYS = frozenset({"metric_value", "far_pct", "val_loss"})

    rec_id: str
    specs: SpecTree
    metric_value: float | None
    far_pct: float | None
    val_loss: float | None
    checkpoint: str
    pred_counts: dict[str, int]


@dataclass(frozen=True)
class SearchTrial(Record):
    """One finished trial of the search (an entry of ``history``)."""

    ALWAYS = frozenset({"metric", "pruned_at_epoch"})

    rec_id: str
    params: ParamValues
    metric: float | None
    status: Literal["complete", "pruned"]
    pruned_at_epoch: int | None


@dataclass(frozen=True)
class SearchResult(Record):
    """The search's answer and its evidence (``automl_result.json``, written by
    :meth:`~automl_deft.records.Record.to_json`; the library never reads it back:
    the step hands :class:`~automl_deft.records.SearchWinner` on instead)."""

    results_dir: Path
    best: SearchBest
    history: list[SearchTrial]
    algorithm: str
    backend: str
    metric: str
    guards: GuardReport


__all__ = ["SearchBest", "SearchResult", "SearchTrial"]
