"""Mining embedders on the tiny workspace: shapes, unit norms, determinism, the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from automl_deft.deft import embedders
from automl_deft.deft.embedders import (
    EMBEDDERS,
    Embedder,
    ModelEmbedder,
    PretrainedEmbedder,
    get_embedder,
    register_embedder,
)
from automl_deft.deft.mining import mine
from automl_deft.errors import CheckpointError, SpecError
from automl_deft.model.checkpoint import save_checkpoint
from automl_deft.model.data import PairSource, to_float
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec, load_spec
from automl_deft.workspace import ImageNaming, Workspace, read_dataset_csv


@pytest.fixture(scope="module")
def ws(tiny_ws: Path) -> Workspace:
    return Workspace.at(tiny_ws)


@pytest.fixture(scope="module")
def spec(ws: Workspace) -> Spec:
    return load_spec(ws.spec_path)


@pytest.fixture(scope="module")
def pairs(ws: Workspace) -> pd.DataFrame:
    """A few PASS and defect rows of the pool (embedding all of it costs seconds)."""
    pool = read_dataset_csv(ws.pool_csv)
    passes = pool[pool["label"] == "PASS"].head(4)
    defects = pool[pool["label"] != "PASS"].groupby("label").head(1)
    return pd.concat([passes, defects]).reset_index(drop=True)


@pytest.fixture(scope="module")
def checkpoint(spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model saved the way training saves one (mining needs no trained weights)."""
    torch.manual_seed(0)
    model = ChangeNetLite(spec)
    path = tmp_path_factory.mktemp("ckpt") / "best_val.pt"
    save_checkpoint(
        path, {"state_dict": model.state_dict(), "spec": spec.to_dict(), "arch": model.arch}
    )
    return path


@pytest.fixture(scope="module")
def pretrained() -> Embedder:
    return get_embedder("pretrained", device="cpu")


def _assert_unit_rows(emb: np.ndarray, n: int, dim: int) -> None:
    assert emb.shape == (n, dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_model_embedder_returns_what_the_head_sees(
    ws: Workspace, spec: Spec, pairs: pd.DataFrame, checkpoint: Path
) -> None:
    emb = get_embedder("model", checkpoint=checkpoint, device="cpu")
    assert isinstance(emb, ModelEmbedder)
    out = emb.embed(pairs, ws.images_dir, spec.naming(), batch_size=5)
    dim = (
        2 * spec.model.classify.embedding_vectors * spec.model.classify.learnable_difference_modules
    )
    _assert_unit_rows(out, len(pairs), dim)

    # The same vector, by hand: the checkpoint's network up to its head, on its geometry.
    assert emb.model.geometry == spec.geometry(1)  # type: ignore[attr-defined]
    source = PairSource.from_frame(pairs, ws.images_dir, emb.model.geometry)  # type: ignore[attr-defined]
    golden, test = to_float(source.pixels, torch.device("cpu"))  # type: ignore[arg-type]
    with torch.no_grad():
        fused = emb.model.embed(golden, test)  # type: ignore[attr-defined]
        logits = emb.model(golden, test)  # type: ignore[operator]
    np.testing.assert_allclose(out, torch.nn.functional.normalize(fused).numpy(), atol=1e-5)
    assert torch.equal(emb.model.head(fused), logits)  # type: ignore[attr-defined]


def test_model_embedder_is_deterministic_and_batch_independent(
    ws: Workspace, spec: Spec, pairs: pd.DataFrame, checkpoint: Path
) -> None:
    emb = get_embedder("model", checkpoint=checkpoint, device="cpu")
    a = emb.embed(pairs, ws.images_dir, spec.naming(), batch_size=4)
    b = emb.embed(pairs, ws.images_dir, spec.naming(), batch_size=4)
    c = emb.embed(pairs, ws.images_dir, spec.naming(), batch_size=64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_pretrained_embedder_shapes_norms_and_determinism(
    ws: Workspace, spec: Spec, pairs: pd.DataFrame, pretrained: Embedder
) -> None:
    assert isinstance(pretrained, PretrainedEmbedder)
    a = pretrained.embed(pairs, ws.images_dir, spec.naming(), batch_size=8)
    _assert_unit_rows(a, len(pairs), 24 + 40 + 112 + 320)
    np.testing.assert_array_equal(
        a, pretrained.embed(pairs, ws.images_dir, spec.naming(), batch_size=8)
    )
    # A pair whose test image is its golden image does not differ at all.
    same = pairs.head(1).assign(input_path=pairs["golden_path"].iloc[0])
    assert np.abs(pretrained.embed(same, ws.images_dir, spec.naming())).max() == 0.0


def test_embedders_return_an_empty_matrix_for_an_empty_frame(
    ws: Workspace, spec: Spec, pairs: pd.DataFrame, checkpoint: Path, pretrained: Embedder
) -> None:
    model = get_embedder("model", checkpoint=checkpoint, device="cpu")
    assert model.embed(pairs.iloc[0:0], ws.images_dir, spec.naming()).shape == (0, 192)
    assert pretrained.embed(pairs.iloc[0:0], ws.images_dir, spec.naming()).shape == (0, 496)


def test_pretrained_embeddings_mine_within_the_label(
    ws: Workspace, spec: Spec, pairs: pd.DataFrame, pretrained: Embedder
) -> None:
    pool_emb = pretrained.embed(pairs, ws.images_dir, spec.naming())
    result = mine(pairs, pool_emb, pairs, pool_emb, top_k=1, min_similarity=0.99)
    # Each row's nearest same-label row is itself.
    assert result.rows["object_name"].tolist() == pairs["object_name"].tolist()
    assert result.rows["mined_for"].tolist() == pairs["object_name"].tolist()


def test_get_embedder_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        SpecError, match=r"^unknown mining embedder 'clip'; choose one of model, pretrained$"
    ):
        get_embedder("clip")
    with pytest.raises(
        SpecError,
        match=r"^the 'model' mining embedder needs a checkpoint; pass the previous iteration's "
        r"best checkpoint, or use the 'pretrained' embedder$",
    ):
        get_embedder("model")
    with pytest.raises(CheckpointError, match=r"^checkpoint not found: .*missing\.pt"):
        get_embedder("model", checkpoint=tmp_path / "missing.pt")


def test_model_embedder_rejects_a_naming_with_other_lights(
    ws: Workspace, pairs: pd.DataFrame, checkpoint: Path
) -> None:
    emb = get_embedder("model", checkpoint=checkpoint, device="cpu")
    with pytest.raises(
        SpecError, match=r"takes 1 light\(s\) \(SolderLight\), the naming gives 2 \(a, b\); "
    ):
        emb.embed(pairs, ws.images_dir, ImageNaming(lights=("a", "b")))


def test_register_embedder_adds_to_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedders, "EMBEDDERS", dict(EMBEDDERS))

    @register_embedder
    class Constant(Embedder):
        name = "constant"

        def embed(self, frame, images_dir, naming, *, batch_size=64):  # type: ignore[no-untyped-def]
            return np.ones((len(frame), 1), dtype=np.float32)

    assert isinstance(get_embedder("constant"), Constant)

    class Other(Constant):
        name = "pretrained"

    with pytest.raises(ValueError, match="embedder name 'pretrained' is taken by"):
        register_embedder(Other)
    assert "constant" not in EMBEDDERS  # the module's registry is untouched
