"""The embedded default end to end: synthetic workspace → train → KPI vs zero-shot.

This is what ``make run`` executes until the full three-phase pipeline lands.
Every step is a library call the CLI also exposes on its own.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from automl_deft.io import atomic_write_json
from automl_deft.jsontypes import JSONObject
from automl_deft.kpi import KPIResult, judge_scored_frame
from automl_deft.model.infer import infer_frame
from automl_deft.model.spec import load_spec
from automl_deft.model.train import train
from automl_deft.model.zero_shot import zero_shot_frame
from automl_deft.validate import validate_workspace
from automl_deft.workspace import (
    ValidationReport,
    Workspace,
    read_dataset_csv,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class QuickstartResult:
    workspace: Path
    validation: ValidationReport
    trained: KPIResult
    zero_shot: KPIResult
    train_seconds: float
    out_dir: Path

    def to_dict(self) -> JSONObject:
        """What ``quickstart_summary.json`` holds."""
        return {
            "workspace": str(self.workspace),
            "trained": self.trained.to_dict(),
            "zero_shot": self.zero_shot.to_dict(),
            "train_seconds": self.train_seconds,
            "out_dir": str(self.out_dir),
        }


def quickstart(
    root: str | os.PathLike[str],
    *,
    scale: str = "small",
    seed: int = 0,
    zero_shot_method: str = "pixel-diff",
    progress: bool | None = None,
) -> QuickstartResult:
    """Generate (or reuse) a synthetic workspace, train the baseline spec, judge both ways.

    The workspace is generated only when ``root`` holds none yet, and training
    resumes from ``<root>/results/quickstart/train`` if it was interrupted.
    """
    from automl_deft.synth.demo import generate_demo_workspace

    ws = Workspace.at(root)
    if not ws.train_csv.exists():
        summary = generate_demo_workspace(ws.root, seed=seed, scale=scale)
        log.info("generated %s workspace in %.1fs: %s", scale, summary.seconds, summary.counts)
    report = validate_workspace(ws.root)
    spec = load_spec(ws.spec_path)
    out = ws.results_dir / "quickstart"
    train_frame = read_dataset_csv(ws.train_csv, role="train")
    val_frame = read_dataset_csv(ws.val_csv, role="validation")
    kpi_frame = read_dataset_csv(ws.kpi_csv, role="kpi_test")

    t0 = time.perf_counter()
    trained = train(spec, train_frame, val_frame, ws.images_dir, out / "train", progress=progress)
    train_seconds = time.perf_counter() - t0

    scored = infer_frame(trained.best_checkpoint, kpi_frame, ws.images_dir)
    trained_kpi = _judge(scored, out, "trained")
    zs = zero_shot_frame(kpi_frame, ws.images_dir, spec, method=zero_shot_method)
    zs_kpi = _judge(zs, out, "zero_shot")
    result = QuickstartResult(ws.root, report, trained_kpi, zs_kpi, train_seconds, out)
    atomic_write_json(out / "quickstart_summary.json", result.to_dict())
    return result


def _judge(frame: pd.DataFrame, out_dir: Path, name: str) -> KPIResult:
    return judge_scored_frame(
        frame,
        inference_csv=out_dir / f"{name}_inference.csv",
        sweep_csv=out_dir / f"{name}_sweep.csv",
        plot=out_dir / f"{name}_scores.png",
        title=name,
    )
