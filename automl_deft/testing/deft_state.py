"""Ready-made ``deft_state.json`` files for tests that resume a DEFT run.

Written through :class:`~automl_deft.deft.state.DeftState` itself, so a test states
only what matters to it (a seeded baseline, how far the loop got, how it stopped)::

    seeded_state(tmp_path / "run", baseline_source="automl_phase1", stages=["baseline:train"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from automl_deft.deft.config import DeftConfig
from automl_deft.deft.state import DeftState
from automl_deft.phases import BASELINE
from automl_deft.records import RunInputs

__all__ = ["seeded_state"]


def seeded_state(
    results_dir: str | os.PathLike[str],
    *,
    config: DeftConfig | None = None,
    baseline_source: str | None = "automl_phase1",
    stages: Sequence[str] = ("baseline:train",),
    status: str | None = None,
    stop_reason: str = "stopped by the test",
    spec_path: str | os.PathLike[str] | None = None,
) -> Path:
    """A DEFT state with ``stages`` (``label:stage``) committed, in order.

    Args:
        results_dir: where to write it.
        config: the run's DEFT settings (default: the defaults).
        baseline_source: the ``source`` the baseline's ``train`` commit records.
        stages: the committed stages; ``baseline:train`` records a checkpoint path.
        status: end the loop with this status (``complete``, ``hard_stopped``, …).
        stop_reason: the reason recorded with ``status``.
        spec_path: the training spec the state records as its input.

    Returns:
        ``results_dir`` as a path.
    """
    root = Path(results_dir)
    state = DeftState.create(
        root,
        config=config or DeftConfig(),
        inputs=RunInputs(spec=str(spec_path) if spec_path is not None else None),
    )
    label = BASELINE
    for item in stages:
        label, _, stage = item.partition(":")
        fields = {}
        if (label, stage) == (BASELINE, "train"):
            fields = {"best_ckpt_path": str(root / BASELINE / "train" / "best_val.pt")}
            if baseline_source is not None:
                fields["source"] = baseline_source
        state.commit(label, stage, summary=f"{label} {stage} (test)", duration_sec=0.0, **fields)
    if status is not None:
        state.stop(status, stop_reason, label=label)
    return root
