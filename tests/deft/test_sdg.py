"""SDG backends: registry, budget split, and the three built-ins on the tiny workspace."""

from __future__ import annotations

import json
import logging
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl_deft.deft.sdg import (
    SDG_BACKENDS,
    SDG_COLUMNS,
    SDGBackend,
    SDGContext,
    SDGRequest,
    allocate_budget,
    get_sdg_backend,
    register_sdg_backend,
)
from automl_deft.deft.sdg.base import ROW_COLUMNS, label_slug
from automl_deft.deft.sdg.cutpaste import find_defect
from automl_deft.errors import SpecError, StageError, UserError
from automl_deft.synth.defects import DEFECT_TYPES
from automl_deft.workspace import (
    REQUIRED_COLUMNS,
    ImageNaming,
    Workspace,
    read_dataset_csv,
    resolve_image_path,
)

# -- helpers ---------------------------------------------------------------------------


def _ctx(ws_root: Path, out: Path, **kw: Any) -> SDGContext:
    ws = Workspace.at(ws_root)
    fields: dict[str, Any] = {
        "images_dir": ws.images_dir,
        "naming": ImageNaming(),
        "image_size": (64, 64),
        "train_frame": read_dataset_csv(ws.train_csv),
        "out_images_dir": out / "images" / "sdg",
        "work_dir": out / "sdg",
    }
    fields.update(kw)
    return SDGContext(**fields)


def _requests(ws_root: Path, labels: list[str], count: int) -> list[SDGRequest]:
    kpi = read_dataset_csv(Workspace.at(ws_root).kpi_csv)
    return [SDGRequest(lab, count, kpi[kpi["label"] == lab]) for lab in labels]


def _files(ctx: SDGContext, row: pd.Series, column: str) -> list[Path]:
    return [
        resolve_image_path(ctx.images_dir, row[column], row["object_name"], light, ctx.naming.ext)
        for light in ctx.naming.lights
    ]


def _load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def _check_rows(rows: pd.DataFrame, ctx: SDGContext, backend: str) -> None:
    """Schema, provenance, files on disk, and a visible defect in every input image."""
    assert tuple(rows.columns) == ROW_COLUMNS
    assert rows["object_name"].is_unique
    assert (rows["sdg_backend"] == backend).all()
    assert all(isinstance(v, str) for v in rows.to_numpy().ravel())
    for _, row in rows.iterrows():
        assert row["object_name"].startswith(f"sdg_it{ctx.iteration}_{label_slug(row['label'])}_")
        inputs, goldens = _files(ctx, row, "input_path"), _files(ctx, row, "golden_path")
        assert all(p.is_file() for p in inputs + goldens)
        assert Path(ctx.out_images_dir).resolve() in inputs[0].resolve().parents
        assert _shows_defect([_load(p) for p in inputs], [_load(p) for p in goldens], row["label"])


def _shows_defect(inputs: list[np.ndarray], goldens: list[np.ndarray], label: str) -> bool:
    """A defect blob survives cutpaste's own detector (thin mousebites: enough changed pixels)."""
    if label != "mousebite":
        return find_defect(inputs, goldens) is not None
    test, golden = inputs[0].astype(int), goldens[0].astype(int)
    best = min(
        int((np.abs(test - np.roll(golden, (dy, dx), axis=(0, 1)))[2:-2, 2:-2] > 100).sum())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )
    return best >= 5


def _tree_bytes(rows: pd.DataFrame, ctx: SDGContext) -> dict[str, bytes]:
    return {
        f"{row['object_name']}:{col}:{i}": p.read_bytes()
        for _, row in rows.iterrows()
        for col in ("input_path", "golden_path")
        for i, p in enumerate(_files(ctx, row, col))
    }


# -- budget and registry -----------------------------------------------------------------


