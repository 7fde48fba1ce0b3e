"""Exported model packages (ONNX, TorchScript) and the scorers that run them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from automl_deft.errors import UserError
from automl_deft.model.checkpoint import save_checkpoint
from automl_deft.model.data import PairSource
from automl_deft.model.network import ChangeNetLite
from automl_deft.model.spec import Spec, load_spec
from automl_deft.model.train import train
from automl_deft.serving import (
    CheckpointScorer,
    OnnxScorer,
    Package,
    PackageError,
    PackageManifest,
    Scorer,
    TorchScriptScorer,
    export_package,
    load_package,
    open_scorer,
)
from automl_deft.serving.package import prepare_for_export
from automl_deft.workspace import Workspace, read_dataset_csv

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("onnx", "torchscript")
CARD = "# Model card\n\nA tiny test model.\n"
TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tiny_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-epoch cnn_small model of the tiny workspace."""
    ws = Workspace.at(tiny_ws)
    out = tmp_path_factory.mktemp("serving_train")
    spec = load_spec(ws.spec_path, {"train.num_epochs": 1, "dataset.classify.batch_size": 16})
    tr, va = read_dataset_csv(ws.train_csv), read_dataset_csv(ws.val_csv)
    return train(spec, tr, va, ws.images_dir, out, progress=False).best_checkpoint


@pytest.fixture(scope="module")
def packages(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Package]:
    root = tmp_path_factory.mktemp("packages")
    return {
        fmt: export_package(
            checkpoint,
            root / fmt,
            fmt,  # type: ignore[arg-type]
            threshold=0.25,
            extra_files={"MODEL_CARD.md": CARD},
        )
        for fmt in FORMATS
    }


@pytest.fixture(scope="module")
def kpi_source(tiny_ws: Path, checkpoint: Path) -> PairSource:
    scorer = CheckpointScorer(checkpoint)
    frame = read_dataset_csv(tiny_ws / "kpi" / "testing_set.csv")
    return PairSource.from_frame(frame, tiny_ws / "kpi" / "images", scorer.naming, scorer.size)


@pytest.fixture(scope="module")
def reference(checkpoint: Path, kpi_source: PairSource) -> np.ndarray:
    return CheckpointScorer(checkpoint).score(kpi_source, 32)


def _random_source(
    n: int,
    channels: int,
    size: tuple[int, int],
    seed: int = 0,
    *,
    tiled: tuple[int, int] | None = None,
) -> PairSource:
    """``n`` random pairs of ``channels x H x W`` images: ``tiled`` (width, height) of the
    lights tiled into one image, or one light of ``size``."""
    gen = torch.Generator().manual_seed(seed)
    w, h = tiled or size
    golden = torch.randint(0, 256, (n, channels, h, w), generator=gen, dtype=torch.uint8)
    test = torch.roll(golden, shifts=(1, 1), dims=(2, 3)).clone()
    test[:, :, 5:9, 5:9] = 255  # a "defect" on every pair
    labels = ["PASS" if i % 2 else "short" for i in range(n)]
    return PairSource(
        frame=pd.DataFrame({"label": labels}),
        targets=torch.tensor([0 if i % 2 else 1 for i in range(n)]),
        size=size,
        golden_files=[],
        input_files=[],
        pixels=torch.stack([golden, test], dim=1),
    )


def _untrained_checkpoint(path: Path, overrides: dict) -> Path:
    torch.manual_seed(0)
    spec = Spec().with_overrides(overrides)
    model = ChangeNetLite(spec).eval()
    for m in model.modules():  # non-trivial BN statistics, so folding them must be right
        # (EfficientNet keeps its pretrained ones: random statistics there blow activations
        # up to ~250 and float32 rounding then moves scores by ~1e-4)
        if isinstance(m, torch.nn.BatchNorm2d) and spec.model.backbone.type == "cnn_small":
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    payload = {
        "state_dict": model.state_dict(),
        "spec": spec.to_dict(),
        "arch": model.arch,
        "epoch": 0,
        "step": 0,
        "metrics": {},
    }
    save_checkpoint(path, payload)
    return path


