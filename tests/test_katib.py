"""Katib backend: the Experiment manifest, its admission checks, and the launcher (on fakes)."""

from __future__ import annotations

import copy
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from click.testing import CliRunner
from kubeflow_katib_api.models import V1beta1Experiment

import automl_deft
from automl_deft.errors import InfrastructureError, UserError
from automl_deft.hpo import katib_backend
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.katib_backend import (
    MAX_CONSECUTIVE_API_ERRORS,
    POLL_INTERVAL_S,
    STATE_FILE,
    KatibLauncher,
    SearchCancelled,
    dry_run_experiment,
)
from automl_deft.hpo.search import AutomlConfig, automl_search
from automl_deft.hpo.space import Param, SearchSpace, default_aoi_space
from automl_deft.testing.fake_kubernetes import (
    FakeCall,
    FakeClock,
    FakeCluster,
    api_exception,
    experiment_status,
    succeeded_status,
)

GOLDEN = Path(__file__).parent / "golden" / "katib_experiment_default.yaml"
PROBLEM = "/workspace/results/phase1/search_problem.json"
NS = "kubeflow-user"


@pytest.fixture
def exp() -> dict[str, Any]:
    return km.build_experiment(
        "automl-deft-golden", default_aoi_space(), km.KatibSettings(), problem_path=PROBLEM
    )


# --- the manifest ------------------------------------------------------------------------


def test_default_experiment_is_valid_round_trips_and_matches_golden(exp: dict[str, Any]) -> None:
    km.validate_experiment(exp)
    model = V1beta1Experiment.model_validate(exp)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == exp
    # The image tag follows the package version; the golden file does not.
    text = km.experiment_yaml(exp).replace(f":{automl_deft.__version__}\n", ":VERSION\n")
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.is_file(), f"{GOLDEN} is missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the Katib Experiment differs from the golden file; if the change is intended, "
        f"regenerate it with UPDATE_GOLDEN=1 pytest {__file__} and review the diff"
    )


def test_trial_job_runs_the_trial_entry_point(exp: dict[str, Any]) -> None:
    template = exp["spec"]["trialTemplate"]
    job = template["trialSpec"]
    assert (job["apiVersion"], job["kind"], job["spec"]["backoffLimit"]) == ("batch/v1", "Job", 0)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["name"] == template["primaryContainerName"] == "training"
    command = container["command"]
    assert command[:5] == ["python", "-m", "automl_deft.hpo.trial", "--problem", PROBLEM]
    assert len(command) == 5, "what Katib substitutes travels in env vars, never via sh -c"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "AUTOML_DEFT_TRIAL_NAME": "${trialParameters.trialName}",
        **{
            f"AUTOML_DEFT_PARAM_{p.name.upper()}": f"${{trialParameters.{p.name}}}"
            for p in default_aoi_space().params
        },
    }
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert container["volumeMounts"] == [{"mountPath": "/workspace", "name": "workspace"}]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "automl-deft-workspace"}
    trial_params = {p["name"]: p["reference"] for p in template["trialParameters"]}
    assert trial_params.pop("trialName") == "${trialSpec.Name}"
    assert trial_params == {p.name: p.name for p in default_aoi_space().params}
    assert exp["metadata"]["labels"]["app.kubernetes.io/part-of"] == "automl-deft"
    objective = exp["spec"]["objective"]
    assert (objective["objectiveMetricName"], objective["type"]) == ("far_pct", "minimize")
    assert objective["additionalMetricNames"] == ["val_loss"]


def test_settings_render_into_the_pod() -> None:
    settings = km.KatibSettings(
        gpus=0,
        service_account="automl-runner",
        node_selector={"pool": "gpu-a100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        secret_env={"HF_TOKEN": ["hf", "token"], "AWS_KEY": ("s3", "key")},
        early_stopping=True,
        goal=0.5,
        algorithm="bayesian",
        algorithm_settings={"n_initial_points": 4, "random_state": 0},
    )
    exp = km.build_experiment("e", default_aoi_space(), settings, problem_path=PROBLEM)
    pod = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["serviceAccountName"] == "automl-runner"
    assert pod["nodeSelector"] == {"pool": "gpu-a100"}
    assert pod["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert [e for e in container["env"] if "valueFrom" in e] == [
        {
            "name": "AWS_KEY",
            "valueFrom": {"secretKeyRef": {"key": "key", "name": "s3", "optional": True}},
        },
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"key": "token", "name": "hf", "optional": True}},
        },
    ]
    spec = exp["spec"]
    assert spec["algorithm"] == {
        "algorithmName": "bayesianoptimization",
        "algorithmSettings": [
            {"name": "n_initial_points", "value": "4"},
            {"name": "random_state", "value": "0"},
        ],
    }
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert spec["objective"]["goal"] == 0.5


