"""benchmarks/hard_negatives.py: its pure parts fast, end to end on ``tiny`` on request.

The arm configs, the shared start and its seeding, the row counts read from a run, the
paired difference and the table/JSON are checked here in seconds. The end-to-end run
(three DEFT loops and the control on the tiny workspace, about a minute on 2 cores) runs
only with ``AUTOML_DEFT_BENCH_TESTS=1``, as the ablation benchmark's test does.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.state import DeftState
from automl_deft.kpi import compute_kpi, far_interval
from automl_deft.model.spec import load_spec
from automl_deft.phases import BASELINE
from automl_deft.records import HygieneSummary, RunInputs, SDGSummary
from automl_deft.run_config import RunConfig, load_run_config, run_config_from_dict
from automl_deft.workspace import SCORE_COLUMN, Workspace

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "hard_negatives.py"


@pytest.fixture(scope="module")
def hn() -> ModuleType:
    """The benchmark module (it imports ``ablation`` from its own folder, as when run)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module("hard_negatives")
    finally:
        sys.path.remove(str(SCRIPT.parent))


# --- configs ------------------------------------------------------------------------------


def _without(doc: dict[str, Any], *dotted: str) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node[p]
        del node[leaf]
    return out


def test_each_arm_changes_only_its_keys_and_the_seed(hn: ModuleType) -> None:
    cfg = load_run_config(ROOT / "configs" / "smt.yaml")
    base = cfg.deft.to_dict()
    configs = {arm: hn.arm_config(cfg, arm, 2) for arm in hn.ARM_CHANGES}

    assert configs["hard_negatives"].sdg.hard_negatives is True
    assert configs["hard_negatives"].mining.enabled is True
    assert configs["mining_only"].sdg.hard_negatives is False
    assert configs["mining_only"].mining.enabled is True
    assert configs["sdg_only"].sdg.hard_negatives is True
    assert configs["sdg_only"].mining.enabled is False
    changed = ("seed", "sdg.hard_negatives", "mining.enabled")
    for arm, dcfg in configs.items():
        assert isinstance(dcfg, DeftConfig)
        assert dcfg.seed == cfg.deft.seed + 2, arm
        # the run config's deft: section as written (cutpaste, 2 iterations, 2 epochs) …
        assert _without(dcfg.to_dict(), *changed) == _without(base, *changed), arm
    assert configs["hard_negatives"].sdg.backend == "cutpaste"
    # … and seed 0 is the config as written
    assert hn.arm_config(cfg, "hard_negatives", 0).seed == cfg.deft.seed


def test_the_hard_negatives_arm_turns_them_on_whatever_the_config_says(hn: ModuleType) -> None:
    cfg = run_config_from_dict({"deft": {"sdg": {"hard_negatives": False}}})
    assert hn.arm_config(cfg, "hard_negatives", 0).sdg.hard_negatives is True
    assert hn.arm_config(cfg, "mining_only", 0).sdg.hard_negatives is False


def test_the_start_spec_carries_the_automl_pins_and_the_seed(hn: ModuleType, tiny_ws: Path) -> None:
    cfg = load_run_config(ROOT / "configs" / "smt.yaml")
    ws = Workspace.at(tiny_ws)
    written = load_spec(ws.spec_path)
    spec = hn.start_spec(ws, cfg, 3)
    classify = spec.dataset.classify
    assert (classify.image_width, classify.image_height) == (64, 64)
    assert classify.concat_type == "grid"
    assert spec.train.num_epochs == cfg.automl.num_epochs == 3
    assert classify.batch_size == cfg.automl.batch_size
    assert spec.train.seed == written.train.seed + 3
    assert hn.start_spec(ws, cfg, 0).train.seed == written.train.seed


def test_arms_are_checked_and_put_in_run_order(hn: ModuleType) -> None:
    assert hn.parse_arms("control, mining_only,hard_negatives") == [
        "hard_negatives",
        "mining_only",
        "control",
    ]
    with pytest.raises(ValueError, match="unknown arm 'mining'; choose from hard_negatives"):
        hn.parse_arms("hard_negatives,mining")
    with pytest.raises(ValueError, match="the control counts a DEFT arm's fine-tunings"):
        hn.parse_arms("control")


# --- the shared start ---------------------------------------------------------------------


