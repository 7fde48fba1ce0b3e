"""The kfp.local runner's own rules (a whole run is in tests/test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipelines
from automl_deft.cluster.local_run import run_local


def test_a_pipeline_with_retries_is_refused_before_anything_runs(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with pytest.raises(
        ValueError,
        match=(
            r"^run_local: tasks deft-loop, export-model, finalize, preflight retry on failure; "
            r"build the pipeline with retries=False for a local run$"
        ),
    ):
        run_local(pipelines.build("deft-only"), {"workspace": str(tmp_path)}, results_dir=results)
    assert not results.exists()


def test_the_results_directory_is_passed_once(tmp_path: Path) -> None:
    pipeline = pipelines.build("deft-only", retries=False)
    with pytest.raises(ValueError, match=r"^run_local: pass the results directory as results_dir="):
        run_local(pipeline, {"results_dir": str(tmp_path)}, results_dir=tmp_path)
