"""The project's KPI: false-alarm rate (FAR) at 100% recall, and everything around it.

Every phase compares models by :func:`compute_kpi`; the rule it implements is
written out in :mod:`automl_deft.kpi.metric`. Import from here; the modules are:

* :mod:`~automl_deft.kpi.result`: :class:`OperatingPoint` and :class:`KPIResult`;
* :mod:`~automl_deft.kpi.metric`: the one counting function, :func:`compute_kpi`,
  :func:`threshold_sweep` and its CSV;
* :mod:`~automl_deft.kpi.tables`: the KPI of an inference CSV or frame, and the
  artifacts a phase writes with it (:func:`judge_scored_frame`);
* :mod:`~automl_deft.kpi.plots`: the score-distribution PNG and the 2x2 text table;
* :mod:`~automl_deft.kpi.target`: goals such as ``FAR < 0.1% at recall=100%``.
"""

from __future__ import annotations

from automl_deft.kpi.interval import (
    DropN,
    FarInterval,
    ThresholdSetter,
    drop_n_sensitivity,
    far_interval,
    threshold_setter,
)
from automl_deft.kpi.metric import (
    NO_DEFECT_REASON,
    NO_PASS_REASON,
    SWEEP_COLUMNS,
    UNREACHABLE_REASON,
    compute_kpi,
    threshold_sweep,
    write_sweep_csv,
)
from automl_deft.kpi.plots import confusion_matrix_text, plot_score_distribution
from automl_deft.kpi.result import KPIResult, OperatingPoint, format_far, format_threshold
from automl_deft.kpi.tables import (
    LABEL_COLUMN,
    judge_scored_frame,
    kpi_from_csv,
    kpi_from_frame,
    read_inference_csv,
)
from automl_deft.kpi.target import TARGET_EXAMPLE, TARGET_TOLERANCE_PP, KPITarget, parse_target

__all__ = [
    "LABEL_COLUMN",
    "NO_DEFECT_REASON",
    "NO_PASS_REASON",
    "SWEEP_COLUMNS",
    "TARGET_EXAMPLE",
    "TARGET_TOLERANCE_PP",
    "UNREACHABLE_REASON",
    "DropN",
    "FarInterval",
    "KPIResult",
    "KPITarget",
    "OperatingPoint",
    "ThresholdSetter",
    "compute_kpi",
    "confusion_matrix_text",
    "drop_n_sensitivity",
    "far_interval",
    "format_far",
    "format_threshold",
    "judge_scored_frame",
    "kpi_from_csv",
    "kpi_from_frame",
    "parse_target",
    "plot_score_distribution",
    "read_inference_csv",
    "threshold_setter",
    "threshold_sweep",
    "write_sweep_csv",
]
