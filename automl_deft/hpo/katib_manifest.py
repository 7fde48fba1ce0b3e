"""The Katib ``Experiment`` for a search space.

:func:`build_experiment` renders a :class:`~automl_deft.hpo.space.SearchSpace`
and :class:`KatibSettings` into a ``kubeflow.org/v1beta1`` Experiment (a plain
dict, built with the ``kubeflow_katib_api`` models; the trial Job with the
``kubernetes`` client models). Each trial is a ``batch/v1`` Job running::

    python -m automl_deft.hpo.trial --problem P --trial-name <trial> --param lr=<v> …

which prints ``far_pct=<v>`` and ``val_loss=<v>`` for Katib's StdOut metrics
collector and keeps its checkpoints under ``<results>/trials/<trial>/`` on the
shared volume.

Every Experiment built here is checked against Katib's own rules
(:mod:`automl_deft.hpo.katib_admission`, re-exported here) before it is returned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

import automl_deft
from automl_deft.errors import SpecError, UserError
from automl_deft.hpo.algorithms import canonical, grid_values
from automl_deft.hpo.katib_admission import (
    ALGORITHM_SETTINGS,
    COLLECTOR_KINDS,
    DISTRIBUTIONS,
    EARLY_STOPPING_ALGORITHM,
    MAX_NAME_LENGTH,
    NAME_PATTERN,
    OBJECTIVE_TYPES,
    PARAMETER_TYPES,
    RESUME_POLICIES,
    check_algorithm_settings,
    validate_experiment,
)
from automl_deft.hpo.katib_names import (
    ADDITIONAL_METRICS,
    API_VERSION,
    EXPERIMENT_LABEL,
    EXPERIMENTS,
    GROUP,
    METRIC_STRATEGY,
    OBJECTIVE_METRIC,
    TRIALS,
    VERSION,
)
from automl_deft.hpo.space import Param, ParamValue, SearchSpace
from automl_deft.hpo.trial import TRIAL_NAME_ENV, param_env
from automl_deft.jsontypes import K8sObject
from automl_deft.k8s_checks import check_namespace
from automl_deft.mount import shell_safe

PART_OF = {"app.kubernetes.io/part-of": "automl-deft"}
DEFAULT_IMAGE = f"ghcr.io/automl-deft/automl-deft:{automl_deft.__version__}"
PRIMARY_CONTAINER = "training"
TRIAL_MODULE = "automl_deft.hpo.trial"
TRIAL_NAME_PARAMETER = "trialName"
"""The trialParameter that carries the trial's own name. Katib substitutes
``${trialSpec.Name}`` only as a trialParameter *reference*, never directly in the
trialSpec; camel case cannot collide with a (snake case) search param."""

JOB_SUCCESS_CONDITION = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
JOB_FAILURE_CONDITION = 'status.conditions.#(type=="Failed")#|#(status=="True")#'

TOLERATION_OPERATORS = ("Equal", "Exists")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


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
        try:  # the API server answers 422 to a bad one, after the state file is written
            check_namespace(self.namespace)
        except SpecError as exc:
            raise UserError(f"katib.{exc}") from None
        if not self.mount_path.startswith("/"):
            raise UserError(f"katib.mount_path {self.mount_path!r} must be an absolute path")
        if not shell_safe(self.mount_path):
            raise UserError(
                f"katib.mount_path {self.mount_path!r} has a space or a shell metacharacter, "
                "which Katib's sh -c wrapper would split; use e.g. /workspace"
            )
        set_(self, "tolerations", tuple(_toleration(t) for t in self.tolerations))
        set_(
            self, "secret_env", {env: _secret_ref(env, ref) for env, ref in self.secret_env.items()}
        )
        set_(self, "node_selector", {str(k): str(v) for k, v in self.node_selector.items()})


def _toleration(raw: Mapping[str, Any]) -> dict[str, object]:
    """A ``katib.tolerations`` entry as ``V1Toleration`` keyword arguments (checked)."""
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


def katib_parameters(space: SearchSpace, *, grid: bool = False) -> list[K8sObject]:
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


def _parameter(p: Param, grid_points: list[ParamValue] | None) -> V1beta1ParameterSpec:
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


def trial_job(space: SearchSpace, settings: KatibSettings, *, problem_path: str) -> K8sObject:
    """The ``batch/v1`` Job every trial runs (with ``${trialParameters.*}`` placeholders).

    Katib's StdOut collector runs the container as ``sh -c "<command and args joined by
    spaces> 1>/var/log/katib/metrics.log 2>&1 && …"``: nothing is quoted. So every word
    of the command is one a shell takes literally (checked), and what Katib substitutes —
    the trial's name and the sampled values (a categorical choice may hold a space or a
    ``;``) — travels in env vars (:data:`~automl_deft.hpo.trial.TRIAL_NAME_ENV`,
    :func:`~automl_deft.hpo.trial.param_env`), which no shell parses.

    Args:
        problem_path: the trials' ``search_problem.json`` as the trial pods see it
            (under ``settings.mount_path``).

    Raises:
        UserError: ``problem_path`` is outside the mount path or not one shell word.
    """
    if not problem_path.startswith(settings.mount_path.rstrip("/") + "/"):
        raise UserError(
            f"the search problem {problem_path} is not under the trials' mount path "
            f"{settings.mount_path}: a trial pod could not read it"
        )
    command = [
        "python",
        "-m",
        TRIAL_MODULE,
        "--problem",
        problem_path,
    ]
    unsafe = [word for word in command if not shell_safe(word)]
    if unsafe:
        raise UserError(
            f"the trial command word {unsafe[0]!r} has a space or a shell metacharacter, which "
            "Katib's sh -c wrapper would split; use letters, digits, '.', '_', '-' and '/'"
        )
    params = [
        k8s.V1EnvVar(name=TRIAL_NAME_ENV, value=f"${{trialParameters.{TRIAL_NAME_PARAMETER}}}")
    ] + [
        k8s.V1EnvVar(name=param_env(p.name), value=f"${{trialParameters.{p.name}}}")
        for p in space.params
    ]
    requests = {"cpu": settings.cpu, "memory": settings.memory}
    limits = dict(requests)
    if settings.gpus:
        limits["nvidia.com/gpu"] = str(settings.gpus)
    env = params + [
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
    out: K8sObject = k8s.ApiClient().sanitize_for_serialization(job)
    return out


def build_experiment(
    name: str, space: SearchSpace, settings: KatibSettings, *, problem_path: str
) -> K8sObject:
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
    exp: K8sObject = experiment.model_dump(by_alias=True, exclude_none=True, mode="json")
    validate_experiment(exp)
    return exp


def experiment_yaml(exp: Mapping[str, Any]) -> str:
    """The experiment as YAML (keys in manifest order)."""
    return yaml.safe_dump(dict(exp), sort_keys=False, default_flow_style=False, width=100)


__all__ = [
    "ADDITIONAL_METRICS",
    "ALGORITHM_SETTINGS",
    "API_VERSION",
    "COLLECTOR_KINDS",
    "DEFAULT_IMAGE",
    "DISTRIBUTIONS",
    "EARLY_STOPPING_ALGORITHM",
    "EXPERIMENTS",
    "EXPERIMENT_LABEL",
    "GROUP",
    "MAX_NAME_LENGTH",
    "METRIC_STRATEGY",
    "NAME_PATTERN",
    "OBJECTIVE_METRIC",
    "OBJECTIVE_TYPES",
    "PARAMETER_TYPES",
    "PART_OF",
    "RESUME_POLICIES",
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
