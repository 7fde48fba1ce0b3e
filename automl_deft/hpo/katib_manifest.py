"""The Katib ``Experiment`` for a search space, and the checks Katib would make on it.

:func:`build_experiment` renders a :class:`~automl_deft.hpo.space.SearchSpace`
and :class:`KatibSettings` into a ``kubeflow.org/v1beta1`` Experiment (a plain
dict, built with the ``kubeflow_katib_api`` models; the trial Job with the
``kubernetes`` client models). Each trial is a ``batch/v1`` Job running::

    python -m automl_deft.hpo.trial --problem P --trial-name <trial> --param lr=<v> …

which prints ``far_pct=<v>`` and ``val_loss=<v>`` for Katib's StdOut metrics
collector and keeps its checkpoints under ``<results>/trials/<trial>/`` on the
shared volume.

:func:`validate_experiment` checks locally what Katib checks on admission (the
experiment webhook) and a little later (each suggestion service's
``ValidateAlgorithmSettings``, which only fails the experiment after it has been
created), so a bad setting is a one-line :class:`~automl_deft.errors.UserError`
before anything reaches the cluster.

Experiment names are limited to :data:`MAX_NAME_LENGTH` (40) characters, not
Kubernetes' 63: Katib derives names from it (trials ``<experiment>-<8 chars>``,
whose Job pods add ``-<5 chars>``; the suggestion Deployment and Service
``<experiment>-<algorithm>``, up to 21 more for ``-bayesianoptimization``), and
each of those must still be a valid 63-character label.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from kubeflow_katib_api.models import (
    IoK8sApimachineryPkgApisMetaV1ObjectMeta,
    V1beta1AlgorithmSetting,
    V1beta1AlgorithmSpec,
    V1beta1CollectorSpec,
    V1beta1EarlyStoppingSetting,
    V1beta1EarlyStoppingSpec,
    V1beta1Experiment,
    V1beta1ExperimentSpec,
    V1beta1FeasibleSpace,
    V1beta1MetricsCollectorSpec,
    V1beta1MetricStrategy,
    V1beta1ObjectiveSpec,
    V1beta1ParameterSpec,
    V1beta1TrialParameterSpec,
    V1beta1TrialTemplate,
)
from kubernetes import client as k8s
from pydantic import ValidationError

import automl_deft
from automl_deft.errors import UserError
from automl_deft.hpo.algorithms import ALGORITHMS, canonical, grid_values
from automl_deft.hpo.space import Param, SearchSpace

GROUP = "kubeflow.org"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
EXPERIMENTS = "experiments"
TRIALS = "trials"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
"""The label Katib puts on every Trial of an experiment."""

PART_OF = {"app.kubernetes.io/part-of": "automl-deft"}
DEFAULT_IMAGE = f"ghcr.io/automl-deft/automl-deft:{automl_deft.__version__}"
PRIMARY_CONTAINER = "training"
TRIAL_MODULE = "automl_deft.hpo.trial"
TRIAL_NAME_PARAMETER = "trialName"
"""The trialParameter that carries the trial's own name. Katib substitutes
``${trialSpec.Name}`` only as a trialParameter *reference*, never directly in the
trialSpec; camel case cannot collide with a (snake case) search param."""

OBJECTIVE_METRIC = "far_pct"
ADDITIONAL_METRICS: tuple[str, ...] = ("val_loss",)
METRIC_STRATEGY = "latest"
"""The trial prints the metrics of its best checkpoint once, at the end."""

MAX_NAME_LENGTH = 40
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
JOB_SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'

PARAMETER_TYPES = ("double", "int", "categorical", "discrete")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
OBJECTIVE_TYPES = ("minimize", "maximize")
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
COLLECTOR_KINDS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "Push")
EARLY_STOPPING_ALGORITHM = "medianstop"
TOLERATION_OPERATORS = ("Equal", "Exists")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_PARAM_REF = re.compile(r"\$\{trialParameters\.([^}]*)\}")
_META_REF = re.compile(
    r"^\$\{trialSpec\.(Name|Namespace|Kind|APIVersion|(Labels|Annotations)\[.+\])\}$"
)


# --- algorithm settings: what each Katib suggestion service accepts -------------------

Check = Callable[[str], str | None]
"""A setting check: the problem with a value, or None when it is fine."""


def _number(parse: Callable[[str], float], ok: Callable[[float], bool], want: str) -> Check:
    def check(value: str) -> str | None:
        try:
            return None if ok(parse(value)) else f"must be {want}"
        except ValueError:
            return f"must be {want}"

    return check


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


_NONNEG_INT = _number(int, lambda v: v >= 0, "an integer >= 0")
_POS_INT = _number(int, lambda v: v > 0, "an integer > 0")
_POS_FLOAT = _number(float, lambda v: v > 0, "a number > 0")
_NONNEG_FLOAT = _number(float, lambda v: v >= 0, "a number >= 0")


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


ALGORITHM_SETTINGS: dict[str, dict[str, Check]] = {
    # hyperopt
    "random": {"random_state": _NONNEG_INT},
    "tpe": {
        "gamma": _number(float, lambda v: 0 < v < 1, "a number in (0, 1)"),
        "prior_weight": _POS_FLOAT,
        "n_EI_candidates": _POS_INT,
        "random_state": _NONNEG_INT,
    },
    # optuna
    "multivariate-tpe": {
        "n_startup_trials": _NONNEG_INT,
        "n_ei_candidates": _NONNEG_INT,
        "random_state": _NONNEG_INT,
    },
    "grid": {"random_state": _NONNEG_INT},
    # goptuna
    "cmaes": {
        "random_state": _NONNEG_INT,
        "sigma": _NONNEG_FLOAT,
        "restart_strategy": _one_of("none", "ipop", "bipop"),
    },
    "sobol": {},
    # scikit-optimize
    "bayesianoptimization": {
        "base_estimator": _one_of("GP", "RF", "ET", "GBRT"),
        "n_initial_points": _NONNEG_INT,
        "acq_func": _one_of("gp_hedge", "LCB", "EI", "PI", "EIps", "PIps"),
        "acq_optimizer": _one_of("auto", "sampling", "lbfgs"),
        "random_state": _NONNEG_INT,
    },
    "hyperband": {
        "resource_name": _non_empty,
        "eta": _number(int, lambda v: v >= 2, "an integer >= 2"),
        "r_l": _POS_FLOAT,
    },
}
"""Settings each Katib algorithm accepts (by the service behind it), with a value check."""

REQUIRED_SETTINGS: dict[str, tuple[str, ...]] = {"hyperband": ("resource_name", "eta", "r_l")}
EARLY_STOPPING_SETTINGS: dict[str, Check] = {
    "min_trials_required": _POS_INT,
    "start_step": _POS_INT,
}


def _check_settings(
    where: str,
    owner: str,
    settings: Mapping[str, str],
    allowed: Mapping[str, Check],
    required: Sequence[str] = (),
) -> None:
    for name, value in settings.items():
        if name not in allowed:
            choices = ", ".join(allowed) or "none"
            raise UserError(f"{where}: unknown setting {name!r} for {owner}; allowed: {choices}")
        problem = allowed[name](value)
        if problem:
            raise UserError(f"{where}: {owner} setting {name}={value!r} {problem}")
    missing = [name for name in required if name not in settings]
    if missing:
        raise UserError(f"{where}: {owner} needs the setting(s) {', '.join(missing)}")


def check_algorithm_settings(
    algorithm: str, settings: Mapping[str, str], *, where: str = "spec.algorithm.algorithmSettings"
) -> None:
    """Raise :class:`UserError` unless Katib's ``algorithm`` accepts ``settings``."""
    _check_settings(
        where,
        algorithm,
        settings,
        ALGORITHM_SETTINGS[algorithm],
        REQUIRED_SETTINGS.get(algorithm, ()),
    )


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class KatibSettings:
    """Where and how the trials of a Katib experiment run.

    Attributes:
        namespace: the (Kubeflow profile) namespace of the experiment and its trials.
        name_prefix: experiment names are ``<name_prefix>-<8 hex chars>``.
        image: the component image (it holds this package).
        image_pull_policy: ``IfNotPresent``, ``Always`` or ``Never``.
        service_account: the trial pods' service account (None: the namespace default).
        pvc_name, mount_path: the shared workspace volume; it must be mounted at the
            same path in the launcher pod, so trial outputs are found where expected.
        gpus: ``nvidia.com/gpu`` limit per trial (0: no GPU).
        cpu, memory: requests and limits per trial.
        node_selector: node labels the trial pods need.
        tolerations: ``{key, operator, value, effect}`` dicts.
        secret_env: ``ENV_NAME -> (secret_name, key)``, mounted as optional env vars.
        algorithm: a Katib algorithm name (``bayesian`` means ``bayesianoptimization``).
        algorithm_settings: settings of that algorithm (values are strings on the wire).
        parallel_trials, max_trials, max_failed_trials: trial counts.
        early_stopping: median-stop trials (needs per-epoch metrics on stdout).
        min_trials_required, start_step: median-stop settings.
        resume_policy: ``Never`` (the default: the suggestion pod is freed when the
            experiment ends) or ``LongRunning`` (kept, so a finished experiment can be
            extended by raising maxTrialCount). A restarted launcher resumes either way.
        goal: stop early once the objective reaches this far_pct.
    """

    namespace: str = "kubeflow-user"
    name_prefix: str = "automl-deft"
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = None
    pvc_name: str = "automl-deft-workspace"
    mount_path: str = "/workspace"
    gpus: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    secret_env: Mapping[str, Sequence[str]] = field(default_factory=dict)
    algorithm: str = "tpe"
    algorithm_settings: Mapping[str, Any] = field(default_factory=dict)
    parallel_trials: int = 2
    max_trials: int = 8
    max_failed_trials: int = 3
    early_stopping: bool = False
    min_trials_required: int = 3
    start_step: int = 2
    metrics_collector: str = "StdOut"
    resume_policy: str = "Never"
    goal: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # a frozen dataclass normalises its own fields
        set_(self, "algorithm", canonical(self.algorithm))
        set_(
            self, "algorithm_settings", {str(k): str(v) for k, v in self.algorithm_settings.items()}
        )
        check_algorithm_settings(
            self.algorithm, self.algorithm_settings, where="katib.algorithm_settings"
        )
        longest = MAX_NAME_LENGTH - 9  # "-" + 8 hex chars
        if not NAME_PATTERN.match(self.name_prefix) or len(self.name_prefix) > longest:
            raise UserError(
                f"katib.name_prefix {self.name_prefix!r}: use lower case letters, digits and "
                f"'-', start with a letter, at most {longest} characters"
            )
        if self.resume_policy not in ("Never", "LongRunning"):
            raise UserError(f"katib.resume_policy {self.resume_policy!r}: use Never or LongRunning")
        if self.metrics_collector != "StdOut":
            raise UserError(
                f"katib.metrics_collector {self.metrics_collector!r}: the trial entry point "
                "prints its metrics, so only StdOut is supported"
            )
        if self.gpus < 0:
            raise UserError(f"katib.gpus must be >= 0, got {self.gpus}")
        if not self.mount_path.startswith("/"):
            raise UserError(f"katib.mount_path {self.mount_path!r} must be an absolute path")
        set_(self, "tolerations", tuple(_toleration(t) for t in self.tolerations))
        set_(
            self, "secret_env", {env: _secret_ref(env, ref) for env, ref in self.secret_env.items()}
        )
        set_(self, "node_selector", {str(k): str(v) for k, v in self.node_selector.items()})


