"""Colour images and several lights, tiled as TAO's ``concat_type`` says, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from automl_deft.errors import CheckpointError, SpecError
from automl_deft.model.align import register_tiles, split_tiles
from automl_deft.model.checkpoint import input_geometry, load_checkpoint
from automl_deft.model.data import PairSource, augment, probe_channels, resolve_color_mode
from automl_deft.model.network import ChangeNetLite, EfficientNetLite0, _packaged_lite0_weights
from automl_deft.model.spec import BackboneSpec, Spec, load_spec, spec_from_dict
from automl_deft.model.train import train
from automl_deft.model.zero_shot import zero_shot_frame
from automl_deft.predict import predict_frame, resolve_model
from automl_deft.serving import CheckpointScorer, export_package, open_scorer

LIGHTS = {"LowAngleLight": 0, "SolderLight": 1, "UniformLight": 2, "WhiteLight": 3}
COLOURS = {  # one plain colour per light, to see where each tile lands
    "LowAngleLight": (220, 30, 30),
    "SolderLight": (30, 200, 40),
    "UniformLight": (40, 50, 210),
    "WhiteLight": (230, 230, 230),
}
TAO_SPEC = """\
train:
  num_epochs: 3
  optim: {optim: adamw, lr: 0.0001, weight_decay: 0.05, momentum: 0.9, policy: linear}
  classify: {loss: ce, cls_weight: [1.0, 10.0]}
model:
  backbone: {type: efficientnet_lite0, pretrained_backbone_path: null, freeze_backbone: false}
  classify:
    embedding_vectors: 5
    difference_module: learnable
    learnable_difference_modules: 2
dataset:
  classify:
    batch_size: 16
    workers: 2
    fpratio_sampling: 0.3
    image_width: 128
    image_height: 128
    num_input: 4
    input_map: {LowAngleLight: 0, SolderLight: 1, UniformLight: 2, WhiteLight: 3}
    concat_type: grid
    grid_map: {x: 2, y: 2}
    image_ext: .jpg
    num_classes: 2
    augmentation_config:
      rgb_input_mean: [0.485, 0.456, 0.406]
      rgb_input_std: [0.229, 0.224, 0.225]
      random_flip: {vflip_probability: 0.5, hflip_probability: 0.5, enable: true}
      random_rotate: {rotate_probability: 0.5, angle_list: [90, 180, 270], enable: true}
      random_color:
        brightness: 0.3
        contrast: 0.3
        saturation: 0.3
        hue: 0.3
        enable: false
        color_probability: 0.5
      with_random_crop: true
      with_random_blur: false
      augment: true
