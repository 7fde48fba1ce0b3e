"""Per-pair scoring latency on CPU: the PyTorch checkpoint vs its TorchScript and ONNX packages.

Builds a synthetic workspace in a temporary directory, trains one epoch (or takes
``--checkpoint``), exports both package formats and times ``Scorer.score_tensors``
(the model call on float inputs already in memory; image decoding is not timed) at
batch 1 and batch 32. Runs are interleaved across runtimes so machine noise hits
all alike; each cell shows the p50 and p99 of the per-pair time (call time / batch)
and the p50 relative to torch (< 1 is faster than torch). All runtimes get the
same number of CPU threads. Also prints the largest score difference to torch on
the workspace's KPI set.

    .venv/bin/python benchmarks/predict_latency.py [--scale tiny] [--repeats 50]
        [--checkpoint best_val.pt] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from automl_deft.errors import WorkspaceError
from automl_deft.model.data import PairSource, to_float
from automl_deft.model.spec import load_spec
from automl_deft.model.train import train
from automl_deft.serving import CheckpointScorer, OnnxScorer, Scorer, TorchScriptScorer
from automl_deft.serving.package import export_package
from automl_deft.synth.demo import generate_demo_workspace
from automl_deft.workspace import Workspace, read_dataset_csv

WARMUP = 3


def _batch(pixels: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` pairs (the KPI pairs repeated as needed) as float golden, test."""
    idx = torch.arange(size) % len(pixels)
    golden, test = to_float(pixels[idx], torch.device("cpu"))
    return golden.contiguous(), test.contiguous()


def _time(scorer: Scorer, golden: torch.Tensor, test: torch.Tensor) -> float:
    t0 = time.perf_counter()
    scorer.score_tensors(golden, test)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--repeats", type=int, default=50, help="Timed calls per cell.")
    parser.add_argument("--checkpoint", type=Path, help="Score this checkpoint (no training).")
    parser.add_argument("--batches", default="1,32", help="Comma-separated batch sizes.")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = torch.get_num_threads()

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        root = tmp / "ws"
        generate_demo_workspace(root, seed=0, scale=args.scale)
        ws = Workspace.at(root)
        checkpoint = args.checkpoint
        if checkpoint is None:
            spec = load_spec(ws.spec_path, {"train.num_epochs": 1})
            tr, va = read_dataset_csv(ws.train_csv), read_dataset_csv(ws.val_csv)
            result = train(spec, tr, va, ws.images_dir, tmp / "train", progress=False)
            checkpoint = result.best_checkpoint
        base = CheckpointScorer(checkpoint)
        scorers: dict[str, Scorer] = {"torch": base}
        for fmt in ("torchscript", "onnx"):
            pkg = export_package(checkpoint, tmp / fmt, fmt, threshold=0.5)  # type: ignore[arg-type]
            scorers[fmt] = (
                TorchScriptScorer(pkg) if fmt == "torchscript" else OnnxScorer(pkg, threads=threads)
            )

        frame = read_dataset_csv(ws.kpi_csv)
        source: PairSource | None
        try:
            source = PairSource.from_frame(frame, ws.images_dir, base.naming, base.size)
        except WorkspaceError:  # a checkpoint with other lights: time random pairs instead
            source = None
        if source is not None and source.pixels is not None:
            pixels = source.pixels
            ref = base.score(source, 64)
            diffs = {
                name: float(np.abs(s.score(source, 64) - ref).max())
                for name, s in scorers.items()
                if name != "torch"
            }
        else:
            c, (w, h) = len(base.naming.lights), base.size
            pixels = torch.randint(0, 256, (64, 2, c, h, w), dtype=torch.uint8)
            diffs = {}

        times: dict[tuple[str, int], list[float]] = {
            (name, b): [] for name in scorers for b in batches
        }
        for b in batches:
            golden, test = _batch(pixels, b)
            for _ in range(WARMUP):
                for s in scorers.values():
                    _time(s, golden, test)
            for _ in range(args.repeats):
                for name, s in scorers.items():
                    times[(name, b)].append(_time(s, golden, test) / b * 1000.0)

    w, h = base.size
    print(
        f"model {base.backbone} {w}x{h}, {len(base.naming.lights)} light(s); CPU threads: "
        f"torch {threads}, onnxruntime {threads}; {args.repeats} timed calls per cell "
        f"after {WARMUP} warm-up"
    )
    header = ("runtime", "batch", "p50 ms/pair", "p99 ms/pair", "p50 vs torch")
    print(f"{header[0]:<12} {header[1]:>5} {header[2]:>12} {header[3]:>12} {header[4]:>13}")
    for b in batches:
        torch_p50 = float(np.percentile(times[("torch", b)], 50))
        for name in scorers:
            p50, p99 = np.percentile(times[(name, b)], [50, 99])
            print(f"{name:<12} {b:>5} {p50:>12.3f} {p99:>12.3f} {p50 / torch_p50:>12.2f}x")
    for name, d in diffs.items():
        print(f"max |score - torch| on the KPI set ({len(pixels)} pairs), {name}: {d:.2e}")


if __name__ == "__main__":
    main()