def _toleration(raw: Mapping[str, Any]) -> dict[str, Any]:
    keys = {"key": "key", "operator": "operator", "value": "value", "effect": "effect"}
    keys |= {"tolerationSeconds": "toleration_seconds", "toleration_seconds": "toleration_seconds"}
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise UserError(
            f"katib.tolerations: unknown field(s) {unknown}; use key, operator, value, effect"
        )
    out = {keys[k]: v for k, v in raw.items()}
    if out.get("operator", "Equal") not in TOLERATION_OPERATORS:
        raise UserError(f"katib.tolerations: operator {out['operator']!r} is not Equal or Exists")
    if out.get("effect") not in (None, "", *TOLERATION_EFFECTS):
        raise UserError(
            f"katib.tolerations: effect {out['effect']!r} is not one of "
            f"{', '.join(TOLERATION_EFFECTS)}"
        )
    return out


def _secret_ref(env: str, ref: Any) -> tuple[str, str]:
    if isinstance(ref, str) or not isinstance(ref, Sequence) or len(ref) != 2:
        raise UserError(f"katib.secret_env.{env}: expected [secret_name, key], got {ref!r}")
    return str(ref[0]), str(ref[1])


# --- rendering -----------------------------------------------------------------------


def _number_str(value: float, param_type: str) -> str:
    return str(int(value)) if param_type == "int" else repr(float(value))


