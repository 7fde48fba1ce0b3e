"""The search space, declared once and rendered for Optuna and for Katib.

A :class:`Param` names a hyperparameter (a short name that is valid everywhere:
Optuna, Katib, a shell), the spec key it sets, and its range. A
:class:`SearchSpace` is the swept params plus the *pinned* spec values every
trial gets (epochs, batch size, and for warm-started searches the
architecture). :meth:`SearchSpace.overrides` turns a trial's sampled values
into the override dict that :func:`automl_deft.model.spec.deep_merge` applies.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

from automl_deft.errors import SpecError
from automl_deft.jsontypes import SpecTree
from automl_deft.model.spec import Spec, spec_from_dict

ParamType = Literal["float", "int", "categorical"]

ParamValue: TypeAlias = bool | int | float | str | None
"""A hyperparameter value: a number, or a categorical choice (what Optuna and Katib hold)."""

ParamValues: TypeAlias = dict[str, ParamValue]
"""One trial's hyperparameter values, by param name (``{"lr": 0.003, …}``)."""

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
"""Param names: lower snake case, valid as Katib parameter and trialParameter names."""

ARCHITECTURE_KEYS: tuple[str, ...] = (
    "model.backbone.type",
    "model.backbone.width",
    "model.classify.learnable_difference_modules",
    "model.classify.embedding_vectors",
    "dataset.classify.color_mode",
    "dataset.classify.image_width",
    "dataset.classify.image_height",
    "dataset.classify.num_input",
    "dataset.classify.concat_type",
    "dataset.classify.grid_map",
)
"""Spec keys that fix the weights' shapes or what the weights were trained to see (the
first layer's channels: ``color_mode``; the tiling of the lights): pinned when a search
warm-starts."""


@dataclass(frozen=True)
class Param:
    """One swept hyperparameter.

    Attributes:
        name: short name (``lr``), lower snake case.
        key: the spec key it sets (``train.optim.lr``); ``key[i]`` sets item ``i``
            of a list (``train.classify.cls_weight[1]``).
        type: ``float``, ``int`` or ``categorical``.
        low, high: inclusive bounds for numbers.
        log: sample on a log scale.
        choices: the values of a categorical param.
    """

    name: str
    key: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[ParamValue, ...] = ()

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise SpecError(f"search param name {self.name!r} must be lower snake case")
        if self.type == "categorical":
            if len(self.choices) < 1:
                raise SpecError(f"search param {self.name!r}: categorical needs choices")
            return
        if self.low is None or self.high is None or not self.low <= self.high:
            raise SpecError(
                f"search param {self.name!r}: needs low <= high, got {self.low}..{self.high}"
            )
        if self.log and self.low <= 0:
            raise SpecError(f"search param {self.name!r}: a log range needs low > 0")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise SpecError(f"search param {self.name!r}: int bounds must be whole numbers")

    def parse(self, raw: str) -> ParamValue:
        """A value from its text form (a CLI argument, a Katib parameter assignment)."""
        if self.type == "int":
            return int(float(raw))
        if self.type == "float":
            return float(raw)
        for choice in self.choices:
            if str(choice) == raw:
                return choice
        raise SpecError(f"search param {self.name}={raw!r} is not one of {list(self.choices)}")

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def narrowed(self, centre: Any, factor: float) -> Param:
        """A range ``factor`` times as wide as this one, centred on ``centre``, clipped.

        Log ranges narrow in log space; categoricals keep only ``centre``.
        """
        if self.type == "categorical":
            return replace(self, choices=(centre,))
        assert self.low is not None and self.high is not None
        if self.log:
            lo, hi, c = math.log(self.low), math.log(self.high), math.log(centre)
        else:
            lo, hi, c = self.low, self.high, float(centre)
        half = (hi - lo) * factor / 2
        new_lo, new_hi = max(lo, c - half), min(hi, c + half)
        if self.log:
            new_lo, new_hi = math.exp(new_lo), math.exp(new_hi)
        if self.type == "int":
            new_lo, new_hi = math.floor(new_lo), math.ceil(new_hi)
        return replace(self, low=new_lo, high=new_hi)


def _split_index(key: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)\[(\d+)\]", key)
    return (m.group(1), int(m.group(2))) if m else (key, None)


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