# --- scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_package_scores_equal_the_checkpoints(
    packages: dict[str, Package],
    kpi_source: PairSource,
    reference: np.ndarray,
    fmt: str,
    batch_size: int,
) -> None:
    scorer = open_scorer(packages[fmt].root)
    scores = scorer.score(kpi_source, batch_size)
    assert scores.dtype == np.float64 and scores.shape == (len(kpi_source),)
    np.testing.assert_allclose(scores, reference, atol=TOL, rtol=0)
    assert reference.std() > 0  # a model that tells pairs apart, not a constant


def test_scorers_share_one_interface(
    checkpoint: Path, packages: dict[str, Package], kpi_source: PairSource
) -> None:
    scorers: list[Scorer] = [
        CheckpointScorer(checkpoint),
        TorchScriptScorer(packages["torchscript"]),
        OnnxScorer(packages["onnx"].root / "package.json"),
    ]
    for scorer in scorers:
        assert scorer.naming.lights == ("SolderLight",) and scorer.naming.ext == ".png"
        assert scorer.size == (64, 64)
        assert isinstance(scorer.describe(), str) and "\n" not in scorer.describe()
    assert [s.threshold for s in scorers] == [None, 0.25, 0.25]
    assert "onnxruntime" in scorers[2].describe() and "TorchScript" in scorers[1].describe()


def test_progress_bar_is_shown_only_when_asked(
    packages: dict[str, Package], kpi_source: PairSource, capsys: pytest.CaptureFixture[str]
) -> None:
    scorer = open_scorer(packages["onnx"].root)
    scorer.score(kpi_source, 64)
    assert "pair" not in capsys.readouterr().err
    scorer.score(kpi_source, 64, progress=True)
    assert f"{len(kpi_source)}/{len(kpi_source)}" in capsys.readouterr().err


def test_scorer_refuses_pairs_at_another_size(packages: dict[str, Package]) -> None:
    scorer = open_scorer(packages["onnx"].root)
    with pytest.raises(UserError, match="expects 64x64"):
        scorer.score(_random_source(2, 1, (32, 32)), 4)
    with pytest.raises(UserError, match="model expects 1 "):
        scorer.score(_random_source(2, 2, (64, 64)), 4)
    with pytest.raises(UserError, match="batch size"):
        scorer.score(_random_source(2, 1, (64, 64)), 0)


def test_package_scorers_do_not_need_the_checkpoint(
    checkpoint: Path, tmp_path: Path, kpi_source: PairSource, reference: np.ndarray
) -> None:
    ckpt = tmp_path / "model.pt"
    shutil.copyfile(checkpoint, ckpt)
    for fmt in FORMATS:
        export_package(ckpt, tmp_path / fmt, fmt, threshold=0.5)  # type: ignore[arg-type]
    ckpt.unlink()
    for fmt in FORMATS:
        moved = shutil.move(tmp_path / fmt, tmp_path / f"moved-{fmt}")
        scores = open_scorer(moved).score(kpi_source, 16)
        np.testing.assert_allclose(scores, reference, atol=TOL, rtol=0)


