"""Reading ``deft_state.json`` for the report: typed, read-only, and forgiving.

:meth:`DeftState.load` with ``reconcile=False`` reads the state without writing
anything. When the strict reader refuses the file (a hand-edited or half-written
field), every field the records cannot read is left out and named instead, so the
report of a damaged run still renders; only a missing, non-JSON or non-object
state is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from automl_deft.config import typed_from_dict
from automl_deft.deft.config import DeftConfig
from automl_deft.deft.report.values import first_line
from automl_deft.deft.state import STATE_VERSION, DeftState
from automl_deft.errors import UserError
from automl_deft.layout import RunLayout
from automl_deft.records import BestPointer, IterationRecord, LogEntry, RunInputs

__all__ = ["read_state"]


def read_state(root: Path) -> tuple[DeftState, list[str]]:
    """``deft_state.json`` as typed records, without writing anything.

    Returns:
        The state and the fields that could not be read (left out, one line each).

    Raises:
        UserError: the state is missing, not JSON, or not a JSON object.
    """
    path = RunLayout(root).state
    if not path.is_file():
        raise UserError(
            f"no {RunLayout.STATE} in {root}; pass the results directory of a DEFT run "
            "(<workspace>/results/run_<ts>)"
        )
    try:
        return DeftState.load(root, reconcile=False), []
    except UserError as strict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            raise strict from None
        if not isinstance(data, dict):
            raise UserError(
                f"{path} is not a JSON object; restore it or re-run the loop into a new "
                "results directory"
            ) from None
        problems: list[str] = []
        doc = _salvage(data, str(path), problems)
        try:
            return DeftState.from_json(root, doc, str(path)), problems
        except UserError:
            raise strict from None


def _salvage(data: dict[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    """``data`` with every field the records cannot read left out (and named)."""
    if data.get("version") != STATE_VERSION:
        problems.append(
            f"{where}: state version {data.get('version')!r}, this tool writes "
            f"{STATE_VERSION}; sections may be incomplete"
        )
    doc = dict(data)
    config = _section(doc.get("config"), f"{where} config", problems)
    paths = config.pop("paths", {})
    doc["config"] = {
        **_readable(
            lambda d: typed_from_dict(DeftConfig, d, "", "DEFT config"),
            config,
            f"{where} config",
            problems,
        ),
        "paths": _readable(
            RunInputs.from_json,
            _section(paths, f"{where} config.paths", problems),
            f"{where} config.paths",
            problems,
        ),
    }
    doc["iterations"] = {
        str(label): _readable(
            IterationRecord.from_json,
            _section(rec, f"{where} iterations.{label}", problems),
            f"{where} iterations.{label}",
            problems,
        )
        for label, rec in _section(doc.get("iterations"), f"{where} iterations", problems).items()
    }
    log = _section(doc.get("log"), f"{where} log", problems)
    if not isinstance(log.get("seq", 0), int):
        problems.append(f"{where} log.seq: not an integer (left out)")
        log.pop("seq")
    if _fails(LogEntry.from_json, log.get("last"), f"{where} log.last", problems):
        log["last"] = None
    doc["log"] = log
    if _fails(BestPointer.from_json, doc.get("best"), f"{where} best", problems):
        doc["best"] = None
    for key in ("current_iteration",):
        if not isinstance(doc.get(key, 0), int | None):
            problems.append(f"{where} {key}: not an integer (left out)")
            doc.pop(key)
    return doc


def _section(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: not a JSON object (left out)")
        return {}
    return dict(value)


def _fails(read: Callable[[Any], object], value: Any, where: str, problems: list[str]) -> bool:
    if value is None:
        return False
    try:
        read(value)
    except UserError as exc:
        problems.append(f"{where}: {first_line(exc)} (left out)")
        return True
    return False


def _readable(
    read: Callable[[dict[str, Any]], object], doc: dict[str, Any], where: str, problems: list[str]
) -> dict[str, Any]:
    """The keys of ``doc`` that ``read`` accepts (every key of these records is optional)."""
    try:
        read(doc)
        return doc
    except UserError:
        return {k: v for k, v in doc.items() if not _fails(read, {k: v}, f"{where}.{k}", problems)}
