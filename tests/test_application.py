"""The application interface: every phase reaches the model through it, the registry finds it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from automl_deft import application
from automl_deft.aoi_changenet import AOIChangeNet
from automl_deft.errors import SpecError
from automl_deft.hpo.search import AutomlConfig, automl_search
from automl_deft.hpo.space import SearchSpace, default_aoi_space
from automl_deft.hpo.trial import SearchProblem, main, run_trial
from automl_deft.model.spec import load_spec
from automl_deft.testing.applications import CHECKPOINT_NAME, MeanDiffApplication
from automl_deft.workspace import Workspace, read_dataset_csv

TOY_PATH = "automl_deft.testing.applications:MeanDiffApplication"


@pytest.fixture
def calls() -> list[str]:
    MeanDiffApplication.calls.clear()
    return MeanDiffApplication.calls


def _problem(ws: Workspace, results: Path, app: str) -> SearchProblem:
    space = SearchSpace(default_aoi_space().params, {"train.num_epochs": 2})
    return SearchProblem.create(ws.root, space, load_spec(ws.spec_path), results, application=app)


# -- registry -------------------------------------------------------------------------


def test_registry_names_builtin_registered_and_import_path() -> None:
    assert application.application_class("aoi-changenet") is AOIChangeNet
    assert application.application_class("mean-diff") is MeanDiffApplication
    assert application.application_class(TOY_PATH) is MeanDiffApplication
    with pytest.raises(SpecError, match=r"^unknown application 'nope'; choose one of .*mean-diff"):
        application.application_class("nope")
    with pytest.raises(SpecError, match=r"is not an automl_deft\.application\.Application$"):
        application.application_class("automl_deft.errors:SpecError")
    with pytest.raises(SpecError, match="cannot import it"):
        application.application_class("no_such_package.apps:App")


def test_unknown_application_fails_before_any_trial(tiny_ws: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown application 'nope'"):
        _problem(Workspace.at(tiny_ws), tmp_path, "nope")
    assert not (tmp_path / "trials").exists()


# -- the built-in calls the AOI code exactly as the phases did -------------------------


def test_aoi_trial_and_deft_training_call_the_trainer_as_before(
    tiny_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_deft.model.train import TrainResult

    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_train(*args: Any, **kwargs: Any) -> TrainResult:
        seen.append((args, kwargs))
        out = Path(args[4])
        return TrainResult(out, out / "best_val.pt", out / "latest.pt", {"far_pct": 1.0}, [{}])

    monkeypatch.setattr("automl_deft.model.train.train", fake_train)
    ws = Workspace.at(tiny_ws)
    spec = load_spec(ws.spec_path)
    app = AOIChangeNet(ws.images_dir, spec)
    frame = read_dataset_csv(ws.val_csv)

    def report(epoch: int, metrics: dict[str, Any]) -> None: ...

    trained = app.train_trial(spec, frame, frame, tmp_path / "t", on_epoch_end=report)
    args, kwargs = seen.pop()
    assert args[0] is spec and args[3] == ws.images_dir and args[4] == tmp_path / "t"
    assert kwargs == {"progress": False, "on_epoch_end": report}
    assert trained.val_metrics == {"far_pct": 1.0} and trained.history == [{}]

    app.train(frame, frame, tmp_path / "d", pretrained=None, num_epochs=2, seed=3)
    args, kwargs = seen.pop()
    assert kwargs == {"resume": True}
    assert (args[0].train.num_epochs, args[0].train.seed) == (2, 3)
    assert (tmp_path / "d" / "spec.yaml").is_file()


def test_aoi_zero_shot_is_the_pixel_diff_scorer(tiny_ws: Path) -> None:
    from automl_deft.model.zero_shot import zero_shot_frame

    ws = Workspace.at(tiny_ws)
    spec = load_spec(ws.spec_path)
    frame = read_dataset_csv(ws.val_csv).head(8)
    got = AOIChangeNet(ws.images_dir, spec).zero_shot(frame, method="pixel-diff")
    pd.testing.assert_frame_equal(got, zero_shot_frame(frame, ws.images_dir, spec))


# -- a plug-in application drives every HPO step --------------------------------------


def test_search_trains_and_judges_through_the_configured_application(
    tiny_ws: Path, tmp_path: Path, calls: list[str]
) -> None:
    cfg = AutomlConfig(application="mean-diff", max_trials=3, num_epochs=2, parallel_trials=1)
    result = automl_search(Workspace.at(tiny_ws).root, cfg, results_dir=tmp_path)
    assert calls.count("train_trial") == len(result.history) >= 3  # no trial went around it
    assert calls.count("zero_shot") == 1
    assert result.best.checkpoint.endswith(CHECKPOINT_NAME)
    assert result.guards.zero_shot.zero_shot_far_pct == 100.0  # the toy's baseline
    assert result.guards.zero_shot.beaten is True
    problem = json.loads((tmp_path / "search_problem.json").read_text())
    assert problem["application"] == "mean-diff"
    assert not list(tmp_path.glob("trials/*/*.pt"))  # the AOI trainer never ran


def test_a_reseeded_trial_goes_through_the_application(
    tiny_ws: Path, tmp_path: Path, calls: list[str]
) -> None:
    problem = _problem(Workspace.at(tiny_ws), tmp_path, "mean-diff")
    outcome = run_trial(problem, "t-reseed", {"lr": 0.002}, seed=1000)
    assert calls == ["train_trial"] and str(outcome.checkpoint).endswith(CHECKPOINT_NAME)
    assert outcome.epochs_run == 2 and outcome.far_pct is not None


def test_katib_trial_entry_point_uses_the_problems_application(
    tiny_ws: Path, tmp_path: Path, calls: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = _problem(Workspace.at(tiny_ws), tmp_path, "mean-diff").save()
    assert main(["--problem", str(path), "--trial-name", "t1", "--param", "lr=0.002"]) == 0
    assert calls == ["train_trial"]
    # each line: "<RFC 3339 time> far_pct=<v>" (Katib's StdOut collector reads the time)
    lines = [line.split(" ", 1)[-1] for line in capsys.readouterr().out.splitlines()]
    assert sum(line.startswith("far_pct=") for line in lines) == 3  # 2 epochs + the best


def test_import_path_reaches_a_fresh_process(tiny_ws: Path, tmp_path: Path) -> None:
    """A Katib pod never imported the registering module: the import path loads it."""
    path = _problem(Workspace.at(tiny_ws), tmp_path, TOY_PATH).save()
    cmd = [sys.executable, "-m", "automl_deft.hpo.trial", "--problem", str(path)]
    done = subprocess.run([*cmd, "--trial-name", "t1"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "trials" / "t1" / "trial.json").read_text())
    assert record["checkpoint"].endswith(CHECKPOINT_NAME)


def test_one_application_key_sets_every_phase(tmp_path: Path) -> None:
    from automl_deft.errors import SpecError
    from automl_deft.run_config import run_config_from_dict

    cfg = run_config_from_dict({"application": "mean-diff"})
    assert cfg.automl.application == cfg.deft.application == "mean-diff"
    assert cfg.phase3_automl().application == "mean-diff"
    with pytest.raises(SpecError, match=r"'deft.application' \(other\) differs from 'application'"):
        run_config_from_dict({"application": "mean-diff", "deft": {"application": "other"}})
    with pytest.raises(SpecError, match=r"differ; all three phases train one model"):
        run_config_from_dict({"automl": {"application": "mean-diff"}})
