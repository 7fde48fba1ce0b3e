"""The image every component runs in, fixed when the pipeline is compiled."""

from __future__ import annotations

import os

from automl_deft.run_config import DEFAULT_IMAGE

IMAGE_ENV = "AUTOML_DEFT_IMAGE"
IMAGE = os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
"""``automl-deft compile --image REF`` sets ``AUTOML_DEFT_IMAGE`` before importing components."""