def test_allocate_budget_is_proportional_and_sums_to_total() -> None:
    need = {"open": 6, "short": 3, "spur": 1, "copper": 0}
    out = allocate_budget(20, need)
    assert list(out) == list(need)
    assert sum(out.values()) == 20
    assert out == {"open": 12, "short": 6, "spur": 2, "copper": 0}
    assert allocate_budget(10, need) == {"open": 6, "short": 3, "spur": 1, "copper": 0}
    # every label with need gets at least one, the surplus goes by largest remainder
    assert allocate_budget(4, {"a": 100, "b": 1, "c": 1}) == {"a": 2, "b": 1, "c": 1}
    # ties break by name, whatever the order of the mapping
    assert allocate_budget(3, {"b": 1, "a": 1}) == {"b": 1, "a": 2}
    assert allocate_budget(1, {"b": 1, "a": 1}) == {"b": 0, "a": 1}
    # too small a budget: the labels with the most need first
    assert allocate_budget(2, {"x": 1, "y": 5, "z": 3}) == {"x": 0, "y": 1, "z": 1}


def test_allocate_budget_edge_cases() -> None:
    assert allocate_budget(0, {"open": 3}) == {"open": 0}
    assert allocate_budget(5, {"open": 0, "short": 0}) == {"open": 0, "short": 0}
    assert allocate_budget(5, {}) == {}
    for total in range(0, 30):
        out = allocate_budget(total, {"a": 7, "b": 2, "c": 1, "d": 0})
        assert sum(out.values()) == total and out["d"] == 0
        assert out["a"] >= out["b"] >= out["c"]
        if total >= 3:
            assert min(out["a"], out["b"], out["c"]) >= 1
    with pytest.raises(UserError, match="SDG budget must be >= 0, got -1"):
        allocate_budget(-1, {"open": 1})


def test_registry_names_the_choices() -> None:
    assert {"procedural-pcb", "cutpaste", "command"} <= set(SDG_BACKENDS)
    for name in ("procedural-pcb", "cutpaste", "command"):
        backend = get_sdg_backend(name)
        assert isinstance(backend, SDGBackend) and backend.name == name
    with pytest.raises(SpecError, match=r"unknown SDG backend 'gan'; choose one of command, "):
        get_sdg_backend("gan")
    assert SDG_COLUMNS == ("sdg_backend", "sdg_source", "sdg_check")


def test_register_a_backend_and_refuse_a_taken_name() -> None:
    @register_sdg_backend
    class Fake(SDGBackend):
        name = "fake-test-backend"

        def supported_labels(self, ctx: SDGContext) -> frozenset[str] | None:
            return None

        def generate(self, requests: Any, ctx: SDGContext) -> pd.DataFrame:
            return pd.DataFrame(columns=list(ROW_COLUMNS))

    try:
        assert isinstance(get_sdg_backend("fake-test-backend"), Fake)
        with pytest.raises(UserError, match="'fake-test-backend' is taken"):

            @register_sdg_backend
            class Other(Fake):
                name = "fake-test-backend"

    finally:
        SDG_BACKENDS.pop("fake-test-backend", None)


# -- procedural-pcb ----------------------------------------------------------------------


