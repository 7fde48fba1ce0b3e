"""Inference: a checkpoint and a dataset CSV in, the CSV plus ``siamese_score`` out."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from automl_deft.io import atomic_write_csv
from automl_deft.model.allocator import keep_freed_memory
from automl_deft.model.checkpoint import load_model
from automl_deft.model.data import PairSource
from automl_deft.model.train import amp_dtype_for, predict, select_device
from automl_deft.workspace import SCORE_COLUMN


def infer_frame(
    checkpoint: str | os.PathLike[str],
    frame: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Score every row of ``frame`` with the model in ``checkpoint``.

    Returns:
        A copy of ``frame`` with a ``siamese_score`` column (defect probability).
    """
    keep_freed_memory()  # see model/allocator.py
    model, spec, _ = load_model(checkpoint)
    dev = select_device(device)
    model.to(dev)
    # The checkpoint's geometry (colour, light tiling, size), never re-probed from the files.
    source = PairSource.from_frame(frame, images_dir, spec.geometry())
    scores, _ = predict(
        model,
        source,
        dev,
        batch_size or 2 * spec.dataset.classify.batch_size,
        amp_dtype=amp_dtype_for(dev, spec),
    )
    out = frame.reset_index(drop=True).copy()
    out[SCORE_COLUMN] = scores
    return out


def infer_csv(
    checkpoint: str | os.PathLike[str],
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    *,
    batch_size: int | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """:func:`infer_frame` on a CSV file; the result is written atomically to ``out_csv``."""
    from automl_deft.workspace import read_dataset_csv

    frame = read_dataset_csv(csv_path, role="inference input")
    scored = infer_frame(checkpoint, frame, images_dir, batch_size=batch_size, device=device)
    atomic_write_csv(Path(out_csv), scored)
    return scored
