"""TPE + median-stop pruning vs random search at an equal trial budget.

For each seed, both searches run the same number of trials on the same
workspace; the script prints the training epochs each spent (pruned trials count
the epochs they ran) and the best validation far_pct each found, then the
ratios over all seeds. Pruning should save >= 30% of the epochs at equal or
better far_pct.

    .venv/bin/python benchmarks/hpo_pruning.py [--scale small] [--trials 6] [--epochs 8]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from automl_deft.hpo.base import Budget
from automl_deft.hpo.optuna_backend import run_search
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import SearchSpace, default_aoi_space
from automl_deft.hpo.trial import SearchProblem
from automl_deft.model.spec import load_spec
from automl_deft.synth.demo import generate_demo_workspace
from automl_deft.workspace import Workspace

MODES = {
    "random": {"algorithm": "random", "early_stopping": False},
    "tpe+prune": {"algorithm": "tpe", "early_stopping": True},
}


def one_search(ws: Workspace, out: Path, mode: str, seed: int, trials: int, epochs: int):
    space = SearchSpace(default_aoi_space().params, {"train.num_epochs": epochs})
    problem = SearchProblem.create(ws.root, space, load_spec(ws.spec_path), out)
    budget = Budget(max_trials=trials, seed=seed, parallel_trials=1, **MODES[mode])
    study, records = run_search(problem, budget)
    spent = 0
    for t in study.trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            spent += int(t.user_attrs.get("epochs_run", epochs))
        elif t.state == optuna.trial.TrialState.PRUNED:
            spent += int(t.user_attrs.get("pruned_at_epoch", epochs))
    best = min((r.value for r in records if r.value is not None), default=float("inf"))
    return spent, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="small", choices=["tiny", "small", "medium"])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=AutomlConfig().num_epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    logging.getLogger("automl_deft").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        generate_demo_workspace(root, seed=0, scale=args.scale)
        ws = Workspace.at(root)
        print(f"{args.scale} workspace, {args.trials} trials x {args.epochs} epochs per search")
        totals: dict[str, list[tuple[int, float]]] = {m: [] for m in MODES}
        for seed in args.seeds:
            for mode in MODES:
                t0 = time.perf_counter()
                spent, best = one_search(
                    ws, Path(tmp) / f"{mode}-{seed}", mode, seed, args.trials, args.epochs
                )
                totals[mode].append((spent, best))
                print(
                    f"  seed {seed} {mode:<10} epochs {spent:>3}  best val far_pct "
                    f"{best:6.2f}%  ({time.perf_counter() - t0:.0f}s)"
                )
        r_ep = sum(s for s, _ in totals["tpe+prune"]) / sum(s for s, _ in totals["random"])
        far_r = statistics.mean(b for _, b in totals["random"])
        far_t = statistics.mean(b for _, b in totals["tpe+prune"])
        print(f"epochs   tpe+prune / random: {r_ep:.3f}  (saves {100 * (1 - r_ep):.0f}%)")
        print(
            f"far_pct  mean best: random {far_r:.2f}%  tpe+prune {far_t:.2f}%  "
            f"(ratio {far_t / far_r if far_r else float('nan'):.3f})"
        )


if __name__ == "__main__":
    main()
