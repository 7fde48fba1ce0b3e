"""Model, training loop, checkpoints, inference and the zero-shot scorer on the tiny workspace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from automl_deft.errors import CheckpointError, SpecError, WorkspaceError
from automl_deft.model.checkpoint import load_checkpoint, load_model
from automl_deft.model.data import augment, epoch_indices
from automl_deft.model.infer import infer_csv
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import AugmentationConfig, RandomColor, Spec, load_spec
from automl_deft.model.train import lr_factor, train
from automl_deft.model.zero_shot import PixelDiffScorer, get_scorer, zero_shot_frame
from automl_deft.workspace import SCORE_COLUMN, Workspace, read_dataset_csv

FAST = {"train.num_epochs": 2, "dataset.classify.batch_size": 16}


def _frames(ws: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    w = Workspace.at(ws)
    return read_dataset_csv(w.train_csv), read_dataset_csv(w.val_csv)


def _spec(ws: Path, **extra) -> Spec:
    return load_spec(Workspace.at(ws).spec_path, {**FAST, **extra})


@pytest.fixture(scope="module")
def trained(tiny_ws: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    tr, va = _frames(tiny_ws)
    train(_spec(tiny_ws), tr, va, Workspace.at(tiny_ws).images_dir, out, progress=False)
    return out


@pytest.mark.parametrize("backbone", ["cnn_small", "efficientnet_lite0"])
@pytest.mark.parametrize("scales", [1, 4])
def test_forward_shapes(backbone: str, scales: int) -> None:
    spec = Spec().with_overrides(
        {"model.backbone.type": backbone, "model.classify.learnable_difference_modules": scales}
    )
    model = ChangeNetLite(spec).eval()
    g, t = torch.rand(3, 1, 64, 64), torch.rand(3, 1, 64, 64)
    logits = model(g, t)
    assert logits.shape == (3, 2)
    s = ChangeNetLite.score(logits)
    assert ((s >= 0) & (s <= 1)).all()


def test_efficientnet_loads_packaged_imagenet_weights() -> None:
    pre = ChangeNetLite(Spec().with_overrides({"model.backbone.type": "efficientnet_lite0"}))
    raw = ChangeNetLite(
        Spec().with_overrides(
            {"model.backbone.type": "efficientnet_lite0", "model.backbone.pretrained": False}
        )
    )
    w_pre = pre.encoder.stem[0].weight
    assert not torch.allclose(w_pre, raw.encoder.stem[0].weight)
    assert pre.encoder.channels == (24, 40, 112, 320)


def test_training_writes_self_describing_checkpoints(trained: Path) -> None:
    best = load_checkpoint(trained / "best_val.pt")
    latest = load_checkpoint(trained / "latest.pt")
    for ckpt in (best, latest):
        assert {"state_dict", "spec", "epoch", "step", "metrics", "versions", "arch"} <= set(ckpt)
        assert ckpt["versions"]["torch"] == torch.__version__
    assert latest["epoch"] == 2 and "optimizer" in latest
    assert "far_pct" in best["metrics"] and "pred_counts" in best["metrics"]
    assert (trained / "history.json").exists() and (trained / "train_summary.json").exists()


def test_resume_continues_after_last_finished_epoch(tiny_ws: Path, tmp_path: Path) -> None:
    tr, va = _frames(tiny_ws)
    spec = _spec(tiny_ws, **{"train.num_epochs": 3})
    images = Workspace.at(tiny_ws).images_dir

    class Killed(Exception):
        pass

    def die_after_two(epoch: int, metrics: dict) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(spec, tr, va, images, tmp_path, progress=False, on_epoch_end=die_after_two)
    assert load_checkpoint(tmp_path / "latest.pt")["epoch"] == 2
    result = train(spec, tr, va, images, tmp_path, progress=False)
    assert result.epochs_run == 1
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    again = train(spec, tr, va, images, tmp_path, progress=False)
    assert again.epochs_run == 0  # finished runs return at once

    with pytest.raises(CheckpointError, match="different spec"):
        train(_spec(tiny_ws, **{"train.num_epochs": 4}), tr, va, images, tmp_path, progress=False)


def test_warm_start_loads_weights_and_trains_full_budget(
    tiny_ws: Path, trained: Path, tmp_path: Path
) -> None:
    tr, va = _frames(tiny_ws)
    ckpt = str(trained / "best_val.pt")
    spec = _spec(tiny_ws, **{"train.pretrained_model_path": ckpt, "train.num_epochs": 1})
    result = train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    assert result.epochs_run == 1  # never inherits the source's epoch counter

    bad = _spec(
        tiny_ws,
        **{"train.pretrained_model_path": ckpt, "model.classify.learnable_difference_modules": 2},
    )
    with pytest.raises(CheckpointError, match="learnable_difference_modules: checkpoint 3"):
        train(bad, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path / "x", progress=False)


def test_corrupt_and_foreign_checkpoints_fail_clearly(trained: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes((trained / "best_val.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an automl-deft checkpoint"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")


def test_infer_writes_input_plus_score(tiny_ws: Path, trained: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    out = tmp_path / "scored.csv"
    frame = infer_csv(trained / "best_val.pt", ws.kpi_csv, ws.images_dir, out)
    original = pd.read_csv(ws.kpi_csv, dtype=str, keep_default_na=False)
    written = pd.read_csv(out, keep_default_na=False)
    assert list(written.columns) == [*original.columns, SCORE_COLUMN]
    assert len(frame) == len(original)
    assert written[SCORE_COLUMN].between(0, 1).all()


def test_training_data_checks(tiny_ws: Path, tmp_path: Path) -> None:
    tr, va = _frames(tiny_ws)
    images = Workspace.at(tiny_ws).images_dir
    with pytest.raises(WorkspaceError, match="single class"):
        train(_spec(tiny_ws), tr[tr.label == "PASS"], va, images, tmp_path, progress=False)
    with pytest.raises(SpecError, match=r"batch_size .* is larger than the training set"):
        big = _spec(tiny_ws, **{"dataset.classify.batch_size": 10_000})
        train(big, tr, va, images, tmp_path, progress=False)


def test_pass_subsampling_keeps_every_defect() -> None:
    targets = torch.tensor([1] * 10 + [0] * 90)
    idx = epoch_indices(targets, 0.3, np.random.default_rng(0))
    assert len(idx) == 10 + 27
    assert set(range(10)) <= set(idx.tolist())
    assert len(set(idx.tolist())) == len(idx)


def test_augmentation_is_geometrically_identical_on_both_images() -> None:
    cfg = AugmentationConfig(random_color=RandomColor(enable=False))
    g = torch.rand(64, 1, 16, 16)
    ga, ta = augment(g, g.clone(), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(ga, ta)
    assert not torch.equal(ga, g)  # something did change


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "linear") == pytest.approx(1.0)
    assert lr_factor(99, 100, 0, "linear") == pytest.approx(0.01)
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_pixel_diff_ignores_shift_but_sees_defects() -> None:
    g = torch.zeros(2, 1, 32, 32)
    g[:, :, 10:20, 8:24] = 1.0
    shifted = torch.roll(g, shifts=1, dims=-1)
    defect = g.clone()
    defect[1, :, 25:28, 25:28] = 1.0
    scores = PixelDiffScorer().score_batch(g, torch.cat([shifted[:1], defect[1:]]))
    assert scores[0] < 0.05 < scores[1]


def test_zero_shot_frame_and_registry(tiny_ws: Path) -> None:
    ws = Workspace.at(tiny_ws)
    frame = read_dataset_csv(ws.kpi_csv)
    out = zero_shot_frame(frame, ws.images_dir, load_spec(ws.spec_path))
    assert out[SCORE_COLUMN].notna().all() and len(out) == len(frame)
    with pytest.raises(Exception, match="unknown zero-shot method 'nope'"):
        get_scorer("nope")


@pytest.mark.gpu
def test_cuda_mixed_precision_training(tiny_ws: Path, tmp_path: Path) -> None:
    tr, va = _frames(tiny_ws)
    spec = _spec(tiny_ws, **{"train.device": "cuda", "train.amp": True})
    result = train(spec, tr, va, Workspace.at(tiny_ws).images_dir, tmp_path, progress=False)
    assert result.best_metrics["val_loss"] == pytest.approx(result.best_metrics["val_loss"])
    model, _, _ = load_model(result.best_checkpoint)
    assert next(model.parameters()).device.type == "cpu"
