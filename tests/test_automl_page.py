"""The AutoML page and leaderboard rank the way the project ranks: after the guards."""

from __future__ import annotations

import re
from pathlib import Path

from automl_deft.hpo.guards import CollapseSkip, GuardReport, LuckyWinner, ZeroShotCheck
from automl_deft.hpo.report import (
    MIN_TRIALS_FOR_IMPORTANCE,
    guarded_values,
    leaderboard,
    render_report,
)
from automl_deft.hpo.search import SearchBest, SearchResult, SearchTrial
from automl_deft.hpo.trial import TrialOutcome


def _trial(name: str, value: float | None, status: str = "complete") -> SearchTrial:
    return SearchTrial(
        rec_id=name,
        params={"lr": 0.001},
        metric=value,
        status=status,  # type: ignore[arg-type]
        pruned_at_epoch=2 if status == "pruned" else None,
    )


def _outcome(name: str, far: float) -> TrialOutcome:
    return TrialOutcome(
        name=name,
        params={"lr": 0.001},
        status="complete",
        metric="far_pct",
        value=far,
        far_pct=far,
        val_loss=0.1,
        pred_counts={"PASS": 200, "defect": 40},
        best_epoch=1,
        epochs_run=2,
        checkpoint=f"/x/{name}.pt",
    )


def _result(tmp_path: Path) -> SearchResult:
    """Five trials: trial-0001 the raw best (2.45) but demoted by the lucky-winner guard
    (its re-run: 12.5), trial-0002 collapsed, trial-0004 the project's winner (9.8039…)."""
    guards = GuardReport(
        collapse_skipped=[CollapseSkip("trial-0002", "predicts a single class {'PASS': 240}")],
        lucky_winner=LuckyWinner(
            rec_id="trial-0001",
            value=2.45,
            runner_up="trial-0004",
            runner_up_value=9.803921568627452,
            factor=2.0,
            reseed_rec_id="trial-0001-reseed",
            reseed_value=12.5,
            ranked_by=12.5,
        ),
        zero_shot=ZeroShotCheck(winner_far_pct=9.8, zero_shot_far_pct=12.25, beaten=True),
    )
    history = [
        _trial("trial-0000", 20.0),
        _trial("trial-0001", 2.45),
        _trial("trial-0002", 1.0),
        _trial("trial-0003", None, "pruned"),
        _trial("trial-0004", 9.803921568627452),
    ]
    root = tmp_path / "run_x" / "final_automl"
    return SearchResult(
        results_dir=root,
        best=SearchBest(
            rec_id="trial-0004",
            specs={},
            metric_value=9.803921568627452,
            far_pct=9.803921568627452,
            val_loss=0.2,
            checkpoint="/x/trial-0004.pt",
            pred_counts={},
        ),
        history=history,
        algorithm="tpe",
        backend="optuna",
        metric="far_pct",
        guards=guards,
    )


def test_best_so_far_and_the_leaderboard_follow_the_guarded_ranking(tmp_path: Path) -> None:
    result = _result(tmp_path)
    ranked = guarded_values(result)
    assert ranked["trial-0001"] == 12.5 and ranked["trial-0002"] is None
    outcomes = [_outcome(n, v) for n, v in (("trial-0000", 20.0), ("trial-0004", 9.8))]
    board = leaderboard(result, outcomes)
    assert board["rec_id"].tolist()[:3] == ["trial-0004", "trial-0001", "trial-0000"]
    rerun = board[board["status"] == "re-run"]
    assert rerun["rec_id"].tolist() == ["trial-0001-reseed"]
    assert rerun["value"].tolist() == [12.5]
    assert board.set_index("rec_id").loc["trial-0004", "value"] == 9.803921568627452
    assert "lucky-winner" in board.set_index("rec_id").loc["trial-0001", "note"]


def test_the_page_is_honest_and_readable(tmp_path: Path) -> None:
    result = _result(tmp_path)
    board = leaderboard(result, [])
    html = render_report(result, board, {"lr": 1.0})
    assert "<title>Phase 3 AutoML search</title>" in html
    assert "Winner: <b>trial-0004</b>, far_pct <b>9.80%</b>" in html
    assert "9.803921568627452" not in html, "values are rounded"
    # the guards as a table a person reads, not a JSON dump
    assert '<table class="guards">' in html and "<pre>" not in html
    assert "re-trained with a fresh seed as trial-0001-reseed → 12.50%" in html
    assert "skipped trial-0002" in html
    assert "vs the untrained scorer 12.25% on the validation set: beaten" in html
    # 3 complete trials: no importance chart, and the page says why
    assert f"needs at least {MIN_TRIALS_FOR_IMPORTANCE}" in html
    assert 'alt="parameter importance"' not in html
    assert re.search(r"<td>trial-0001-reseed</td>\s*<td>re-run</td>", html)
    phase1 = _result(tmp_path)
    object.__setattr__(phase1, "results_dir", tmp_path / "run_x" / "automl_phase1")
    assert "<title>Phase 1 AutoML search</title>" in render_report(phase1, board, {})


def test_importance_is_drawn_with_enough_trials(tmp_path: Path) -> None:
    result = _result(tmp_path)
    many = [_trial(f"trial-{i:04d}", float(10 + i)) for i in range(MIN_TRIALS_FOR_IMPORTANCE)]
    object.__setattr__(result, "history", many)
    html = render_report(result, leaderboard(result, []), {"lr": 0.7, "weight_decay": 0.3})
    assert 'alt="parameter importance"' in html
    assert "read it as a hint" in html
