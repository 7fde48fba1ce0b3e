"""The one place the report turns the files' names into a reader's words.

``deft_state.json`` and ``pipeline_summary.json`` keep their documented labels
(``baseline``, ``iter1`` …, ``final_automl``; sources ``automl_phase1`` …; phases
``phase1|phase2|phase3``, :mod:`automl_deft.phases`). Every label, axis, heading and
table cell of the page goes through :func:`step_name` or :func:`phase_name`, and
sentences written by other stages (pick-best's "chosen because", the review notes,
the stop reason) through :func:`readable`, so no internal name reaches the page.
"""

from __future__ import annotations

import re

from automl_deft.phases import (
    BASELINE,
    FINAL_AUTOML,
    SOURCE_PHASE1,
    SOURCE_PHASE3,
    Phase,
    iteration_number,
)

__all__ = [
    "BASELINE_TRAINED_HERE",
    "PHASE1_WINNER",
    "PHASE3_WINNER",
    "PHASE_NAMES",
    "PIPELINE_TITLE",
    "phase_name",
    "readable",
    "step_name",
]

PIPELINE_TITLE = "automl-deft run report"
"""The page's title: the report covers the whole pipeline, not only the DEFT loop."""
PHASE1_WINNER = "Phase 1 winner"
PHASE3_WINNER = "Phase 3 winner"
BASELINE_TRAINED_HERE = "DEFT baseline"
"""The loop's own baseline (a DEFT-only run, or Phase 1 skipped)."""

PHASE_NAMES: dict[str, str] = {
    Phase.PHASE1.value: "Phase 1 AutoML",
    Phase.DEFT.value: "Phase 2 DEFT",
    Phase.PHASE3.value: "Phase 3 AutoML",
}


def step_name(label: str, source: str | None = None) -> str:
    """``Phase 1 winner`` / ``DEFT baseline``, ``DEFT iter 1`` …, ``Phase 3 winner``.

    Args:
        label: the iteration label of ``deft_state.json``.
        source: its ``source``: the baseline is Phase 1's winner when it says so.
    """
    if label == FINAL_AUTOML or source == SOURCE_PHASE3:
        return PHASE3_WINNER
    if label == BASELINE:
        return PHASE1_WINNER if source == SOURCE_PHASE1 else BASELINE_TRAINED_HERE
    n = iteration_number(label)
    return f"DEFT iter {n}" if n else label


def phase_name(phase: str) -> str:
    """``Phase 1 AutoML`` / ``Phase 2 DEFT`` / ``Phase 3 AutoML`` for a phase value."""
    return PHASE_NAMES.get(phase, phase)


# A label standing as a word: not part of a path or a file name (``iter1/dataset``,
# ``train_combined_iter1.csv`` stay as written).
_WORD = re.compile(r"(?<![\w/.-])(final_automl|automl_phase[13]|baseline|iter\d+)(?![\w/-]|\.\w)")


def readable(text: str, baseline_source: str | None = None) -> str:
    """``text`` with every iteration label and source in it replaced by :func:`step_name`.

    Args:
        text: a sentence another stage wrote (e.g. "final_automl 0.18% vs runner-up iter2").
        baseline_source: the run's ``iterations.baseline.source``.
    """

    def name(match: re.Match[str]) -> str:
        word = match.group(1)
        if word == SOURCE_PHASE1:
            return "Phase 1"
        if word == SOURCE_PHASE3:
            return "Phase 3"
        return step_name(word, baseline_source if word == BASELINE else None)

    return _WORD.sub(name, text)