def test_procedural_makes_every_requested_pair(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _ctx(tiny_ws, tmp_path)
    backend = get_sdg_backend("procedural-pcb")
    assert backend.supported_labels(ctx) == frozenset(DEFECT_TYPES) | {"PASS"}
    assert backend.supported_labels(_ctx(tiny_ws, tmp_path, hard_negatives=False)) == frozenset(
        DEFECT_TYPES
    )
    rows = backend.generate(_requests(tiny_ws, list(DEFECT_TYPES), 2), ctx)
    assert len(rows) == 2 * len(DEFECT_TYPES)
    assert rows["label"].value_counts().to_dict() == dict.fromkeys(DEFECT_TYPES, 2)
    _check_rows(rows, ctx, "procedural-pcb")
    train = ctx.train_frame.set_index("object_name")
    assert (train.loc[rows["sdg_source"], "label"] == "PASS").all()
    assert list(rows["boardname"]) == list(train.loc[rows["sdg_source"], "boardname"])


def test_procedural_targets_the_weak_boards(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _ctx(tiny_ws, tmp_path)
    kpi = read_dataset_csv(Workspace.at(tiny_ws).kpi_csv)
    weak = kpi[kpi["label"] == "short"].assign(boardname="B")  # only metadata steers SDG
    rows = get_sdg_backend("procedural-pcb").generate([SDGRequest("short", 10, weak)], ctx)
    assert len(rows) == 10
    assert (rows["boardname"] == "B").sum() >= 6  # TARGET_SHARE of the draws, the rest any board


def test_procedural_is_deterministic(tiny_ws: Path, tmp_path: Path) -> None:
    requests = _requests(tiny_ws, ["open", "pin-hole"], 2)
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ctx = _ctx(tiny_ws, tmp_path / name, seed=seed)
        rows = get_sdg_backend("procedural-pcb").generate(requests, ctx)
        runs.append(_tree_bytes(rows, ctx))
    assert runs[0] == runs[1]
    assert runs[0].keys() == runs[2].keys() and runs[0] != runs[2]


def test_procedural_needs_one_light_and_no_options(
    tiny_ws: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # (the spec says greyscale, so no file of these made-up lights is probed for colour)
    two = _ctx(tiny_ws, tmp_path, naming=ImageNaming(lights=("Top", "Side")), color_mode="grey")
    backend = get_sdg_backend("procedural-pcb")
    assert backend.refusal(two) is None
    assert backend.supported_labels(two) == frozenset({"PASS"})  # hard negatives: any lights
    with caplog.at_level(logging.WARNING):
        rows = backend.generate(_requests(tiny_ws, ["open"], 3), two)
    assert rows.empty and tuple(rows.columns) == ROW_COLUMNS
    assert "generated 0 of 3 'open' pairs (procedural-pcb paints single-light images only" in (
        caplog.text
    )
    bad = _ctx(tiny_ws, tmp_path, options={"strength": 2})
    with pytest.raises(
        StageError, match=r"unknown sdg\.options for the procedural-pcb backend: strength"
    ):
        backend.generate(_requests(tiny_ws, ["open"], 1), bad)


def test_procedural_refuses_a_colour_spec_in_one_line(tiny_ws: Path, tmp_path: Path) -> None:
    backend = get_sdg_backend("procedural-pcb")
    assert backend.refusal(_ctx(tiny_ws, tmp_path)) is None  # greyscale files, color_mode auto
    # With hard negatives (the default) a colour workspace gets PASS pairs only ...
    assert backend.supported_labels(_ctx(tiny_ws, tmp_path, color_mode="rgb")) == {"PASS"}
    # ... without them there is nothing it can make there.
    rgb = _ctx(tiny_ws, tmp_path, color_mode="rgb", hard_negatives=False)
    line = (
        "the procedural-pcb SDG backend paints greyscale images only and this workspace is "
        "colour (dataset.classify.color_mode is 'rgb'); set deft.sdg.backend: cutpaste, which "
        "pastes real training defects in colour under every light"
    )
    assert backend.refusal(rgb) == line
    with pytest.raises(StageError, match=rf"^{re.escape(line)}$"):
        backend.supported_labels(rgb)
    with pytest.raises(StageError, match=rf"^{re.escape(line)}$"):
        backend.generate(_requests(tiny_ws, ["open"], 2), rgb)
    assert not (tmp_path / "images").exists()  # nothing written


# -- cutpaste ----------------------------------------------------------------------------


def test_cutpaste_moves_training_defects_onto_clean_boards(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _ctx(tiny_ws, tmp_path)
    backend = get_sdg_backend("cutpaste")
    train = ctx.train_frame.set_index("object_name")
    assert backend.supported_labels(ctx) == frozenset(train["label"])  # PASS: hard negatives
    rows = backend.generate(_requests(tiny_ws, ["open", "copper", "pin-hole"], 4), ctx)
    assert 6 <= len(rows) <= 12
    _check_rows(rows, ctx, "cutpaste")
    for _, row in rows.iterrows():
        defect, clean = row["sdg_source"].split(";")
        assert train.loc[defect, "label"] == row["label"]  # pixels from training rows only
        assert train.loc[clean, "label"] == "PASS"
        assert row["boardname"] == train.loc[clean, "boardname"]
        src = train.loc[clean]
        golden = resolve_image_path(
            ctx.images_dir, src["golden_path"], clean, "SolderLight", ".png"
        )
        assert _files(ctx, row, "golden_path")[0].read_bytes() == golden.read_bytes()
        # the input is the clean row's tested image with a small patch pasted in
        before = _load(
            resolve_image_path(ctx.images_dir, src["input_path"], clean, "SolderLight", ".png")
        )
        after = _load(_files(ctx, row, "input_path")[0])
        changed = np.abs(after.astype(int) - before.astype(int)) > 0
        assert 3 <= changed.sum() <= 0.1 * changed.size


def test_cutpaste_is_deterministic_and_warns_without_sources(
    tiny_ws: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    requests = _requests(tiny_ws, ["spur", "scratch"], 3)
    runs = []
    for name in ("a", "b"):
        ctx = _ctx(tiny_ws, tmp_path / name)
        with caplog.at_level(logging.WARNING):
            rows = get_sdg_backend("cutpaste").generate(requests, ctx)
        assert set(rows["label"]) == {"spur"}
        runs.append(_tree_bytes(rows, ctx))
    assert runs[0] == runs[1] and runs[0]
    assert "generated 0 of 3 'scratch' pairs (no defect rows of it" in caplog.text


def _colour_workspace(tiny_ws: Path, root: Path, lights: tuple[str, ...]) -> pd.DataFrame:
    """Part of the tiny training set re-written as RGB images, one tinted copy per light."""
    src = Workspace.at(tiny_ws)
    train = read_dataset_csv(src.train_csv)
    frame = pd.concat([train[train["label"] != "PASS"], train[train["label"] == "PASS"][:20]])
    tints = [np.array([1.0, 0.8, 0.5]), np.array([0.4, 0.9, 1.0])]
    for _, row in frame.iterrows():
        for col in ("input_path", "golden_path"):
            gray = _load(
                resolve_image_path(
                    src.images_dir, row[col], row["object_name"], "SolderLight", ".png"
                )
            )
            for light, tint in zip(lights, tints, strict=False):
                rgb = np.rint(gray[..., None] * tint).astype(np.uint8)
                dst = resolve_image_path(root, row[col], row["object_name"], light, ".png")
                dst.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb).save(dst)
    return frame.reset_index(drop=True)


def test_cutpaste_multi_light_colour(tiny_ws: Path, tmp_path: Path) -> None:
    lights = ("Top", "Side")
    images = tmp_path / "images"
    frame = _colour_workspace(tiny_ws, images, lights)
    ctx = SDGContext(
        images_dir=images,
        naming=ImageNaming(lights=lights),
        image_size=(64, 64),
        train_frame=frame,
        out_images_dir=tmp_path / "out",
        work_dir=tmp_path / "work",
    )
    rows = get_sdg_backend("cutpaste").generate(_requests(tiny_ws, ["short", "copper"], 2), ctx)
    assert len(rows) >= 2
    _check_rows(rows, ctx, "cutpaste")
    for _, row in rows.iterrows():
        top, side = (_load(p) for p in _files(ctx, row, "input_path"))
        assert top.shape == side.shape == (64, 64, 3)
        assert not np.array_equal(top, side)  # each light keeps its own pixels


# -- command -----------------------------------------------------------------------------

GENERATOR = textwrap.dedent(
    """
    import csv, json, os, shutil, sys, time
    from pathlib import Path

    request_file, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    assert os.environ["AUTOML_DEFT_SDG_REQUEST"] == str(request_file)
    assert os.environ["AUTOML_DEFT_SDG_OUT"] == str(out)
    if mode == "fail":
        print("loading model", file=sys.stderr)
        print("CUDA out of memory: boom", file=sys.stderr)
        sys.exit(3)
    if mode == "sleep":
        time.sleep(30)
    req = json.loads(request_file.read_text())
    sources = req["clean_sources"]
    rows = []
    for r in req["requests"]:
        n = r["count"] + (1 if mode == "many" else 0)
        for i in range(n):
            s = sources[i % len(sources)]
            d = out / r["label"]
            d.mkdir(exist_ok=True)
            shutil.copyfile(s["golden_files"][0], d / f"{i}_g.png")
            shutil.copyfile(s["input_files"][0], d / f"{i}_i.png")
            rows.append({
                "label": "scratch" if mode == "label" else r["label"],
                "input_file": f"{r['label']}/{i}_i.png",
                "golden_file": f"{r['label']}/{i}_g.png" if mode != "missing" else "nope.png",
                "source": s["object_name"],
            })
    with open(out / "generated.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["label", "input_file", "golden_file", "source"])
        w.writeheader()
        w.writerows(rows)
    """
)


def _command_ctx(tiny_ws: Path, tmp_path: Path, mode: str, **options: Any) -> SDGContext:
    script = tmp_path / "generate.py"
    script.write_text(GENERATOR)
    opts = {"command": [sys.executable, str(script), "{request}", "{out_dir}", mode], **options}
    return _ctx(tiny_ws, tmp_path / "run", options=opts)


def test_command_contract_round_trip(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _command_ctx(tiny_ws, tmp_path, "ok", labels=["Open", "short"])
    backend = get_sdg_backend("command")
    assert backend.supported_labels(ctx) == frozenset({"open", "short"})
    rows = backend.generate(_requests(tiny_ws, ["open", "short"], 3), ctx)
    assert len(rows) == 6
    assert tuple(rows.columns) == ROW_COLUMNS
    train = ctx.train_frame.set_index("object_name")
    assert list(rows["boardname"]) == list(train.loc[rows["sdg_source"], "boardname"])
    for _, row in rows.iterrows():
        assert all(
            p.is_file() for p in _files(ctx, row, "input_path") + _files(ctx, row, "golden_path")
        )
    request = json.loads((ctx.work_dir / "sdg_request.json").read_text())
    assert request["version"] == 1 and request["lights"] == ["SolderLight"]
    assert request["image_ext"] == ".png" and request["out_dir"] == str(
        (ctx.work_dir / "out").resolve()
    )
    assert [r["count"] for r in request["requests"]] == [3, 3]
    weak = request["requests"][0]["weak_samples"]
    assert weak and all(
        set(w) == {"object_name", "label", "boardname"} for w in weak
    )  # no KPI files
    clean = request["clean_sources"]
    assert len(clean) == (ctx.train_frame["label"] == "PASS").sum()
    assert all(
        Path(f).is_absolute() and Path(f).is_file() for c in clean for f in c["golden_files"]
    )


def test_command_options_are_checked(tiny_ws: Path, tmp_path: Path) -> None:
    backend = get_sdg_backend("command")
    for options, message in (
        ({}, "sdg.options.command must be a non-empty list"),
        ({"command": "gen {request}", "timeout_s": 0}, "timeout_s must be a positive number"),
        ({"command": "gen", "labels": "open"}, "labels must be a list of labels"),
        ({"command": "gen", "retries": 2}, "unknown sdg.options for the command backend: retries"),
    ):
        with pytest.raises(StageError, match=message):
            backend.supported_labels(_ctx(tiny_ws, tmp_path, options=options))
    assert backend.supported_labels(_ctx(tiny_ws, tmp_path, options={"command": "gen"})) is None


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", r"exited with status 3: loading model \| CUDA out of memory: boom; fix"),
        ("missing", r"generated.csv line 2: file 'nope.png' does not exist"),
        ("label", r"label 'scratch' was not requested \(requested: open\)"),
        ("many", r"more than the 2 requested 'open' pairs"),
    ],
)
def test_command_failures_are_stage_errors(
    tiny_ws: Path, tmp_path: Path, mode: str, message: str
) -> None:
    ctx = _command_ctx(tiny_ws, tmp_path, mode)
    with pytest.raises(StageError, match=message):
        get_sdg_backend("command").generate(_requests(tiny_ws, ["open"], 2), ctx)
    assert not list(Path(ctx.out_images_dir).rglob("*.png"))  # nothing imported from a bad run


def test_command_timeout_kills_the_generator(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _command_ctx(tiny_ws, tmp_path, "sleep", timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(StageError, match=r"SDG command timed out after 0.5 s; raise"):
        get_sdg_backend("command").generate(_requests(tiny_ws, ["open"], 1), ctx)
    assert time.monotonic() - start < 10


def test_command_cannot_start(tiny_ws: Path, tmp_path: Path) -> None:
    ctx = _ctx(tiny_ws, tmp_path, options={"command": ["/nonexistent/generator"]})
    with pytest.raises(StageError, match="SDG command '/nonexistent/generator' cannot start"):
        get_sdg_backend("command").generate(_requests(tiny_ws, ["open"], 1), ctx)


def test_required_columns_come_first() -> None:
    assert ROW_COLUMNS[: len(REQUIRED_COLUMNS)] == REQUIRED_COLUMNS
