"""KFP v2 components: thin wrappers over ``automl_deft.steps`` (no logic of their own).

Each component runs in the project image (``AUTOML_DEFT_IMAGE`` at compile time,
default :data:`automl_deft.run_config.DEFAULT_IMAGE`), imports the library inside
its body (KFP ships the function source), and publishes typed artifacts.
"""

from components.automl_search import automl_search
from components.deft_loop import deft_loop
from components.finalize import finalize
from components.preflight import preflight
from components.quality_check import quality_check
from components.seed_deft_baseline import seed_deft_baseline
from components.select_warm_start import select_warm_start

__all__ = [
    "automl_search",
    "deft_loop",
    "finalize",
    "preflight",
    "quality_check",
    "seed_deft_baseline",
    "select_warm_start",
]
