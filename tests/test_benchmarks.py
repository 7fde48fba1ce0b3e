"""The benchmark scripts still run (smallest settings; their numbers live in the README)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout


@pytest.mark.slow
def test_train_throughput_benchmark_reports_a_ratio() -> None:
    out = _run("train_throughput.py", "--scale", "tiny", "--epochs", "1", "--repeats", "1")
    assert "ratio project/bare:" in out


@pytest.mark.slow
def test_hpo_pruning_benchmark_reports_ratios() -> None:
    out = _run(
        "hpo_pruning.py", "--scale", "tiny", "--trials", "2", "--epochs", "2", "--seeds", "0"
    )
    assert "epochs   tpe+prune / random:" in out and "far_pct  mean best:" in out


@pytest.mark.parametrize("extra", [[], ["--worst-case"]])
def test_mining_search_benchmark_reports_linearity_and_memory(extra: list[str]) -> None:
    sizes = ["--sizes", "500", "2000", "--block-rows", "256", "--repeats", "1"]
    out = _run("mining_search.py", *sizes, *extra)
    assert "linearity 2000 vs 500: time ratio / size ratio =" in out
    assert "peak extra memory at 2000 rows:" in out
