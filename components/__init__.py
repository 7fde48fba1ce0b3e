"""KFP v2 components: thin wrappers over ``automl_deft.steps`` (no logic of their own).

Each module holds one plain function: the component's inputs and outputs, and the
step it calls. :func:`build` turns them into KFP components that run in one image;
nothing is read from the environment, so the image is whatever the caller passes
(``automl-deft compile --image REF``; default :data:`~automl_deft.run_config.DEFAULT_IMAGE`).
A function's body imports the library itself: KFP ships the function's source to
the pod, not this module.

These folders are not installed with the library: see
:mod:`automl_deft.cluster.pipeline_source`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp import dsl
from kfp.dsl.python_component import PythonComponent

from automl_deft.run_config import DEFAULT_IMAGE
from components.automl_search import automl_search
from components.deft_loop import deft_loop
from components.export_model import export_model
from components.finalize import finalize
from components.preflight import preflight
from components.quality_check import quality_check
from components.seed_deft_baseline import seed_deft_baseline
from components.select_warm_start import select_warm_start

__all__ = ["Components", "build"]


@dataclass(frozen=True)
class Components:
    """Every component of the project, each running in :attr:`image`."""

    image: str
    automl_search: PythonComponent
    deft_loop: PythonComponent
    export_model: PythonComponent
    finalize: PythonComponent
    preflight: PythonComponent
    quality_check: PythonComponent
    seed_deft_baseline: PythonComponent
    select_warm_start: PythonComponent


def build(image: str = DEFAULT_IMAGE) -> Components:
    """The components, with ``image`` as every one's ``base_image``.

    Args:
        image: the project image (``make image``); it must hold this package's
            library and kfp (``install_kfp_package=False``: nothing is pip-installed
            when a pod starts).

    Raises:
        ValueError: ``image`` is empty.
    """
    if not image:
        raise ValueError("components.build: image must name a container image")

    def component(fn: Callable[..., Any]) -> PythonComponent:
        return dsl.component(fn, base_image=image, install_kfp_package=False)

    return Components(
        image=image,
        automl_search=component(automl_search),
        deft_loop=component(deft_loop),
        export_model=component(export_model),
        finalize=component(finalize),
        preflight=component(preflight),
        quality_check=component(quality_check),
        seed_deft_baseline=component(seed_deft_baseline),
        select_warm_start=component(select_warm_start),
    )
