"""Tests of automl_deft.kpi.interval: the bootstrap interval, drop-N and the threshold setter.

The bootstrap is checked against a from-the-definition reference that loops over
resamples and calls :func:`compute_kpi` on each resampled set.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from automl_deft.errors import KPIError
from automl_deft.kpi import (
    DropN,
    FarInterval,
    ThresholdSetter,
    compute_kpi,
    drop_n_sensitivity,
    far_interval,
    interval,
    threshold_setter,
)
from automl_deft.workspace import defect_mask


def _realistic(n: int = 2000, defect_share: float = 0.05, seed: int = 1) -> tuple[list, np.ndarray]:
    """PASS scores N(0, 1), defect scores N(4, 1) (FAR ~10%); labels of mixed spelling."""
    rng = np.random.default_rng(seed)
    defect = rng.random(n) < defect_share
    defect[:2] = True, False
    scores = rng.normal(np.where(defect, 4.0, 0.0), 1.0)
    kinds = np.array(["missing", "short", "Bridge "])
    labels = [
        str(kinds[i % 3]) if d else ("PASS", " pass", "Pass")[i % 3] for i, d in enumerate(defect)
    ]
    return labels, scores


def _reference_interval(
    labels: list, scores: np.ndarray, n_resamples: int, seed: int, level: float
):
    """Loop over resamples; draws in the documented order; compute_kpi on each resample."""
    scores = np.asarray(scores, dtype=np.float64)
    is_defect = defect_mask(labels)
    labels_arr = np.asarray(labels, dtype=object)
    def_rows, pass_rows = np.flatnonzero(is_defect), np.flatnonzero(~is_defect)
    rng = np.random.default_rng(seed)
    def_idx = rng.integers(0, len(def_rows), size=(n_resamples, len(def_rows)))
    pass_idx = rng.integers(0, len(pass_rows), size=(n_resamples, len(pass_rows)))
    fars = []
    for b in range(n_resamples):
        rows = np.concatenate([def_rows[def_idx[b]], pass_rows[pass_idx[b]]])
        fars.append(compute_kpi(list(labels_arr[rows]), scores[rows]).far_pct)
    alpha = (1 - level) / 2
    low, high = np.percentile(fars, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high), fars


# ------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize(("seed", "level"), [(0, 0.95), (7, 0.9)])
def test_bootstrap_equals_reference_loop_exactly(seed: int, level: float) -> None:
    labels, scores = _realistic(n=600, seed=seed + 3)
    got = far_interval(labels, scores, n_resamples=150, seed=seed, level=level)
    low, high, _ = _reference_interval(labels, scores, 150, seed, level)
    assert (got.low, got.high) == (low, high)
    assert got.far_pct == compute_kpi(labels, scores).far_pct
    assert (got.level, got.n_resamples, got.seed) == (level, 150, seed)


def test_bootstrap_with_heavy_ties_equals_reference_loop_exactly() -> None:
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 6, 400).astype(float)  # six distinct scores only
    labels = ["PASS" if s < 3 or rng.random() < 0.5 else "defect" for s in scores]
    labels[0], scores[0] = "defect", 1.0  # a defect tied with many PASS rows sets the threshold
    got = far_interval(labels, scores, n_resamples=120, seed=3)
    low, high, _ = _reference_interval(labels, scores, 120, 3, 0.95)
    assert (got.low, got.high) == (low, high)
    assert got.far_pct == compute_kpi(labels, scores).far_pct


def test_far_is_share_of_pass_at_or_above_min_defect_score_with_ties() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 5, n).astype(float)
        defect = rng.random(n) < 0.4
        defect[0], defect[1] = True, False
        labels = ["x" if d else "PASS" for d in defect]
        expected = np.count_nonzero(scores[~defect] >= scores[defect].min()) / (~defect).sum()
        assert compute_kpi(labels, scores).far_pct == expected * 100
        assert far_interval(labels, scores, n_resamples=5).far_pct == expected * 100


def test_blocked_draws_give_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    labels, scores = _realistic(n=500)
    whole = far_interval(labels, scores, n_resamples=64, seed=2)
    monkeypatch.setattr(interval, "_BLOCK_ELEMENTS", 777)  # blocks of one or a few rows
    assert far_interval(labels, scores, n_resamples=64, seed=2) == whole


def test_interval_contains_point_estimate_on_realistic_data() -> None:
    labels, scores = _realistic(n=3000)
    got = far_interval(labels, scores, n_resamples=500)
    assert 0.0 <= got.low <= got.far_pct <= got.high <= 100.0
    assert got.low < got.high


def test_seeds_are_reproducible_and_different_seeds_differ() -> None:
    labels, scores = _realistic()
    a = far_interval(labels, scores, n_resamples=200, seed=0)
    assert far_interval(labels, scores, n_resamples=200, seed=0) == a
    b = far_interval(labels, scores, n_resamples=200, seed=1)
    assert (a.low, a.high) != (b.low, b.high)
    assert a.far_pct == b.far_pct


def test_ten_thousand_rows_thousand_resamples_completes() -> None:
    labels, scores = _realistic(n=10_000, defect_share=0.03)
    got = far_interval(labels, scores, n_resamples=1000)
    assert got.n_resamples == 1000
    assert got.low <= got.far_pct <= got.high


def test_json_and_text() -> None:
    got = FarInterval(far_pct=11.1372, low=8.9, high=13.6, level=0.95, n_resamples=1000, seed=0)
    assert got.to_json() == {
        "far_pct": 11.1372,
        "ci95": [8.9, 13.6],
        "level": 0.95,
        "n_resamples": 1000,
        "seed": 0,
    }
    assert got.text() == "11.14% (95% CI 8.90–13.60%)"
    labels, scores = _realistic(n=300)
    json.dumps(far_interval(labels, scores, n_resamples=10).to_json())


@pytest.mark.parametrize(
    ("labels", "match"),
    [(["PASS", "pass"], "no defect rows"), (["scratch", "short"], "no PASS rows")],
)
def test_single_class_raises_kpi_error(labels: list[str], match: str) -> None:
    with pytest.raises(KPIError, match=match):
        far_interval(labels, [0.1, 0.2])
    with pytest.raises(KPIError, match=match):
        drop_n_sensitivity(labels, [0.1, 0.2])


@pytest.mark.parametrize("bad", [{"n_resamples": 0}, {"level": 1.0}, {"level": 0.0}])
def test_bad_arguments_raise_kpi_error(bad: dict) -> None:
    with pytest.raises(KPIError):
        far_interval(["PASS", "x"], [0.1, 0.2], **bad)


def test_bad_input_raises_like_compute_kpi() -> None:
    with pytest.raises(KPIError, match="NaN"):
        far_interval(["PASS", "x"], [0.1, float("nan")])


# ------------------------------------------------------------------ drop-N


def test_drop_n_matches_compute_kpi_with_those_defects_removed() -> None:
    labels, scores = _realistic(n=800)
    names = [f"obj{i}" for i in range(len(labels))]
    got = drop_n_sensitivity(labels, scores, n_max=3, names=names)
    assert [d.n for d in got] == [1, 2, 3]
    is_defect = defect_mask(labels)
    defect_rows = np.flatnonzero(is_defect)
    hardest = defect_rows[np.argsort(scores[defect_rows], kind="stable")]
    for entry in got:
        keep = np.ones(len(labels), dtype=bool)
        keep[hardest[: entry.n]] = False
        expected = compute_kpi(np.asarray(labels, dtype=object)[keep], scores[keep])
        assert entry.far_pct == expected.far_pct
        assert entry.threshold == expected.threshold
        assert entry.dropped == tuple(names[i] for i in hardest[: entry.n])
    assert got[0].far_pct <= compute_kpi(labels, scores).far_pct
    json.dumps([d.to_json() for d in got])


def test_drop_n_reports_positions_without_names_and_stops_early() -> None:
    labels = ["PASS", "a", "PASS", "b", "PASS"]
    scores = [0.1, 0.5, 0.6, 0.9, 0.2]
    got = drop_n_sensitivity(labels, scores, n_max=5)
    assert got == [DropN(n=1, far_pct=0.0, threshold=0.6, dropped=(1,))]
    assert drop_n_sensitivity(labels, scores, n_max=0) == []


def test_drop_n_with_tied_defects_removes_one_at_a_time() -> None:
    labels = ["PASS", "a", "b", "c", "PASS"]
    scores = [0.5, 0.3, 0.3, 0.9, 0.4]
    got = drop_n_sensitivity(labels, scores, n_max=3)
    assert [d.dropped for d in got] == [(1,), (1, 2)]
    assert [d.far_pct for d in got] == [100.0, 0.0]  # the tie still holds the threshold at 0.3


def test_drop_n_names_length_must_match() -> None:
    with pytest.raises(KPIError, match="names"):
        drop_n_sensitivity(["PASS", "x"], [0.1, 0.2], names=["one"])


# ------------------------------------------------------------ threshold setter


def test_threshold_setter_names_the_lowest_scored_defect() -> None:
    frame = pd.DataFrame(
        {
            "label": ["PASS", "short", "PASS", "missing", "short"],
            "object_name": ["o0", "o1", "o2", "o3", "o4"],
            "boardname": ["b0", "b1", "b2", "b3", "b4"],
            "siamese_score": [0.9, 0.7, 0.2, 0.4, 0.8],
        },
        index=[10, 11, 12, 13, 14],
    )
    got = threshold_setter(frame)
    assert got == ThresholdSetter(
        index=13, position=3, label="missing", object_name="o3", boardname="b3", score=0.4
    )
    assert compute_kpi(frame["label"], frame["siamese_score"]).threshold == 0.2


def test_threshold_setter_without_boardname_and_with_ties() -> None:
    frame = pd.DataFrame(
        {
            "label": ["PASS", "x", "y"],
            "object_name": ["p", "first", "second"],
            "score": [0.1, 0.5, 0.5],
        }
    )
    got = threshold_setter(frame, score_column="score")
    assert (got.object_name, got.boardname, got.ties, got.position) == ("first", None, 2, 1)


def test_threshold_setter_needs_both_classes() -> None:
    frame = pd.DataFrame({"label": ["PASS"], "object_name": ["p"], "siamese_score": [0.1]})
    with pytest.raises(KPIError, match="no defect rows"):
        threshold_setter(frame)