def test_parameter_rendering() -> None:
    space = SearchSpace(
        (
            Param("lr", "train.optim.lr", "float", 1e-4, 1e-2, log=True),
            Param("momentum", "train.optim.momentum", "float", 0.8, 0.95),
            Param("modules", "model.classify.learnable_difference_modules", "int", 1, 4),
            Param("backbone", "model.backbone.type", "categorical", choices=("cnn_small", "vit")),
        )
    )
    assert km.katib_parameters(space) == [
        {
            "feasibleSpace": {"distribution": "logUniform", "max": "0.01", "min": "0.0001"},
            "name": "lr",
            "parameterType": "double",
        },
        {
            "feasibleSpace": {"distribution": "uniform", "max": "0.95", "min": "0.8"},
            "name": "momentum",
            "parameterType": "double",
        },
        {
            "feasibleSpace": {"distribution": "uniform", "max": "4", "min": "1"},
            "name": "modules",
            "parameterType": "int",
        },
        {
            "feasibleSpace": {"list": ["cnn_small", "vit"]},
            "name": "backbone",
            "parameterType": "categorical",
        },
    ]
    grid = {p["name"]: p for p in km.katib_parameters(space, grid=True)}
    assert grid["lr"] == {
        "feasibleSpace": {"list": ["0.0001", "0.001", "0.01"]},
        "name": "lr",
        "parameterType": "discrete",
    }
    assert grid["modules"]["feasibleSpace"]["list"] == ["1", "2", "3", "4"]
    assert grid["backbone"]["parameterType"] == "categorical"


def test_grid_experiment_is_valid() -> None:
    settings = km.KatibSettings(algorithm="grid")
    exp = km.build_experiment("e", default_aoi_space(), settings, problem_path=PROBLEM)
    assert {p["parameterType"] for p in exp["spec"]["parameters"]} == {"discrete"}


