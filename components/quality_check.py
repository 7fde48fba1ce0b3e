"""Component: check the Phase 1 winner before it is handed to DEFT."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def quality_check(search: dict, summary: Output[Markdown]) -> NamedTuple(
    "Outputs", [("search", dict)]
):
    """Per-class prediction counts (a collapsed winner fails) and the zero-shot comparison."""
    from collections import namedtuple

    from automl_deft.steps import quality_check_step, without_nones

    checked = quality_check_step(search, out_md=summary.path)
    return namedtuple("Outputs", ["search"])(without_nones(checked))
