"""Tests of automl_deft.kpi against a from-the-definition reference implementation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from automl_deft import kpi
from automl_deft.errors import KPIError, UserError
from automl_deft.kpi import (
    KPIResult,
    KPITarget,
    OperatingPoint,
    compute_kpi,
    confusion_matrix_text,
    kpi_from_csv,
    kpi_from_frame,
    metric,
    parse_target,
    plot_score_distribution,
    threshold_sweep,
    write_sweep_csv,
)

# ------------------------------------------------------------------ reference
# Written straight from the KPI definition with plain loops; shares nothing with automl_deft.kpi.


def _reference_point(truth: list[bool], scores: list[float], t: float) -> dict:
    tp = fp = tn = fn = 0
    for defect, score in zip(truth, scores, strict=True):
        flagged = score > t
        if defect and flagged:
            tp += 1
        elif defect:
            fn += 1
        elif flagged:
            fp += 1
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    far = fp / (fp + tn)
    return {
        "threshold": t,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "far_pct": far * 100,
    }


def reference_kpi(labels: list[str], scores: list[float]) -> tuple[dict | None, dict | None, str]:
    """(recall-100 point, best-F1 point, reason) by brute force."""
    truth = [label.strip().upper() != "PASS" for label in labels]
    if not any(truth):
        return None, None, "no defect rows"
    if all(truth):
        return None, None, "no PASS rows"
    candidates = [*sorted(set(scores)), math.nextafter(min(scores), -math.inf)]
    best_recall100 = best_f1 = None
    for t in candidates:
        point = _reference_point(truth, scores, t)
        key = (point["f1"], point["precision"], t)
        if best_f1 is None or key > best_f1[0]:
            best_f1 = (key, point)
        if point["recall"] == 1.0 and (best_recall100 is None or key > best_recall100[0]):
            best_recall100 = (key, point)
    if best_recall100 is None:
        return None, best_f1[1], "unreachable"
    return best_recall100[1], best_f1[1], ""


LABEL_SPELLINGS_PASS = ["PASS", "pass", " Pass ", "PASS\t"]
LABEL_SPELLINGS_DEFECT = ["Missing", "short", "bridge", "Shift", "passed", "NO_PASS"]


def random_case(rng: np.random.Generator) -> tuple[list[str], list[float]]:
    """Small score files with frequent ties, including PASS/defect ties."""
    n = int(rng.integers(1, 301))
    pass_share = float(rng.random())
    is_pass = rng.random(n) < pass_share
    kind = rng.random()
    if kind < 0.1:  # every row the same score
        scores = np.full(n, round(float(rng.random()), 2))
    else:
        shift = float(rng.choice([0.0, 0.2, 0.5, 1.0]))
        scores = rng.random(n) + np.where(is_pass, 0.0, shift) - float(rng.choice([0.0, 0.5]))
        scores = np.round(scores, int(rng.choice([0, 1, 2, 3])))
    if 0.1 <= kind < 0.2:  # exactly one defect
        is_pass[:] = True
        is_pass[int(rng.integers(n))] = False
    labels = [
        str(rng.choice(LABEL_SPELLINGS_PASS if p else LABEL_SPELLINGS_DEFECT)) for p in is_pass
    ]
    return labels, [float(s) for s in scores]


def assert_point_matches(actual: OperatingPoint, expected: dict) -> None:
    for name in ("threshold", "far_pct", "precision", "recall", "f1"):
        assert getattr(actual, name) == pytest.approx(expected[name], abs=1e-9, rel=0), name
    for name in ("tp", "fp", "tn", "fn"):
        assert getattr(actual, name) == expected[name], name


def test_matches_reference_on_random_files() -> None:
    rng = np.random.default_rng(20240601)
    seen = {"available": 0, "unavailable": 0, "below_min": 0}
    for _ in range(250):
        labels, scores = random_case(rng)
        result = compute_kpi(labels, scores)
        expected, expected_f1, reason = reference_kpi(labels, scores)
        if expected is None:
            seen["unavailable"] += 1
            assert not result.available
            assert result.reason is not None and result.reason.startswith(reason)
            assert result.far_pct is None and result.threshold is None
            continue
        seen["available"] += 1
        seen["below_min"] += expected["threshold"] < min(scores)
        assert result.available and result.reason is None
        assert_point_matches(result.recall100, expected)
        assert_point_matches(result.best_f1, expected_f1)
        assert result.far_pct == result.recall100.far_pct
        assert result.n_defect + result.n_pass == len(labels)
    # The generator really exercises the interesting branches.
    assert seen["available"] > 150 and seen["unavailable"] > 5 and seen["below_min"] > 10


# ------------------------------------------------------------------ compute_kpi


LABELS = ["PASS"] * 5 + ["Missing"] * 4 + ["pass"] * 2
SCORES = [0.1, 0.2, 0.3, 0.31, 0.5, 0.31, 0.6, 0.7, 0.9, 0.8, 0.95]


def test_worked_example() -> None:
    result = compute_kpi(LABELS, SCORES)
    assert result.threshold == 0.3
    assert (result.tp, result.fp, result.tn, result.fn) == (4, 4, 3, 0)
    assert result.far_pct == pytest.approx(400 / 7)
    assert result.summary() == (
        "FAR=57.14% threshold=0.3000 (recall=100%, precision=0.5000, F1=0.6667, "
        "TP/FP/TN/FN=4/4/3/0)"
    )


def test_threshold_below_min_when_a_defect_has_the_lowest_score() -> None:
    result = compute_kpi(["Missing", "PASS", "PASS"], [0.1, 0.5, 0.1])
    assert result.threshold == np.nextafter(0.1, -np.inf)
    assert result.threshold < 0.1
    assert result.far_pct == 100.0
    assert (result.tp, result.fp, result.tn, result.fn) == (1, 2, 0, 0)


def test_all_equal_scores() -> None:
    result = compute_kpi(["PASS", "short", "PASS"], [0.4, 0.4, 0.4])
    assert result.threshold == np.nextafter(0.4, -np.inf)
    assert result.far_pct == 100.0


def test_perfect_separation_gives_zero_far() -> None:
    result = compute_kpi(["PASS", "PASS", "bridge"], [0.1, 0.2, 0.9])
    assert result.far_pct == 0.0
    assert result.threshold == 0.2  # the highest threshold among equal (F1, precision)
    assert result.f1 == 1.0


@pytest.mark.parametrize(
    ("labels", "reason", "n_pass", "n_defect"),
    [
        (["PASS", " pass "], "no defect rows: recall is undefined", 2, 0),
        (["Missing", "short"], "no PASS rows: FAR is undefined", 0, 2),
    ],
)
def test_single_class_is_unavailable(
    labels: list[str], reason: str, n_pass: int, n_defect: int
) -> None:
    result = compute_kpi(labels, [0.2, 0.7])
    assert not result.available
    assert result.reason == reason
    assert (result.n_pass, result.n_defect) == (n_pass, n_defect)
    assert result.recall100 is None and result.best_f1 is None
    assert result.summary() == f"KPI unavailable: {reason}"
    assert result.to_dict()["far_pct"] is None
    assert not KPITarget("<", 5.0).is_met(result)


def test_unreachable_recall_rule() -> None:
    # Drop the below-minimum threshold: a defect at the minimum score can then never be caught.
    labels, scores = ["Missing", "PASS"], [0.1, 0.5]
    is_defect, values = metric._as_arrays(labels, scores)
    sweep = metric._sweep(is_defect, values).subset(slice(1, None))
    result = metric._result(sweep, n_pass=1, n_defect=1)
    assert not result.available
    assert result.reason == kpi.UNREACHABLE_REASON
    assert result.best_f1 is not None


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([], [], "no rows to score"),
        (["PASS", "Missing"], [0.1, float("nan")], r"1 score\(s\) are NaN or infinite"),
        (["PASS", "Missing"], [float("inf"), 0.2], "NaN or infinite"),
        (["PASS", "Missing"], [0.1], "2 labels but 1 scores"),
        (["PASS", "Missing"], ["a", "b"], "scores must be numbers"),
        (["PASS", "Missing"], [[0.1], [0.2]], "one-dimensional"),
    ],
)
def test_bad_input_raises(labels: list[str], scores: list, match: str) -> None:
    with pytest.raises(KPIError, match=match) as info:
        compute_kpi(labels, scores)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UserError)


def test_accepts_arrays_series_and_generators() -> None:
    expected = compute_kpi(LABELS, SCORES)
    assert compute_kpi(np.array(LABELS), np.array(SCORES)) == expected
    assert compute_kpi(pd.Series(LABELS), pd.Series(SCORES)) == expected
    assert compute_kpi(iter(LABELS), SCORES) == expected


def test_dict_round_trip_is_json_ready() -> None:
    result = compute_kpi(LABELS, SCORES)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["available"] is True and data["far_pct"] == result.far_pct
    assert data["best_f1"]["threshold"] == result.best_f1.threshold
    assert KPIResult.from_dict(data) == result
    unavailable = compute_kpi(["PASS"], [0.3])
    assert KPIResult.from_dict(json.loads(json.dumps(unavailable.to_dict()))) == unavailable


def test_confusion_matrix_text() -> None:
    text = confusion_matrix_text(compute_kpi(LABELS, SCORES).recall100)
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["pred", "PASS", "pred", "defect"]
    assert lines[1].split() == ["actual", "PASS", "3", "4"]
    assert lines[2].split() == ["actual", "defect", "0", "4"]


# ------------------------------------------------------------------ sweep and plot


def test_sweep_rows_match_reference_and_kpi() -> None:
    frame = threshold_sweep(LABELS, SCORES)
    assert tuple(frame.columns) == kpi.SWEEP_COLUMNS
    assert len(frame) == len(set(SCORES)) + 1
    assert frame["threshold"].is_monotonic_increasing
    assert frame["threshold"].iloc[0] == np.nextafter(min(SCORES), -np.inf)
    truth = [label.strip().upper() != "PASS" for label in LABELS]
    for row in frame.itertuples(index=False):
        expected = _reference_point(truth, SCORES, row.threshold)
        for name, value in expected.items():
            assert getattr(row, name) == pytest.approx(value, abs=1e-9), name
    at_kpi = frame[frame["threshold"] == compute_kpi(LABELS, SCORES).threshold]
    assert at_kpi["recall"].item() == 1.0


def test_sweep_of_single_class_marks_undefined_rates() -> None:
    frame = threshold_sweep(["PASS", "PASS"], [0.1, 0.2])
    assert frame["recall"].isna().all() and frame["f1"].isna().all()
    assert frame["far_pct"].tolist() == [100.0, 50.0, 0.0]


def test_write_sweep_csv(tmp_path) -> None:
    path = write_sweep_csv(LABELS, SCORES, tmp_path / "out" / "sweep.csv")
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["sweep.csv"]  # no temp file left
    read = pd.read_csv(path)
    pd.testing.assert_frame_equal(read, threshold_sweep(LABELS, SCORES), check_dtype=False)


def test_plot_score_distribution(tmp_path) -> None:
    path = plot_score_distribution(
        LABELS, SCORES, tmp_path / "dist.png", threshold=0.3, title="KPI set"
    )
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    # Imbalanced and single-valued inputs draw too (log axis, widened range).
    rng = np.random.default_rng(0)
    labels = ["PASS"] * 500 + ["short"] * 3
    single = plot_score_distribution(labels, rng.random(503), tmp_path / "imb.png")
    flat = plot_score_distribution(["PASS", "Shift"], [0.5, 0.5], tmp_path / "flat.png")
    assert single.stat().st_size > 0 and flat.stat().st_size > 0


# ------------------------------------------------------------------ frames and CSVs


def _inference_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "input_path": [f"b/{i}" for i in range(len(LABELS))],
            "golden_path": [f"g/{i}" for i in range(len(LABELS))],
            "label": LABELS,
            "object_name": [f"C{i}" for i in range(len(LABELS))],
            "siamese_score": SCORES,
        }
    )


def test_kpi_from_frame_and_csv(tmp_path) -> None:
    frame = _inference_frame()
    expected = compute_kpi(LABELS, SCORES)
    assert kpi_from_frame(frame) == expected
    path = tmp_path / "inference.csv"
    frame.to_csv(path, index=False)
    assert kpi_from_csv(path) == expected
    frame.rename(columns={"siamese_score": "score"}).to_csv(path, index=False)
    assert kpi_from_csv(path, score_column="score") == expected


def test_kpi_from_csv_missing_columns(tmp_path) -> None:
    path = tmp_path / "inference.csv"
    _inference_frame().drop(columns="siamese_score").to_csv(path, index=False)
    with pytest.raises(KPIError, match=r"has no 'siamese_score' column; run inference on it"):
        kpi_from_csv(path)
    _inference_frame().drop(columns="label").to_csv(path, index=False)
    with pytest.raises(KPIError, match=r"has no 'label' column; the KPI needs ground truth"):
        kpi_from_csv(path)


def test_kpi_from_csv_bad_values(tmp_path) -> None:
    path = tmp_path / "inference.csv"
    frame = _inference_frame().astype({"siamese_score": object})
    frame.loc[3, "siamese_score"] = "oops"
    frame.to_csv(path, index=False)
    with pytest.raises(KPIError, match=r"1 'siamese_score' value\(s\).*row\(s\) 3, e.g. 'oops'"):
        kpi_from_csv(path)
    frame = _inference_frame()
    frame.loc[2, "label"] = " "
    with pytest.raises(KPIError, match=r"1 row\(s\) with an empty 'label' \(first at row\(s\) 2\)"):
        kpi_from_frame(frame)
    with pytest.raises(KPIError, match=r"inference CSV not found: .*run inference first"):
        kpi_from_csv(tmp_path / "missing.csv")


def test_kpi_from_csv_keeps_na_labels_as_defects(tmp_path) -> None:
    path = tmp_path / "inference.csv"
    path.write_text("label,siamese_score\nNA,0.9\nPASS,0.1\n")
    result = kpi_from_csv(path)
    assert (result.n_pass, result.n_defect, result.far_pct) == (1, 1, 0.0)


# ------------------------------------------------------------------ targets


@pytest.mark.parametrize(
    ("text", "op", "value"),
    [
        ("FAR < 5% at recall=100%", "<", 5.0),
        ("far<=0.1%", "<=", 0.1),
        ("FAR >= 2 % at recall = 100 %", ">=", 2.0),
        ("FAR > 0.5%", ">", 0.5),
        ("  FAR < 0.1% AT RECALL=100%  ", "<", 0.1),
        ("FAR ≤ 1e-2% @ recall=1", "<=", 0.01),
        ("FAR < .5% recall 100", "<", 0.5),
    ],
)
def test_parse_target_valid(text: str, op: str, value: float) -> None:
    target = parse_target(text)
    assert target == KPITarget(op, value)
    assert parse_target(str(target)) == target


def test_target_canonical_text() -> None:
    assert str(parse_target("far<=0.1%")) == "FAR <= 0.1% at recall=100%"
    assert str(KPITarget("<", 5.0)) == "FAR < 5% at recall=100%"
    assert str(KPITarget(">=", 0.005)) == "FAR >= 0.005% at recall=100%"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("FAR < 0.005", r"has no '%' on the FAR value; write 'FAR < 0.005%' .* 'FAR < 0.5%'"),
        ("FAR = 5%", r"cannot parse KPI target 'FAR = 5%'; write it like 'FAR < 0.1% at recall"),
        ("recall < 5%", "cannot parse KPI target"),
        ("", "cannot parse KPI target"),
        ("FAR < five %", "cannot parse KPI target"),
        ("FAR < 150%", "outside 0-100%"),
        ("FAR < 5% at recall=95%", r"recall 95% is not supported; only recall=100%"),
        ("FAR < 5% at recall=0.9", "recall 0.9% is not supported"),
    ],
)
def test_parse_target_invalid(text: str, match: str) -> None:
    with pytest.raises(KPIError, match=match):
        parse_target(text)


@pytest.mark.parametrize(
    ("op", "below", "equal", "above"),
    [
        ("<", True, False, False),
        ("<=", True, True, False),
        (">", False, False, True),
        (">=", False, True, True),
    ],
)
def test_target_is_met(op: str, below: bool, equal: bool, above: bool) -> None:
    target = KPITarget(op, 7.0)
    assert target.is_met(6.9) is below
    assert target.is_met(7 / 100 * 100) is equal  # 7.000000000000001 counts as 7
    assert target.is_met(7.1) is above
    assert target.is_met(None) is False
    assert target.is_met(float("nan")) is False


def test_target_is_met_on_results_and_gap() -> None:
    result = compute_kpi(LABELS, SCORES)  # FAR 57.14%
    assert KPITarget("<", 60.0).is_met(result)
    assert not KPITarget("<", 5.0).is_met(result)
    assert KPITarget("<", 5.0).gap_pp(result) == pytest.approx(400 / 7 - 5)
    assert KPITarget("<", 60.0).gap_pp(result) == 0.0
    assert KPITarget("<", 5.0).gap_pp(compute_kpi(["PASS"], [0.1])) is None


def test_target_constructor_validates() -> None:
    with pytest.raises(KPIError, match="operator '=' is not one of"):
        KPITarget("=", 5.0)
    with pytest.raises(KPIError, match="outside 0-100%"):
        KPITarget("<", -1.0)
    with pytest.raises(KPIError, match="recall 90% is not supported"):
        KPITarget("<", 1.0, recall_pct=90.0)
