"""KFP recurring-run schedules: :func:`validate_cron`.

Cron expressions follow the KFP scheduler, which parses them with
``github.com/robfig/cron`` v1: six fields, seconds first, in UTC. That parser
also accepts *five* fields, reading them as seconds-minutes-hours-day-month with
any weekday, so the usual crontab ``0 2 * * *`` would silently run at minute 2 of
every hour; :func:`validate_cron` refuses it and names the six-field fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from automl_deft.errors import SpecError

__all__ = ["CRON_DESCRIPTORS", "EXAMPLE_CRON", "validate_cron"]

EXAMPLE_CRON = "0 0 2 * * *"
"""02:00 UTC every day."""

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_CRON_FIELDS: tuple[tuple[str, int, int, Mapping[str, int]], ...] = (
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EVERY = "@every "
_GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def validate_cron(expr: str) -> str:
    """Check a KFP recurring-run schedule and return it normalised (single spaces).

    Accepts what the KFP scheduler (``robfig/cron`` v1) accepts, minus its traps:

    * six fields, ``seconds minutes hours day-of-month month day-of-week``, each a
      ``*`` or ``?``, a number, a range ``a-b``, a step ``*/n``, ``a/n`` or ``a-b/n``,
      or a comma-separated list of those; months also ``jan``-``dec`` and weekdays
      ``sun``-``sat`` (any case); weekdays run 0-6 (Sunday is 0, not 7);
    * the descriptors ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
      ``@daily`` (``@midnight``), ``@hourly``;
    * ``@every <duration>`` with a Go duration of at least one second (``1h30m``).

    Times are UTC: the scheduler has no time zones.

    Raises:
        SpecError: the expression is invalid; a five-field crontab gets the six-field fix.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise SpecError(
            f'cron {expr!r} is empty; use 6 fields, seconds first, e.g. "{EXAMPLE_CRON}"'
        )
    text = expr.strip()
    if text.startswith("@"):
        return _validate_descriptor(text)
    if text.startswith(("TZ=", "CRON_TZ=")):
        raise SpecError(
            f'cron "{text}": Kubeflow\'s scheduler has no time zones; drop the prefix and '
            "give the time in UTC"
        )
    fields = text.split()
    normalised = " ".join(fields)
    if len(fields) == 5:
        raise SpecError(
            f'cron "{normalised}" has 5 fields; Kubeflow needs 6 (seconds first): "0 {normalised}"'
        )
    if len(fields) != 6:
        raise SpecError(
            f'cron "{normalised}" has {len(fields)} fields; Kubeflow needs 6: seconds minutes '
            f'hours day-of-month month day-of-week, e.g. "{EXAMPLE_CRON}"'
        )
    for field, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        problem = _cron_field_problem(field, low, high, names)
        if problem:
            raise SpecError(f'cron "{normalised}": {name} field "{field}": {problem}')
    return normalised


def _validate_descriptor(text: str) -> str:
    if text in CRON_DESCRIPTORS:
        return text
    if text.startswith(_EVERY):
        duration = text[len(_EVERY) :].strip()
        seconds = _go_duration_s(duration)
        if seconds is None:
            raise SpecError(
                f'cron "{text}": "{duration}" is not a Go duration; use units h, m, s '
                "(e.g. @every 24h or @every 1h30m)"
            )
        if seconds < 1:
            raise SpecError(f'cron "{text}": the interval must be at least 1s')
        return f"{_EVERY}{duration}"
    raise SpecError(
        f'cron "{text}": unknown descriptor; use {", ".join(CRON_DESCRIPTORS)} or '
        "@every <duration> (e.g. @every 1h30m)"
    )


def _go_duration_s(text: str) -> float | None:
    """Seconds in a Go ``time.ParseDuration`` string (sign included), or None."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in ("-", "+") else text
    if body == "0":
        return 0.0
    parts = list(_GO_DURATION_PART.finditer(body))
    if not body or "".join(p.group(0) for p in parts) != body:
        return None
    return sign * sum(float(p.group(1)) * _GO_UNITS_S[p.group(2)] for p in parts)


def _cron_field_problem(field: str, low: int, high: int, names: Mapping[str, int]) -> str | None:
    for item in field.split(","):
        if not item:
            return "an empty list item"
        range_part, *step_part = item.split("/")
        if len(step_part) > 1:
            return f"too many '/' in \"{item}\""
        if range_part in ("*", "?"):
            start, end = low, high
        else:
            bounds = range_part.split("-")
            if len(bounds) > 2:
                return f"too many '-' in \"{item}\""
            values: list[int] = []
            for bound in bounds:
                value = _cron_value(bound, names)
                if value is None:
                    choices = f" or a name ({', '.join(names)})" if names else ""
                    return f'"{bound}" is not a number{choices}'
                values.append(value)
            start, end = values[0], values[-1]
            if step_part and len(bounds) == 1:
                end = high  # "a/n" means "a-max/n"
        if step_part:
            step = step_part[0]
            if not (step.isascii() and step.isdigit()) or int(step) < 1:
                return f'step "{step}" must be a whole number >= 1'
        if start < low:
            return f"{start} is below the minimum {low}"
        if end > high:
            hint = " (Sunday is 0 or SUN)" if names is _DAYS and end == 7 else ""
            return f"{end} is above the maximum {high}{hint}"
        if start > end:
            return f"the range {start}-{end} runs backwards"
    return None


def _cron_value(token: str, names: Mapping[str, int]) -> int | None:
    if token.lower() in names:
        return names[token.lower()]
    if token.isascii() and token.isdigit():
        return int(token)
    return None