def test_one_start_is_trained_and_seeded_into_every_arm(
    hn: ModuleType, tiny_ws: Path, tmp_path: Path
) -> None:
    ws = Workspace.at(tiny_ws)
    cfg = run_config_from_dict(
        {
            "automl": {
                "num_epochs": 1,
                "pinned": {
                    "dataset.classify.image_width": 32,
                    "dataset.classify.image_height": 32,
                },
            },
            "deft": {"num_epochs": 1, "max_iterations": 1},
        }
    )
    start = hn.train_start(ws, cfg, 1, tmp_path / "start")
    saved = load_spec(start.spec_path)
    assert saved.dataset.classify.image_width == 32 and saved.train.num_epochs == 1
    assert start.checkpoint.is_file() and start.seconds > 0

    for arm in ("hard_negatives", "mining_only"):
        dcfg = hn.arm_config(cfg, arm, 1)
        state = hn.seed_arm(ws, start, dcfg, tmp_path / arm)
        again = DeftState.load(tmp_path / arm, reconcile=False)
        assert again.done(BASELINE, "train")  # `automl-deft deft -o` does not retrain it
        assert again.iterations[BASELINE].source == hn.START_SOURCE
        assert again.config == dcfg  # the loop resumes with the arm's own config
        assert again.inputs.spec == str(start.spec_path.resolve())
        copied = state.path_of(BASELINE, "best_ckpt_path")
        assert copied is not None and copied.read_bytes() == start.checkpoint.read_bytes()


# --- reading a run ------------------------------------------------------------------------


def test_rows_added_are_counted_from_the_iterations_provenance(
    hn: ModuleType, tmp_path: Path
) -> None:
    state = DeftState.create(tmp_path / "run", config=DeftConfig(), inputs=RunInputs())
    data = tmp_path / "run" / "iter1" / "dataset"
    data.mkdir(parents=True)
    prov = pd.DataFrame(
        {
            "source": ["base_train"] * 2 + ["sdg"] * 3 + ["mining_pool"] * 4,
            "label": ["PASS", "open", "PASS", "pass", "spur", "PASS", "PASS", "PASS", "open"],
            "iteration_added": ["0", "0"] + ["1"] * 7,
        }
    )
    prov.to_csv(data / "train_combined_iter1_provenance.csv", index=False)
    (data / "train_combined_iter1.csv").write_text("", encoding="utf-8")
    state.update("iter1", train_csv=data / "train_combined_iter1.csv")
    state.update("iter2")  # stopped before data_merge: nothing added

    added = hn.rows_added(state, "iter1")
    assert added == hn.RowsAdded(sdg_pass=2, sdg_defect=1, mined=4, mined_pass=3)
    assert hn.rows_added(state, "iter2") == hn.RowsAdded()
    assert hn.rows_added(state, BASELINE) == hn.RowsAdded()
    assert (added + added).mined == 8
    assert added.text() == "SDG PASS 2 + defect 1, mined 4"


def test_hygiene_totals_sum_what_was_recorded_and_tolerate_its_absence(hn: ModuleType) -> None:
    assert hn.hygiene_totals([None, None]) is None
    totals = hn.hygiene_totals(
        [
            HygieneSummary(candidates=10, exact_duplicates=1, near_duplicates=2),
            None,
            HygieneSummary(candidates=5, flagged_label_errors=3, excluded_label_errors=1),
        ]
    )
    assert totals == {
        "candidates": 15,
        "exact_duplicates": 1,
        "near_duplicates": 2,
        "flagged_label_errors": 3,
        "excluded_label_errors": 1,
    }


# --- the paired difference ----------------------------------------------------------------


def _scored(labels: list[str], scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, SCORE_COLUMN: scores})


LABELS = ["open"] * 20 + ["PASS"] * 80


