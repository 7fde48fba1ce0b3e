"""GPU training throughput: the project's trainer vs a bare PyTorch loop of the same model.

For each tile size (64/128/224 px) and precision (fp32, and bf16 autocast, or fp16
with a gradient scaler where the GPU has no bf16) it prints pairs/s of
``automl_deft.model.train.train()`` (validation and checkpoint intervals set to the
epoch count, augmentation off, every row each epoch: the same work as the bare loop
plus one validation and one checkpoint) and of the simplest correct GPU loop (the
decoded set on the device, channels-last, autocast, AdamW: no sampling, EMA,
schedule, validation or checkpoints), their ratio (goal: >= 0.8 at 224 px bf16), and
each one's peak GPU memory. The data is a synthetic colour SMT workspace (four RGB
lights, stacked ``linear``), generated once at 224 px; 64 and 128 px tiles are the
same images resized on load (``dataset.classify.image_width/height``).

Runs in well under 5 minutes on one GPU. Without CUDA it prints one line and exits 0.

    .venv/bin/python benchmarks/gpu_train.py [--scale small] [--epochs 3] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

NO_GPU = "no GPU: nothing measured (this benchmark needs CUDA)"
SIZES = (64, 128, 224)
GOAL = 0.8
"""Project / bare pairs/s the trainer should reach at 224 px bf16."""


def bare_loop(spec, source, epochs: int, amp_dtype: torch.dtype | None) -> tuple[float, float]:
    """Pairs/s and peak MB of the simplest correct GPU loop over ``source``'s pairs."""
    from automl_deft.model.network import ChangeNetLite
    from automl_deft.model.train import MB, seed_everything

    device = torch.device("cuda")
    seed_everything(spec.train.seed)
    model = ChangeNetLite(spec).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train.optim.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    weight = torch.tensor(spec.train.classify.cls_weight, device=device)
    pixels, targets = source.pixels.to(device), source.targets.to(device)
    bs, n = spec.dataset.classify.batch_size, len(targets)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            x = pixels[idx].float().div_(255.0)
            golden = x[:, 0].contiguous(memory_format=torch.channels_last)
            test = x[:, 1].contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=amp_dtype or torch.float32, enabled=bool(amp_dtype)):
                logits = model(golden, test)
            loss = F.cross_entropy(logits.float(), targets[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return epochs * n / seconds, torch.cuda.max_memory_allocated() / MB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--compile", action="store_true", help="train.compile: true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(NO_GPU)
        return 0

    from automl_deft.model.data import PairSource, resolve_color_mode
    from automl_deft.model.spec import load_spec
    from automl_deft.model.train import amp_dtype_for, train
    from automl_deft.synth.smt import generate_smt_workspace
    from automl_deft.workspace import Workspace, read_dataset_csv

    started = time.perf_counter()
    device = torch.device("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        generate_smt_workspace(root, seed=0, scale=args.scale, size=max(SIZES))
        ws = Workspace.at(root)
        tr, va = read_dataset_csv(ws.train_csv), read_dataset_csv(ws.val_csv)
        print(
            f"{torch.cuda.get_device_name()} · torch {torch.__version__} · smt {args.scale}: "
            f"{len(tr)} training pairs, {args.epochs} epochs, batch {args.batch_size}"
            f"{', train.compile' if args.compile else ''} (generated in "
            f"{time.perf_counter() - started:.0f} s)"
        )
        rows = []
        for size in args.sizes:
            base = {
                "train.device": "cuda",
                "train.num_epochs": args.epochs,
                "train.validation_interval": args.epochs,
                "train.checkpoint_interval": args.epochs,
                "train.compile": args.compile,
                "dataset.classify.batch_size": args.batch_size,
                "dataset.classify.fpratio_sampling": 1.0,
                "dataset.classify.augmentation_config.augment": False,
                "dataset.classify.image_width": size,
                "dataset.classify.image_height": size,
            }
            first = resolve_color_mode(load_spec(ws.spec_path, base), tr, ws.images_dir)
            geometry = first.geometry()
            source = PairSource.from_frame(tr, ws.images_dir, geometry, preload=True)
            if not rows:  # CUDA context, cuBLAS and cuDNN set-up: paid once, untimed
                bare_loop(first, source, 1, None)
            for amp in (False, True):
                spec = first.with_overrides({"train.amp": amp})
                amp_dtype = amp_dtype_for(device, spec)
                label = "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")
                bare, bare_mb = bare_loop(spec, source, args.epochs, amp_dtype)
                out = Path(tmp) / f"run-{size}-{label}"
                result = train(spec, tr, va, ws.images_dir, out, resume=False, progress=False)
                project = result.images_per_second / 2
                peak = max(float(h.get("peak_mem_mb") or 0.0) for h in result.history)
                shape = "x".join(map(str, geometry.shape))
                rows.append((size, shape, label, project, bare, project / bare, peak, bare_mb))
                print(f"  {size} px {label}: project {project:.0f}, bare {bare:.0f} pairs/s")
            del source
            torch.cuda.empty_cache()

    header = ("tile", "input", "precision", "project", "bare", "ratio", "proj MB", "bare MB")
    print()
    print("{:>5} {:>11} {:>9} {:>9} {:>9} {:>6} {:>8} {:>8}".format(*header))
    for size, shape, label, project, bare, ratio, peak, bare_mb in rows:
        print(
            f"{size:>5} {shape:>11} {label:>9} {project:>9.0f} {bare:>9.0f} {ratio:>6.2f} "
            f"{peak:>8.0f} {bare_mb:>8.0f}"
        )
    print("(pairs/s; peak GPU memory in MB; project/bare goal >= 0.8 at 224 px bf16)")
    goal = [r for r in rows if r[0] == max(SIZES) and r[2] == "bfloat16"]
    for row in goal:
        verdict = "met" if row[5] >= GOAL else "NOT met"
        print(f"goal {verdict}: ratio {row[5]:.2f} at 224 px bf16 (goal >= {GOAL})")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
