"""The names Katib and this package agree on, shared by every Katib module.

The ``kubeflow.org/v1beta1`` API the Experiment and its Trials live in, the
label Katib puts on an experiment's Trials, and the metrics each trial prints
for Katib's StdOut metrics collector. A module of constants only, so the test
fake and the cluster manifests can use them without the Katib API models.
"""

from __future__ import annotations

GROUP = "kubeflow.org"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
EXPERIMENTS = "experiments"
TRIALS = "trials"
EXPERIMENT_LABEL = "katib.kubeflow.org/experiment"
"""The label Katib puts on every Trial of an experiment."""

OBJECTIVE_METRIC = "far_pct"
ADDITIONAL_METRICS: tuple[str, ...] = ("val_loss",)
METRIC_STRATEGY = "latest"
"""The trial prints the metrics of its best checkpoint once, at the end."""

__all__ = [
    "ADDITIONAL_METRICS",
    "API_VERSION",
    "EXPERIMENTS",
    "EXPERIMENT_LABEL",
    "GROUP",
    "METRIC_STRATEGY",
    "OBJECTIVE_METRIC",
    "TRIALS",
    "VERSION",
]