def _noisy(seed: int, pass_high: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    defects = rng.uniform(0.5, 1.0, 20)
    passes = rng.uniform(0.0, pass_high, 80)
    return _scored(LABELS, np.concatenate([defects, passes]))


def test_the_paired_difference_is_the_far_interval_bootstrap_judged_twice(
    hn: ModuleType,
) -> None:
    noisy = _noisy(0, 0.8)
    perfect = _scored(LABELS, np.concatenate([np.full(20, 0.9), np.full(80, 0.1)]))
    far = compute_kpi(noisy["label"], noisy[SCORE_COLUMN]).far_pct
    assert far is not None and far > 0

    same, same_ci = hn.paired_far_difference(noisy, noisy)
    assert same == 0.0 and same_ci == [0.0, 0.0]
    # the perfect model has FAR 0 on every resample: the difference's interval is the
    # noisy model's own far_interval (the same draws, the same seed)
    diff, ci = hn.paired_far_difference(noisy, perfect)
    own = far_interval(noisy["label"], noisy[SCORE_COLUMN], n_resamples=1000, seed=0)
    assert diff == pytest.approx(far)
    assert ci == pytest.approx([own.low, own.high])
    back, back_ci = hn.paired_far_difference(perfect, noisy)
    assert back == pytest.approx(-far) and back_ci[1] < 0

    with pytest.raises(ValueError, match="the two score frames do not hold the same rows"):
        hn.paired_far_difference(noisy, noisy.iloc[::-1].reset_index(drop=True))
    with pytest.raises(ValueError, match="FAR is undefined on these rows: one class is missing"):
        only_pass = _scored(["PASS"] * 4, np.arange(4.0))
        hn.paired_far_difference(only_pass, only_pass)


# --- table and JSON from fake arm results -------------------------------------------------


def _row(hn: ModuleType, arm: str, csv: Path, frame: pd.DataFrame, **detail: Any) -> Any:
    frame.to_csv(csv, index=False)
    far = compute_kpi(frame["label"], frame[SCORE_COLUMN]).far_pct
    iv = far_interval(frame["label"], frame[SCORE_COLUMN], n_resamples=200, seed=0)
    step = "ctrl1" if arm == "control" else "iter1"
    steps = [
        {"step": BASELINE, "steering_far": 40.0, "holdout_far": 50.0, "holdout_csv": None},
        {"step": step, "steering_far": 20.0, "holdout_far": far, "holdout_csv": str(csv)},
    ]
    return hn.ArmResult(
        arm=arm,
        seed=0,
        steering_far=20.0,
        steering_ci95=[10.0, 30.0],
        holdout_far=far,
        holdout_ci95=[iv.low, iv.high],
        wall_s=12.0,
        picked=step,
        results_dir=str(csv.parent),
        detail={"steps": steps, **detail},
    )


def test_the_table_and_json_show_every_arm_and_the_paired_differences(
    hn: ModuleType, tmp_path: Path
) -> None:
    sdg = SDGSummary(backend="cutpaste", requested={"PASS": 4}, generated={"PASS": 4}, budget=4)
    hygiene = {k: 0 for k in hn.HYGIENE_COUNTS} | {"near_duplicates": 2, "flagged_label_errors": 1}
    rows = [
        _row(hn, "start", tmp_path / "start.csv", _noisy(1, 1.0)),
        _row(
            hn,
            "hard_negatives",
            tmp_path / "hn.csv",
            _noisy(2, 0.45),  # no PASS above the lowest defect: FAR 0
            added=dataclasses.asdict(hn.RowsAdded(sdg_pass=4, mined=7)),
            hygiene=hygiene,
            sdg_lines=[f"iter1: {sdg.line()}"],
        ),
        _row(
            hn,
            "mining_only",
            tmp_path / "mo.csv",
            _noisy(3, 0.9),
            added=dataclasses.asdict(hn.RowsAdded(mined=9)),
        ),
        _row(hn, "control", tmp_path / "ctrl.csv", _noisy(4, 1.0)),
    ]
    rows[2].note = "deft exit 2 (hard_stopped: a reason; log x.log)"
    diffs = hn.differences(rows)

    pairs = {(d["arm"], d["vs"]) for d in diffs}
    assert pairs == {
        ("hard_negatives", "mining_only"),
        ("control", "mining_only"),
        ("hard_negatives", "control"),
        ("mining_only", "control"),
    }  # never an arm against itself, never the start
    first = next(d for d in diffs if (d["arm"], d["vs"]) == ("hard_negatives", "mining_only"))
    assert first["diff_pp"] == pytest.approx(rows[1].holdout_far - rows[2].holdout_far)
    assert first["diff_pp"] < 0 and first["ci95"][1] < 0

    text = hn.render(rows, diffs)
    for arm in ("start", "hard_negatives", "mining_only", "control"):
        assert hn.ARMS[arm] in text
    assert "SDG PASS 4 + defect 0, mined 7" in text
    assert "2 dup / 1 flagged" in text  # hygiene recorded
    assert "n/a" in text  # mining_only recorded none
    assert "SDG: 4 requested, 4 made via cutpaste — PASS 4" in text
    assert "lower (interval excludes 0)" in text
    assert "iter1" in text and "ctrl1" in text  # the hold-out FAR of every step
    assert hn.PAIRED_NOTE in text  # printed, not hidden
    assert "hard_stopped: a reason" in text
    assert "mean over seeds" not in text  # one seed: no means to show

    doc = hn.results_json(Workspace.at(tmp_path), None, 1, 60.0, rows, diffs)
    back = json.loads(json.dumps(doc))
    assert [r["arm"] for r in back["rows"]] == ["start", "hard_negatives", "mining_only", "control"]
    assert back["differences"] == json.loads(json.dumps(diffs))
    assert back["note"] == hn.PAIRED_NOTE and back["arms"] == hn.ARMS


def test_means_over_seeds_appear_with_more_than_one_seed(hn: ModuleType, tmp_path: Path) -> None:
    rows = []
    for seed in (0, 1):
        for arm, high in (("hard_negatives", 0.45), ("mining_only", 0.9)):
            row = _row(hn, arm, tmp_path / f"{arm}{seed}.csv", _noisy(seed + 5, high))
            rows.append(dataclasses.replace(row, seed=seed))
    text = hn.render(rows, hn.differences(rows))
    assert "mean over seeds:" in text
    assert "hard_negatives vs mining_only:" in text and "over 2 seed(s), lower on 2" in text


# --- end to end ---------------------------------------------------------------------------

FAST: dict[str, Any] = {
    "automl": {"num_epochs": 1},
    "deft": {
        "max_iterations": 1,
        "num_epochs": 1,
        "kpi_target": "FAR < 1% at recall=100%",
        "sdg": {"num_sdg": 8},
    },
}


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("AUTOML_DEFT_BENCH_TESTS") != "1",
    reason="runs three DEFT loops and the control (~1 min on 2 cores): "
    "set AUTOML_DEFT_BENCH_TESTS=1",
)
def test_every_arm_runs_from_one_start_on_the_tiny_workspace(
    tiny_ws_copy: Path, tmp_path: Path
) -> None:
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump(FAST), encoding="utf-8")
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), str(tiny_ws_copy)),
            *("-c", str(config), "--out", str(out), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    rows = {r["arm"]: r for r in results["rows"]}
    assert set(rows) == {"start", "hard_negatives", "mining_only", "sdg_only", "control"}
    for arm, row in rows.items():
        for key in ("steering_far", "holdout_far"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (arm, key, row)
        assert row["holdout_ci95"] is not None, arm
        assert results["arms"][arm] in done.stdout  # a table row for it

    cfg: RunConfig = run_config_from_dict(FAST)
    starts = set()
    for arm in ("hard_negatives", "mining_only", "sdg_only"):
        run = out / "seed0" / arm
        state = DeftState.load(run, reconcile=False)
        assert state.iterations[BASELINE].source == "benchmark_shared_start"
        assert "[baseline · train]" not in (out / "seed0" / f"{arm}.log").read_text("utf-8")
        assert state.config.max_iterations == cfg.deft.max_iterations
        baseline = rows[arm]["detail"]["steps"][0]
        starts.add((baseline["steering_far"], baseline["holdout_far"]))
        picked = json.loads((run / "best_model.json").read_text(encoding="utf-8"))["iteration"]
        assert rows[arm]["picked"] == picked  # DEFT's pick, not the benchmark's
        assert (run / "holdout" / f"{picked}_scores.csv").is_file()
        assert rows[arm]["detail"]["hygiene"]["candidates"] > 0  # read from the state
    assert len(starts) == 1  # one start, evaluated alike in every arm
    assert (rows["start"]["steering_far"], rows["start"]["holdout_far"]) in starts

    added = {arm: rows[arm]["detail"]["added"] for arm in ("hard_negatives", "mining_only")}
    assert added["hard_negatives"]["sdg_pass"] >= 1  # PASS is an SDG target …
    assert added["mining_only"]["sdg_pass"] == 0  # … only with hard negatives
    assert rows["sdg_only"]["detail"]["added"]["mined"] == 0
    control = rows["control"]["detail"]
    assert control["counted_from"] == "hard_negatives"
    assert [s["step"] for s in control["steps"]] == ["baseline", "ctrl1"]
    assert {(d["arm"], d["vs"]) for d in results["differences"]} >= {
        ("hard_negatives", "mining_only"),
        ("hard_negatives", "control"),
    }
    assert "paired:" in done.stdout and (out / "table.txt").is_file()
