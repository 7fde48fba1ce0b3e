"""Typed configs from YAML: one strict reader and one typed converter for every config.

Every typed config of the project (the training spec, the AutoML, DEFT and run
configs, the records written between phases) is a dataclass tree read through
:func:`typed_from_dict`: unknown keys and wrong types fail with the dotted key
path. This module sits at the bottom of the package (it imports only
:mod:`automl_deft.errors`), so reading YAML never depends on the model.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from automl_deft.errors import SpecError
from automl_deft.yamlio import read_yaml_file

__all__ = ["canonical_keys", "read_config_yaml", "typed_from_dict"]


def read_config_yaml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """A config file's top-level mapping (every typed config loader reads through this).

    Raises:
        SpecError: missing file, not UTF-8, YAML syntax error, YAML anchors/aliases
            (:mod:`automl_deft.yamlio`), or not a mapping (named as ``what``).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{what} not found: {p}; fix the path or drop -c")
    data = read_yaml_file(p, what=f"{what} {p}") or {}
    if not isinstance(data, dict):
        raise SpecError(f"{what} {p}: expected a mapping at the top level")
    return data


def typed_from_dict(tp: Any, value: Any, path: str, noun: str = "spec") -> Any:
    """Convert ``value`` to type ``tp`` (dataclasses recursively), strictly.

    Used for every typed config of the project; errors name the dotted key path.
    """
    where = f"{noun} key {path!r}" if path else noun
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {_show(value)}")
        hints = typing.get_type_hints(tp)
        fields = {f.name for f in dataclasses.fields(tp)}
        value = _canonical_keys(tp, value, path, noun)
        unknown = sorted(set(value) - fields)
        if unknown:
            name = f"{path}.{unknown[0]}" if path else str(unknown[0])
            raise SpecError(
                f"unknown {noun} key {name!r}; known keys here: {', '.join(sorted(fields))}"
            )
        kwargs = {
            k: typed_from_dict(hints[k], v, f"{path}.{k}" if path else k, noun)
            for k, v in value.items()
        }
        return tp(**kwargs)  # type: ignore[operator]  # tp is a dataclass type here
    if tp is Any:
        return value
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for i, option in enumerate(inner):  # the first type that takes the value
            try:
                return typed_from_dict(option, value, path, noun)
            except SpecError:
                if i == len(inner) - 1:
                    raise
        raise SpecError(f"{where}: {_show(value)} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise SpecError(f"{where}: {_show(value)} is not one of {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise SpecError(f"{where}: expected a list, got {_show(value)}")
        return [typed_from_dict(args[0], v, f"{path}[{i}]", noun) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{where}: expected a mapping, got {_show(value)}")
        return {
            typed_from_dict(args[0], k, f"{path}.<key>", noun): typed_from_dict(
                args[1], v, f"{path}.{k}", noun
            )
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true/false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{where}: expected a number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"unsupported spec field type {tp!r} at {path}")  # a bug, not user input


def canonical_keys(tp: Any, value: Any, path: str = "", noun: str = "spec") -> Any:
    """A nested mapping for dataclass ``tp`` with every alias key renamed (recursively).

    Merge overrides through this before merging them onto a full tree (which holds the
    field names), so an override in a former spelling replaces the value instead of
    clashing with it.

    Raises:
        SpecError: one mapping holds both an alias and its field name.
    """
    if not (dataclasses.is_dataclass(tp) and isinstance(value, dict)):
        return value
    value = _canonical_keys(tp, value, path, noun)
    hints = typing.get_type_hints(tp)
    out = {}
    for k, v in value.items():
        inner = hints.get(k) if isinstance(k, str) else None
        for arg in (inner, *get_args(inner)):  # ``X | None`` fields too
            if dataclasses.is_dataclass(arg):
                v = canonical_keys(arg, v, f"{path}.{k}" if path else k, noun)
                break
        out[k] = v
    return out


def _canonical_keys(tp: Any, value: dict[Any, Any], path: str, noun: str) -> dict[Any, Any]:
    """``value`` with a dataclass's alias keys renamed to their field names.

    A dataclass lists accepted former spellings in ``__aliases__`` (a ``ClassVar``
    mapping alias → field name); writing both spellings is an error.
    """
    aliases: dict[str, str] = getattr(tp, "__aliases__", {})
    if not any(k in value for k in aliases):
        return value
    out = dict(value)
    for alias, name in aliases.items():
        if alias in out:
            if name in out:
                where = f"{path}." if path else ""
                raise SpecError(
                    f"{noun} keys {where}{alias!r} and {where}{name!r} mean the same; keep "
                    f"only {name!r}"
                )
            out[name] = out.pop(alias)
    return out


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"
