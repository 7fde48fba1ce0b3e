"""Time of the vectorised FAR bootstrap, and its speed-up over a loop of compute_kpi calls.

Times :func:`automl_deft.kpi.far_interval` on ``--rows`` rows with
``--resamples`` resamples (best of ``--repeats``; the goal is under 1 s for
10,000 x 1,000 on one core), then both it and a reference loop (the same draws,
:func:`automl_deft.kpi.compute_kpi` on each resampled set) on ``--ref-rows``
rows, checks that the two intervals agree exactly, and prints the time ratio.

    .venv/bin/python benchmarks/kpi_interval.py [--rows 10000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from automl_deft.kpi import compute_kpi, far_interval

T = TypeVar("T")


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows, ~3% defects; PASS scores N(0, 1), defect scores N(4, 1) (FAR ~10%)."""
    rng = np.random.default_rng(seed)
    defect = rng.random(n) < 0.03
    defect[:2] = True, False
    scores = rng.normal(np.where(defect, 4.0, 0.0), 1.0)
    labels = np.where(defect, "short", "PASS").astype(object)
    return labels, scores


def reference_interval(
    labels: np.ndarray, scores: np.ndarray, n_resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """The bootstrap from its definition: one compute_kpi call per resample."""
    is_defect = labels != "PASS"
    def_rows, pass_rows = np.flatnonzero(is_defect), np.flatnonzero(~is_defect)
    rng = np.random.default_rng(seed)
    def_idx = rng.integers(0, len(def_rows), size=(n_resamples, len(def_rows)))
    pass_idx = rng.integers(0, len(pass_rows), size=(n_resamples, len(pass_rows)))
    fars = np.empty(n_resamples)
    for b in range(n_resamples):
        rows = np.concatenate([def_rows[def_idx[b]], pass_rows[pass_idx[b]]])
        far = compute_kpi(labels[rows], scores[rows]).far_pct
        assert far is not None  # both classes in every resample
        fars[b] = far
    alpha = (1 - level) / 2
    low, high = np.percentile(fars, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def best_time(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Fastest of ``repeats`` calls, and the last call's result."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--ref-rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    labels, scores = make_data(args.rows)
    seconds, result = best_time(
        lambda: far_interval(labels, scores, n_resamples=args.resamples), args.repeats
    )
    print(f"far_interval {args.rows} rows x {args.resamples} resamples: {seconds:.3f} s")
    print(f"  {result.text()}")

    labels, scores = make_data(args.ref_rows, seed=1)
    fast, got = best_time(
        lambda: far_interval(labels, scores, n_resamples=args.resamples), args.repeats
    )
    slow, expected = best_time(lambda: reference_interval(labels, scores, args.resamples, 0), 1)
    same = (got.low, got.high) == expected
    print(
        f"reference loop {args.ref_rows} rows x {args.resamples} resamples: {slow:.3f} s, "
        f"vectorised {fast:.3f} s"
    )
    print(f"ratio reference/vectorised: {slow / fast:.1f}x (intervals identical: {same})")


if __name__ == "__main__":
    main()
