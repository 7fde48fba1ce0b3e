"""The AutoML engine: space, algorithm mapping, guards, warm start, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from automl_deft.errors import SpecError, UserError
from automl_deft.hpo.algorithms import ALGORITHMS, canonical, make_pruner, make_sampler
from automl_deft.hpo.guards import (
    GuardReport,
    check_lucky_winner,
    check_zero_shot,
    is_collapsed,
    rank,
    skip_collapsed,
)
from automl_deft.hpo.optuna_backend import load_study
from automl_deft.hpo.search import AutomlConfig, automl_search, load_automl_config
from automl_deft.hpo.space import Param, SearchSpace, default_aoi_space
from automl_deft.hpo.trial import SearchProblem, TrialOutcome, main
from automl_deft.model.spec import Spec, load_spec
from automl_deft.workspace import Workspace

FAST = {"train.num_epochs": 2, "dataset.classify.batch_size": 16}


def _space(**pinned) -> SearchSpace:
    return SearchSpace(default_aoi_space().params, {**FAST, **pinned})


# -- space ----------------------------------------------------------------------------


def test_overrides_set_list_items_and_pins() -> None:
    space = default_aoi_space(num_epochs=5)
    o = space.overrides({"lr": 0.001, "cls_weight_defect": 20.0}, Spec())
    assert o["train.optim.lr"] == 0.001
    assert o["train.classify.cls_weight"] == [1.0, 20.0]
    assert o["train.num_epochs"] == 5
    spec = Spec().with_overrides(o)
    assert spec.train.classify.cls_weight == [1.0, 20.0]
    assert space.values_of(spec)["cls_weight_defect"] == 20.0
    with pytest.raises(SpecError, match="unknown search param"):
        space.overrides({"nope": 1}, Spec())


def test_param_validation_and_narrowing() -> None:
    with pytest.raises(SpecError, match="lower snake case"):
        Param("Bad-Name", "train.optim.lr", "float", 0.1, 1)
    with pytest.raises(SpecError, match="log range needs low > 0"):
        Param("lr", "train.optim.lr", "float", 0, 1, log=True)
    p = Param("lr", "train.optim.lr", "float", 1e-4, 1e-2, log=True)
    n = p.narrowed(1e-3, 0.5)
    assert p.low < n.low < 1e-3 < n.high < p.high
    assert n.high / 1e-3 == pytest.approx(1e-3 / n.low)
    i = Param("k", "model.classify.learnable_difference_modules", "int", 1, 4).narrowed(4, 0.5)
    assert (i.low, i.high) == (3, 4)


def test_space_rejects_keys_that_do_not_fit_the_spec() -> None:
    bad = SearchSpace((Param("lr", "train.optim.lrr", "float", 1e-4, 1e-2),), {})
    with pytest.raises(SpecError, match="does not fit the spec"):
        bad.check_against(Spec())
    with pytest.raises(SpecError, match="both swept and pinned"):
        SearchSpace((Param("lr", "train.optim.lr", "float", 1e-4, 1e-2),), {"train.optim.lr": 1})


def test_warm_start_pins_architecture_and_centres() -> None:
    source = Spec().with_overrides({"model.classify.learnable_difference_modules": 2})
    space = default_aoi_space().pin_architecture(source)
    assert "difference_modules" not in [p.name for p in space.params]
    assert space.pinned["model.classify.learnable_difference_modules"] == 2
    centred = space.centred_on(Spec().with_overrides({"train.optim.lr": 0.002}), 0.5)
    lr = centred.param("lr")
    assert lr.low < 0.002 < lr.high and lr.high / lr.low < 8e-3 / 5e-4


# -- algorithms -----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*ALGORITHMS, "bayesian"])
def test_every_katib_algorithm_maps_to_an_optuna_sampler(name: str) -> None:
    sampler = make_sampler(name, default_aoi_space(), seed=0)
    expected = {
        "random": optuna.samplers.RandomSampler,
        "hyperband": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
        "tpe": optuna.samplers.TPESampler,
        "multivariate-tpe": optuna.samplers.TPESampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "sobol": optuna.samplers.QMCSampler,
        "bayesianoptimization": optuna.samplers.GPSampler,
    }[canonical(name)]
    assert isinstance(sampler, expected)


def test_pruners_and_unknown_algorithm() -> None:
    assert isinstance(
        make_pruner("hyperband", early_stopping=False), optuna.pruners.HyperbandPruner
    )
    assert isinstance(make_pruner("tpe", early_stopping=True), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("tpe", early_stopping=False), optuna.pruners.NopPruner)
    with pytest.raises(UserError, match="unknown search algorithm 'smac'"):
        canonical("smac")


# -- guards ---------------------------------------------------------------------------


def _outcome(name: str, far: float, counts=(200, 40)) -> TrialOutcome:
    return TrialOutcome(
        name=name,
        params={"lr": 0.001},
        status="complete",
        metric="far_pct",
        value=far,
        far_pct=far,
        val_loss=0.1,
        pred_counts={"PASS": counts[0], "defect": counts[1]},
        best_epoch=1,
        epochs_run=2,
        checkpoint=f"/x/{name}.pt",
    )


def test_collapse_guard_skips_single_class_winner() -> None:
    report = GuardReport()
    kept = skip_collapsed(rank([_outcome("a", 1.0, (240, 0)), _outcome("b", 5.0)]), report)
    assert [o.name for o in kept] == ["b"]
    assert report.collapse_skipped[0].rec_id == "a"
    assert is_collapsed({"PASS": 0, "defect": 240})
    with pytest.raises(UserError, match="every trial collapsed"):
        skip_collapsed([_outcome("a", 1.0, (240, 0))], GuardReport())


def test_lucky_winner_is_reseeded_and_ranked_by_worse_run() -> None:
    report = GuardReport()
    ranked = [_outcome("a", 1.0), _outcome("b", 5.0), _outcome("c", 6.0)]
    out = check_lucky_winner(ranked, 2.0, lambda o: _outcome(o.name + "-reseed", 8.0), report)
    assert [o.name for o in out] == ["b", "c", "a"]
    assert report.lucky_winner.reseed_value == 8.0 and report.lucky_winner.ranked_by == 8.0
    calls = []
    check_lucky_winner(ranked[1:], 2.0, lambda o: calls.append(o) or o, GuardReport())
    assert not calls  # 5 vs 6 is not suspicious


def test_zero_shot_guard() -> None:
    report = GuardReport()
    check_zero_shot(_outcome("a", 5.0), 10.0, allow=False, report=report)
    assert report.zero_shot.beaten is True
    with pytest.raises(UserError, match="did not beat the zero-shot scorer"):
        check_zero_shot(_outcome("a", 12.0), 10.0, allow=False, report=GuardReport())
    check_zero_shot(_outcome("a", 12.0), 10.0, allow=True, report=GuardReport())


# -- problem, trial entry point, KPI refusal ------------------------------------------


def test_kpi_set_is_refused_as_evaluation_set(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    spec = load_spec(ws.spec_path)
    with pytest.raises(UserError, match="KPI test set cannot be the search's evaluation set"):
        SearchProblem.create(ws.root, _space(), spec, tmp_path, val_csv=ws.kpi_csv)
    copy = tmp_path / "renamed_kpi.csv"
    copy.write_bytes(ws.kpi_csv.read_bytes())
    with pytest.raises(UserError, match="holds KPI test rows"):
        SearchProblem.create(ws.root, _space(), spec, tmp_path, val_csv=copy)


def test_trial_entry_point_prints_katib_metrics(tiny_ws: Path, tmp_path: Path, capsys) -> None:
    ws = Workspace.at(tiny_ws)
    problem = SearchProblem.create(ws.root, _space(), load_spec(ws.spec_path), tmp_path)
    path = problem.save()
    assert json.loads(path.read_text())["application"] == "aoi-changenet"  # the default
    assert (
        main(
            [
                "--problem",
                str(path),
                "--trial-name",
                "t1",
                "--param",
                "lr=0.002",
                "--param",
                "difference_modules=2",
            ]
        )
        == 0
    )
    lines = [line.split(" ", 1)[-1] for line in capsys.readouterr().out.splitlines()]
    assert any(line.startswith("far_pct=") for line in lines)
    assert any(line.startswith("val_loss=") for line in lines)
    record = json.loads((tmp_path / "trials" / "t1" / "trial.json").read_text())
    assert record["params"] == {"lr": 0.002, "difference_modules": 2}
    assert (tmp_path / "trials" / "t1" / "best_val.pt").exists()


def test_warm_started_trials_load_the_checkpoint(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    problem = SearchProblem.create(ws.root, _space(), load_spec(ws.spec_path), tmp_path / "a")
    main(["--problem", str(problem.save()), "--trial-name", "src"])
    ckpt = tmp_path / "a" / "trials" / "src" / "best_val.pt"
    cfg = AutomlConfig(max_trials=2, num_epochs=1, guards=_lenient())
    try:
        automl_search(ws.root, cfg, results_dir=tmp_path / "b", warm_start=ckpt)
    except UserError as exc:  # one epoch on 80 rows may collapse: not what this test is about
        assert "collapsed" in str(exc)
    trials = sorted((tmp_path / "b" / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        spec = load_spec(trial / "spec.yaml")
        assert spec.train.pretrained_model_path == str(ckpt.resolve())
        assert spec.model.classify.learnable_difference_modules == 3  # pinned to the source


def _lenient():
    from automl_deft.hpo.search import GuardConfig

    return GuardConfig(allow_no_gain_over_zero_shot=True, lucky_factor=0)


def test_search_writes_result_files(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    space = [{"name": "lr", "key": "train.optim.lr", "low": 2e-3, "high": 4e-3, "log": True}]
    cfg = AutomlConfig(
        max_trials=3, num_epochs=3, guards=_lenient(), prune_start_epoch=1, search_space=space
    )
    result = automl_search(ws.root, cfg, results_dir=tmp_path)
    data = json.loads((tmp_path / "automl_result.json").read_text())
    assert set(data["best"]) >= {"rec_id", "specs", "metric_value", "checkpoint", "pred_counts"}
    assert data["best"]["specs"]["train.num_epochs"] == 3
    assert len(data["history"]) == 3 and data["backend"] == "optuna"
    assert {"collapse_skipped", "lucky_winner", "zero_shot"} <= set(data["guards"])
    assert (tmp_path / "leaderboard.csv").read_text().startswith("rec_id,status")
    html = (tmp_path / "automl_report.html").read_text()
    assert "data:image/png;base64," in html and result.best.rec_id in html
    study = load_study(tmp_path)
    assert study.study_name == f"{tmp_path.parent.name}-{tmp_path.name}"
    assert study.metric_names == ["far_pct"]
    assert study.user_attrs["project_winner"] == result.best.rec_id
    assert study.user_attrs["project_winner_value"] == result.best.metric_value


def test_the_study_records_the_guards_and_the_re_seeded_run(tiny_ws: Path, tmp_path: Path) -> None:
    """Optuna's "best trial" is the lowest raw value; the project's winner after the
    lucky-winner guard is another: the study says which, and holds the re-run."""
    from automl_deft.hpo.base import Budget, SearchVerdict
    from automl_deft.hpo.optuna_backend import OptunaBackend, open_study, records_of

    ws = Workspace.at(tiny_ws)
    results = tmp_path / "run_x" / "final_automl"
    problem = SearchProblem.create(ws.root, _space(), load_spec(ws.spec_path), results)
    study = open_study(problem, Budget())
    assert study.study_name == "run_x-phase3"
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    for value, lr in ((1.0, 0.001), (5.0, 0.002), (6.0, 0.003)):
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value)
        )
    verdict = SearchVerdict(
        winner="trial-0001",
        winner_value=5.0,
        trial_notes={
            "trial-0000": {
                "guard_lucky_winner": "1 beat the runner-up trial-0001 (5) by more than 2x",
                "reseed_trial": "trial-0000-reseed",
                "reseed_value": 9.0,
                "ranked_by": 9.0,
            }
        },
        study_notes={"zero_shot_far_pct": 30.0, "zero_shot_beaten": True},
    )
    for _ in range(2):  # a resumed search records it once
        OptunaBackend().record_verdict(problem, verdict)
    study = load_study(results)
    assert study.user_attrs["project_winner"] == "trial-0001"
    assert study.user_attrs["guards"]["trial-0000"]["reseed_value"] == 9.0
    assert study.user_attrs["zero_shot_far_pct"] == 30.0
    reseeds = [t for t in study.trials if "reseed_of" in t.user_attrs]
    assert len(reseeds) == 1
    (reseed,) = reseeds
    assert (reseed.value, reseed.params, reseed.user_attrs["reseed_of"]) == (
        9.0,
        {"lr": 0.001},
        "trial-0000",
    )
    assert reseed.user_attrs["guard"] == "lucky_winner"
    assert [r.name for r in records_of(study)] == ["trial-0000", "trial-0001", "trial-0002"]


def test_config_is_strict(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("algorithm: tpe\nmax_trails: 3\n")
    with pytest.raises(SpecError, match="unknown config key 'max_trails'"):
        load_automl_config(path)


# -- resume after SIGKILL -------------------------------------------------------------

SEARCH_SCRIPT = """
import sys
from automl_deft.hpo.base import Budget
from automl_deft.hpo.optuna_backend import run_search
from automl_deft.hpo.space import SearchSpace, default_aoi_space
from automl_deft.hpo.trial import SearchProblem
from automl_deft.model.spec import load_spec
from automl_deft.workspace import Workspace
ws = Workspace.at(sys.argv[1])
space = SearchSpace(default_aoi_space().params, {"train.num_epochs": 3})
problem = SearchProblem.create(ws.root, space, load_spec(ws.spec_path), sys.argv[2])
run_search(problem, Budget(max_trials=3, early_stopping=False, algorithm="random"))
"""


def test_sigkill_mid_trial_then_resume(tiny_ws: Path, tmp_path: Path) -> None:
    results = tmp_path / "search"
    cmd = [sys.executable, "-c", SEARCH_SCRIPT, str(tiny_ws), str(results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = results / "trials" / "trial-0000" / "trial.json"
    second_started = results / "trials" / "trial-0001" / "spec.yaml"
    deadline = time.monotonic() + 120
    while not second_started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert second_started.exists(), "the search never reached its second trial"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_at = first.stat().st_mtime_ns

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert first.stat().st_mtime_ns == finished_at  # the finished trial was not re-run
    study = optuna.load_study(
        study_name=f"{tmp_path.name}-search",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(results / "optuna_journal.log"))
        ),
    )
    assert study.metric_names == ["far_pct"]
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the killed trial
    killed = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    retried = [t for t in study.trials if t.user_attrs.get("retry_of") == killed.number]
    assert retried and retried[0].params == killed.params


# -- the Katib backend through the same search, against the fake cluster --------------


def test_katib_backend_feeds_the_same_guards_and_results(tiny_ws_copy: Path) -> None:
    from automl_deft.hpo.trial import run_trial
    from automl_deft.testing.fake_kubernetes import FakeClock, FakeCluster, succeeded_status

    # The trial "pods" below run in this process, so the volume is mounted where the
    # workspace is here (the results must be inside it: pods see nothing else).
    ws, results = tiny_ws_copy, tiny_ws_copy / "results" / "search"
    cluster, clock = FakeCluster(), FakeClock()
    trials = {"t-a": {"lr": 0.002}, "t-b": {"lr": 0.004}}

    def trial_pods_run(c: FakeCluster, call) -> None:
        # What the trial Jobs do on the cluster: train and write trial.json on the volume.
        problem = SearchProblem.load(results / "search_problem.json")
        metrics = {}
        for name, params in trials.items():
            o = run_trial(problem, name, params)
            c.add_trial(
                str(call.name), name, params, {"far_pct": o.far_pct, "val_loss": o.val_loss}
            )
            metrics[name] = o.far_pct
        best = min(metrics, key=metrics.get)
        c.script_experiment([succeeded_status(best, trials[best], {"far_pct": metrics[best]})])

    cluster.on("create", trial_pods_run)
    space = [{"name": "lr", "key": "train.optim.lr", "low": 1e-3, "high": 5e-3, "log": True}]
    cfg = AutomlConfig(
        backend="katib", max_trials=2, num_epochs=3, search_space=space, guards=_lenient()
    )
    from automl_deft.hpo.katib_backend import KatibBackend

    backend = KatibBackend(
        {"mount_path": str(ws.resolve())},
        api_factory=cluster.client,
        clock=clock,
        sleep=clock.sleep,
    )
    try:
        result = automl_search(Workspace.at(ws).root, cfg, results_dir=results, backend=backend)
    except UserError as exc:  # 3 epochs on 80 rows may collapse; the wiring still ran
        assert "collapsed" in str(exc)
        return
    assert result.backend == "katib"
    assert {h.rec_id for h in result.history} == set(trials)
    assert result.best.checkpoint.endswith("best_val.pt")
    assert "create" in cluster.methods()


def test_parallel_workers_share_one_study(tiny_ws: Path, tmp_path: Path) -> None:
    from automl_deft.hpo.base import Budget
    from automl_deft.hpo.optuna_backend import OptunaBackend

    ws = Workspace.at(tiny_ws)
    space = SearchSpace(default_aoi_space().params, {"train.num_epochs": 1})
    problem = SearchProblem.create(ws.root, space, load_spec(ws.spec_path), tmp_path)
    budget = Budget(max_trials=3, parallel_trials=2, early_stopping=False, algorithm="random")
    records = OptunaBackend().search(problem, budget)
    assert 3 <= len(records) <= 4  # two workers may overshoot by one, never fall short
    assert len({r.name for r in records}) == len(records)
    for r in records:
        assert (tmp_path / "trials" / r.name / "trial.json").exists()
