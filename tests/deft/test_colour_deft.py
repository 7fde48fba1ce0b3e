"""DEFT's mining embedders and SDG built-ins on colour, four-light data (the tiny SMT workspace)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, JpegImagePlugin

from automl_deft.deft import embedders
from automl_deft.deft.embedders import get_embedder
from automl_deft.deft.mining import mine
from automl_deft.deft.sdg import SDGContext, SDGRequest, get_sdg_backend
from automl_deft.deft.sdg.base import ROW_COLUMNS, label_slug
from automl_deft.deft.sdg.difference import shift_radius
from automl_deft.errors import SpecError, StageError
from automl_deft.model.align import register
from automl_deft.model.checkpoint import save_checkpoint
from automl_deft.model.data import PairSource, resolve_color_mode, to_float
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec, load_spec
from automl_deft.synth.smt import generate_smt_workspace
from automl_deft.workspace import ImageNaming, Workspace, read_dataset_csv, resolve_image_path

LIGHTS = ("LowAngleLight", "SolderLight", "UniformLight", "WhiteLight")
LITE0_PER_LIGHT = 24 + 40 + 112 + 320


@pytest.fixture(scope="module")
def smt(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("smt") / "ws"
    generate_smt_workspace(root, seed=0, scale="tiny", workers=1)
    return Workspace.at(root)


@pytest.fixture(scope="module")
def spec(smt: Workspace) -> Spec:
    """The workspace's spec, its colour decided from the training images (RGB)."""
    spec = resolve_color_mode(
        load_spec(smt.spec_path), read_dataset_csv(smt.train_csv), smt.images_dir
    )
    assert spec.dataset.classify.color_mode == "rgb"
    assert spec.naming() == ImageNaming(lights=LIGHTS, ext=".jpg")
    return spec


@pytest.fixture(scope="module")
def pool(smt: Workspace) -> pd.DataFrame:
    """Two PASS rows and two rows of each of three defect types from the mining pool."""
    frame = read_dataset_csv(smt.pool_csv)
    passes = frame[frame["label"] == "PASS"].head(2)
    defects = (
        frame[frame["label"].isin(["bridge", "missing", "tombstone"])].groupby("label").head(2)
    )
    return pd.concat([passes, defects]).reset_index(drop=True)


def _checkpoint(spec: Spec, path: Path) -> Path:
    """An untrained model of ``spec``, saved as training saves one (mining needs no training)."""
    torch.manual_seed(0)
    model = ChangeNetLite(spec)
    save_checkpoint(
        path, {"state_dict": model.state_dict(), "spec": spec.to_dict(), "arch": model.arch}
    )
    return path


def _unit_rows(emb: np.ndarray, n: int, dim: int) -> None:
    assert emb.shape == (n, dim) and emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


# -- embedders ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["linear", "grid"])
def test_model_embedder_loads_pairs_as_its_model_takes_them(
    smt: Workspace, spec: Spec, pool: pd.DataFrame, tmp_path: Path, layout: str
) -> None:
    spec = spec.with_overrides({"dataset.classify.concat_type": layout})
    emb = get_embedder("model", checkpoint=_checkpoint(spec, tmp_path / "m.pt"), device="cpu")
    model: ChangeNetLite = emb.model  # type: ignore[attr-defined]
    assert model.geometry.shape == ((3, 512, 128) if layout == "linear" else (3, 256, 256))
    out = emb.embed(pool, smt.images_dir, spec.naming(), batch_size=3)
    _unit_rows(out, len(pool), model.difference.out_features)
    # The same vector by hand, from the pairs as training would load them for this spec.
    source = PairSource.for_spec(pool, smt.images_dir, spec)
    assert source.pixels is not None and source.pixels.shape[1:] == (2, *model.geometry.shape)
    golden, test = to_float(source.pixels, torch.device("cpu"))
    with torch.no_grad():
        fused = torch.nn.functional.normalize(model.embed(golden, test)).numpy()
    np.testing.assert_allclose(out, fused, atol=1e-5)


def test_model_embedder_rejects_lights_in_another_order(
    smt: Workspace, spec: Spec, pool: pd.DataFrame, tmp_path: Path
) -> None:
    emb = get_embedder("model", checkpoint=_checkpoint(spec, tmp_path / "m.pt"), device="cpu")
    shuffled = ImageNaming(lights=LIGHTS[::-1], ext=".jpg")
    with pytest.raises(
        SpecError,
        match=r"takes 4 light\(s\) \(LowAngleLight, SolderLight, UniformLight, WhiteLight\), "
        r"the naming gives 4 \(WhiteLight, UniformLight, SolderLight, LowAngleLight\); ",
    ):
        emb.embed(pool, smt.images_dir, shuffled)


