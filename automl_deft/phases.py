"""The one phase vocabulary: the three phases of a run and the labels of what they produce.

A run has three phases: :attr:`Phase.PHASE1` (the AutoML search), :attr:`Phase.DEFT`
(the data-improvement loop, Phase 2) and :attr:`Phase.PHASE3` (the warm-started
search on the improved data). Their results are recorded in ``deft_state.json``
under *iteration labels*: ``baseline`` (trained here, or Phase 1's winner),
``iter1`` … and ``final_automl`` (Phase 3's winner), each with a *source*.

The words here are the ones the files use (``deft_state.json`` keeps its
documented names); nothing else in the project spells them.
"""

from __future__ import annotations

from enum import StrEnum

from automl_deft.errors import UserError

__all__ = [
    "BASELINE",
    "FINAL_AUTOML",
    "SOURCE_PHASE1",
    "SOURCE_PHASE3",
    "SOURCE_TRAINED_HERE",
    "Phase",
    "iteration_label",
    "iteration_number",
    "parse_phases",
    "phase_of",
]

BASELINE = "baseline"
"""The iteration label of the loop's starting checkpoint."""
FINAL_AUTOML = "final_automl"
"""The iteration label of Phase 3's winner (also its results folder)."""

SOURCE_PHASE1 = "automl_phase1"
"""``iterations.baseline.source`` when Phase 1's winner was handed to the loop."""
SOURCE_TRAINED_HERE = "trained_here"
"""``iterations.baseline.source`` when the loop trained its own baseline."""
SOURCE_PHASE3 = "automl_phase3"
"""``iterations.final_automl.source``."""


class Phase(StrEnum):
    """A phase of the run; the value is the name every file and record uses."""

    PHASE1 = "phase1"
    DEFT = "phase2"
    PHASE3 = "phase3"

    @property
    def results_folder(self) -> str:
        """The folder of a search phase inside a run directory (DEFT writes at the top)."""
        if self is Phase.PHASE1:
            return SOURCE_PHASE1
        if self is Phase.PHASE3:
            return FINAL_AUTOML
        return ""


_ALIASES = {
    "automl": Phase.PHASE1,
    "phase1": Phase.PHASE1,
    "deft": Phase.DEFT,
    "phase2": Phase.DEFT,
    "phase3": Phase.PHASE3,
}


def parse_phases(names: tuple[str, ...] | list[str]) -> tuple[Phase, ...]:
    """Phases from their names (``phase1|phase2|phase3``; ``automl``/``deft`` accepted), in run
    order.

    Raises:
        UserError: an unknown name.
    """
    out = []
    for name in names:
        phase = _ALIASES.get(str(name))
        if phase is None:
            raise UserError(
                f"unknown phase {name!r}; use one of {', '.join(p.value for p in Phase)}"
            )
        out.append(phase)
    return tuple(p for p in Phase if p in out)


def iteration_label(n: int) -> str:
    """``baseline`` for 0, ``iter<n>`` otherwise."""
    return BASELINE if n == 0 else f"iter{n}"


def iteration_number(label: str) -> int | None:
    """0 for ``baseline``, n for ``iter<n>``, None for anything else (``final_automl``)."""
    if label == BASELINE:
        return 0
    if label.startswith("iter") and label[4:].isdigit():
        return int(label[4:])
    return None


def phase_of(label: str, source: str | None) -> Phase:
    """The phase that produced the checkpoint of iteration ``label``."""
    if label == FINAL_AUTOML:
        return Phase.PHASE3
    if label == BASELINE and source == SOURCE_PHASE1:
        return Phase.PHASE1
    return Phase.DEFT