def katib_parameters(space: SearchSpace, *, grid: bool = False) -> list[dict[str, Any]]:
    """The search space as Katib ``spec.parameters``.

    ``float`` becomes ``double``, ``int`` stays ``int``, ``categorical`` lists its
    choices as strings; ranges are ``min``/``max`` strings with distribution
    ``logUniform`` for a log range and ``uniform`` otherwise. With ``grid`` the
    numeric params become ``discrete`` lists of the same grid points the Optuna
    backend uses (Katib's grid cannot step a log range).
    """
    return [p.model_dump(by_alias=True, exclude_none=True) for p in _parameters(space, grid=grid)]


def _parameters(space: SearchSpace, *, grid: bool) -> list[V1beta1ParameterSpec]:
    points = grid_values(space) if grid else {}
    return [_parameter(p, points.get(p.name)) for p in space.params]


def _parameter(p: Param, grid_points: list[Any] | None) -> V1beta1ParameterSpec:
    if p.type == "categorical":
        return V1beta1ParameterSpec(
            name=p.name,
            parameterType="categorical",
            feasibleSpace=V1beta1FeasibleSpace(list=[str(c) for c in p.choices]),
        )
    if grid_points is not None:
        return V1beta1ParameterSpec(
            name=p.name,
            parameterType="discrete",
            feasibleSpace=V1beta1FeasibleSpace(
                list=[str(v) if p.type == "int" else f"{v:.6g}" for v in grid_points]
            ),
        )
    assert p.low is not None and p.high is not None
    return V1beta1ParameterSpec(
        name=p.name,
        parameterType="double" if p.type == "float" else "int",
        feasibleSpace=V1beta1FeasibleSpace(
            min=_number_str(p.low, p.type),
            max=_number_str(p.high, p.type),
            distribution="logUniform" if p.log else "uniform",
        ),
    )


