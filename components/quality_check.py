"""Component: check the Phase 1 winner before it is handed to DEFT."""

from typing import NamedTuple

from kfp.dsl import Markdown, Output


def quality_check(search: str, summary: Output[Markdown]) -> NamedTuple(
    "Outputs", [("search", str)]
):
    """Per-class prediction counts (a collapsed winner fails) and the zero-shot comparison.

    Args:
        search: the search's winner record (``SearchWinner`` JSON).
        summary: what was checked, for the dashboard.
    """
    from collections import namedtuple

    from automl_deft.records import SearchWinner
    from automl_deft.steps import quality_check_step

    checked = quality_check_step(SearchWinner.loads(search), out_md=summary.path)
    return namedtuple("Outputs", ["search"])(checked.dumps())
