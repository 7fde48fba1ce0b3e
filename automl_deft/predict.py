"""``automl-deft predict``: score new golden/test pairs with a run's deliverable or a package.

MODEL is any of: a run directory (its ``best_model.json``), that file itself, an
exported package (its directory or ``package.json``), or a bare checkpoint (then
the threshold must be given). The source is a CSV in the workspace format, with or
without ``label``, or one pair given as files (one per light). The output is the
input columns plus ``siamese_score`` and ``decision`` (``PASS`` / ``NO_PASS`` at
the model's threshold: ``siamese_score > threshold`` → ``NO_PASS``); with labels,
the KPI as well.

Every row's files are checked before anything is scored: missing, undecodable
and golden/test size mismatches are one error naming the first few.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from automl_deft.errors import UserError, WorkspaceError
from automl_deft.layout import RunLayout
from automl_deft.model.data import PairSource
from automl_deft.records import Deliverable
from automl_deft.workspace import (
    PASS_LABEL,
    SCORE_COLUMN,
    ImageIndex,
    check_images,
    find_images_dir,
    read_dataset_csv,
)

__all__ = [
    "DECISION_COLUMN",
    "NO_PASS",
    "ResolvedModel",
    "decide",
    "predict_frame",
    "predict_pair",
    "read_source_csv",
    "resolve_model",
]

DECISION_COLUMN = "decision"
NO_PASS = "NO_PASS"


@dataclass(frozen=True)
class ResolvedModel:
    """A scorer with the threshold its decisions use, and where they came from."""

    scorer: Any
    """An :class:`automl_deft.serving.Scorer` whose ``threshold`` is set."""
    source: str

    @property
    def threshold(self) -> float:
        return float(self.scorer.threshold)


def resolve_model(path: str | os.PathLike[str], *, threshold: float | None = None) -> ResolvedModel:
    """Open MODEL (run directory, ``best_model.json``, package, or checkpoint).

    ``threshold`` overrides the model's own; a bare checkpoint needs it.

    Raises:
        UserError: nothing usable at ``path``, or no threshold for a bare checkpoint.
    """
    from automl_deft.serving import open_scorer

    p = Path(path)
    deliverable: Path | None = None
    if p.is_dir() and (p / RunLayout.DELIVERABLE).is_file():
        deliverable = p / RunLayout.DELIVERABLE
    elif p.is_file() and p.name == RunLayout.DELIVERABLE:
        deliverable = p
    if deliverable is not None:
        best = Deliverable.read(deliverable)
        ckpt = best.path(deliverable.parent, "checkpoint")
        chosen = threshold if threshold is not None else best.threshold
        return ResolvedModel(
            open_scorer(ckpt, threshold=chosen), f"{deliverable} ({best.iteration})"
        )
    if not p.exists():
        raise UserError(
            f"model {p} not found; pass a run directory, its best_model.json, an exported "
            "package or a checkpoint"
        )
    scorer = open_scorer(p, threshold=threshold)
    if scorer.threshold is None:
        raise UserError(
            f"{p} is a bare checkpoint with no decision threshold; pass --threshold, or "
            "predict with the run directory / best_model.json / an exported package"
        )
    return ResolvedModel(scorer, str(p))


def read_source_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A CSV in the workspace format; ``label`` is optional (production rows have none).

    Raises:
        WorkspaceError: missing or unparsable file, missing columns, empty cells.
    """
    return read_dataset_csv(path, role="source", require_label=False)


def has_labels(frame: pd.DataFrame) -> bool:
    """Whether every row carries a label (the KPI can then be computed)."""
    return "label" in frame.columns and bool((frame["label"].str.strip() != "").all())


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """``NO_PASS`` where ``score > threshold``, else ``PASS`` (the KPI's rule)."""
    return np.where(scores > threshold, NO_PASS, PASS_LABEL)


def predict_frame(
    model: ResolvedModel,
    frame: pd.DataFrame,
    images_dir: str | os.PathLike[str] | None,
    *,
    csv_path: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> pd.DataFrame:
    """Score every row of ``frame``: its columns + ``siamese_score`` + ``decision``.

    ``images_dir`` defaults to the images root above ``csv_path``.

    Raises:
        WorkspaceError: a row's image files are missing, undecodable or mismatched.
    """
    scorer = model.scorer
    if images_dir is None:
        if csv_path is None:
            raise UserError("predict: pass the images root (--images-dir)")
        images_dir = find_images_dir(csv_path)
    root = Path(images_dir)
    problems, _ = check_images(frame, root, scorer.naming, role="source")
    if problems:
        raise WorkspaceError(problems)
    labelled = has_labels(frame)
    work = frame if labelled else frame.assign(label=PASS_LABEL)
    source = PairSource.from_frame(work, root, scorer.geometry)
    scores = scorer.score(source, batch_size, progress=progress)
    out = frame.reset_index(drop=True).copy()
    out[SCORE_COLUMN] = scores
    out[DECISION_COLUMN] = decide(np.asarray(scores), model.threshold)
    return out


def predict_pair(model: ResolvedModel, golden: list[Path], test: list[Path]) -> tuple[float, str]:
    """Score one pair given as files, one per light in the model's light order."""
    scorer = model.scorer
    lights = scorer.naming.lights
    for name, files in (("--golden", golden), ("--test", test)):
        if len(files) != len(lights):
            raise UserError(
                f"{name}: {len(files)} file(s) for {len(lights)} light(s) "
                f"({', '.join(lights)}); give one file per light, in that order"
            )
    frame = pd.DataFrame(
        [{"input_path": ".", "golden_path": ".", "label": PASS_LABEL, "object_name": "pair"}]
    )
    problems = _pair_problems(golden, test)
    if problems:
        raise WorkspaceError(problems)
    source = PairSource(
        frame,
        torch.zeros(1, dtype=torch.int64),
        scorer.size,
        [[str(p) for p in golden]],
        [[str(p) for p in test]],
        geometry=scorer.geometry,
    )
    score = float(scorer.score(source, 1)[0])
    return score, str(decide(np.array([score]), model.threshold)[0])


def _pair_problems(golden: list[Path], test: list[Path]) -> list[str]:
    """Missing, undecodable and mismatched files of one pair (``validate``'s probe)."""
    index = ImageIndex()
    problems = []
    sizes = []
    for p in [*golden, *test]:
        info = index.info(p)
        if not info.exists:
            problems.append(f"image not found: {p}")
        elif info.size is None:
            problems.append(f"image cannot be decoded: {p}; re-export it")
        else:
            sizes.append(info.size)
    if not problems and len(set(sizes)) > 1:
        problems.append(
            f"the pair's images differ in size ({', '.join(f'{w}x{h}' for w, h in sizes)}); "
            "crop golden and test to one size"
        )
    return problems