def trial_job(space: SearchSpace, settings: KatibSettings, *, problem_path: str) -> dict[str, Any]:
    """The ``batch/v1`` Job every trial runs (with ``${trialParameters.*}`` placeholders)."""
    command = [
        "python",
        "-m",
        TRIAL_MODULE,
        "--problem",
        problem_path,
        "--trial-name",
        f"${{trialParameters.{TRIAL_NAME_PARAMETER}}}",
    ]
    for p in space.params:
        command += ["--param", f"{p.name}=${{trialParameters.{p.name}}}"]
    requests = {"cpu": settings.cpu, "memory": settings.memory}
    limits = dict(requests)
    if settings.gpus:
        limits["nvidia.com/gpu"] = str(settings.gpus)
    env = [
        k8s.V1EnvVar(
            name=name,
            value_from=k8s.V1EnvVarSource(
                secret_key_ref=k8s.V1SecretKeySelector(name=secret, key=key, optional=True)
            ),
        )
        for name, (secret, key) in sorted(settings.secret_env.items())
    ]
    container = k8s.V1Container(
        name=PRIMARY_CONTAINER,
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        command=command,
        env=env or None,
        resources=k8s.V1ResourceRequirements(requests=requests, limits=limits),
        volume_mounts=[k8s.V1VolumeMount(name="workspace", mount_path=settings.mount_path)],
    )
    pod = k8s.V1PodSpec(
        restart_policy="Never",
        service_account_name=settings.service_account,
        containers=[container],
        node_selector=dict(settings.node_selector) or None,
        tolerations=[k8s.V1Toleration(**t) for t in settings.tolerations] or None,
        volumes=[
            k8s.V1Volume(
                name="workspace",
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=settings.pvc_name
                ),
            )
        ],
    )
    job = k8s.V1Job(
        api_version="batch/v1",
        kind="Job",
        spec=k8s.V1JobSpec(
            backoff_limit=0,  # Katib counts a failed trial; a retry would hide it
            template=k8s.V1PodTemplateSpec(
                # Istio's sidecar outlives the training container and keeps the Job running.
                metadata=k8s.V1ObjectMeta(
                    labels=dict(PART_OF), annotations={"sidecar.istio.io/inject": "false"}
                ),
                spec=pod,
            ),
        ),
    )
    out: dict[str, Any] = k8s.ApiClient().sanitize_for_serialization(job)
    return out


