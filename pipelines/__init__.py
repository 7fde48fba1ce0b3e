"""KFP v2 pipelines: wiring only (``components/`` do the steps, the library does the work).

- ``automl-deft``: preflight → Phase 1 AutoML → quality check → handoff →
  Phase 2 DEFT → (unless DEFT hard-stopped) warm-started Phase 3 → finalize.
- ``automl-only``: preflight → AutoML → quality check (no DEFT).
- ``deft-only``: preflight → DEFT (baseline trained from the workspace spec) → finalize.

:func:`build` makes one, with its settings passed in (nothing is read from the
environment)::

    pipelines.build("automl-deft", image="ghcr.io/org/automl-deft:1.2")  # a cluster
    pipelines.build("automl-deft", retries=False)                         # kfp.local

The same pipeline runs locally through ``kfp.local`` (``automl-deft run``) and on
a cluster (``automl-deft compile`` / ``submit`` / ``schedule``). These folders are
not installed with the library: see :mod:`automl_deft.cluster.pipeline_source`.
"""

from __future__ import annotations

from collections.abc import Callable

from kfp.dsl.graph_component import GraphComponent

import components
from automl_deft.run_config import DEFAULT_IMAGE
from components import Components
from pipelines import automl_deft_pipeline, automl_only, deft_only
from pipelines._tasks import TaskSettings

__all__ = ["DEFAULT_IMAGE", "NAMES", "build"]

_BUILDERS: dict[str, Callable[[Components, TaskSettings], GraphComponent]] = {
    "automl-deft": automl_deft_pipeline.build,
    "automl-only": automl_only.build,
    "deft-only": deft_only.build,
}

NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Every pipeline, by the name it is compiled and uploaded under."""


def build(name: str, *, image: str = DEFAULT_IMAGE, retries: bool = True) -> GraphComponent:
    """The pipeline ``name``, every component running in ``image``.

    Args:
        name: one of :data:`NAMES`.
        image: the project image every task (and every Katib trial) runs.
        retries: retry failed pods with a backoff (a cluster); ``False`` for a
            local run, where a failure is a real error reported at once.

    Raises:
        ValueError: an unknown ``name``, or an empty ``image``.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"no pipeline {name!r}; one of: {', '.join(NAMES)}") from None
    return builder(components.build(image), TaskSettings(retries=retries))