def test_graphs_run_without_automl_deft(packages: dict[str, Package]) -> None:
    """A consumer needs only torch (TorchScript) or onnxruntime (ONNX), not this project."""
    code = """
import sys
sys.modules["automl_deft"] = None  # importing the project would fail
import numpy as np, onnxruntime as ort, torch
onnx_dir, ts_dir = sys.argv[1:]
g = np.random.default_rng(0).random((3, 1, 64, 64), dtype=np.float32)
t = np.roll(g, 1, axis=3)
s = ort.InferenceSession(onnx_dir + "/model.onnx", providers=["CPUExecutionProvider"])
a = s.run(["siamese_score"], {"golden": g, "test": t})[0]
b = torch.jit.load(ts_dir + "/model.ts")(torch.from_numpy(g), torch.from_numpy(t)).numpy()
assert a.shape == b.shape == (3,), (a.shape, b.shape)
assert np.abs(a - b).max() < 1e-4
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(packages["onnx"].root), str(packages["torchscript"].root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- the package ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_package_round_trip(packages: dict[str, Package], checkpoint: Path, fmt: str) -> None:
    pkg = packages[fmt]
    files = sorted(p.name for p in pkg.root.iterdir())
    model_file = {"onnx": "model.onnx", "torchscript": "model.ts"}[fmt]
    assert files == sorted(["MODEL_CARD.md", "package.json", model_file])
    assert (pkg.root / "MODEL_CARD.md").read_text(encoding="utf-8") == CARD
    loaded = load_package(pkg.root)
    assert loaded == load_package(pkg.root / "package.json") == pkg
    m = loaded.manifest
    assert PackageManifest.from_json(json.loads(json.dumps(m.to_json()))) == m
    raw = json.loads((pkg.root / "package.json").read_text(encoding="utf-8"))
    assert raw["format"] == "automl-deft-package" and raw["format_version"] == 1
    assert raw["model_format"] == fmt and raw["model_file"] == model_file
    assert raw["threshold"] == 0.25
    assert [i["name"] for i in raw["inputs"]] == ["golden", "test"]
    assert raw["inputs"][0]["shape"] == [-1, 1, 64, 64] and raw["outputs"][0]["shape"] == [-1]
    pre = raw["preprocessing"]
    assert (pre["image_width"], pre["image_height"], pre["lights"]) == (64, 64, ["SolderLight"])
    assert pre["ext"] == ".png" and pre["channels_per_light"] == 1 and pre["scale"] == "uint8 / 255"
    assert pre["registration"] == {**pre["registration"], "max_shift": 2, "in_graph": True}
    assert pre["normalisation"]["mean"] == [0.5] and pre["normalisation"]["std"] == [0.25]
    assert raw["source"]["backbone"] == "cnn_small" and raw["source"]["arch"]["width"] == 16
    from automl_deft.serving.manifest import sha256_file

    assert raw["source"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert raw["model_sha256"] == sha256_file(pkg.model_path)
    assert raw["extra_files"] == {"MODEL_CARD.md": sha256_file(pkg.root / "MODEL_CARD.md")}
    assert {"automl_deft", "torch"} <= set(raw["versions"])
    assert ({"onnx", "onnxruntime"} <= set(raw["versions"])) == (fmt == "onnx")
    assert (raw.get("opset") == 17) == (fmt == "onnx")


@pytest.mark.parametrize("fmt", FORMATS)
def test_tampered_model_file_is_refused(
    packages: dict[str, Package], tmp_path: Path, fmt: str
) -> None:
    copy = Path(shutil.copytree(packages[fmt].root, tmp_path / "pkg"))
    model = copy / packages[fmt].manifest.model_file
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    for opener in (load_package, open_scorer):
        with pytest.raises(PackageError, match=r"does not match package\.json") as info:
            opener(copy)
        assert "\n" not in str(info.value)
    model.unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(copy)


def _edit(data: dict, path: str, value: object) -> dict:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("surprise", 1, "unknown .*key 'surprise'"),
        ("preprocessing.surprise", 1, "unknown .*key 'preprocessing.surprise'"),
        ("threshold", "high", "key 'threshold': expected a number"),
        ("preprocessing.image_width", 6.5, "key 'preprocessing.image_width': expected an integer"),
        ("model_format", "tflite", "is not one of 'onnx', 'torchscript'"),
        ("threshold", _DELETE, "missing key 'threshold'"),
        ("preprocessing.registration", _DELETE, "missing key 'preprocessing.registration'"),
        ("format", "something-else", "not an automl-deft package manifest"),
        ("format_version", 2, "package format version 2, this release reads version 1"),
        ("threshold", 3.0, "threshold 3.0 is not a probability"),
        ("model_file", "../model.onnx", "model_file '../model.onnx' is not 'model.onnx'"),
    ],
)
def test_manifest_is_read_strictly(
    packages: dict[str, Package], tmp_path: Path, key: str, value: object, message: str
) -> None:
    copy = Path(shutil.copytree(packages["onnx"].root, tmp_path / "pkg"))
    data = json.loads((copy / "package.json").read_text(encoding="utf-8"))
    (copy / "package.json").write_text(json.dumps(_edit(data, key, value)), encoding="utf-8")
    with pytest.raises(PackageError, match=message) as info:
        load_package(copy)
    assert "\n" not in str(info.value)


def test_missing_or_corrupt_package_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="model package not found"):
        load_package(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match=r"no package\.json"):
        load_package(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "package.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(tmp_path / "bad")
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "package.json").write_text("[]", encoding="utf-8")
    with pytest.raises(PackageError, match="expected a JSON object"):
        load_package(tmp_path / "list" / "package.json")
    with pytest.raises(UserError, match="no model at"):
        open_scorer(tmp_path / "nowhere.pt")


def test_a_non_empty_out_dir_is_refused_and_nothing_is_half_written(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(PackageError, match="exists and is not empty") as info:
        export_package(checkpoint, out, "onnx", threshold=0.5)
    assert "\n" not in str(info.value)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]

    # An export that fails half-way leaves neither the package nor its temp directory.
    import automl_deft.serving.package as package_module

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(package_module, "_self_check", boom)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_package(checkpoint, tmp_path / "half", "torchscript", threshold=0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]
    monkeypatch.undo()

    # An existing empty directory is fine: it becomes the package.
    (tmp_path / "empty").mkdir()
    pkg = export_package(checkpoint, tmp_path / "empty", "torchscript", threshold=0.5)
    assert load_package(tmp_path / "empty") == pkg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "pkg"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "tflite"}, "unknown package format 'tflite'"),
        ({"threshold": 1.5}, "threshold 1.5 is not a probability"),
        ({"threshold": float("nan")}, "threshold nan is not a probability"),
        ({"opset": 99}, "ONNX opset 99 is not supported"),
        ({"fmt": "torchscript", "opset": 17}, "opset applies to ONNX packages only"),
        ({"extra_files": {"../card.md": "x"}}, "must be a plain file name"),
        ({"extra_files": {"package.json": "{}"}}, "reserved for the package"),
    ],
)
def test_bad_export_arguments_are_one_line_errors(
    checkpoint: Path, tmp_path: Path, kwargs: dict, message: str
) -> None:
    args = {"fmt": "onnx", "threshold": 0.5, **kwargs}
    with pytest.raises(PackageError, match=message):
        export_package(checkpoint, tmp_path / "pkg", **args)
    assert not (tmp_path / "pkg").exists()


def test_open_scorer_dispatches_on_the_path(checkpoint: Path, packages: dict[str, Package]) -> None:
    onnx_root, ts_root = packages["onnx"].root, packages["torchscript"].root
    assert type(open_scorer(onnx_root)) is OnnxScorer
    assert type(open_scorer(onnx_root / "package.json")) is OnnxScorer
    assert type(open_scorer(onnx_root / "model.onnx")) is OnnxScorer
    assert type(open_scorer(ts_root)) is TorchScriptScorer
    ck = open_scorer(checkpoint)
    assert type(ck) is CheckpointScorer and ck.threshold is None
    assert open_scorer(checkpoint, threshold=0.3).threshold == 0.3
    assert open_scorer(onnx_root, threshold=0.9).threshold == 0.9
    with pytest.raises(PackageError, match="not ONNX"):
        OnnxScorer(ts_root)
    with pytest.raises(UserError, match=r"threshold 2\.0 is not a probability"):
        open_scorer(checkpoint, threshold=2.0)


def test_the_kpis_flag_every_row_threshold_is_accepted(checkpoint: Path, tmp_path: Path) -> None:
    lowest = float(np.nextafter(0.0, -np.inf))  # compute_kpi's candidate below a 0.0 score
    pkg = export_package(checkpoint, tmp_path / "pkg", "torchscript", threshold=lowest)
    assert load_package(pkg.root).threshold == lowest


# --- backbones and channels -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "size"),
    [
        pytest.param(
            {"model.backbone.type": "efficientnet_lite0"}, (32, 32), id="efficientnet_lite0"
        ),
        pytest.param(
            {
                "dataset.classify.num_input": 2,
                "dataset.classify.input_map": {"SolderLight": 0, "Top": 1},
                "model.classify.align_max_shift": 1,
            },
            (48, 40),
            id="cnn_small-2lights",
        ),
    ],
)
def test_backbones_and_lights_export(tmp_path: Path, overrides: dict, size: tuple) -> None:
    overrides = {
        **overrides,
        "dataset.classify.image_width": size[0],
        "dataset.classify.image_height": size[1],
    }
    ckpt = _untrained_checkpoint(tmp_path / "model.pt", overrides)
    reference = CheckpointScorer(ckpt)
    channels, height, width = reference.geometry.shape  # the lights tiled into one image
    source = _random_source(9, channels, size, tiled=(width, height))
    want = reference.score(source, 4)
    for fmt in FORMATS:
        pkg = export_package(ckpt, tmp_path / fmt, fmt, threshold=0.5)  # type: ignore[arg-type]
        assert pkg.manifest.inputs[0].shape == [-1, channels, height, width]
        scorer = open_scorer(pkg.root)
        assert scorer.naming == reference.naming and scorer.size == size
        for batch_size in (1, 4):
            got = scorer.score(source, batch_size)
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    norm = load_package(tmp_path / "onnx").manifest.preprocessing.normalisation
    if overrides.get("model.backbone.type") == "efficientnet_lite0":
        assert norm.mean == pytest.approx([0.485, 0.456, 0.406])
    else:
        assert norm.mean == [0.5]


def test_memory_efficient_swish_is_swapped_on_the_exported_copy_only() -> None:
    from efficientnet_lite_pytorch.utils import MemoryEfficientSwish, Swish

    spec = Spec().with_overrides(
        {"model.backbone.type": "efficientnet_lite0", "model.backbone.pretrained": False}
    )
    model = ChangeNetLite(spec).eval()
    relu6 = sum(isinstance(m, torch.nn.ReLU6) for m in model.modules())
    model.encoder.stem[2] = MemoryEfficientSwish()  # as efficientnet-b* blocks hold it
    graph = prepare_for_export(model)
    kinds = [type(m) for m in graph.modules()]
    assert MemoryEfficientSwish not in kinds and Swish in kinds
    assert kinds.count(torch.nn.ReLU6) == relu6 - 1  # Lite's ReLU6 stay ReLU6
    assert isinstance(model.encoder.stem[2], MemoryEfficientSwish)  # the caller's model untouched
    g, t = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(graph(g, t), ChangeNetLite.score(model(g, t)))


# --- the benchmark --------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_latency_benchmark_prints_a_table(checkpoint: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "predict_latency.py"),
            "--checkpoint",
            str(checkpoint),
            "--repeats",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for word in ("torch", "torchscript", "onnx", "p50", "p99", "vs torch"):
        assert word in done.stdout


def test_preprocessing_of_a_spec_is_what_the_package_states(
    packages: dict[str, Package], checkpoint: Path
) -> None:
    from automl_deft.model.checkpoint import load_model
    from automl_deft.serving import preprocessing_of

    _, spec, _ = load_model(checkpoint)
    assert preprocessing_of(spec) == packages["onnx"].manifest.preprocessing
    eff = preprocessing_of(Spec().with_overrides({"model.backbone.type": "efficientnet_lite0"}))
    assert eff.normalisation.std == pytest.approx([0.229, 0.224, 0.225])
    assert eff.registration.max_shift == Spec().model.classify.align_max_shift
    assert eff.to_json()["lights"] == ["SolderLight"]