@dataclass(frozen=True)
class SearchSpace:
    """Swept params plus pinned spec values."""

    params: tuple[Param, ...]
    pinned: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SpecError(f"search space: duplicate param name(s) {', '.join(dupes)}")
        swept = {_split_index(p.key)[0] for p in self.params}
        both = sorted(swept & set(self.pinned))
        if both:
            raise SpecError(f"search space: {', '.join(both)} is both swept and pinned")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise SpecError(f"search space has no param {name!r}")

    def overrides(self, values: Mapping[str, ParamValue], base: Spec) -> SpecTree:
        """The dotted-key override dict for one trial (pinned values included).

        A ``key[i]`` param replaces item ``i`` of the list the base spec holds.
        """
        unknown = sorted(set(values) - {p.name for p in self.params})
        if unknown:
            raise SpecError(f"unknown search param(s) {', '.join(unknown)}")
        out: SpecTree = dict(self.pinned)
        base_dict = base.to_dict()
        for p in self.params:
            if p.name not in values:
                continue
            key, index = _split_index(p.key)
            value = values[p.name]
            if index is None:
                out[key] = value
            else:
                current = list(out.get(key, _get(base_dict, key)))
                current[index] = value
                out[key] = current
        return out

    def values_of(self, spec: Spec) -> ParamValues:
        """The values a spec holds for every swept param (e.g. a centroid)."""
        tree = spec.to_dict()
        out: ParamValues = {}
        for p in self.params:
            key, index = _split_index(p.key)
            value = _get(tree, key)
            out[p.name] = value[index] if index is not None else value
        return out

    def centred_on(self, centroid: Spec, factor: float = 0.5) -> SearchSpace:
        """A narrower space around a spec's values (Phase 3 warm start)."""
        centre = self.values_of(centroid)
        params = []
        for p in self.params:
            c: Any = centre[p.name]
            if not p.contains(c):
                c = min(max(c, p.low), p.high) if p.type != "categorical" else p.choices[0]
            params.append(p.narrowed(c, factor))
        return replace(self, params=tuple(params))

    def pin_architecture(self, spec: Spec) -> SearchSpace:
        """Pin every architecture key to ``spec``'s value and stop sweeping it."""
        tree = spec.to_dict()
        arch = {k: _get(tree, k) for k in ARCHITECTURE_KEYS}
        params = tuple(p for p in self.params if _split_index(p.key)[0] not in arch)
        return SearchSpace(params=params, pinned={**self.pinned, **arch})

    def check_against(self, base: Spec) -> None:
        """Every key resolves in the spec, every corner of the space is a valid spec, and
        so is every choice of a categorical param (with the others at their low corner)."""
        low: ParamValues = {}
        for corner in ("low", "high"):
            values: ParamValues = {}
            for p in self.params:
                bound = getattr(p, corner)
                if p.type == "categorical":
                    values[p.name] = p.choices[0]
                else:
                    values[p.name] = int(bound) if p.type == "int" else bound
            low = low or values
            try:
                base.with_overrides(self.overrides(values, base))
            except (SpecError, KeyError, IndexError, TypeError) as exc:
                raise SpecError(
                    f"search space does not fit the spec at its {corner} corner: {exc}"
                ) from exc
        for p in self.params:
            for choice in p.choices[1:] if p.type == "categorical" else ():
                try:
                    base.with_overrides(self.overrides({**low, p.name: choice}, base))
                except (SpecError, KeyError, IndexError, TypeError) as exc:
                    raise SpecError(
                        f"search space does not fit the spec with {p.name}={choice!r}: {exc}"
                    ) from exc


def default_aoi_space(*, num_epochs: int = 8, batch_size: int = 16) -> SearchSpace:
    """Defaults for the AOI ChangeNet-lite: epochs and batch size pinned, optimiser and
    data HPs swept, with ranges for the CPU ``cnn_small`` backbone trained from scratch."""
    return SearchSpace(
        params=(
            Param("lr", "train.optim.lr", "float", 5e-4, 8e-3, log=True),
            Param("weight_decay", "train.optim.weight_decay", "float", 1e-3, 0.3, log=True),
            Param("momentum", "train.optim.momentum", "float", 0.8, 0.95),
            Param(
                "cls_weight_defect", "train.classify.cls_weight[1]", "float", 2.0, 30.0, log=True
            ),
            Param("fpratio_sampling", "dataset.classify.fpratio_sampling", "float", 0.3, 1.0),
            Param(
                "difference_modules",
                "model.classify.learnable_difference_modules",
                "int",
                1,
                4,
            ),
            Param(
                "rotate_probability",
                "dataset.classify.augmentation_config.random_rotate.rotate_probability",
                "float",
                0.1,
                0.7,
            ),
        ),
        pinned={"train.num_epochs": num_epochs, "dataset.classify.batch_size": batch_size},
    )


def space_from_config(
    entries: Iterable[Mapping[str, Any]], pinned: Mapping[str, Any]
) -> SearchSpace:
    """Build a space from config dicts (``{name, key, type, low, high, log, choices}``)."""
    params = []
    for e in entries:
        unknown = sorted(set(e) - {"name", "key", "type", "low", "high", "log", "choices"})
        if unknown:
            raise SpecError(f"search param {e.get('name')!r}: unknown field(s) {unknown}")
        params.append(
            Param(
                name=str(e["name"]),
                key=str(e["key"]),
                type=e.get("type", "float"),
                low=e.get("low"),
                high=e.get("high"),
                log=bool(e.get("log", False)),
                choices=tuple(e.get("choices", ())),
            )
        )
    space = SearchSpace(tuple(params), dict(pinned))
    space.check_against(spec_from_dict({}))
    return space
