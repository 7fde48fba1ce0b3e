"""Every plug-in a run names, checked against its registry before anything starts.

A name the run would only look up later (the SDG backend and the mining embedder
at the first DEFT iteration, a pinned backbone when Phase 3 trains) is a blocking
problem here, one line listing the valid names, instead of a stop after the
baseline was trained. Search algorithms are checked by the plan
(:func:`automl_deft.plan.plan_run`, ``automl.algorithm: …``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, get_args

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.loop import config_problems
from automl_deft.model.spec import BackboneType

__all__ = [
    "BACKBONE_KEY",
    "backbone_problems",
    "backbones",
    "deft_plugin_problems",
    "without_backbone_echoes",
]

BACKBONE_KEY = "model.backbone.type"


def backbones() -> tuple[str, ...]:
    """The backbones the model can build (``model.backbone.type``)."""
    return tuple(str(b) for b in get_args(BackboneType))


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    """A dotted key of a spec tree, written dotted (``{"a.b": 1}``) or nested."""
    if dotted in tree:
        return tree[dotted]
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def backbone_problems(
    pinned: Mapping[str, Any], search_space: Iterable[Mapping[str, Any]] | None, *, where: str
) -> list[str]:
    """A pinned or swept ``model.backbone.type`` that is not a backbone.

    Args:
        pinned: the config's ``pinned`` spec values.
        search_space: the config's ``search_space`` entries (None: the default space).
        where: the config section, for the message (``automl``, ``phase3``).
    """
    valid = backbones()
    choose = f"choose one of {', '.join(valid)}"
    problems = []
    value = _lookup(pinned, BACKBONE_KEY)
    if value is not None and value not in valid:
        problems.append(f"{where}.pinned: {BACKBONE_KEY} {value!r} is not a backbone; {choose}")
    for entry in search_space or ():
        if str(entry.get("key", "")) != BACKBONE_KEY:
            continue
        bad = [c for c in entry.get("choices", ()) if c not in valid]
        if bad:
            problems.append(
                f"{where}.search_space: param {entry.get('name')!r} sweeps {BACKBONE_KEY} over "
                f"{', '.join(repr(b) for b in bad)}, not backbone(s); {choose}"
            )
    return problems


def deft_plugin_problems(cfg: DeftConfig) -> list[str]:
    """The DEFT loop's SDG backend and mining embedder against their registries."""
    return config_problems(cfg)


def without_backbone_echoes(problems: Iterable[str]) -> list[str]:
    """The plan's problems, less the ones that only repeat a backbone problem found here
    (a bad backbone also makes the search space not fit the spec)."""
    return [p for p in problems if f"'{BACKBONE_KEY}'" not in p]
