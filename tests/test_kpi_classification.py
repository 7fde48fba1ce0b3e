"""automl_deft.kpi.classification: what the KFP UI's ClassificationMetrics artifact shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl_deft.errors import KPIError
from automl_deft.kpi import compute_kpi
from automl_deft.kpi.classification import (
    CATEGORIES,
    MAX_ROC_POINTS,
    confusion_matrix_at,
    deliverable_classification,
    roc_curve,
    thin_indices,
)
from automl_deft.layout import RunLayout
from automl_deft.records import Deliverable
from automl_deft.workspace import SCORE_COLUMN

LABELS = ["PASS", "PASS", "PASS", "short", "open", "PASS"]
SCORES = [0.1, 0.4, 0.9, 0.5, 0.95, 0.3]


def test_confusion_matrix_rows_are_truth_columns_prediction() -> None:
    cm = confusion_matrix_at(LABELS, SCORES, threshold=0.45)
    assert cm.categories == CATEGORIES == ("PASS", "defect")
    assert cm.matrix == [[3, 1], [0, 2]]  # PASS 0.9 flagged; both defects caught
    assert (cm.false_alarms, cm.missed) == (1, 0)
    assert confusion_matrix_at(LABELS, SCORES, threshold=0.5).matrix == [[3, 1], [1, 1]]
    with pytest.raises(KPIError, match="not finite"):
        confusion_matrix_at(LABELS, [*SCORES[:-1], float("nan")], 0.5)


def test_roc_curve_matches_the_kpi_and_is_thinned() -> None:
    roc = roc_curve(LABELS, SCORES)
    assert roc.fpr[0] == roc.tpr[0] == 0.0 and roc.fpr[-1] == roc.tpr[-1] == 1.0
    assert roc.threshold == sorted(roc.threshold, reverse=True)
    kpi = compute_kpi(LABELS, SCORES)
    at = roc.threshold.index(kpi.threshold)
    assert roc.tpr[at] == 1.0 and roc.fpr[at] * 100 == pytest.approx(kpi.far_pct)
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(5000) < 0.1, "short", "PASS")
    scores = rng.random(5000) + (labels == "short") * 0.3
    big = roc_curve(labels, scores)
    assert 2 < len(big.fpr) <= MAX_ROC_POINTS == 200
    assert (big.fpr[0], big.fpr[-1], big.tpr[-1]) == (0.0, 1.0, 1.0)
    assert np.all(np.diff(big.fpr) >= 0) and np.all(np.diff(big.tpr) >= 0)
    assert thin_indices(3, 200) == [0, 1, 2] and thin_indices(1000, 5) == [0, 250, 500, 749, 999]
    with pytest.raises(KPIError, match="needs PASS and defect rows"):
        roc_curve(["PASS", "PASS"], [0.1, 0.2])


def _write_scores(path: Path, labels: list[str], scores: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"label": labels, SCORE_COLUMN: scores}).to_csv(path, index=False)


def test_deliverable_classification_prefers_the_holdout(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert deliverable_classification(tmp_path) is None  # no best_model.json yet
    Deliverable(
        checkpoint="iter1/train/best_val.pt",
        threshold=0.45,
        far_pct=0.0,
        iteration="iter1",
        images_dir="/images",
        inference_spec=RunLayout.INFERENCE_SPEC,
    ).write(layout.deliverable)
    assert deliverable_classification(tmp_path) is None  # nothing scored
    _write_scores(layout.stage_dir("iter1", "inference", "kpi_scores.csv"), LABELS, SCORES)
    on_kpi = deliverable_classification(tmp_path)
    assert on_kpi is not None and on_kpi.scored_on == "kpi" and on_kpi.label == "iter1"
    assert on_kpi.confusion.matrix == [[3, 1], [0, 2]] and on_kpi.threshold == 0.45
    _write_scores(layout.holdout_scores("iter1"), ["PASS", "short", "PASS"], [0.2, 0.4, 0.6])
    held = deliverable_classification(tmp_path)
    assert held is not None and held.scored_on == "holdout"
    assert held.confusion.matrix == [[1, 1], [1, 0]]  # the shipped threshold misses 0.4
    assert len(held.roc.fpr) == len(held.roc.tpr) == len(held.roc.threshold)