def test_pretrained_embedder_embeds_each_light_in_colour_on_its_own(
    smt: Workspace, spec: Spec, pool: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    emb = get_embedder("pretrained", device="cpu")
    naming = spec.naming()
    assert emb.geometry_for(pool, smt.images_dir, naming).channels == 3  # type: ignore[attr-defined]
    four = emb.embed(pool, smt.images_dir, naming, batch_size=4)
    _unit_rows(four, len(pool), 4 * LITE0_PER_LIGHT)
    assert emb.embed(pool.iloc[:0], smt.images_dir, naming).shape == (0, 4 * LITE0_PER_LIGHT)
    # Light by light: each quarter is that light embedded alone (registered within its tile).
    for i, light in enumerate(LIGHTS):
        alone = emb.embed(pool, smt.images_dir, ImageNaming(lights=(light,), ext=".jpg"))
        _unit_rows(alone, len(pool), LITE0_PER_LIGHT)
        part = four[:, i * LITE0_PER_LIGHT : (i + 1) * LITE0_PER_LIGHT]
        np.testing.assert_allclose(
            part / np.linalg.norm(part, axis=1, keepdims=True), alone, atol=1e-5
        )
    # Colour counts: the same pairs read as greyscale give other vectors.
    monkeypatch.setattr(embedders, "probe_channels", lambda *_: 1)
    grey = emb.embed(pool, smt.images_dir, naming)
    _unit_rows(grey, len(pool), 4 * LITE0_PER_LIGHT)
    assert np.abs(grey - four).max() > 0.01


def test_mining_runs_on_colour_embeddings(smt: Workspace, spec: Spec, pool: pd.DataFrame) -> None:
    kpi = read_dataset_csv(smt.kpi_csv)
    targets = kpi[kpi["label"].isin(["bridge", "missing"])].groupby("label").head(1)
    emb = get_embedder("pretrained", device="cpu")
    naming = spec.naming()
    result = mine(
        targets,
        emb.embed(targets, smt.images_dir, naming),
        pool,
        emb.embed(pool, smt.images_dir, naming),
        top_k=2,
        min_similarity=0.0,
    )
    # Each target finds its label's two pool rows, and nothing of another label.
    assert sorted(result.rows["label"]) == ["bridge", "bridge", "missing", "missing"]
    by_name = targets.set_index("object_name")["label"]
    assert (result.rows["mined_for"].map(by_name) == result.rows["label"]).all()
    assert result.rows["mined_similarity"].astype(float).between(0.0, 1.0 + 1e-6).all()


# -- SDG ---------------------------------------------------------------------------------


def _ctx(smt: Workspace, spec: Spec, out: Path, **kw: object) -> SDGContext:
    fields: dict[str, object] = {
        "images_dir": smt.images_dir,
        "naming": spec.naming(),
        "image_size": (128, 128),
        "train_frame": read_dataset_csv(smt.train_csv),
        "out_images_dir": out / "images" / "sdg",
        "work_dir": out / "sdg",
    }
    fields.update(kw)
    return SDGContext(**fields)  # type: ignore[arg-type]


def _side(ctx: SDGContext, row: pd.Series, column: str) -> tuple[list[Path], list[np.ndarray]]:
    files = [
        resolve_image_path(ctx.images_dir, row[column], row["object_name"], light, ".jpg")
        for light in LIGHTS
    ]
    images = []
    for path in files:
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (128, 128)), path
            images.append(np.asarray(im).astype(np.int16))
    return files, images


def _jpeg_settings(path: Path) -> tuple[object, int]:
    with Image.open(path) as im:
        assert isinstance(im, JpegImagePlugin.JpegImageFile)
        return im.quantization, JpegImagePlugin.get_sampling(im)


def _onto(target: np.ndarray, image: np.ndarray, max_shift: int = 4) -> np.ndarray:
    """``image`` (H, W, 3) moved onto ``target`` by its best integer shift."""
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float()  # noqa: E731
    moved = register(as_tensor(target), as_tensor(image), max_shift)
    return moved[0].permute(1, 2, 0).numpy()


