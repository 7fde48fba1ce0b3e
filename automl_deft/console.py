"""What a pipeline task tells the person watching ``automl-deft run``: console events.

Under ``automl-deft run`` every task is a subprocess whose output kfp.local reads
line by line; :mod:`automl_deft.cluster.local_run` writes all of it to the task's
log and shows the terminal only what a person wants to read. The tasks say what
that is with :func:`emit`: one marked line on stdout (:data:`MARK` + JSON), which
the parent renders (a trial's end, a DEFT stage, a heading) or keeps for the
task's end line (``kind="result"``). The parent announces itself through
:data:`ENV`; without it (``automl-deft automl``, ``deft``, a test) an event is
printed or logged as plain text, so the same code reads well on its own.

:func:`bar` is the one progress bar of a training: under ``run`` on a terminal it
draws on ``/dev/tty`` (the task's stdout is a pipe into the log), under ``run``
without a terminal it draws nothing (the log keeps the per-epoch lines), and
elsewhere it behaves like a plain ``tqdm`` bar on stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from tqdm import tqdm

__all__ = [
    "BARS",
    "ENV",
    "MARK",
    "PLAIN",
    "Event",
    "activity",
    "bar",
    "emit",
    "format_duration",
]

log = logging.getLogger(__name__)

ENV = "AUTOML_DEFT_CONSOLE"
"""Set by ``automl-deft run`` for its tasks: :data:`BARS` or :data:`PLAIN`."""
BARS = "bars"
"""The user's terminal is a TTY: events on stdout, training bars on ``/dev/tty``."""
PLAIN = "plain"
"""No terminal (a redirected log, CI): events on stdout, no bars."""
MARK = "@@automl-deft-event@@ "
"""Starts the one line of an event (never the start of anything a library prints)."""
TTY = "/dev/tty"

_activity: list[str] = []
_tty_stream: list[IO[str] | None] = []


@dataclass(frozen=True)
class Event:
    """One console event.

    Attributes:
        kind: ``stage`` (a DEFT status line), ``trial`` (a trial ended), ``heading``
            (what comes next, e.g. the lucky winner's re-run), ``result`` (the task's
            key result, shown on its end line) or ``job`` (a training ended; nothing
            shown, it feeds the overall ETA).
        text: the line a person reads (empty for ``job``).
        job_seconds: set when this event ends one training job (a trial, a re-run, a
            DEFT iteration): its wall time, for the overall ETA.
        fields: anything else (kept in the line, for tests and tools).
    """

    kind: str
    text: str
    job_seconds: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        payload: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.job_seconds is not None:
            payload["job_seconds"] = round(self.job_seconds, 3)
        if self.fields:
            payload["fields"] = self.fields
        return MARK + json.dumps(payload, ensure_ascii=False)

    @classmethod
    def parse(cls, line: str) -> Event | None:
        """The event a line carries (leading spaces allowed), None for any other line."""
        body = line.lstrip(" ")
        if not body.startswith(MARK):
            return None
        try:
            data = json.loads(body[len(MARK) :])
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            return None
        seconds, fields = data.get("job_seconds"), data.get("fields")
        return cls(
            kind=data["kind"],
            text=str(data.get("text", "")),
            job_seconds=float(seconds) if isinstance(seconds, int | float) else None,
            fields=fields if isinstance(fields, dict) else {},
        )


def routed() -> bool:
    """``automl-deft run`` reads this process's events."""
    return os.environ.get(ENV) in (BARS, PLAIN)


def emit(
    kind: str,
    text: str,
    *,
    job_seconds: float | None = None,
    echo: bool = False,
    **fields: Any,
) -> None:
    """Tell the person watching (see :class:`Event` for the kinds).

    Args:
        echo: without ``automl-deft run`` listening, print ``text`` on stdout (a
            command's own status lines); otherwise it is logged at INFO.
    """
    if routed():
        print(Event(kind, text, job_seconds, fields).line(), flush=True)
    elif text and echo:
        print(text, flush=True)
    elif text:
        log.info("%s", text)


@contextlib.contextmanager
def activity(label: str) -> Iterator[None]:
    """Name what this process is doing (``trial 3/5``); training bars show it first."""
    _activity.append(label)
    try:
        yield
    finally:
        _activity.pop()


def bar(
    total: int,
    desc: str,
    *,
    progress: bool | None,
    unit: str = "pair",
    postfix: dict[str, str] | None = None,
) -> tqdm:
    """A training's progress bar (close it when done).

    Args:
        progress: the caller's wish when no ``automl-deft run`` listens (None: only on
            a terminal); under ``run`` the user's terminal decides.
        postfix: shown after the rate (e.g. the last validation FAR).
    """
    mode = os.environ.get(ENV)
    if mode in (BARS, PLAIN):
        stream = _tty() if mode == BARS else None
        if stream is None:
            return tqdm(total=total, disable=True)
        label = " · ".join([*_activity, desc])
        return tqdm(total=total, desc=label, unit=unit, file=stream, leave=False, postfix=postfix)
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=None if progress is None else not progress,
        leave=False,
        postfix=postfix,
    )


def _tty() -> IO[str] | None:
    """The controlling terminal, opened once (None without one: a daemon, a container)."""
    if not _tty_stream:
        try:
            _tty_stream.append(open(TTY, "w", encoding="utf-8"))  # noqa: SIM115 - held for the process
        except OSError:
            _tty_stream.append(None)
    return _tty_stream[0]


def format_duration(seconds: float) -> str:
    """``42s``, ``11m``, ``1.5h`` (the status lines' durations)."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