def build_experiment(
    name: str, space: SearchSpace, settings: KatibSettings, *, problem_path: str
) -> dict[str, Any]:
    """The Katib Experiment (a plain dict) for ``space``, checked by :func:`validate_experiment`.

    Args:
        name: the experiment name (see :data:`MAX_NAME_LENGTH`).
        space: the swept params; pinned values travel in the problem file.
        settings: where and how trials run.
        problem_path: the trial's ``search_problem.json`` on the shared volume.
    """
    trial_parameters = [
        V1beta1TrialParameterSpec(
            name=TRIAL_NAME_PARAMETER,
            reference="${trialSpec.Name}",
            description="the trial's name: its output folder under trials/",
        )
    ] + [
        V1beta1TrialParameterSpec(name=p.name, reference=p.name, description=f"sets {p.key}")
        for p in space.params
    ]
    early_stopping = None
    if settings.early_stopping:
        early_stopping = V1beta1EarlyStoppingSpec(
            algorithmName=EARLY_STOPPING_ALGORITHM,
            algorithmSettings=[
                V1beta1EarlyStoppingSetting(
                    name="min_trials_required", value=str(settings.min_trials_required)
                ),
                V1beta1EarlyStoppingSetting(name="start_step", value=str(settings.start_step)),
            ],
        )
    metrics = (OBJECTIVE_METRIC, *ADDITIONAL_METRICS)
    experiment = V1beta1Experiment(
        apiVersion=API_VERSION,
        kind="Experiment",
        metadata=IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=name, namespace=settings.namespace, labels=dict(PART_OF)
        ),
        spec=V1beta1ExperimentSpec(
            objective=V1beta1ObjectiveSpec(
                type="minimize",
                goal=settings.goal,
                objectiveMetricName=OBJECTIVE_METRIC,
                additionalMetricNames=list(ADDITIONAL_METRICS),
                metricStrategies=[
                    V1beta1MetricStrategy(name=m, value=METRIC_STRATEGY) for m in metrics
                ],
            ),
            algorithm=V1beta1AlgorithmSpec(
                algorithmName=settings.algorithm,
                algorithmSettings=[
                    V1beta1AlgorithmSetting(name=k, value=v)
                    for k, v in settings.algorithm_settings.items()
                ]
                or None,
            ),
            earlyStopping=early_stopping,
            parallelTrialCount=settings.parallel_trials,
            maxTrialCount=settings.max_trials,
            maxFailedTrialCount=settings.max_failed_trials,
            metricsCollectorSpec=V1beta1MetricsCollectorSpec(
                collector=V1beta1CollectorSpec(kind=settings.metrics_collector)
            ),
            resumePolicy=settings.resume_policy,
            parameters=_parameters(space, grid=settings.algorithm == "grid"),
            trialTemplate=V1beta1TrialTemplate(
                primaryContainerName=PRIMARY_CONTAINER,
                successCondition=JOB_SUCCESS_CONDITION,
                failureCondition=JOB_FAILURE_CONDITION,
                trialParameters=trial_parameters,
                trialSpec=trial_job(space, settings, problem_path=problem_path),
            ),
        ),
    )
    exp: dict[str, Any] = experiment.model_dump(by_alias=True, exclude_none=True, mode="json")
    validate_experiment(exp)
    return exp


def experiment_yaml(exp: Mapping[str, Any]) -> str:
    """The experiment as YAML (keys in manifest order)."""
    return yaml.safe_dump(dict(exp), sort_keys=False, default_flow_style=False, width=100)


# --- validation: Katib's admission rules, checked locally -----------------------------


def validate_experiment(exp: Mapping[str, Any]) -> None:
    """Raise :class:`UserError` (one line: the field and the fix) where Katib would refuse ``exp``.

    Covers the experiment webhook's rules (name, objective, algorithm, early
    stopping, resume policy, trial counts, parameters, trial template, metrics
    collector) and the settings checks of the suggestion services.
    """
    try:
        V1beta1Experiment.model_validate(exp)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise UserError(f"{where}: {err['msg']} (not a valid Katib Experiment field)") from None
    if exp.get("apiVersion") != API_VERSION or exp.get("kind") != "Experiment":
        raise UserError(f"apiVersion/kind: must be {API_VERSION} / Experiment")
    _check_name(str((exp.get("metadata") or {}).get("name") or ""))
    spec = exp.get("spec") or {}
    _check_objective(spec.get("objective"))
    _check_counts(spec)
    params = _check_parameters(spec.get("parameters") or [])
    _check_algorithm(spec, params)
    _check_early_stopping(spec.get("earlyStopping"))
    if spec.get("resumePolicy", "Never") not in RESUME_POLICIES:
        raise UserError(
            f"spec.resumePolicy: {spec['resumePolicy']!r} is not one of "
            f"{', '.join(RESUME_POLICIES)}"
        )
    _check_trial_template(spec.get("trialTemplate"), params)
    _check_metrics_collector(spec.get("metricsCollectorSpec") or {})


