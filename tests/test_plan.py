"""The run plan: each decision computed once, and the pre-flight shows exactly those values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from automl_deft.deft.config import DeftConfig, RegressionGate
from automl_deft.errors import UserError
from automl_deft.hpo.search import AutomlConfig, GuardConfig
from automl_deft.model.spec import load_spec
from automl_deft.phases import Phase
from automl_deft.plan import BaselineSource, RunPlan, ValueSource, plan_run
from automl_deft.preflight import Preflight, build_preflight, render_plan
from automl_deft.run_config import ComputeConfig, Phase3Config, RunConfig
from automl_deft.testing.deft_state import seeded_state
from automl_deft.workspace import Workspace


def lines(pf: Preflight, number: int) -> list[str]:
    return pf.sections[number - 1].lines


def render(plan: RunPlan) -> Preflight:
    return render_plan(plan, env={}, check_images=False, image_probe=lambda ref: "PRESENT")


@pytest.fixture(scope="module")
def spec_epochs(tiny_ws: Path) -> int:
    return load_spec(Workspace.at(tiny_ws).spec_path).train.num_epochs


# --- the searches -------------------------------------------------------------------------


def test_search_config_is_what_each_phase_runs(tiny_ws: Path) -> None:
    cfg = RunConfig(automl=AutomlConfig(max_trials=5), phase3=Phase3Config(max_trials=2))
    plan = plan_run(tiny_ws, cfg, hpo_backend="katib")
    assert plan.search_config("phase1") == dataclasses.replace(cfg.automl, backend="katib")
    assert plan.search_config("phase3") == dataclasses.replace(cfg.phase3_automl(), backend="katib")
    assert plan.search_config("phase3").guards.allow_no_gain_over_zero_shot is True
    merged = plan.search_config("phase1", katib={"gpus": 1})
    assert merged.katib == {"gpus": 1} and merged.backend == "katib"
    assert plan_run(tiny_ws, cfg).search_config("phase1") == cfg.automl  # no override
    assert plan.search_config(Phase.PHASE3) == plan.search_config("phase3")
    with pytest.raises(UserError, match=r"^unknown search phase 'phase2'; choose from phase1"):
        plan.search_config("phase2")


def test_both_phase_vocabularies_name_the_same_pipeline(tiny_ws: Path) -> None:
    by_value = plan_run(tiny_ws, RunConfig(), phases=tuple(p.value for p in Phase))
    assert by_value.phases == plan_run(tiny_ws, RunConfig()).phases == tuple(Phase)
    deft_only = plan_run(tiny_ws, RunConfig(), phases=("phase2",))
    assert deft_only.runs("deft") and not deft_only.runs("automl") and not deft_only.runs("phase1")
    with pytest.raises(UserError, match=r"^unknown phase\(s\) phase4; choose from automl"):
        plan_run(tiny_ws, RunConfig(), phases=("phase4",))


def test_search_trainings_epochs_and_batch(tiny_ws: Path) -> None:
    cfg = RunConfig(
        automl=AutomlConfig(max_trials=4, num_epochs=3, batch_size=8, algorithm="random"),
        phase3=Phase3Config(num_epochs=2),
    )
    plan = plan_run(tiny_ws, cfg)
    p1, p3 = plan.phase1, plan.phase3
    assert (p1.trainings, p1.max_trainings, p1.lucky_rerun) == (4, 5, True)
    assert (p1.epochs, p1.batch_size, p1.algorithm, p1.metric) == (3, 8, "random", "far_pct")
    assert (p3.epochs, p3.batch_size, p3.algorithm) == (2, 8, "random")
    assert p1.problems == () and p3.problems == ()

    # The lucky-winner guard needs a runner-up and a factor above 1 to re-train.
    single = plan_run(tiny_ws, RunConfig(automl=AutomlConfig(max_trials=1))).phase1
    assert (single.trainings, single.max_trainings) == (1, 1)
    off = RunConfig(automl=AutomlConfig(guards=GuardConfig(lucky_factor=1.0)))
    pf = build_preflight(tiny_ws, off, phases=("automl",), env={}, check_images=False)
    assert "Phase 1: 6 trainings (no lucky-winner re-run)" in lines(pf, 8)
    assert pf.sections[7].data["total"] == {"trainings": 6, "max_trainings": 6}


def test_bad_search_settings_are_problems_not_exceptions(tiny_ws: Path) -> None:
    cfg = RunConfig(automl=AutomlConfig(algorithm="gradient-magic"))
    plan = plan_run(tiny_ws, cfg, hpo_backend="sagemaker")
    assert plan.phase1.problems[0] == (
        "unknown search backend 'sagemaker'; choose one of optuna, katib"
    )
    assert plan.phase1.problems[1].startswith("automl.algorithm: unknown search algorithm")


# --- DEFT ---------------------------------------------------------------------------------


def test_deft_epochs_and_batch_come_from_config_phase1_or_spec(
    tiny_ws: Path, spec_epochs: int
) -> None:
    automl = AutomlConfig(num_epochs=4, batch_size=8)
    full = plan_run(tiny_ws, RunConfig(automl=automl)).deft
    assert (full.epochs, full.epochs_source) == (4, ValueSource.PHASE1_WINNER)
    assert (full.batch_size, full.batch_source) == (8, ValueSource.PHASE1_WINNER)

    alone = plan_run(tiny_ws, RunConfig(automl=automl), phases=("deft",)).deft
    assert (alone.epochs, alone.epochs_source) == (spec_epochs, ValueSource.WORKSPACE_SPEC)
    assert alone.batch_source is ValueSource.WORKSPACE_SPEC

    own = RunConfig(automl=automl, deft=DeftConfig(num_epochs=5, batch_size=2))
    pinned = plan_run(tiny_ws, own).deft
    assert (pinned.epochs, pinned.epochs_source) == (5, ValueSource.CONFIG)
    assert (pinned.batch_size, pinned.batch_source) == (2, ValueSource.CONFIG)


def test_resumed_run_trains_with_the_spec_its_state_records(tiny_ws: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(Workspace.at(tiny_ws).spec_path.read_text(encoding="utf-8"))
    spec["train"]["num_epochs"] = 3
    spec_path = tmp_path / "automl_spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    results = seeded_state(tmp_path / "run", spec_path=spec_path)
    plan = plan_run(tiny_ws, RunConfig(), results_dir=results)
    assert (plan.deft.epochs, plan.deft.epochs_source) == (3, ValueSource.RESUMED_SPEC)
    pf = render(plan)
    assert "fine-tune epochs: 3 (the resumed run's spec)" in lines(pf, 6)


def test_baseline_source_preseeded_trained_here_or_resumed(tiny_ws: Path, tmp_path: Path) -> None:
    full = plan_run(tiny_ws, RunConfig()).deft
    assert (full.baseline, full.baseline_trainings) == (BaselineSource.PHASE1, 0)
    alone = plan_run(tiny_ws, RunConfig(), phases=("deft",)).deft
    assert (alone.baseline, alone.baseline_trainings) == (BaselineSource.TRAINED_HERE, 1)
    assert alone.trainings == 3 + 1 and alone.evaluations == 8

    results = seeded_state(tmp_path / "run", baseline_source="trained_here")
    resumed = plan_run(tiny_ws, RunConfig(), results_dir=results)
    assert resumed.resume is not None and resumed.resume.baseline_trained
    assert (resumed.deft.baseline, resumed.deft.baseline_recorded) == (
        BaselineSource.RESUMED,
        "trained_here",
    )
    assert resumed.deft.baseline_trainings == 0
    assert (resumed.resume.label, resumed.resume.stage) == ("baseline", "evaluate")
    assert resumed.deft.problems == ()


def test_handoff_into_a_run_without_a_baseline_is_a_problem(tiny_ws: Path, tmp_path: Path) -> None:
    results = seeded_state(tmp_path / "run", stages=())
    plan = plan_run(tiny_ws, RunConfig(), results_dir=results)
    assert plan.deft.problems == (
        f"{results} already holds a DEFT run without a trained baseline; "
        "use an empty results directory for the handoff",
    )
    assert plan_run(tiny_ws, RunConfig(), results_dir=results, phases=("deft",)).deft.problems == ()


def test_resumed_settings_and_unreadable_state(tiny_ws: Path, tmp_path: Path) -> None:
    results = seeded_state(tmp_path / "run", config=DeftConfig(max_iterations=1))
    plan = plan_run(tiny_ws, RunConfig(deft=DeftConfig(num_epochs=2)), results_dir=results)
    assert plan.deft.config == DeftConfig(max_iterations=1)
    assert plan.settings_differ == ("max_iterations", "num_epochs")
    assert plan.deft.max_iterations == 1

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "deft_state.json").write_text("{nope", encoding="utf-8")
    unreadable = plan_run(tiny_ws, RunConfig(), results_dir=broken)
    assert unreadable.resume is None
    assert unreadable.resume_error is not None and "is not valid JSON" in unreadable.resume_error


def test_invalid_kpi_target_is_a_problem(tiny_ws: Path) -> None:
    plan = plan_run(tiny_ws, RunConfig(deft=DeftConfig(kpi_target="very good")))
    assert plan.deft.target is None
    assert plan.deft.problems[0].startswith("deft.kpi_target: ")


# --- the Phase 3 gate and the safety gates ------------------------------------------------


@pytest.mark.parametrize(
    ("hard_stopped", "needs_review", "runs"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_phase3_runs_only_after_a_normal_loop(
    tiny_ws: Path, hard_stopped: bool, needs_review: bool, runs: bool
) -> None:
    plan = plan_run(tiny_ws, RunConfig())
    assert plan.phase3_runs(hard_stopped=hard_stopped, needs_review=needs_review) is runs
    disabled = plan_run(tiny_ws, RunConfig(phase3=Phase3Config(enabled=False)))
    assert disabled.phase3_runs(hard_stopped=hard_stopped, needs_review=needs_review) is False
    absent = plan_run(tiny_ws, RunConfig(), phases=("automl", "deft"))
    assert absent.phase3_runs(hard_stopped=hard_stopped, needs_review=needs_review) is False


def test_safety_gates_follow_the_plan(tiny_ws: Path) -> None:
    assert plan_run(tiny_ws, RunConfig()).safety_gates == (
        "leakage or missing files in an assembled set",
        "a DEFT stage error",
        "the regression gate (needs_review)",
        "the Phase 1 winner failing to beat zero-shot",
    )
    quiet = RunConfig(deft=DeftConfig(regression=RegressionGate(enabled=False)))
    assert "the regression gate (needs_review)" not in plan_run(tiny_ws, quiet).safety_gates
    # Phase 3 only records its zero-shot comparison: without Phase 1 it is no gate.
    no_phase1 = plan_run(tiny_ws, RunConfig(), phases=("deft", "phase3")).safety_gates
    assert "the Phase 1 winner failing to beat zero-shot" not in no_phase1


# --- the pre-flight renders the plan ------------------------------------------------------


def test_preflight_shows_the_plan_values(tiny_ws: Path) -> None:
    plan = plan_run(tiny_ws, RunConfig(compute=ComputeConfig(per_job_minutes=10)))
    before = render(plan)
    assert "fine-tune epochs: 8 (the Phase 1 winner's spec)" in lines(before, 6)
    assert "batch size: 16 (AutoML trials, pinned), 16 (DEFT)" in lines(before, 1)

    changed = dataclasses.replace(
        plan,
        deft=dataclasses.replace(
            plan.deft,
            epochs=42,
            epochs_source=ValueSource.CONFIG,
            batch_size=4,
            baseline=BaselineSource.TRAINED_HERE,
        ),
        phase3=dataclasses.replace(plan.phase3, epochs=7),
    )
    after = render(changed)
    assert "fine-tune epochs: 42 (deft.num_epochs)" in lines(after, 6)
    assert "batch size: 16 (AutoML trials, pinned), 4 (DEFT)" in lines(after, 1)
    assert "baseline: trained here from the workspace spec" in lines(after, 6)
    assert "epochs per trial: 7" in lines(after, 7)
    phase2 = after.sections[7].data["phase2"]
    assert (phase2["baseline_trainings"], phase2["trainings"], phase2["minutes"]) == (1, 4, 40)


def test_preflight_follows_a_config_change_through_the_plan(tiny_ws: Path) -> None:
    def build(cfg: RunConfig) -> Preflight:
        return build_preflight(tiny_ws, cfg, env={}, check_images=False, image_probe=lambda r: "")

    base = build(RunConfig())
    more = build(RunConfig(deft=DeftConfig(num_epochs=5, max_iterations=4)))
    assert "fine-tune epochs: 5 (deft.num_epochs)" in lines(more, 6)
    assert "max_iterations: 4" in lines(more, 6)
    assert more.sections[7].data["phase2"]["trainings"] == 4
    assert (
        more.sections[7].data["total"]["trainings"]
        == base.sections[7].data["total"]["trainings"] + 1
    )
    p3 = build(RunConfig(phase3=Phase3Config(max_trials=2, num_epochs=3)))
    assert "sweep size: 2 trials" in lines(p3, 7)
    assert "epochs per trial: 3" in lines(p3, 7)
    assert "Phase 3: 2 trainings (≤ 3 with a lucky-winner re-run)" in lines(p3, 8)
