"""``automl-deft`` with a fault injected by the test: SIGKILL inside one DEFT stage.

``python tests/deft/fault_cli.py LABEL:STAGE deft WS …`` runs the CLI with
``run_deft(before_commit=…)`` killing the process once that stage has written its
outputs and before it commits (the worst moment to die). The product code has no
fault switch of its own: the hook is the loop's public ``before_commit`` argument.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import automl_deft.deft.loop as loop
from automl_deft.cli import main


def _kill_at(label: str, stage: str) -> loop.StageHook:
    def hook(at_label: str, at_stage: str) -> None:
        if (at_label, at_stage) == (label, stage):
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


if __name__ == "__main__":
    where, argv = sys.argv[1], sys.argv[2:]
    label, stage = where.split(":")
    loop.run_deft = functools.partial(loop.run_deft, before_commit=_kill_at(label, stage))
    main(argv)
