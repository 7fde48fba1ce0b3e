"""Test-only audit hook: record every open() of a watched file (the untouched hold-out).

``tests/test_pipeline.py`` puts this folder on ``PYTHONPATH`` of ``automl-deft run``;
every Python process of the run (the CLI and each kfp.local task) imports it at
start-up. ``AUTOML_DEFT_TRACE_WATCH`` names a file listing the watched paths (one
per line); each open of one appends a JSON line to ``AUTOML_DEFT_TRACE_OUT`` with
the task (``--function_to_execute``), the path and the project functions on the
stack. Nothing of the project reads these variables.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_WATCH_FILE = os.environ.get("AUTOML_DEFT_TRACE_WATCH")
_OUT = os.environ.get("AUTOML_DEFT_TRACE_OUT")


def _install() -> None:
    if not _WATCH_FILE or not _OUT:
        return
    with open(_WATCH_FILE, encoding="utf-8") as fh:
        watched = {os.path.abspath(line.strip()) for line in fh if line.strip()}
    out = _OUT

    def task() -> str:
        argv = sys.argv
        if "--function_to_execute" in argv:
            return argv[argv.index("--function_to_execute") + 1]
        return "cli"

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or not args or not isinstance(args[0], str | bytes | os.PathLike):
            return
        path = os.path.abspath(os.fsdecode(args[0]))
        if path not in watched:
            return
        frame, stack = sys._getframe(1), []
        while frame is not None:
            if "automl_deft" in frame.f_code.co_filename:
                stack.append(frame.f_code.co_name)
            frame = frame.f_back
        line = json.dumps({"task": task(), "path": path, "stack": stack}) + "\n"
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    sys.addaudithook(hook)


_install()