def _spec(e: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = e["spec"]
    return spec


def _param(e: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in _spec(e)["parameters"] if p["name"] == name)


def _container(e: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _spec(e)["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _algorithm(name: str, **settings: str) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        _spec(e)["algorithm"] = {
            "algorithmName": name,
            "algorithmSettings": [{"name": k, "value": v} for k, v in settings.items()],
        }

    return mutate


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(e: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = e
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return mutate


_DELETE = object()


def _cmaes_on_one_parameter(e: dict[str, Any]) -> None:
    _algorithm("cmaes")(e)
    _spec(e)["parameters"] = [_param(e, "lr")]


RULES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("name-long", _set("metadata.name", "a" * 41), r"^metadata\.name: 'a+' .* at most 40 "),
    ("name-case", _set("metadata.name", "Automl"), r"^metadata\.name: 'Automl' must be lower"),
    ("name-end", _set("metadata.name", "automl-"), r"^metadata\.name: 'automl-'"),
    ("objective", _set("spec.objective", _DELETE), r"^spec\.objective: missing"),
    (
        "objective-metric",
        _set("spec.objective.objectiveMetricName", _DELETE),
        r"^spec\.objective\.objectiveMetricName: missing",
    ),
    (
        "objective-type",
        _set("spec.objective.type", "lower"),
        r"^spec\.objective\.type: 'lower' must be minimize or maximize$",
    ),
    (
        "objective-repeated",
        _set("spec.objective.additionalMetricNames", ["far_pct"]),
        r"^spec\.objective\.additionalMetricNames: must not repeat",
    ),
    ("no-parameters", _set("spec.parameters", []), r"^spec\.parameters: empty"),
    (
        "min-max",
        lambda e: _param(e, "lr")["feasibleSpace"].update(min="0.1", max="0.01"),
        r"^spec\.parameters\[lr\]\.feasibleSpace: min 0\.1 must be < max 0\.01$",
    ),
    (
        "not-a-number",
        lambda e: _param(e, "lr")["feasibleSpace"].update(min="abc"),
        r"^spec\.parameters\[lr\]\.feasibleSpace\.min: 'abc' is not a number$",
    ),
    (
        "int-bounds",
        lambda e: _param(e, "difference_modules")["feasibleSpace"].update(min="1.5"),
        r"^spec\.parameters\[difference_modules\]\.feasibleSpace: int bounds must be whole",
    ),
    (
        "missing-max",
        lambda e: _param(e, "momentum")["feasibleSpace"].pop("max"),
        r"^spec\.parameters\[momentum\]\.feasibleSpace: double needs both min and max$",
    ),
    (
        "categorical-empty",
        lambda e: _param(e, "momentum").update(
            parameterType="categorical", feasibleSpace={"list": []}
        ),
        r"^spec\.parameters\[momentum\]\.feasibleSpace: missing$",
    ),
    (
        "categorical-list-empty",
        lambda e: _param(e, "momentum").update(
            parameterType="categorical", feasibleSpace={"list": [], "distribution": "uniform"}
        ),
        r"^spec\.parameters\[momentum\]\.feasibleSpace\.list: empty",
    ),
    (
        "categorical-min",
        lambda e: _param(e, "momentum").update(parameterType="categorical"),
        r"^spec\.parameters\[momentum\]\.feasibleSpace: min/max/step are not allowed for categ",
    ),
    (
        "discrete-number",
        lambda e: _param(e, "momentum").update(
            parameterType="discrete", feasibleSpace={"list": ["0.9", "high"]}
        ),
        r"^spec\.parameters\[momentum\]\.feasibleSpace\.list: 'high' is not a number$",
    ),
    (
        "double-list",
        lambda e: _param(e, "momentum")["feasibleSpace"].update(list=["0.9"]),
        r"^spec\.parameters\[momentum\]\.feasibleSpace\.list: not allowed for double",
    ),
    (
        "distribution",
        lambda e: _param(e, "lr")["feasibleSpace"].update(distribution="log"),
        r"^spec\.parameters\[lr\]\.feasibleSpace\.distribution: 'log' is not one of uniform, ",
    ),
    (
        "log-min",
        lambda e: _param(e, "momentum")["feasibleSpace"].update(distribution="logUniform", min="0"),
        r"^spec\.parameters\[momentum\]\.feasibleSpace: logUniform needs min > 0",
    ),
    (
        "parameter-type",
        lambda e: _param(e, "lr").update(parameterType="float"),
        r"^spec\.parameters\[lr\]\.parameterType: 'float' is not one of double, int",
    ),
    (
        "duplicate-parameter",
        lambda e: _spec(e)["parameters"].append(copy.deepcopy(_param(e, "lr"))),
        r"^spec\.parameters: duplicate name 'lr'",
    ),
    (
        "undefined-trial-parameter",
        lambda e: _container(e)["command"].append("--x=${trialParameters.extra}"),
        r"^spec\.trialTemplate\.trialSpec: uses \$\{trialParameters\.extra\}, which "
        r"trialParameters does not define",
    ),
    (
        "unused-trial-parameter",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"].append(
            {"name": "ns", "reference": "${trialSpec.Namespace}"}
        ),
        r"^spec\.trialTemplate\.trialParameters\[ns\]: not used in trialSpec",
    ),
    (
        "unknown-reference",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"][1].update(reference="learning_rate"),
        r"^spec\.trialTemplate\.trialParameters\[lr\]\.reference: 'learning_rate' is neither",
    ),
    (
        "bad-meta-reference",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"][0].update(
            reference="${trialSpec.Uid}"
        ),
        r"^spec\.trialTemplate\.trialParameters\[trialName\]\.reference: '\$\{trialSpec\.Uid\}'",
    ),
    (
        "duplicate-trial-parameter",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"].append(
            {"name": "lr", "reference": "momentum"}
        ),
        r"^spec\.trialTemplate\.trialParameters\[lr\]: duplicate name",
    ),
    (
        "duplicate-reference",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"].append(
            {"name": "lr2", "reference": "lr"}
        ),
        r"^spec\.trialTemplate\.trialParameters\[lr2\]\.reference: 'lr' is referenced twice",
    ),
    (
        "trial-parameter-braces",
        lambda e: _spec(e)["trialTemplate"]["trialParameters"][1].update(name="{lr}"),
        r"^spec\.trialTemplate\.trialParameters: each needs a name \(without braces\)",
    ),
    (
        "parallel-over-max",
        _set("spec.parallelTrialCount", 10),
        r"^spec\.parallelTrialCount: 10 > maxTrialCount 8; lower it or raise maxTrialCount$",
    ),
    (
        "failed-over-max",
        _set("spec.maxFailedTrialCount", 9),
        r"^spec\.maxFailedTrialCount: 9 > maxTrialCount 8",
    ),
    ("max-zero", _set("spec.maxTrialCount", 0), r"^spec\.maxTrialCount: 0 must be > 0$"),
    ("parallel-zero", _set("spec.parallelTrialCount", 0), r"^spec\.parallelTrialCount: 0 must"),
    ("failed-negative", _set("spec.maxFailedTrialCount", -1), r"^spec\.maxFailedTrialCount: -1"),
    (
        "algorithm",
        _algorithm("bayes"),
        r"^spec\.algorithm\.algorithmName: 'bayes' is not a Katib algorithm; choose one of "
        r"random, grid, tpe",
    ),
    (
        "algorithm-setting",
        _algorithm("bayesianoptimization", n_startup_trials="3"),
        r"^spec\.algorithm\.algorithmSettings: unknown setting 'n_startup_trials' for "
        r"bayesianoptimization; allowed: base_estimator, n_initial_points, acq_func, "
        r"acq_optimizer, random_state$",
    ),
    (
        "algorithm-setting-value",
        _algorithm("bayesianoptimization", acq_func="XX"),
        r"^spec\.algorithm\.algorithmSettings: bayesianoptimization setting acq_func='XX' must "
        r"be one of gp_hedge",
    ),
    (
        "random-setting",
        _algorithm("random", random_state="-1"),
        r"random setting random_state='-1' must be an integer >= 0$",
    ),
    (
        "hyperband-required",
        _algorithm("hyperband", resource_name="difference_modules"),
        r"^spec\.algorithm\.algorithmSettings: hyperband needs the setting\(s\) eta, r_l$",
    ),
    (
        "hyperband-resource",
        _algorithm("hyperband", resource_name="num_epochs", eta="3", r_l="9"),
        r"hyperband's resource_name 'num_epochs' must be an int or double parameter",
    ),
    (
        "hyperband-parallel",
        _algorithm("hyperband", resource_name="difference_modules", eta="3", r_l="9"),
        r"^spec\.parallelTrialCount: hyperband with eta=3, r_l=9\.0 needs at least 9 parallel",
    ),
    (
        "grid-step",
        _algorithm("grid"),
        r"^spec\.parameters\[lr\]\.feasibleSpace\.step: grid needs a step for a double",
    ),
    (
        "cmaes-dimensions",
        _cmaes_on_one_parameter,
        r"^spec\.parameters: cmaes needs at least two int or double parameters",
    ),
    (
        "early-stopping-name",
        _set("spec.earlyStopping", {"algorithmName": "median"}),
        r"^spec\.earlyStopping\.algorithmName: 'median' is not a Katib early-stopping algorithm",
    ),
    (
        "early-stopping-setting",
        _set(
            "spec.earlyStopping",
            {"algorithmName": "medianstop", "algorithmSettings": [{"name": "x", "value": "1"}]},
        ),
        r"^spec\.earlyStopping\.algorithmSettings: unknown setting 'x' for medianstop; allowed: "
        r"min_trials_required, start_step$",
    ),
    (
        "collector-kind",
        _set("spec.metricsCollectorSpec", {"collector": {"kind": "None"}}),
        r"^spec\.metricsCollectorSpec\.collector\.kind: 'None' is not one of StdOut",
    ),
    (
        "collector-file-path",
        _set("spec.metricsCollectorSpec", {"collector": {"kind": "File"}}),
        r"^spec\.metricsCollectorSpec\.source\.fileSystemPath\.path: File needs an absolute path",
    ),
    ("resume-policy", _set("spec.resumePolicy", "Always"), r"^spec\.resumePolicy: 'Always'"),
    (
        "primary-container",
        _set("spec.trialTemplate.primaryContainerName", "trainer"),
        r"^spec\.trialTemplate\.primaryContainerName: 'trainer' is not a container of the trial "
        r"\(containers: training\)$",
    ),
    (
        "success-condition",
        _set("spec.trialTemplate.successCondition", _DELETE),
        r"^spec\.trialTemplate: set both successCondition and failureCondition$",
    ),
    (
        "trial-spec-name",
        _set("spec.trialTemplate.trialSpec.metadata", {"name": "job"}),
        r"^spec\.trialTemplate\.trialSpec: omit metadata\.name and metadata\.namespace$",
    ),
    (
        "trial-spec-kind",
        _set("spec.trialTemplate.trialSpec.kind", _DELETE),
        r"^spec\.trialTemplate\.trialSpec: set apiVersion and kind$",
    ),
    (
        "field-type",
        _set("spec.maxTrialCount", "8"),
        r"^spec\.maxTrialCount: .* \(not a valid Katib Experiment field\)$",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_admission_rule(
    exp: dict[str, Any], mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    broken = copy.deepcopy(exp)
    mutate(broken)
    with pytest.raises(UserError, match=message) as info:
        km.validate_experiment(broken)
    assert "\n" not in str(info.value)


def test_grid_too_many_trials() -> None:
    exp = km.build_experiment(
        "e", default_aoi_space(), km.KatibSettings(algorithm="grid"), problem_path=PROBLEM
    )
    exp["spec"]["maxTrialCount"] = 100_000
    with pytest.raises(UserError, match=r"^spec\.maxTrialCount: 100000 > the grid's 2916 comb"):
        km.validate_experiment(exp)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "bohb"}, r"unknown search algorithm 'bohb'; choose one of random, grid"),
        (
            {"algorithm": "tpe", "algorithm_settings": {"n_startup_trials": 3}},
            r"^katib\.algorithm_settings: unknown setting 'n_startup_trials' for tpe; allowed: "
            r"gamma, prior_weight, n_EI_candidates, random_state$",
        ),
        ({"name_prefix": "x" * 32}, r"^katib\.name_prefix 'x+': .* at most 31 characters$"),
        ({"name_prefix": "AutoML"}, r"^katib\.name_prefix 'AutoML'"),
        ({"resume_policy": "FromVolume"}, r"^katib\.resume_policy 'FromVolume': use Never or"),
        ({"metrics_collector": "File"}, r"^katib\.metrics_collector 'File': the trial entry"),
        ({"gpus": -1}, r"^katib\.gpus must be >= 0, got -1$"),
        ({"mount_path": "workspace"}, r"^katib\.mount_path 'workspace' must be an absolute"),
        ({"tolerations": [{"key": "a", "operator": "In"}]}, r"operator 'In' is not Equal or"),
        ({"tolerations": [{"key": "a", "seconds": 3}]}, r"unknown field\(s\) \['seconds'\]"),
        ({"secret_env": {"TOKEN": "hf"}}, r"^katib\.secret_env\.TOKEN: expected \[secret_name"),
        (
            {"max_trials": 1},
            r"^spec\.parallelTrialCount: 2 > maxTrialCount 1",
        ),
    ],
)
def test_settings_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        km.build_experiment(
            "e", default_aoi_space(), km.KatibSettings(**kwargs), problem_path=PROBLEM
        )