def _check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise UserError(
            f"metadata.name: {name!r} must be lower case letters, digits and '-', start with a "
            f"letter, end with a letter or digit, and be at most {MAX_NAME_LENGTH} characters"
        )


def _check_objective(obj: Mapping[str, Any] | None) -> None:
    if not obj:
        raise UserError("spec.objective: missing; set objectiveMetricName and type")
    if not obj.get("objectiveMetricName"):
        raise UserError(
            "spec.objective.objectiveMetricName: missing; name the metric the trial prints "
            f"(e.g. {OBJECTIVE_METRIC})"
        )
    if obj.get("type") not in OBJECTIVE_TYPES:
        raise UserError(f"spec.objective.type: {obj.get('type')!r} must be minimize or maximize")
    if obj["objectiveMetricName"] in (obj.get("additionalMetricNames") or []):
        raise UserError(
            "spec.objective.additionalMetricNames: must not repeat the objectiveMetricName "
            f"{obj['objectiveMetricName']!r}"
        )


def _check_counts(spec: Mapping[str, Any]) -> None:
    max_trials = spec.get("maxTrialCount")
    parallel = spec.get("parallelTrialCount")
    max_failed = spec.get("maxFailedTrialCount")
    if max_trials is not None and max_trials <= 0:
        raise UserError(f"spec.maxTrialCount: {max_trials} must be > 0")
    if parallel is not None and parallel <= 0:
        raise UserError(f"spec.parallelTrialCount: {parallel} must be > 0")
    if max_failed is not None and max_failed < 0:
        raise UserError(f"spec.maxFailedTrialCount: {max_failed} must be >= 0")
    if max_trials is not None:
        if parallel is not None and parallel > max_trials:
            raise UserError(
                f"spec.parallelTrialCount: {parallel} > maxTrialCount {max_trials}; "
                "lower it or raise maxTrialCount"
            )
        if max_failed is not None and max_failed > max_trials:
            raise UserError(
                f"spec.maxFailedTrialCount: {max_failed} > maxTrialCount {max_trials}; "
                "lower it or raise maxTrialCount"
            )


