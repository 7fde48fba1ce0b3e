"""KFP v2 pipelines: wiring only (``components/`` do the steps, the library does the work).

- :func:`automl_deft_pipeline`: preflight → Phase 1 AutoML → quality check →
  handoff → Phase 2 DEFT → (unless DEFT hard-stopped) warm-started Phase 3 → finalize.
- :func:`automl_only`: preflight → AutoML → quality check (no DEFT).
- :func:`deft_only`: preflight → DEFT (baseline trained from the workspace spec) → finalize.

The same functions run locally through ``kfp.local`` (``automl-deft run``) and on
a cluster (``automl-deft compile`` / ``submit`` / ``schedule``).
"""

from pipelines.automl_deft_pipeline import automl_deft_pipeline
from pipelines.automl_only import automl_only
from pipelines.deft_only import deft_only

PIPELINES = {
    "automl-deft": automl_deft_pipeline,
    "automl-only": automl_only,
    "deft-only": deft_only,
}
"""By the name they are compiled and uploaded under."""

__all__ = ["PIPELINES", "automl_deft_pipeline", "automl_only", "deft_only"]
