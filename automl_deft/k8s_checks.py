"""Checks of single names and values before they go into a Kubernetes or KFP object.

Each ``check_*`` returns its (normalised) input or raises :class:`SpecError` with
the fix, so a builder can check and use a value in one expression. They serve
both the manifest builders and the KFP API client, which take the same inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from automl_deft.errors import SpecError
from automl_deft.jsontypes import JSONObject

__all__ = [
    "MAX_CONCURRENCY_RANGE",
    "check_arguments",
    "check_max_concurrency",
    "check_name",
    "check_namespace",
    "check_rfc3339",
]

MAX_CONCURRENCY_RANGE = (1, 10)
"""The KFP API server refuses a recurring run outside this range."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid Kubernetes namespace name, else raise SpecError."""
    if not isinstance(namespace, str) or not (_DNS_LABEL.match(namespace) and len(namespace) <= 63):
        raise SpecError(
            f"namespace {namespace!r}: use at most 63 lower case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return namespace


def check_name(what: str, name: str) -> str:
    """Return ``name`` if it is a valid object name (DNS subdomain), else raise SpecError."""
    if not isinstance(name, str) or not (_DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        raise SpecError(
            f"{what} {name!r}: use lower case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    return name


def check_arguments(arguments: Mapping[str, Any], *, where: str = "arguments") -> JSONObject:
    """Check pipeline arguments and return them as plain JSON values.

    KFP passes run parameters as JSON (``protobuf.Value``): each value must be a
    string, a finite number, a bool, or a list/dict of those. Names must be the
    pipeline function's (Python identifier) parameter names.

    Raises:
        SpecError: a name or value KFP cannot take, with the fix.
    """
    if not isinstance(arguments, Mapping):
        raise SpecError(f"{where} must be a mapping of parameter name to value")
    out: JSONObject = {}
    for name, value in arguments.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(
                f"{where}: {name!r} is not a pipeline parameter name; use the pipeline "
                "function's parameter name (a Python identifier, e.g. max_trials)"
            )
        out[name] = _json_value(value, f"{where}.{name}")
    return out


def _json_value(value: Any, where: str) -> Any:
    if value is None:
        raise SpecError(f"{where} is None; leave the argument out to use the pipeline's default")
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{where} is {value}; JSON has no NaN or infinity")
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SpecError(f"{where} has the key {k!r}; JSON object keys must be strings")
            out[k] = _json_value(v, f"{where}.{k}")
        return out
    raise SpecError(
        f"{where} is a {type(value).__name__}; pass a str, number, bool, list or dict "
        "(e.g. str(path) for a path)"
    )


def check_rfc3339(what: str, value: datetime | str) -> str:
    """Return ``value`` as an RFC 3339 UTC time (``…Z``), else raise SpecError.

    Args:
        what: the field's name, for the message.
        value: a tz-aware datetime, or an ISO 8601 string with a time zone.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise SpecError(
                f"{what} {value!r} is not an RFC 3339 time; use e.g. 2025-01-01T02:00:00Z"
            ) from None
    if value.tzinfo is None:
        raise SpecError(f"{what} {value.isoformat()} has no time zone; add one (e.g. Z for UTC)")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_max_concurrency(max_concurrency: Any) -> None:
    """Raise SpecError unless ``max_concurrency`` is an int the KFP API server accepts (1-10)."""
    low, high = MAX_CONCURRENCY_RANGE
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise SpecError(f"max_concurrency {max_concurrency!r} must be an integer {low}-{high}")
    if not low <= max_concurrency <= high:
        raise SpecError(
            f"max_concurrency {max_concurrency} is out of range; KFP allows {low}-{high}"
        )