# --- the launcher --------------------------------------------------------------------------

BEST = "trial-best"
BEST_PARAMS = {
    "lr": "0.0012",
    "weight_decay": "0.01",
    "momentum": "0.9",
    "cls_weight_defect": "7.5",
    "fpratio_sampling": "0.6",
    "difference_modules": "3",
    "rotate_probability": "0.25",
}


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _launcher(
    results: Path, cluster: FakeCluster, clock: FakeClock, **settings: Any
) -> KatibLauncher:
    return KatibLauncher(
        default_aoi_space(),
        km.KatibSettings(**settings),
        results_dir=results,
        problem_path=PROBLEM,
        api_factory=cluster.client,
        clock=clock,
        sleep=clock.sleep,
    )


def _katib_succeeds(cluster: FakeCluster, results: Path, *, polls: int = 2) -> None:
    """Script a run: ``polls`` Running looks, then Succeeded with three trials."""

    def add_trials(c: FakeCluster, call: FakeCall) -> None:
        if call.plural == km.EXPERIMENTS and c.experiment(str(call.name)) is None:
            c.add_trial(
                str(call.name), "trial-a", {**BEST_PARAMS, "lr": "0.004"}, {"far_pct": 12.5}
            )
            c.add_trial(str(call.name), BEST, BEST_PARAMS, {"far_pct": 3.25, "val_loss": 0.21})
            c.add_trial(
                str(call.name),
                "trial-c",
                BEST_PARAMS,
                {"far_pct": "unavailable"},
                condition="MetricsUnavailable",
            )

    cluster.on("create", add_trials)
    statuses = [experiment_status("Created")]
    statuses += [
        experiment_status("Running", trialsRunning=2, trialsSucceeded=i) for i in range(polls - 1)
    ]
    statuses.append(
        succeeded_status(BEST, BEST_PARAMS, {"far_pct": 3.25, "val_loss": 0.21}, trialsSucceeded=3)
    )
    cluster.script_experiment(statuses)
    checkpoint = results / "trials" / BEST / "best_val.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"weights")