"""


def _spec(concat: str = "linear", size: int = 32, **more: object) -> Spec:
    return Spec().with_overrides(
        {
            "dataset.classify.num_input": 4,
            "dataset.classify.input_map": LIGHTS,
            "dataset.classify.concat_type": concat,
            "dataset.classify.grid_map": {"x": 2, "y": 2},
            "dataset.classify.image_ext": ".jpg",
            "dataset.classify.image_width": size,
            "dataset.classify.image_height": size,
            **more,
        }
    )


def _subset(small: object, big: object) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _subset(v, big[k]) for k, v in small.items()
        )
    return small == big


# --- the spec -------------------------------------------------------------------------------


def test_a_tao_classify_spec_loads_unchanged(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "tao.yaml"
    path.write_text(TAO_SPEC, encoding="utf-8")
    spec = load_spec(path)
    assert _subset(yaml.safe_load(TAO_SPEC), spec.to_dict())  # every key kept, every value
    cfg = spec.dataset.classify
    assert (cfg.concat_type, cfg.grid_map.x, cfg.grid_map.y) == ("grid", 2, 2)
    assert cfg.augmentation_config.random_color.hue == 0.3
    geometry = spec.geometry(3)
    assert geometry.shape == (3, 256, 256) and (geometry.rows, geometry.columns) == (2, 2)


def test_random_color_enabled_is_read_as_enable() -> None:
    key = "dataset.classify.augmentation_config.random_color"
    spec = Spec().with_overrides({f"{key}.enabled": True})
    assert spec.dataset.classify.augmentation_config.random_color.enable is True
    with pytest.raises(SpecError, match=r"'enabled' and .*'enable' mean the same; keep only"):
        spec_from_dict(
            {
                "dataset": {
                    "classify": {
                        "augmentation_config": {"random_color": {"enabled": True, "enable": False}}
                    }
                }
            }
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dataset.classify.num_input": 3}, r"num_input is 3 but input_map names 4 light\(s\)"),
        ({"dataset.classify.grid_map": {"x": 3, "y": 1}}, r"grid_map 3x1 holds 3 tiles but"),
        ({"dataset.classify.grid_map": {"x": 0, "y": 4}}, r"grid_map.x and .y must be >= 1"),
        (
            {"dataset.classify.augmentation_config.rgb_input_mean": [0.5, 0.5]},
            r"rgb_input_mean/rgb_input_std need 3 numbers",
        ),
        (
            {"dataset.classify.augmentation_config.rgb_input_std": [0.2, 0.0, 0.2]},
            r"rgb_input_std must be > 0",
        ),
        (
            {"dataset.classify.concat_type": "mosaic"},
            r"'mosaic' \(str\) is not one of 'linear', 'grid'",
        ),
    ],
)
def test_bad_light_settings_are_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        _spec("grid").with_overrides(override)
    assert "\n" not in str(info.value)


def test_an_unresolved_colour_mode_asks_to_be_resolved() -> None:
    with pytest.raises(SpecError, match="color_mode is 'auto' here"):
        _spec().geometry()


# --- loading and tiling ---------------------------------------------------------------------


def _write_pair_files(
    root: Path,
    rows: int,
    *,
    size: int = 32,
    grey: bool = False,
    ext: str = ".jpg",
    plain: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """``rows`` golden/test pairs of four lights; every third one has a dark blob on one light."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(rows):
        defect = i % 3 == 0
        base = rng.integers(60, 200, size=(size, size, 3)).astype(np.uint8)
        for role in ("golden", "test"):
            directory = root / role / f"board{i}"
            directory.mkdir(parents=True, exist_ok=True)
            for j, light in enumerate(LIGHTS):
                if plain:
                    image = np.broadcast_to(
                        np.array(COLOURS[light], dtype=np.uint8), (size, size, 3)
                    ).copy()
                else:
                    image = np.roll(base, 3 * j, axis=1).copy()
                    image[..., j % 3] = np.clip(image[..., j % 3].astype(int) + 40, 0, 255)
                if role == "test" and defect and j == i % 4:
                    image[10:18, 12:20] = 15
                im = Image.fromarray(image)
                (im.convert("L") if grey else im).save(directory / f"c{i}_{light}{ext}", quality=95)
        records.append(
            {
                "input_path": f"test/board{i}",
                "golden_path": f"golden/board{i}",
                "label": "missing" if defect else "PASS",
                "object_name": f"c{i}",
            }
        )
    return pd.DataFrame(records)


def test_linear_stacks_the_lights_down_and_grid_tiles_them_row_major(tmp_path: Path) -> None:
    frame = _write_pair_files(tmp_path, 1, plain=True)
    linear = PairSource.for_spec(frame, tmp_path, _spec("linear"))
    grid = PairSource.for_spec(frame, tmp_path, _spec("grid"))
    assert linear.pixels is not None and grid.pixels is not None
    assert tuple(linear.pixels.shape) == (1, 2, 3, 128, 32)  # H = 4 * 32, W = 32
    assert tuple(grid.pixels.shape) == (1, 2, 3, 64, 64)

    def colour_at(pixels: torch.Tensor, top: int, left: int) -> np.ndarray:
        return pixels[0, 0, :, top : top + 32, left : left + 32].float().mean(dim=(1, 2)).numpy()

    order = list(LIGHTS)
    for i, light in enumerate(order):
        np.testing.assert_allclose(colour_at(linear.pixels, 32 * i, 0), COLOURS[light], atol=3)
    corners = {"LowAngleLight": (0, 0), "SolderLight": (0, 32), "UniformLight": (32, 0)}
    corners["WhiteLight"] = (32, 32)
    for light, (top, left) in corners.items():
        np.testing.assert_allclose(colour_at(grid.pixels, top, left), COLOURS[light], atol=3)
    assert grid.geometry is not None and grid.geometry.describe() == (
        "4 lights, RGB, grid 2x2 of 32x32 -> 3x64x64"
    )


