"""Tests of automl_deft.deft.rca on hand-built scored frames with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from automl_deft.deft.config import RCAConfig
from automl_deft.deft.rca import analyse, load_weak, write_rca
from automl_deft.errors import KPIError, StageError
from automl_deft.kpi import compute_kpi, parse_target
from automl_deft.workspace import SCORE_COLUMN, ImageNaming

# 10 PASS + 4 defects. t = 0.30 (the score just below the lowest defect, 0.32):
# the PASS rows above it (0.35, 0.40, 0.60, 0.70, 0.80) are false alarms, FAR 50%.
# Best F1 is at 0.70 (TP 3, FP 1): it misses only the 'Missing' row at 0.32.
PASS_ROWS = [
    # (score, boardname)
    (0.10, "A"),
    (0.15, "B"),
    (0.20, "C"),
    (0.25, "A"),
    (0.30, "B"),
    (0.35, "E"),
    (0.40, "E"),
    (0.60, "E"),
    (0.70, "E"),
    (0.80, "A"),
]
DEFECT_ROWS = [
    # (label, score, boardname): forced FAR 50%, 0%, 10%, 0%
    ("Missing", 0.32, "A"),
    ("missing", 0.90, "B"),
    ("Short", 0.75, "C"),
    (" short ", 0.95, "C"),
]


def _frame() -> pd.DataFrame:
    rows = [("PASS", s, b) for s, b in PASS_ROWS] + list(DEFECT_ROWS)
    return pd.DataFrame(
        {
            "input_path": [f"kpi/{b}/test" for _, _, b in rows],
            "golden_path": [f"kpi/{b}/golden" for _, _, b in rows],
            "label": [label for label, _, _ in rows],
            "object_name": [f"obj_{i:02d}" for i in range(len(rows))],
            "boardname": [b for _, _, b in rows],
            "severity": [""] * len(PASS_ROWS) + ["high", "low", "high", "low"],
            "project": "p1",
            "bbox": [f"{i},{i},4,4" for i in range(len(rows))],
            SCORE_COLUMN: [s for _, s, _ in rows],
        }
    )


def _by_object(result, name: str) -> pd.Series:
    return result.gaps.set_index("object_name").loc[name]


def test_threshold_and_weakness() -> None:
    frame = _frame()
    result = analyse(frame, parse_target("FAR < 25%"), images_dir="/imgs")
    kpi = compute_kpi(frame["label"], frame[SCORE_COLUMN])
    assert result.reachable and result.reason is None
    assert result.threshold == kpi.threshold == 0.30
    assert result.kpi == kpi
    gaps = result.gaps
    assert len(gaps) == 14
    assert sorted(set(gaps["label"])) == ["PASS", "missing", "short"]
    passes = gaps[gaps["label"] == "PASS"]
    defects = gaps[gaps["label"] != "PASS"]
    np.testing.assert_allclose(passes["weakness"], passes[SCORE_COLUMN] - 0.30)
    np.testing.assert_allclose(defects["weakness"], 0.30 - defects[SCORE_COLUMN])
    assert (defects["weakness"] < 0).all()
    assert ((passes["weakness"] > 0) == (passes[SCORE_COLUMN] > 0.30)).all()
    assert passes["forced_far_pct"].isna().all()
    forced = {name: _by_object(result, name)["forced_far_pct"] for name in defects["object_name"]}
    assert forced == {"obj_10": 50.0, "obj_11": 0.0, "obj_12": 10.0, "obj_13": 0.0}
    # The defect forcing the most FAR forces exactly the KPI's FAR.
    assert defects["forced_far_pct"].max() == kpi.far_pct
    assert _by_object(result, "obj_00")["filepath"] == "/imgs/kpi/A/test/obj_00_SolderLight.png"
    assert gaps[SCORE_COLUMN].dtype == np.float64 and gaps["is_weak"].dtype == bool


def test_filepath_uses_first_light_and_relative_root() -> None:
    naming = ImageNaming(lights=("Top", "Side"), ext=".jpg")
    result = analyse(_frame(), parse_target("FAR < 25%"), naming=naming)
    assert _by_object(result, "obj_03")["filepath"] == "kpi/A/test/obj_03_Top.jpg"


def test_weak_selection_follows_target_value_and_operator() -> None:
    frame = _frame()
    weak25 = analyse(frame, parse_target("FAR < 25%"))
    # The 5 false alarms and the one defect that alone forces 50% > 25%.
    assert sorted(weak25.weak["object_name"]) == [f"obj_{i:02d}" for i in (5, 6, 7, 8, 9, 10)]
    assert weak25.need == {"missing": 1, "PASS": 5}
    assert weak25.target_defects == ["missing"]
    assert weak25.target_labels == ["missing", "PASS"]

    # 'Short' at 0.75 forces exactly 10%: it violates '< 10%' but not '<= 10%'.
    strict = analyse(frame, parse_target("FAR < 10%"))
    assert strict.need == {"missing": 1, "PASS": 5, "short": 1}
    assert "obj_12" in set(strict.weak["object_name"])
    loose = analyse(frame, parse_target("FAR <= 10%"))
    assert loose.need == {"missing": 1, "PASS": 5}

    # Target met (FAR is 50%): no weak defects, the false alarms are still listed.
    met = analyse(frame, parse_target("FAR <= 50%"))
    assert met.target_defects == []
    assert met.need == {"PASS": 5}
    assert met.target_labels == ["PASS"]


def test_top_k_cap_and_weak_order() -> None:
    result = analyse(_frame(), parse_target("FAR < 5%"), RCAConfig(top_k_per_label=2))
    weak = result.weak
    # Per label at most 2, labels in rank order (missing, PASS, short); PASS rows by
    # weakness desc, defect rows by forced FAR desc.
    assert list(weak["object_name"]) == ["obj_10", "obj_09", "obj_08", "obj_12"]
    assert result.need == {"missing": 1, "PASS": 2, "short": 1}
    assert int(result.gaps["is_weak"].sum()) == 4
    # The weak frame keeps the dataset's own text columns plus float score columns.
    assert list(weak["label"]) == ["Missing", "PASS", "PASS", "Short"]
    assert weak["boardname"].tolist() == ["A", "A", "E", "C"]
    assert weak["weakness"].tolist() == pytest.approx([-0.02, 0.5, 0.4, -0.45])
    assert weak["forced_far_pct"].iloc[[0, 3]].tolist() == [50.0, 10.0]
    assert weak["forced_far_pct"].iloc[1:3].isna().all()


def test_top_k_ties_keep_row_order() -> None:
    frame = _frame()
    frame.loc[[7, 8, 9], SCORE_COLUMN] = 0.6  # three false alarms tied at 0.6
    result = analyse(frame, parse_target("FAR <= 100%"), RCAConfig(top_k_per_label=2))
    assert list(result.weak["object_name"]) == ["obj_07", "obj_08"]


def test_label_ranking_and_stats() -> None:
    result = analyse(_frame(), parse_target("FAR < 25%"))
    kpi = result.kpi
    assert kpi.best_f1 is not None and kpi.best_f1.threshold == 0.70
    # missing has a false negative at best F1; then PASS (FP rate 0.5) before short (0.1).
    assert [s["label"] for s in result.label_stats] == ["missing", "PASS", "short"]
    stats = {s["label"]: s for s in result.label_stats}
    assert sum(s["fn_at_best_f1"] for s in result.label_stats) == kpi.best_f1.fn == 1
    assert stats["missing"]["fn_at_best_f1"] == 1
    assert stats["PASS"]["fp_at_t"] == kpi.fp == 5
    assert stats["missing"]["fp_at_t"] is None
    assert stats["PASS"]["max_forced_far_pct"] is None
    assert stats["short"]["max_forced_far_pct"] == 10.0
    assert stats["PASS"]["n"] == 10 and stats["PASS"]["weak"] == 5
    assert stats["PASS"]["max_weakness"] == pytest.approx(0.5)
    assert stats["PASS"]["min_weakness"] == pytest.approx(-0.2)
    assert stats["short"]["mean_weakness"] == pytest.approx(((0.3 - 0.75) + (0.3 - 0.95)) / 2)
    # gaps: label rank, then weakness desc.
    gaps = result.gaps
    assert list(gaps["label"]) == ["missing"] * 2 + ["PASS"] * 10 + ["short"] * 2
    assert list(gaps["object_name"][:3]) == ["obj_10", "obj_11", "obj_09"]
    pass_weakness = gaps.loc[gaps["label"] == "PASS", "weakness"].to_numpy()
    assert (np.diff(pass_weakness) <= 0).all()


def test_breakdown_lift_and_finding() -> None:
    result = analyse(_frame(), parse_target("FAR < 25%"))
    # Auto columns: boardname and severity; project has one value, bbox is excluded.
    assert set(result.breakdown) == {"boardname", "severity"}
    board = {e["value"]: e for e in result.breakdown["boardname"]}
    e = board["E"]
    assert (e["rows"], e["pass"], e["defects"], e["false_alarms"], e["weak"]) == (4, 4, 0, 4, 4)
    assert e["far_pct"] == 100.0
    assert e["row_share"] == pytest.approx(4 / 14)
    assert e["weak_share"] == pytest.approx(4 / 6)
    assert e["lift"] == pytest.approx((4 / 6) / (4 / 14))
    assert board["C"]["far_pct"] == pytest.approx(0.0) and board["C"]["weak"] == 0
    assert result.breakdown["boardname"][0]["value"] == "E"  # most weak rows first
    severity = {e["value"]: e for e in result.breakdown["severity"]}
    assert severity["(empty)"]["rows"] == 10 and severity["high"]["far_pct"] is None
    assert result.findings == [
        "weak rows concentrate on boardname=E: 67% of weak rows vs 29% of all rows (lift 2.3)"
    ]


def test_breakdown_explicit_columns_and_many_values() -> None:
    frame = pd.concat([_frame()] * 3, ignore_index=True)
    frame["object_name"] = [f"o{i}" for i in range(len(frame))]
    frame["serial"] = [f"s{i}" for i in range(len(frame))]  # 42 values: too many for auto
    auto = analyse(frame, parse_target("FAR < 25%"))
    assert "serial" not in auto.breakdown
    chosen = analyse(
        frame, parse_target("FAR < 25%"), RCAConfig(metadata_columns=["project", "nope"])
    )
    assert list(chosen.breakdown) == ["project"]
    assert chosen.breakdown["project"][0]["lift"] == pytest.approx(1.0)
    assert "metadata column 'nope' is not in the KPI set (skipped)" in chosen.findings


def test_unreachable_without_defects(tmp_path: Path) -> None:
    frame = _frame()
    frame = frame[frame["label"] == "PASS"]
    result = analyse(frame, parse_target("FAR < 25%"))
    assert not result.reachable and result.threshold is None
    assert result.reason == "no defect rows: recall is undefined"
    assert result.weak.empty and result.need == {} and result.target_defects == []
    assert result.gaps["weakness"].isna().all() and len(result.gaps) == 10
    (tmp_path / "threshold.txt").write_text("0.5\n")  # stale, from an earlier run
    paths = write_rca(result, tmp_path)
    assert "unreachable_kpi.txt" in paths and "threshold.txt" not in paths
    assert not (tmp_path / "threshold.txt").exists()
    assert "no defect rows" in (tmp_path / "unreachable_kpi.txt").read_text()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["reachable"] is False and metrics["far_pct"] is None
    assert load_weak(tmp_path).empty
    json.dumps(result.to_dict(), allow_nan=False)


def test_nan_score_raises() -> None:
    frame = _frame()
    frame.loc[3, SCORE_COLUMN] = float("nan")
    with pytest.raises(KPIError, match="missing, non-numeric or infinite"):
        analyse(frame, parse_target("FAR < 25%"))


def test_missing_column_raises() -> None:
    with pytest.raises(KPIError, match="lacks column"):
        analyse(_frame().drop(columns=["object_name"]), parse_target("FAR < 25%"))


def test_write_rca_files_and_round_trips(tmp_path: Path) -> None:
    result = analyse(_frame(), parse_target("FAR < 25%"), images_dir="/imgs")
    out = tmp_path / "rca"
    (tmp_path / "rca").mkdir()
    (out / "unreachable_kpi.txt").write_text("stale\n")
    paths = write_rca(result, out, title="baseline")
    assert set(paths) == {
        "kpi_gaps.parquet",
        "weak_samples.csv",
        "threshold.txt",
        "metrics.json",
        "breakdown.json",
        "rca_summary.md",
    }
    assert all(p.is_file() for p in paths.values())
    assert not (out / "unreachable_kpi.txt").exists()
    assert float((out / "threshold.txt").read_text()) == result.threshold
    assert (out / "threshold.txt").read_text().endswith("\n")
    pd.testing.assert_frame_equal(pd.read_parquet(out / "kpi_gaps.parquet"), result.gaps)
    weak = load_weak(out)
    pd.testing.assert_frame_equal(weak, result.weak, check_dtype=False)
    assert weak["forced_far_pct"].dtype == np.float64
    assert pd.api.types.is_string_dtype(weak["label"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["far_pct"] == 50.0 and metrics["threshold"] == 0.30
    assert metrics["kpi_target"] == "FAR < 25% at recall=100%" and metrics["kpi_met"] is False
    assert (metrics["tp"], metrics["fp"], metrics["tn"], metrics["fn"]) == (4, 5, 5, 0)
    assert metrics["target_defects"] == ["missing"] and metrics["need"] == {"missing": 1, "PASS": 5}
    assert [s["label"] for s in metrics["per_label"]] == ["missing", "PASS", "short"]
    breakdown = json.loads((out / "breakdown.json").read_text())
    assert breakdown["boardname"][0]["value"] == "E"
    summary = (out / "rca_summary.md").read_text()
    assert summary.startswith("# RCA: baseline")
    assert "FAR=50.00%" in summary and "boardname=E" in summary and "obj_10" in summary
    assert "**Target:** FAR < 25% at recall=100% (25.00 pp from target)" in summary
    summary_json = result.to_dict()
    json.dumps(summary_json, allow_nan=False)
    assert summary_json["n_weak"] == 6 and summary_json["kpi"]["far_pct"] == 50.0


def test_load_weak_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="run the RCA stage first"):
        load_weak(tmp_path)


def test_tiny_workspace_scored_zero_shot(tiny_ws: Path, tmp_path: Path) -> None:
    from automl_deft.model.spec import load_spec
    from automl_deft.model.zero_shot import zero_shot_frame
    from automl_deft.workspace import Workspace, read_dataset_csv

    ws = Workspace.at(tiny_ws)
    spec = load_spec(ws.spec_path)
    scored = zero_shot_frame(read_dataset_csv(ws.kpi_csv), ws.images_dir, spec)
    result = analyse(
        scored, parse_target("FAR < 1%"), images_dir=ws.images_dir, naming=spec.naming()
    )
    assert result.reachable and len(result.gaps) == len(scored)
    assert result.kpi.n_pass + result.kpi.n_defect == len(scored)
    stats = {s["label"]: s for s in result.label_stats}
    assert sum(s["n"] for s in stats.values()) == len(scored)
    assert stats["PASS"]["fp_at_t"] == result.kpi.fp
    assert len(result.weak) == int(result.gaps["is_weak"].sum()) == sum(result.need.values())
    assert all(stats[label]["weak"] == n for label, n in result.need.items())
    assert set(result.target_defects) <= set(result.target_labels)
    assert math.isclose(result.gaps["forced_far_pct"].max(), result.kpi.far_pct or 0.0)
    assert all(Path(p).is_file() for p in result.gaps["filepath"])
    paths = write_rca(result, tmp_path)
    assert len(load_weak(tmp_path)) == len(result.weak)
    assert paths["kpi_gaps.parquet"].is_file()


def test_perfect_separation_has_no_weak_rows(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[frame["label"] == "PASS", SCORE_COLUMN] = 0.01  # all PASS tied, below every defect
    result = analyse(frame, parse_target("FAR < 0.1%"))
    assert result.threshold == 0.01 and result.kpi.far_pct == 0.0
    assert result.weak.empty and result.need == {} and result.target_labels == []
    assert result.findings == []
    assert all(e["lift"] is None for e in result.breakdown["boardname"])
    write_rca(result, tmp_path)
    weak = load_weak(tmp_path)
    assert weak.empty and "forced_far_pct" in weak.columns