def test_create_poll_collect(tmp_path: Path, cluster: FakeCluster, clock: FakeClock) -> None:
    _katib_succeeds(cluster, tmp_path)
    outcome = _launcher(tmp_path, cluster, clock).run(timeout_s=3600)

    assert cluster.methods() == ["create", "get", "get", "get", "list"]
    name = json.loads((tmp_path / STATE_FILE).read_text())["name"]
    assert outcome.experiment == name and name.startswith("automl-deft-") and len(name) == 20
    assert cluster.calls[-1].kwargs["label_selector"] == f"katib.kubeflow.org/experiment={name}"
    assert (tmp_path / "katib_experiment.yaml").is_file()
    assert clock.sleeps == [POLL_INTERVAL_S, POLL_INTERVAL_S]
    assert outcome.best_trial == BEST
    assert outcome.best_params["difference_modules"] == 3
    assert isinstance(outcome.best_params["difference_modules"], int)
    assert outcome.best_params["lr"] == pytest.approx(0.0012)
    assert outcome.best_metrics == {"far_pct": 3.25, "val_loss": 0.21}
    assert outcome.checkpoint == tmp_path / "trials" / BEST / "best_val.pt"
    assert [(h.name, h.far_pct, h.val_loss, h.condition) for h in outcome.history] == [
        ("trial-a", 12.5, None, "Succeeded"),
        (BEST, 3.25, 0.21, "Succeeded"),
        ("trial-c", None, None, "MetricsUnavailable"),
    ]
    assert outcome.history[0].params["lr"] == pytest.approx(0.004)