def test_cutpaste_pastes_one_defect_into_every_light_in_colour(
    smt: Workspace, spec: Spec, tmp_path: Path
) -> None:
    ctx = _ctx(smt, spec, tmp_path)
    backend = get_sdg_backend("cutpaste")
    train = ctx.train_frame.set_index("object_name", drop=False)
    assert backend.supported_labels(ctx) == frozenset(train["label"])  # PASS: hard negatives
    kpi = read_dataset_csv(smt.kpi_csv)
    labels = ["bridge", "excess", "missing", "tombstone"]
    rows = backend.generate([SDGRequest(lab, 2, kpi[kpi["label"] == lab]) for lab in labels], ctx)
    assert len(rows) >= 6 and set(rows["label"]) <= set(labels)
    assert tuple(rows.columns) == ROW_COLUMNS and rows["object_name"].is_unique
    assert (rows["sdg_backend"] == "cutpaste").all()
    for _, row in rows.iterrows():
        assert row["object_name"].startswith(f"sdg_it1_{label_slug(row['label'])}_")
        defect, clean = row["sdg_source"].split(";")
        assert train.loc[defect, "label"] == row["label"]  # pixels from training rows only
        assert train.loc[clean, "label"] == "PASS"
        assert row["boardname"] == train.loc[clean, "boardname"]
        golden_files, golden = _side(ctx, row, "golden_path")
        clean_golden_files, _ = _side(ctx, train.loc[clean], "golden_path")
        assert [p.read_bytes() for p in golden_files] == [
            p.read_bytes() for p in clean_golden_files
        ]
        after_files, after = _side(ctx, row, "input_path")
        before_files, before = _side(ctx, train.loc[clean], "input_path")
        changed = [np.abs(a - b).max(axis=2) for a, b in zip(after, before, strict=True)]
        pasted = np.any([c > 40 for c in changed], axis=0)
        assert pasted.sum() >= 20, row["object_name"]
        # Away from the paste the clean tested image is kept, re-encoded with its own
        # JPEG tables (PIL's default quality would blur every pixel of it).
        for new, old in zip(after_files, before_files, strict=True):
            assert _jpeg_settings(new) == _jpeg_settings(old)
        far = np.ones_like(pasted)
        ys, xs = np.nonzero(pasted)
        far[max(ys.min() - 16, 0) : ys.max() + 17, max(xs.min() - 16, 0) : xs.max() + 17] = False
        for c in changed:
            assert np.median(c[far]) <= 1 and c[far].mean() < 2.0
        # The defect shows under every light at the same place: inside the pasted mask the
        # tested image now differs from its (registered) golden far more than before.
        for light, a, b, g in zip(LIGHTS, after, before, golden, strict=True):
            g = _onto(b.astype(np.float32), g.astype(np.float32))
            gain = (
                np.abs(a - g).max(axis=2)[pasted].mean() - np.abs(b - g).max(axis=2)[pasted].mean()
            )
            assert gain > 8.0, (row["object_name"], light, gain)


def test_procedural_refuses_a_colour_workspace_in_one_line(
    smt: Workspace, spec: Spec, tmp_path: Path
) -> None:
    backend = get_sdg_backend("procedural-pcb")
    # color_mode auto: decided by the RGB training files. With hard negatives (the default)
    # it makes colour PASS pairs only; without them, nothing, and it says so.
    assert backend.supported_labels(_ctx(smt, spec, tmp_path)) == {"PASS"}
    ctx = _ctx(smt, spec, tmp_path, hard_negatives=False)
    line = (
        "the procedural-pcb SDG backend paints greyscale images only and this workspace is "
        "colour (its training images are RGB); set deft.sdg.backend: cutpaste, which pastes "
        "real training defects in colour under every light"
    )
    assert backend.refusal(ctx) == line
    with pytest.raises(StageError, match=rf"^{re.escape(line)}$"):
        backend.supported_labels(ctx)
    kpi = read_dataset_csv(smt.kpi_csv)
    with pytest.raises(StageError, match=rf"^{re.escape(line)}$"):
        backend.generate([SDGRequest("bridge", 2, kpi[kpi["label"] == "bridge"])], ctx)
    assert not (tmp_path / "images").exists()  # no greyscale image reached the colour set


def test_cutpaste_searches_misregistration_in_proportion_to_the_image() -> None:
    # 64 px keeps the greyscale demo's pairs byte for byte; the SMT captures move by up to 3 px.
    assert [shift_radius((s, s)) for s in (32, 64, 96, 128, 256)] == [2, 2, 3, 4, 8]
    assert shift_radius((128, 64, 3)) == 2