def _float(where: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {raw!r} must be finite")
    return value


def _check_parameters(params: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    if not params:
        raise UserError("spec.parameters: empty; the search needs at least one swept parameter")
    seen: dict[str, Mapping[str, Any]] = {}
    for i, p in enumerate(params):
        name = p.get("name") or ""
        where = f"spec.parameters[{name or i}]"
        if not name:
            raise UserError(f"{where}.name: missing")
        if name in seen:
            raise UserError(f"spec.parameters: duplicate name {name!r}; each parameter once")
        seen[name] = p
        ptype = p.get("parameterType")
        if ptype not in PARAMETER_TYPES:
            raise UserError(
                f"{where}.parameterType: {ptype!r} is not one of {', '.join(PARAMETER_TYPES)}"
            )
        fs = p.get("feasibleSpace") or {}
        if not any(fs.values()):  # Katib, too, counts empty values as unset
            raise UserError(f"{where}.feasibleSpace: missing")
        distribution = fs.get("distribution")
        if distribution not in (None, "", *DISTRIBUTIONS):
            raise UserError(
                f"{where}.feasibleSpace.distribution: {distribution!r} is not one of "
                f"{', '.join(DISTRIBUTIONS)}"
            )
        if ptype in ("categorical", "discrete"):
            if any(fs.get(k) for k in ("min", "max", "step")):
                raise UserError(
                    f"{where}.feasibleSpace: min/max/step are not allowed for {ptype}; use list"
                )
            if not fs.get("list"):
                raise UserError(f"{where}.feasibleSpace.list: empty; list at least one value")
            if ptype == "discrete":
                for v in fs["list"]:
                    _float(f"{where}.feasibleSpace.list", v)
            continue
        if fs.get("list"):
            raise UserError(f"{where}.feasibleSpace.list: not allowed for {ptype}; use min/max")
        if fs.get("min") in (None, "") or fs.get("max") in (None, ""):
            raise UserError(f"{where}.feasibleSpace: {ptype} needs both min and max")
        low = _float(f"{where}.feasibleSpace.min", fs["min"])
        high = _float(f"{where}.feasibleSpace.max", fs["max"])
        if ptype == "int" and not all(
            re.fullmatch(r"[+-]?\d+", str(fs[k])) for k in ("min", "max")
        ):
            raise UserError(
                f"{where}.feasibleSpace: int bounds must be whole numbers, got "
                f"{fs['min']!r}..{fs['max']!r}"
            )
        if not low < high:
            raise UserError(f"{where}.feasibleSpace: min {fs['min']} must be < max {fs['max']}")
        if distribution in ("logUniform", "logNormal") and low <= 0:
            raise UserError(f"{where}.feasibleSpace: {distribution} needs min > 0, got {fs['min']}")
        if (
            fs.get("step") not in (None, "")
            and _float(f"{where}.feasibleSpace.step", fs["step"]) <= 0
        ):
            raise UserError(f"{where}.feasibleSpace.step: must be > 0")
    return seen


def _grid_size(name: str, p: Mapping[str, Any]) -> int:
    fs = p["feasibleSpace"]
    if p["parameterType"] in ("categorical", "discrete"):
        return len(fs["list"])
    step = fs.get("step") or ("1" if p["parameterType"] == "int" else "")
    if not step:
        raise UserError(
            f"spec.parameters[{name}].feasibleSpace.step: grid needs a step for a double parameter"
        )
    return int((float(fs["max"]) - float(fs["min"])) // float(step)) + 1


def _check_algorithm(spec: Mapping[str, Any], params: Mapping[str, Mapping[str, Any]]) -> None:
    algorithm = spec.get("algorithm") or {}
    name = algorithm.get("algorithmName")
    if name not in ALGORITHMS:
        raise UserError(
            f"spec.algorithm.algorithmName: {name!r} is not a Katib algorithm; choose one of "
            f"{', '.join(ALGORITHMS)}"
        )
    settings = _named_values(algorithm.get("algorithmSettings"))
    check_algorithm_settings(name, settings)
    where = "spec.algorithm.algorithmSettings"
    if name == "hyperband":
        resource = settings["resource_name"]
        if resource not in params or params[resource]["parameterType"] not in ("int", "double"):
            raise UserError(
                f"{where}: hyperband's resource_name {resource!r} must be an int or double "
                "parameter (add the training budget, e.g. the epochs, to the search space)"
            )
        eta, r_l = int(settings["eta"]), float(settings["r_l"])
        needed = math.ceil(eta ** int(math.log(r_l) / math.log(eta)))  # as Katib computes it
        if (spec.get("parallelTrialCount") or 3) < needed:
            raise UserError(
                f"spec.parallelTrialCount: hyperband with eta={eta}, r_l={r_l} needs at least "
                f"{needed} parallel trials"
            )
    elif name == "grid":
        combinations = math.prod(_grid_size(n, p) for n, p in params.items())
        max_trials = spec.get("maxTrialCount")
        if max_trials is not None and max_trials > combinations:
            raise UserError(
                f"spec.maxTrialCount: {max_trials} > the grid's {combinations} combinations; "
                "lower it or add grid points"
            )
    elif name == "cmaes":
        numeric = [n for n, p in params.items() if p["parameterType"] in ("int", "double")]
        if len(numeric) < 2:
            raise UserError(
                "spec.parameters: cmaes needs at least two int or double parameters; "
                "pick another algorithm"
            )


def _named_values(items: Sequence[Mapping[str, Any]] | None) -> dict[str, str]:
    return {str(s.get("name", "")): str(s.get("value", "")) for s in items or []}


def _check_early_stopping(es: Mapping[str, Any] | None) -> None:
    if es is None:
        return
    name = es.get("algorithmName")
    if name != EARLY_STOPPING_ALGORITHM:
        raise UserError(
            f"spec.earlyStopping.algorithmName: {name!r} is not a Katib early-stopping "
            f"algorithm; use {EARLY_STOPPING_ALGORITHM}"
        )
    settings = _named_values(es.get("algorithmSettings"))
    _check_settings("spec.earlyStopping.algorithmSettings", name, settings, EARLY_STOPPING_SETTINGS)


def _containers(trial_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pod = ((trial_spec.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(pod.get("containers") or [])


def _check_trial_template(
    template: Mapping[str, Any] | None, params: Mapping[str, Mapping[str, Any]]
) -> None:
    where = "spec.trialTemplate"
    if not template:
        raise UserError(f"{where}: missing; describe the trial Job")
    if not template.get("successCondition") or not template.get("failureCondition"):
        raise UserError(f"{where}: set both successCondition and failureCondition")
    trial_spec = template.get("trialSpec")
    if not trial_spec:
        raise UserError(f"{where}.trialSpec: missing (a configMap template is not supported here)")
    if not trial_spec.get("apiVersion") or not trial_spec.get("kind"):
        raise UserError(f"{where}.trialSpec: set apiVersion and kind")
    meta = trial_spec.get("metadata") or {}
    if meta.get("name") or meta.get("namespace"):
        raise UserError(f"{where}.trialSpec: omit metadata.name and metadata.namespace")

    used = set(_PARAM_REF.findall(json.dumps(trial_spec)))
    defined: set[str] = set()
    references: set[str] = set()
    for tp in template.get("trialParameters") or []:
        name, reference = tp.get("name") or "", tp.get("reference") or ""
        tp_where = f"{where}.trialParameters[{name}]"
        if not name or not reference or "{" in name or "}" in name:
            raise UserError(
                f"{where}.trialParameters: each needs a name (without braces) and a reference"
            )
        if name in defined:
            raise UserError(f"{tp_where}: duplicate name; define each trialParameter once")
        if reference in references:
            raise UserError(f"{tp_where}.reference: {reference!r} is referenced twice")
        defined.add(name)
        references.add(reference)
        if reference not in params and not _META_REF.match(reference):
            raise UserError(
                f"{tp_where}.reference: {reference!r} is neither a spec.parameters name nor a "
                "${trialSpec.Name|Namespace|Kind|APIVersion|Labels[..]|Annotations[..]} reference"
            )
        if name not in used:
            raise UserError(
                f"{tp_where}: not used in trialSpec; use ${{trialParameters.{name}}} or remove it"
            )
    undefined = sorted(used - defined)
    if undefined:
        raise UserError(
            f"{where}.trialSpec: uses ${{trialParameters.{undefined[0]}}}, which trialParameters "
            "does not define; add it or drop the placeholder"
        )

    primary = template.get("primaryContainerName")
    if not primary:
        raise UserError(f"{where}.primaryContainerName: missing; name the training container")
    names = [c.get("name") for c in _containers(trial_spec)]
    if primary not in names:
        raise UserError(
            f"{where}.primaryContainerName: {primary!r} is not a container of the trial "
            f"(containers: {', '.join(map(str, names)) or 'none'})"
        )


def _check_metrics_collector(mc: Mapping[str, Any]) -> None:
    kind = (mc.get("collector") or {}).get("kind", "StdOut")
    where = "spec.metricsCollectorSpec"
    if kind not in COLLECTOR_KINDS:
        raise UserError(
            f"{where}.collector.kind: {kind!r} is not one of {', '.join(COLLECTOR_KINDS)}"
        )
    path = ((mc.get("source") or {}).get("fileSystemPath") or {}).get("path", "")
    if kind in ("File", "TensorFlowEvent") and not str(path).startswith("/"):
        raise UserError(f"{where}.source.fileSystemPath.path: {kind} needs an absolute path")
    if kind == "Custom" and not (mc.get("collector") or {}).get("customCollector"):
        raise UserError(f"{where}.collector.customCollector: the Custom kind needs a container")


__all__ = [
    "ALGORITHM_SETTINGS",
    "API_VERSION",
    "EXPERIMENTS",
    "EXPERIMENT_LABEL",
    "GROUP",
    "MAX_NAME_LENGTH",
    "TRIALS",
    "VERSION",
    "KatibSettings",
    "build_experiment",
    "check_algorithm_settings",
    "experiment_yaml",
    "katib_parameters",
    "trial_job",
    "validate_experiment",
]