def test_a_greyscale_workspace_stays_one_channel(tmp_path: Path) -> None:
    grey = _write_pair_files(tmp_path / "grey", 2, grey=True, ext=".png")
    colour = _write_pair_files(tmp_path / "colour", 2)
    spec = _spec(**{"dataset.classify.image_ext": ".png"})
    assert probe_channels(grey, tmp_path / "grey", spec.naming()) == 1
    resolved = resolve_color_mode(spec, grey, tmp_path / "grey")
    assert resolved.dataset.classify.color_mode == "grey"
    source = PairSource.for_spec(grey, tmp_path / "grey", spec)
    assert source.pixels is not None and tuple(source.pixels.shape) == (2, 2, 1, 128, 32)
    assert ChangeNetLite(resolved).encoder.stem[0][0].in_channels == 1
    assert probe_channels(colour, tmp_path / "colour", _spec().naming()) == 3
    rgb = resolve_color_mode(_spec(), colour, tmp_path / "colour")
    assert ChangeNetLite(rgb).encoder.stem[0][0].in_channels == 3


# --- augmentation and registration ----------------------------------------------------------


def _tiles(x: torch.Tensor, spec: Spec) -> torch.Tensor:
    return split_tiles(x, *spec.dataset.classify.layout)


def test_flips_and_rotations_move_pixels_within_each_light_tile() -> None:
    key = "dataset.classify.augmentation_config"
    spec = _spec(
        "linear",
        **{
            f"{key}.random_flip": {"enable": True, "hflip_probability": 1, "vflip_probability": 1},
            f"{key}.random_rotate": {"enable": False},
        },
    )
    x = torch.rand(3, 3, 128, 32)
    g, t = augment(x, x.clone(), spec.dataset.classify, torch.Generator().manual_seed(0))
    want = _tiles(x, spec).flip(-1).flip(-2)  # every tile flipped where it is
    torch.testing.assert_close(_tiles(g, spec), want)
    torch.testing.assert_close(g, t)
    # non-square tiles (32 wide, 16 high): 90/270 are never drawn, 180 keeps the shape
    wide = spec.with_overrides(
        {
            "dataset.classify.image_height": 16,
            f"{key}.random_flip.enable": False,
            f"{key}.random_rotate": {"enable": True, "rotate_probability": 1.0},
        }
    )
    y = torch.rand(4, 3, 64, 32)
    g, _ = augment(y, y.clone(), wide.dataset.classify, torch.Generator().manual_seed(1))
    torch.testing.assert_close(_tiles(g, wide), _tiles(y, wide).flip(-1).flip(-2))


def test_colour_jitter_is_drawn_per_side_and_light_and_crop_per_pair() -> None:
    key = "dataset.classify.augmentation_config"
    spec = _spec(
        "grid",
        **{
            f"{key}.random_flip.enable": False,
            f"{key}.random_rotate.enable": False,
            f"{key}.random_color": {
                "enable": True,
                "color_probability": 1.0,
                "brightness": 0.3,
                "contrast": 0.3,
                "saturation": 0.5,
                "hue": 0.2,
            },
        },
    )
    x = torch.full((2, 3, 64, 64), 0.5)
    x[:, 0] = 0.7  # a colour, so saturation and hue have something to change
    g, t = augment(x, x.clone(), spec.dataset.classify, torch.Generator().manual_seed(0))
    assert float(g.min()) >= 0 and float(g.max()) <= 1
    means = _tiles(g, spec).mean(dim=(-2, -1))  # [B, T, C]
    assert not torch.allclose(g, t)  # golden and test drawn apart
    assert len({tuple(m.round(decimals=4).tolist()) for m in means[0]}) == 4  # each light its own
    crop = _spec("grid", **{f"{key}.with_random_crop": True, f"{key}.random_rotate.enable": False})
    z = torch.rand(2, 3, 64, 64)
    g, t = augment(z, z.clone(), crop.dataset.classify, torch.Generator().manual_seed(0))
    torch.testing.assert_close(g, t)  # geometry shared by both sides
    assert not torch.allclose(g, z)


def test_registration_shifts_each_light_tile_on_its_own() -> None:
    golden = torch.rand(2, 3, 64, 64)
    tiles = split_tiles(golden, 2, 2)
    shifts = [(1, 0), (0, -1), (-1, 1), (0, 0)]
    moved = torch.stack(
        [torch.roll(tiles[:, i], shifts=s, dims=(-2, -1)) for i, s in enumerate(shifts)], dim=1
    )
    from automl_deft.model.align import join_tiles

    test = join_tiles(moved, 2, 2)
    aligned = split_tiles(register_tiles(golden, test, 2, 2, 2), 2, 2)
    inner = (..., slice(2, -2), slice(2, -2))
    torch.testing.assert_close(aligned[inner], tiles[inner])


# --- a colour four-light workspace, trained, scored, exported -------------------------------


