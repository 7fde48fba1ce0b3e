"""The environment variables that carry credentials, who needs each, and whether it is set.

Values are never returned, logged or stored here: :func:`credential_status` only
says ``SET`` or ``UNSET``, so its output can go into a log or a support ticket.
An empty variable counts as unset (kfp and the cloud SDKs ignore empty values too).

In a pipeline pod these come from Kubernetes Secrets (``kfp.kubernetes.
use_secret_as_env``), never from pipeline parameters, which KFP stores and shows
in its UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Status = Literal["SET", "UNSET"]
SET: Status = "SET"
UNSET: Status = "UNSET"


@dataclass(frozen=True)
class Credential:
    """One environment variable and why it exists.

    Attributes:
        name: the environment variable.
        needed_by: who reads it (which phase, on which machine).
        purpose: what it unlocks, and what happens without it.
        required: False when the phase works without it.
    """

    name: str
    needed_by: str
    purpose: str
    required: bool = False


CREDENTIALS: tuple[Credential, ...] = (
    Credential(
        "KF_PIPELINES_TOKEN",
        "laptop: submitting or scheduling runs (automl_deft.cluster.client.connect)",
        "bearer token for a KFP endpoint behind authentication (e.g. a Kubeflow "
        "platform's ingress); without it kfp uses KUBECONFIG or the in-cluster account",
    ),
    Credential(
        "KUBECONFIG",
        "laptop: kfp.Client without a token, and the kubernetes client outside a cluster",
        "path of the kubeconfig to use (default ~/.kube/config); pods use their "
        "service account instead",
    ),
    Credential(
        "HF_TOKEN",
        "pipeline pod: an external SDG command",
        "downloads a gated Hugging Face model; only for SDG commands that need one",
    ),
    Credential(
        "NGC_API_KEY",
        "pipeline pod: an external SDG command",
        "downloads a model from NVIDIA NGC; only for SDG commands that need one",
    ),
    Credential(
        "AWS_ACCESS_KEY_ID",
        "pipeline pod or laptop: S3-compatible artifact store",
        "key ID for an S3/MinIO pipeline root or data bucket read directly; not needed "
        "when KFP's own artifact store is used",
    ),
    Credential(
        "AWS_SECRET_ACCESS_KEY",
        "pipeline pod or laptop: S3-compatible artifact store",
        "secret key that goes with AWS_ACCESS_KEY_ID",
    ),
)
"""Every credential any phase may read, in the order a user meets them."""


def credential_status(env: Mapping[str, str] | None = None) -> list[tuple[str, Status, str]]:
    """Whether each credential is set, never its value.

    Args:
        env: the environment to look at (default ``os.environ``).

    Returns:
        ``(name, "SET" | "UNSET", purpose)`` for each of :data:`CREDENTIALS`.
    """
    env = os.environ if env is None else env
    return [(c.name, SET if env.get(c.name) else UNSET, c.purpose) for c in CREDENTIALS]


__all__ = ["CREDENTIALS", "SET", "UNSET", "Credential", "credential_status"]
