"""Training throughput of the project's loop vs a bare PyTorch loop (same model, same data).

Prints images/s for each and their ratio (project / bare; >= 0.9 means the
project's loop costs at most 10% over the simplest possible loop). Runs are
interleaved and repeated so machine noise hits both alike; the median is shown.

    .venv/bin/python benchmarks/train_throughput.py [--scale small] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from automl_deft.model.data import PairSource, image_size
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import load_spec
from automl_deft.model.train import seed_everything, train
from automl_deft.synth.demo import generate_demo_workspace
from automl_deft.workspace import Workspace, read_dataset_csv


def bare_loop(spec, source: PairSource, epochs: int) -> float:
    """The simplest correct loop: no sampling, augmentation, validation or checkpoints."""
    seed_everything(spec.train.seed)
    model = ChangeNetLite(spec).train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train.optim.lr)
    weight = torch.tensor(spec.train.classify.cls_weight)
    pixels, targets = source.pixels, source.targets
    bs = spec.dataset.classify.batch_size
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(targets))
        for s in range(0, len(perm), bs):
            idx = perm[s : s + bs]
            x = pixels[idx].float() / 255.0
            loss = F.cross_entropy(model(x[:, 0], x[:, 1]), targets[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return 2 * epochs * len(targets) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augment", action="store_true", help="Keep augmentation on.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        generate_demo_workspace(root, seed=0, scale=args.scale)
        ws = Workspace.at(root)
        spec = load_spec(
            ws.spec_path,
            {
                "train.num_epochs": args.epochs,
                # Same work as the bare loop: every row each epoch, one final validation.
                "dataset.classify.fpratio_sampling": 1.0,
                "dataset.classify.augmentation_config.augment": args.augment,
                "train.validation_interval": args.epochs,
                "train.checkpoint_interval": args.epochs,
            },
        )
        tr, va = read_dataset_csv(ws.train_csv), read_dataset_csv(ws.val_csv)
        source = PairSource.from_frame(tr, ws.images_dir, spec.naming(), image_size(spec))
        print(
            f"model {spec.model.backbone.type}, {len(tr)} training pairs, {args.epochs} epochs, "
            f"batch {spec.dataset.classify.batch_size}, torch threads {torch.get_num_threads()}"
        )
        bare, project = [], []
        for r in range(args.repeats):
            bare.append(bare_loop(spec, source, args.epochs))
            result = train(spec, tr, va, ws.images_dir, Path(tmp) / f"run{r}", progress=False)
            project.append(result.images_per_second)
            print(f"  repeat {r + 1}: bare {bare[-1]:8.1f}  project {project[-1]:8.1f} img/s")
        b, p = statistics.median(bare), statistics.median(project)
        print(f"bare PyTorch loop : {b:8.1f} images/s (median of {args.repeats})")
        print(f"project loop      : {p:8.1f} images/s (median of {args.repeats})")
        print(f"ratio project/bare: {p / b:.3f}  (target >= 0.9)")
        print("(the project loop includes PASS sampling, LR schedule, validation, checkpoints)")


if __name__ == "__main__":
    main()