@pytest.fixture(scope="module")
def colour_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("colour_ws")
    train_rows = _write_pair_files(root, 12, seed=1)
    val_rows = _write_pair_files(root / "val", 6, seed=2)
    val_rows = val_rows.assign(
        input_path="val/" + val_rows["input_path"], golden_path="val/" + val_rows["golden_path"]
    )
    return root, train_rows, val_rows


@pytest.mark.parametrize(
    ("backbone", "concat", "size"),
    [("cnn_small", "linear", 32), ("efficientnet_lite0", "grid", 32)],
)
def test_a_colour_workspace_trains_predicts_and_exports(
    colour_ws: tuple[Path, pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    backbone: str,
    concat: str,
    size: int,
) -> None:
    root, train_rows, val_rows = colour_ws
    spec = _spec(
        concat,
        size,
        **{
            "model.backbone.type": backbone,
            "model.backbone.width": 8,
            "model.classify.learnable_difference_modules": 2,
            "train.num_epochs": 1,
            "dataset.classify.batch_size": 6,
            "dataset.classify.augmentation_config.random_color": {
                "enable": True,
                "saturation": 0.2,
                "hue": 0.1,
            },
        },
    )
    result = train(spec, train_rows, val_rows, root, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["arch"]["in_channels"] == 3 and ckpt["spec"]["dataset"]["classify"][
        "color_mode"
    ] == ("rgb")
    geometry = input_geometry(ckpt)
    assert geometry.shape == (
        (3, 4 * size, size) if concat == "linear" else (3, 2 * size, 2 * size)
    )

    scored = predict_frame(resolve_model(result.best_checkpoint, threshold=0.5), val_rows, root)
    assert len(scored) == len(val_rows) and scored["siamese_score"].between(0, 1).all()

    package = export_package(result.best_checkpoint, tmp_path / "pkg", "onnx", threshold=0.5)
    assert package.manifest.inputs[0].shape == [-1, *geometry.shape]
    assert package.geometry == geometry
    assert package.manifest.preprocessing.channels_per_light == 3
    onnx = open_scorer(package.root)
    source = PairSource.from_frame(val_rows, root, onnx.geometry)
    np.testing.assert_allclose(
        onnx.score(source, 4), CheckpointScorer(result.best_checkpoint).score(source, 4), atol=1e-4
    )
    np.testing.assert_allclose(scored["siamese_score"], onnx.score(source, 4), atol=1e-4)


def test_zero_shot_scores_colour_lights_tile_by_tile(
    colour_ws: tuple[Path, pd.DataFrame, pd.DataFrame],
) -> None:
    root, train_rows, _ = colour_ws
    scored = zero_shot_frame(train_rows, root, _spec("grid"), method="pixel-diff")
    defect = scored["label"] != "PASS"
    assert scored.loc[defect, "siamese_score"].min() > scored.loc[~defect, "siamese_score"].max()


# --- EfficientNet-Lite0 weights -------------------------------------------------------------


def test_efficientnet_lite0_takes_rgb_at_224_px_with_its_imagenet_stem() -> None:
    spec = Spec().with_overrides(
        {
            "model.backbone.type": "efficientnet_lite0",
            "dataset.classify.color_mode": "rgb",
            "dataset.classify.image_width": 224,
            "dataset.classify.image_height": 224,
        }
    )
    model = ChangeNetLite(spec).eval()
    packaged = torch.load(_packaged_lite0_weights(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.encoder.stem[0].weight, packaged["_conv_stem.weight"])
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 224, 224), torch.rand(1, 3, 224, 224))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_pretrained_backbone_path_loads_user_weights_and_refuses_others(tmp_path: Path) -> None:
    state = torch.load(_packaged_lite0_weights(), map_location="cpu", weights_only=True)
    state["_conv_stem.weight"] = state["_conv_stem.weight"] * 0 + 0.125
    mine = tmp_path / "lite0.pt"
    torch.save(state, mine)
    encoder = EfficientNetLite0(
        3, BackboneSpec(type="efficientnet_lite0", pretrained_backbone_path=str(mine))
    )
    assert float(encoder.stem[0].weight.detach().mean()) == pytest.approx(0.125)
    other = tmp_path / "other.pt"
    torch.save(ChangeNetLite(Spec()).state_dict(), other)
    with pytest.raises(CheckpointError, match=r"is not an EfficientNet-Lite0 state dict") as info:
        EfficientNetLite0(
            3, BackboneSpec(type="efficientnet_lite0", pretrained_backbone_path=str(other))
        )
    assert "\n" not in str(info.value)
