"""Re-export of the application interface, which moved to :mod:`automl_deft.application`.

The interface is no longer the DEFT loop's alone: HPO trials and the zero-shot
guard use it too. New code imports from :mod:`automl_deft.application` (the
interface and registry) and :mod:`automl_deft.aoi_changenet` (the built-in).
"""

from __future__ import annotations

from automl_deft.aoi_changenet import SPEC_NAME, AOIChangeNet
from automl_deft.application import (
    APPLICATIONS,
    Application,
    TrainedModel,
    get_application,
    register_application,
)

__all__ = [
    "APPLICATIONS",
    "SPEC_NAME",
    "AOIChangeNet",
    "Application",
    "TrainedModel",
    "get_application",
    "register_application",
]
