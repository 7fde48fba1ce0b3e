"""Synthetic AOI data: board layouts, defect painters, and the demo workspace.

* :mod:`~automl_deft.synth.render` — board families A–F, layouts, golden renders, nuisance.
* :mod:`~automl_deft.synth.defects` — the six defect painters (reused by synthetic-data stages).
* :mod:`~automl_deft.synth.demo` — the embedded default dataset, a whole workspace.
"""

from __future__ import annotations

from automl_deft.synth.defects import (
    DEFECT_TYPES,
    SEVERITIES,
    DefectSiteError,
    SyntheticSample,
    paint_defect,
    sample_contrast,
    synthesize_sample,
)
from automl_deft.synth.demo import SCALES, DemoSummary, generate_demo_workspace
from automl_deft.synth.render import (
    BOARD_FAMILIES,
    FAMILIES,
    Layout,
    apply_nuisance,
    render,
    render_layout,
    render_nets,
)

__all__ = [
    "BOARD_FAMILIES",
    "DEFECT_TYPES",
    "FAMILIES",
    "SCALES",
    "SEVERITIES",
    "DefectSiteError",
    "DemoSummary",
    "Layout",
    "SyntheticSample",
    "apply_nuisance",
    "generate_demo_workspace",
    "paint_defect",
    "render",
    "render_layout",
    "render_nets",
    "sample_contrast",
    "synthesize_sample",
]
