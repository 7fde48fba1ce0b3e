"""The one YAML reader for user files: specs, configs and ``--set`` values.

Safe types only, and no anchors or aliases: a spec or config never needs them,
and a 300-byte file of nested aliases expands to gigabytes once a merge copies
it. Every failure is one :class:`~automl_deft.errors.SpecError` line naming the
file (``what``) and the line. :func:`dump_yaml` writes YAML this reader reads
back (it never emits anchors, even for a value that appears twice).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from automl_deft.errors import SpecError

__all__ = ["dump_yaml", "load_yaml", "read_yaml_file"]


class _AliasRefused(yaml.YAMLError):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("YAML anchor or alias")
        self.line = mark.line + 1


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses any anchor (``&a``) or alias (``*a``, ``<<: *a``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(event.start_mark)
        return super().compose_node(parent, index)


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def load_yaml(text: str, *, what: str) -> Any:
    """Parse ``text`` (safe types; anchors and aliases refused).

    Raises:
        SpecError: ``<what> is not valid YAML at line N; fix the syntax``, or
            ``<what>: YAML aliases/anchors are not allowed … (line N)``.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe types only
    except _AliasRefused as exc:
        raise SpecError(
            f"{what}: YAML aliases/anchors are not allowed in specs and configs "
            f"(line {exc.line}); write the value out in full"
        ) from None
    except RecursionError:
        raise SpecError(f"{what} is nested too deeply to be a spec or config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{what} is not valid YAML{at}; fix the syntax") from exc


def read_yaml_file(path: str | os.PathLike[str], *, what: str) -> Any:
    """Read and parse a YAML file as :func:`load_yaml` (``what`` names it in errors).

    Raises:
        SpecError: unreadable file, not UTF-8 text, invalid YAML, anchors or aliases.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError(f"{what} cannot be read ({exc.strerror or exc}); fix the path") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(
            f"{what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}); "
            "save it as UTF-8"
        ) from None
    return load_yaml(text, what=what)


def dump_yaml(data: Any, *, sort_keys: bool = False) -> str:
    """``data`` as block YAML without anchors (what :func:`load_yaml` reads back)."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=sort_keys)
