"""Synthetic data generation (SDG) for the DEFT loop: one interface, three built-ins.

A backend (:class:`SDGBackend`) makes new defective golden/tested pairs for the
labels the model is weak on, writes their images under the iteration's results
and returns their rows (dataset schema + :data:`SDG_COLUMNS`). Pick one by name
with :func:`get_sdg_backend`; add one with :func:`register_sdg_backend`.

* ``procedural-pcb`` (:mod:`~automl_deft.deft.sdg.procedural`): paints the six
  synthetic PCB defect types onto clean training goldens (single light).
* ``cutpaste`` (:mod:`~automl_deft.deft.sdg.cutpaste`): moves real training
  defects onto other clean training pairs (any lights, grayscale or colour).
* ``command`` (:mod:`~automl_deft.deft.sdg.command`): runs your own generator
  through a documented file contract.

Generated pixels come from training rows only; KPI weak rows steer what is made
through their metadata, never their images.
"""

from __future__ import annotations

from automl_deft.deft.sdg.base import (
    SDG_BACKENDS,
    SDG_COLUMNS,
    SDGBackend,
    SDGContext,
    SDGRequest,
    allocate_budget,
    get_sdg_backend,
    register_sdg_backend,
)
from automl_deft.deft.sdg.command import CommandSDG
from automl_deft.deft.sdg.cutpaste import CutPaste
from automl_deft.deft.sdg.procedural import ProceduralPCB

__all__ = [
    "SDG_BACKENDS",
    "SDG_COLUMNS",
    "CommandSDG",
    "CutPaste",
    "ProceduralPCB",
    "SDGBackend",
    "SDGContext",
    "SDGRequest",
    "allocate_budget",
    "get_sdg_backend",
    "register_sdg_backend",
]
