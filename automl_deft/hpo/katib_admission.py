"""The rules Katib enforces on an Experiment, checked locally.

:func:`validate_experiment` checks what Katib checks on admission (the
experiment webhook) and a little later (each suggestion service's
``ValidateAlgorithmSettings``, which only fails the experiment after it has been
created), so a bad setting is a one-line :class:`~automl_deft.errors.UserError`
before anything reaches the cluster. :func:`check_algorithm_settings` is the
suggestion services' part on its own, for settings before they are rendered.

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
from typing import Any

from kubeflow_katib_api.models import V1beta1Experiment
from pydantic import ValidationError

from automl_deft.errors import UserError
from automl_deft.hpo.algorithms import ALGORITHMS
from automl_deft.hpo.katib_names import API_VERSION, OBJECTIVE_METRIC

MAX_NAME_LENGTH = 40
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

PARAMETER_TYPES = ("double", "int", "categorical", "discrete")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
OBJECTIVE_TYPES = ("minimize", "maximize")
RESUME_POLICIES = ("Never", "LongRunning", "FromVolume")
COLLECTOR_KINDS = ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "Push")
EARLY_STOPPING_ALGORITHM = "medianstop"

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
    "COLLECTOR_KINDS",
    "DISTRIBUTIONS",
    "EARLY_STOPPING_ALGORITHM",
    "EARLY_STOPPING_SETTINGS",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "OBJECTIVE_TYPES",
    "PARAMETER_TYPES",
    "REQUIRED_SETTINGS",
    "RESUME_POLICIES",
    "check_algorithm_settings",
    "validate_experiment",
]
