"""Mining search cost vs pool size: the blocked top-k must scale at most linearly, memory flat.

For each pool size the script draws random L2-normalised float32 embeddings
(not timed), times :func:`blocked_topk` for the query set (best of repeats,
sizes interleaved), and prints seconds, microseconds per pool row and the time
and size ratios against the smallest pool. The last lines give time ratio /
size ratio between the largest and smallest pool (1.0 = linear) and the peak
extra memory of one search at the largest size (tracemalloc, which numpy
reports to) next to what a full queries x pool similarity matrix would take.

The first block costs more per row than the rest: every row is ranked there,
while later blocks only pass on values above each query's running k-th best.
So per-row cost falls with pool size on random data. ``--worst-case`` makes every
block a full ranking: all queries are one vector and the pool comes in rising
similarity to it.

    .venv/bin/python benchmarks/mining_search.py [--sizes 10000 100000 1000000] [--queries 250]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from automl_deft.deft.mining import DEFAULT_BLOCK_ROWS, blocked_topk

MIB = 1024**2


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def one_search(queries: np.ndarray, pool: np.ndarray, k: int, block_rows: int) -> float:
    t0 = time.perf_counter()
    blocked_topk(queries, pool, k, block_rows=block_rows)
    return time.perf_counter() - t0


def peak_extra_bytes(queries: np.ndarray, pool: np.ndarray, k: int, block_rows: int) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    blocked_topk(queries, pool, k, block_rows=block_rows)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=250)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--block-rows", type=int, default=DEFAULT_BLOCK_ROWS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--worst-case",
        action="store_true",
        help="One query direction and the pool in rising similarity to it.",
    )
    args = parser.parse_args()
    sizes = sorted(args.sizes)

    rng = np.random.default_rng(0)
    queries = unit_rows(rng, args.queries, args.dim)
    if args.worst_case:
        queries = np.repeat(unit_rows(rng, 1, args.dim), args.queries, axis=0)
    print(
        f"{args.queries} queries, dim {args.dim}, k {args.k}, block {args.block_rows} rows, "
        f"best of {args.repeats}{', worst case' if args.worst_case else ''}"
    )
    print(f"{'pool rows':>10} {'seconds':>9} {'us/row':>8} {'time ratio':>11} {'size ratio':>11}")
    pools = [unit_rows(rng, size, args.dim) for size in sizes]
    if args.worst_case:
        pools = [p[np.argsort(p @ queries[0], kind="stable")] for p in pools]
    # Sizes are interleaved within each repeat, so a burst of machine noise hits all alike.
    times = [float("inf")] * len(sizes)
    for _ in range(args.repeats):
        for i, pool in enumerate(pools):
            times[i] = min(times[i], one_search(queries, pool, args.k, args.block_rows))
    for size, t in zip(sizes, times, strict=True):
        print(
            f"{size:>10} {t:>9.3f} {1e6 * t / size:>8.3f} "
            f"{t / times[0]:>11.2f} {size / sizes[0]:>11.1f}"
        )
    for i in sorted({0, len(sizes) - 2}):
        if i >= len(sizes) - 1:
            continue
        ratio = (times[-1] / times[i]) / (sizes[-1] / sizes[i])
        verdict = "linear or better" if ratio <= 1.25 else "WORSE than linear"
        print(
            f"linearity {sizes[-1]} vs {sizes[i]}: time ratio / size ratio = {ratio:.2f} "
            f"(1.0 = linear): {verdict}"
        )
    pool = pools[-1]
    peak = peak_extra_bytes(queries, pool, args.k, args.block_rows)
    full = args.queries * sizes[-1] * 4
    block = args.queries * min(args.block_rows, sizes[-1]) * 4
    print(
        f"peak extra memory at {sizes[-1]} rows: {peak / MIB:.1f} MiB "
        f"(one float32 block {block / MIB:.1f} MiB; a full {args.queries} x {sizes[-1]} "
        f"matrix {full / MIB:.1f} MiB, {full / peak:.1f}x more)"
    )


if __name__ == "__main__":
    main()