def test_name_file_is_written_before_create(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    seen: list[str] = []

    def check(c: FakeCluster, call: FakeCall) -> None:
        state = json.loads((tmp_path / STATE_FILE).read_text())
        assert state == {"name": call.name, "namespace": NS}
        seen.append(str(call.name))

    cluster.on("create", check)
    _katib_succeeds(cluster, tmp_path)
    _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert len(seen) == 1


def test_restart_resumes_instead_of_creating_again(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    _katib_succeeds(cluster, tmp_path, polls=4)
    gets = 0

    def pod_killed(c: FakeCluster, call: FakeCall) -> None:
        nonlocal gets
        gets += 1
        if gets == 2:
            raise RuntimeError("pod evicted")

    cluster.on("get", pod_killed)
    with pytest.raises(RuntimeError, match="pod evicted"):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    name = json.loads((tmp_path / STATE_FILE).read_text())["name"]
    assert cluster.experiment(name) is not None  # a crash is not a cancel

    outcome = _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert outcome.experiment == name and outcome.best_trial == BEST
    assert cluster.methods().count("create") == 1


def test_lost_create_response_then_409_resumes(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    def lost_response(c: FakeCluster, call: FakeCall) -> None:
        if c.methods().count("create") == 1:  # the server stores it, the answer is lost
            c.objects[(km.GROUP, km.VERSION, NS, km.EXPERIMENTS, str(call.name))] = dict(call.body)
            raise urllib3.exceptions.ProtocolError("Connection aborted.")

    _katib_succeeds(cluster, tmp_path)
    cluster.on("create", lost_response)
    outcome = _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert cluster.methods()[:3] == ["create", "create", "get"]
    assert outcome.best_trial == BEST
    assert cluster.clients_created == 2


def test_transient_errors_are_retried_with_a_fresh_client(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    _katib_succeeds(cluster, tmp_path)
    cluster.fail_next(2, status=503, methods=["get"])
    outcome = _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert outcome.best_trial == BEST
    assert cluster.clients_created == 3
    assert cluster.methods() == ["create"] + ["get"] * 5 + ["list"]
    assert clock.sleeps[:2] == [5.0, 10.0]


@pytest.mark.parametrize(
    "error",
    [
        api_exception(503),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        api_exception(429),
    ],
    ids=["503", "connection", "429"],
)
def test_too_many_api_errors(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock, error: BaseException
) -> None:
    _katib_succeeds(cluster, tmp_path)
    cluster.fail_next(MAX_CONSECUTIVE_API_ERRORS, error=error, methods=["get"])
    with pytest.raises(
        InfrastructureError,
        match=rf"^the Kubernetes API failed {MAX_CONSECUTIVE_API_ERRORS} times in a row while "
        r"reading Katib experiment automl-deft-\w{8} \(last: ",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)


def test_timeout(tmp_path: Path, cluster: FakeCluster, clock: FakeClock) -> None:
    cluster.script_experiment([experiment_status("Running")])
    with pytest.raises(
        InfrastructureError,
        match=r"^Katib experiment kubeflow-user/automl-deft-\w{8} did not finish within 100 s; "
        r"it keeps running: rerun to resume",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=100)
    assert clock.sleeps == [30.0, 30.0, 30.0, 10.0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_cancel_deletes_the_experiment_and_restores_handlers(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock, signum: int
) -> None:
    cluster.script_experiment([experiment_status("Running")])

    def cancel_run(c: FakeCluster, call: FakeCall) -> None:
        if c.methods().count("get") == 2:
            os.kill(os.getpid(), signum)

    def previous(signum: int, frame: Any) -> None:
        raise AssertionError("the launcher's handler should have been active")

    cluster.on("get", cancel_run)
    old_term = signal.signal(signal.SIGTERM, previous)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SearchCancelled, match=r"deleted Katib experiment") as info:
            _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGINT) is old_int
    finally:
        signal.signal(signal.SIGTERM, old_term)
    assert info.value.exit_code == 128 + signum
    assert cluster.methods()[-1] == "delete"
    assert [o for k, o in cluster.objects.items() if k[3] == km.EXPERIMENTS] == []
    assert not (tmp_path / STATE_FILE).exists()


def test_failed_experiment(tmp_path: Path, cluster: FakeCluster, clock: FakeClock) -> None:
    cluster.script_experiment(
        [
            experiment_status("Running"),
            experiment_status(
                "Failed",
                reason="ExperimentMaxFailedTrialsReached",
                message="Experiment has reached the maximum number of failed trials",
                failedTrialList=["t1", "t2", "t3"],
            ),
        ]
    )
    with pytest.raises(
        InfrastructureError,
        match=r"^Katib experiment kubeflow-user/automl-deft-\w{8} failed: "
        r"ExperimentMaxFailedTrialsReached: Experiment has reached the maximum number of failed "
        r"trials \(failed trials: t1, t2, t3;",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)


def test_missing_checkpoint(tmp_path: Path, cluster: FakeCluster, clock: FakeClock) -> None:
    _katib_succeeds(cluster, tmp_path)
    (tmp_path / "trials" / BEST / "best_val.pt").unlink()
    with pytest.raises(
        InfrastructureError,
        match=rf"^the best trial's checkpoint .*{BEST}/best_val\.pt is missing: the trial writes "
        r"it on the shared volume; check that PVC automl-deft-workspace is mounted",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)


def test_succeeded_without_optimal_trial(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    cluster.script_experiment([experiment_status("Succeeded")])
    with pytest.raises(InfrastructureError, match=r"succeeded without an optimal trial"):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)


def test_resume_of_a_deleted_experiment(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps({"name": "automl-deft-gone", "namespace": NS}))
    with pytest.raises(
        UserError,
        match=r"^Katib experiment kubeflow-user/automl-deft-gone \(recorded in .*"
        r"katib_experiment\.json\) no longer exists; delete that file to start a new search$",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert cluster.methods() == ["get"]


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (403, UserError, r"give the pipeline's service account RBAC on experiments and trials"),
        (422, UserError, r"Katib refused it: HTTP 422 Error: .*; fix the search settings$"),
        (404, UserError, r"is Katib installed, and does namespace kubeflow-user exist\?$"),
        (410, InfrastructureError, r"^creating Katib experiment automl-deft-\w{8}: HTTP 410"),
    ],
)
def test_create_errors(
    tmp_path: Path,
    cluster: FakeCluster,
    clock: FakeClock,
    status: int,
    error: type[Exception],
    message: str,
) -> None:
    cluster.fail_next(1, status=status, methods=["create"])
    with pytest.raises(error, match=message):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    assert cluster.methods() == ["create"]


def test_invalid_settings_touch_nothing(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock
) -> None:
    with pytest.raises(UserError, match=r"^spec\.parallelTrialCount: 4 > maxTrialCount 3"):
        _launcher(tmp_path, cluster, clock, parallel_trials=4, max_trials=3).run(timeout_s=60)
    assert cluster.calls == [] and list(tmp_path.iterdir()) == []


def test_listing_trials_forbidden(tmp_path: Path, cluster: FakeCluster, clock: FakeClock) -> None:
    _katib_succeeds(cluster, tmp_path)
    cluster.fail_next(1, status=403, methods=["list"])
    with pytest.raises(
        UserError,
        match=r"^listing the trials of automl-deft-\w{8}: HTTP 403 Error: Error; give the "
        r"pipeline's service account RBAC on experiments and trials \(kubeflow\.org\) in "
        r"namespace kubeflow-user$",
    ):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)


def test_status_is_logged_once_per_change(
    tmp_path: Path, cluster: FakeCluster, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    _katib_succeeds(cluster, tmp_path, polls=3)
    with caplog.at_level("INFO", logger="automl_deft.hpo.katib_backend"):
        _launcher(tmp_path, cluster, clock).run(timeout_s=3600)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Katib exp")]
    assert [line.split(": ", 1)[1] for line in lines] == [
        "Created (0 succeeded, 0 running, 0 failed of max 8 trials)",
        "Running (0 succeeded, 2 running, 0 failed of max 8 trials)",
        "Running (1 succeeded, 2 running, 0 failed of max 8 trials)",
        "Succeeded (3 succeeded, 0 running, 0 failed of max 8 trials)",
    ]


# --- the dry run prints what the search submits ----------------------------------------

FIXED_SUFFIX = "0123abcd"


@pytest.fixture
def fixed_name(monkeypatch: pytest.MonkeyPatch) -> str:
    """Experiment names without their random part, so two builds compare whole."""
    monkeypatch.setattr(katib_backend, "new_experiment_name", lambda p: f"{p}-{FIXED_SUFFIX}")
    return f"automl-deft-{FIXED_SUFFIX}"


class _Submitted(Exception):
    """Stops the search right after the Experiment reached the (fake) API."""


@pytest.mark.parametrize(
    "cfg",
    [
        AutomlConfig(backend="katib", max_trials=2, katib={"gpus": 0}),
        AutomlConfig(
            backend="katib",
            algorithm="random",
            max_trials=3,
            parallel_trials=5,
            early_stopping=False,
            katib={"namespace": "team-a", "name_prefix": "aoi", "max_failed_trials": 1},
        ),
    ],
    ids=["small-budget", "clamped"],
)
def test_dry_run_is_the_experiment_the_search_creates(
    tiny_ws_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fixed_name: str,
    cfg: AutomlConfig,
) -> None:
    tiny_ws = tiny_ws_copy  # the search writes its results inside the workspace
    cluster = FakeCluster()

    def submitted(c: FakeCluster, call: FakeCall) -> None:
        raise _Submitted

    cluster.on("create", submitted)
    monkeypatch.setattr(katib_backend, "default_api_factory", cluster.client)
    results = tiny_ws / "results" / f"dry-{tmp_path.name}"

    text = dry_run_experiment(tiny_ws, cfg, results_dir=results)
    assert not results.exists(), "the dry run writes nothing"
    with pytest.raises(_Submitted):
        automl_search(tiny_ws, cfg, results_dir=results)

    (call,) = cluster.calls
    assert call.method == "create"
    assert yaml.safe_load(text) == call.body
    # What the budget shapes (the CLI's own settings used to leave these out):
    spec = call.body["spec"]
    assert ("earlyStopping" in spec) is cfg.early_stopping
    assert spec["maxTrialCount"] == cfg.max_trials
    assert spec["parallelTrialCount"] == min(cfg.parallel_trials or 2, cfg.max_trials)
    assert spec["maxFailedTrialCount"] == cfg.katib.get("max_failed_trials", 2)
    command = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    rel = results.resolve().relative_to(tiny_ws.resolve())
    assert command[4] == f"/workspace/{rel.as_posix()}/search_problem.json"
    written = json.loads((results / "search_problem.json").read_text())
    assert written["workspace"] == "/workspace"
    assert written["results_dir"] == f"/workspace/{rel.as_posix()}"
    assert written["train_csv"].startswith("/workspace/")


def test_dry_run_needs_the_katib_backend(tiny_ws: Path, tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"^--dry-run prints a Katib Experiment: use it with --backend katib$"
    ):
        dry_run_experiment(tiny_ws, AutomlConfig(), results_dir=tmp_path)


def test_cli_dry_run_prints_the_library_dry_run(
    tiny_ws_copy: Path, tmp_path: Path, fixed_name: str
) -> None:
    from automl_deft.cli import cli

    tiny_ws = tiny_ws_copy

    results = tiny_ws / "results" / f"dry-{tmp_path.name}"
    args = ["automl", str(tiny_ws), "--backend", "katib", "--max-trials", "3", "--dry-run"]
    result = CliRunner().invoke(cli, [*args, "--results", str(results)])
    assert result.exit_code == 0, result.output
    expected = dry_run_experiment(
        tiny_ws, AutomlConfig(backend="katib", max_trials=3), results_dir=results
    )
    assert result.stdout == expected
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == fixed_name


def test_cli_dry_run_without_katib_is_a_user_error(tiny_ws: Path) -> None:
    from automl_deft.cli import cli

    result = CliRunner().invoke(cli, ["automl", str(tiny_ws), "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --dry-run prints a Katib Experiment: use it with --backend katib\n"
    )
