"""The consolidated pre-flight: nine sections, blocking problems, never a secret."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from automl_deft import preflight
from automl_deft.deft.config import DeftConfig, RegressionGate
from automl_deft.errors import UserError
from automl_deft.hpo.search import AutomlConfig, GuardConfig
from automl_deft.preflight import (
    SECTION_TITLES,
    GpuInfo,
    Preflight,
    build_preflight,
    docker_image_probe,
    gpu_batch_limit,
    resolve_image_ref,
)
from automl_deft.run_config import ComputeConfig, ImagesConfig, Phase3Config, RunConfig
from automl_deft.testing.deft_state import seeded_state
from automl_deft.workspace import Workspace

SECRET = "s3cr3t-value"


def build(ws: Path, config: RunConfig | None = None, **kwargs: Any) -> Preflight:
    kwargs.setdefault("check_images", False)
    kwargs.setdefault("image_probe", lambda ref: "PRESENT")
    kwargs.setdefault("env", {})
    return build_preflight(ws, config or RunConfig(), **kwargs)


def section(pf: Preflight, number: int) -> str:
    return "\n".join(pf.sections[number - 1].lines)


@pytest.fixture
def csv_copy(tiny_ws: Path, tmp_path: Path) -> Path:
    """Like ``tiny_ws_copy`` for tests that only change CSVs: the images are linked, not copied."""
    dest = tmp_path / "ws"
    images = Workspace.at(tiny_ws).images_dir
    shutil.copytree(
        tiny_ws, dest, ignore=lambda d, names: ["images"] if Path(d) == images.parent else []
    )
    Workspace.at(dest).images_dir.symlink_to(images, target_is_directory=True)
    return dest


@pytest.fixture(scope="module")
def default_pf(tiny_ws: Path) -> Preflight:
    """The full pipeline's pre-flight with the default config (read only)."""
    return build(tiny_ws)


def test_nine_sections_in_order_with_exact_titles(default_pf: Preflight) -> None:
    pf = default_pf
    assert [(s.number, s.title) for s in pf.sections] == [
        (1, "Workspace & platform"),
        (2, "Credentials"),
        (3, "Container images"),
        (4, "Datasets"),
        (5, "Phase 1 (AutoML)"),
        (6, "Phase 2 (DEFT)"),
        (7, "Phase 3 (AutoML warm-started)"),
        (8, "Compute estimate"),
        (9, "Confirmation"),
    ]
    assert tuple(s.title for s in pf.sections) == SECTION_TITLES
    assert pf.ok, pf.blocking


def test_text_has_headers_in_order_and_aligned_values(tiny_ws: Path, default_pf: Preflight) -> None:
    text = default_pf.text()
    positions = [text.index(f"\n{n}. {t}\n") for n, t in enumerate(SECTION_TITLES, start=1)]
    assert positions == sorted(positions)
    assert f"   workspace:       {Workspace.at(tiny_ws).root}\n" in text
    assert "   network_arch:    cnn_small backbone, learnable_difference_modules 3\n" in text
    assert "GPU:             none (CPU)" in text
    assert text.rstrip().endswith("and the Phase 1 winner failing to beat zero-shot.")


def test_markdown_has_headings_and_tables(default_pf: Preflight) -> None:
    md = default_pf.markdown()
    assert md.startswith("# AutoML + DEFT pre-flight: OK")
    for n, title in enumerate(SECTION_TITLES, start=1):
        assert f"\n## {n}. {title}\n" in md
    assert "| set | rows | PASS | defect |" in md
    assert "| train | 80 | 68 | 12 |" in md
    assert "| leakage | 0 overlapping rows (row key; image content not compared) |" in md


def test_to_dict_is_json_serialisable(default_pf: Preflight) -> None:
    d = default_pf.to_dict()
    back = json.loads(json.dumps(d))
    assert back["ok"] is True and back["blocking"] == []
    assert [s["number"] for s in back["sections"]] == list(range(1, 10))
    assert set(back["sections"][0]) == {"number", "title", "lines", "data"}
    datasets = back["sections"][3]["data"]
    assert datasets["overlapping_rows"] == 0
    assert datasets["kpi_labels"]["PASS"] == 138


def test_datasets_section_counts_and_leakage_line(tiny_ws: Path) -> None:
    pf = build(tiny_ws, check_images=True)
    lines = pf.sections[3].lines
    assert "mining_pool  320   224   96" in lines
    assert "KPI labels: PASS=138, copper=2, mousebite=2, open=2, pin-hole=2, short=2, spur=2" in (
        lines
    )
    assert "leakage: 0 overlapping rows (row key and image content)" in lines
    assert pf.sections[3].data["images_checked"] == 1308  # with the hold-out's 64 rows


@pytest.mark.parametrize("via_os_environ", [True, False])
def test_secret_value_is_never_printed(
    tiny_ws: Path, monkeypatch: pytest.MonkeyPatch, via_os_environ: bool
) -> None:
    env = {"KF_PIPELINES_TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET + "-aws"}
    if via_os_environ:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        pf = build(tiny_ws, env=None)
    else:
        pf = build(tiny_ws, env=env)
    for rendered in (pf.text(), pf.markdown(), json.dumps(pf.to_dict()), repr(pf)):
        assert SECRET not in rendered
    creds = {c["name"]: c["status"] for c in pf.sections[1].data["credentials"]}
    assert creds["KF_PIPELINES_TOKEN"] == "SET"
    assert creds["AWS_SECRET_ACCESS_KEY"] == "SET"
    assert creds["HF_TOKEN"] == "UNSET"
    assert any(line.startswith("KF_PIPELINES_TOKEN     SET ") for line in pf.sections[1].lines)


def test_leaky_workspace_blocks(csv_copy: Path) -> None:
    ws = Workspace.at(csv_copy)
    kpi = pd.read_csv(ws.kpi_csv, dtype=str, keep_default_na=False)
    train = pd.read_csv(ws.train_csv, dtype=str, keep_default_na=False)
    pd.concat([train, kpi.iloc[[0]]]).to_csv(ws.train_csv, index=False)
    pf = build(csv_copy)
    assert not pf.ok
    assert any(
        b.startswith("leakage: 1 row(s) appear in both train and kpi_test") for b in pf.blocking
    )
    assert "leakage: FOUND (1 problem(s), listed below)" in pf.sections[3].lines
    assert "train        81" in section(pf, 4)  # counts still shown
    assert section(pf, 9).startswith("Cannot proceed: fix the")


def test_kpi_set_as_validation_set_blocks(csv_copy: Path) -> None:
    ws = Workspace.at(csv_copy)
    shutil.copyfile(ws.kpi_csv, ws.val_csv)
    pf = build(csv_copy)
    assert not pf.ok
    assert f"{ws.val_csv} holds KPI test rows; the KPI test set cannot be the validation set" in (
        pf.blocking
    )


def test_missing_pool_blocks_only_when_deft_runs(csv_copy: Path) -> None:
    Workspace.at(csv_copy).pool_csv.unlink()
    pf = build(csv_copy)
    assert any(b.startswith("mining_pool CSV not found") for b in pf.blocking)
    assert "mining_pool  absent" in section(pf, 4)

    automl_only = build(csv_copy, phases=("automl",))
    assert automl_only.ok, automl_only.blocking

    skip = RunConfig(
        deft=DeftConfig(mining=dataclasses.replace(DeftConfig().mining, on_empty_pool="skip"))
    )
    skipping = build(csv_copy, skip)
    assert skipping.ok, skipping.blocking
    assert any("DEFT will skip mining" in w for w in skipping.warnings)


def test_skipped_phases_say_so(tiny_ws: Path) -> None:
    pf = build(tiny_ws, phases=("automl",))
    assert pf.sections[5].lines == ["skipped (this pipeline runs Phase 1 (AutoML) only)"]
    assert pf.sections[6].lines == ["skipped (this pipeline runs Phase 1 (AutoML) only)"]
    deft_only = build(tiny_ws, phases=("deft",))
    assert deft_only.sections[4].lines == ["skipped (this pipeline runs Phase 2 (DEFT) only)"]
    assert "baseline: trained here from the workspace spec" in deft_only.sections[5].lines
    disabled = build(tiny_ws, RunConfig(phase3=Phase3Config(enabled=False)))
    assert disabled.sections[6].lines == ["disabled (phase3.enabled: false)"]
    with pytest.raises(UserError, match=r"^unknown phase\(s\) phase4; choose from automl"):
        build(tiny_ws, phases=("phase4",))


def test_image_probe_statuses_and_resolution(tiny_ws: Path) -> None:
    answers = {
        "ghcr.io/automl-deft/automl-deft:0.1.0": "PRESENT",
        "docker.io/library/my-sdg:latest": "MISSING",
    }
    asked: list[str] = []

    def probe(ref: str) -> str:
        asked.append(ref)
        return answers.get(ref, "UNKNOWN (no docker CLI)")

    cfg = RunConfig(images=ImagesConfig(sdg="my-sdg"))
    pf = build(tiny_ws, cfg, image_probe=probe)
    assert asked == ["ghcr.io/automl-deft/automl-deft:0.1.0", "docker.io/library/my-sdg:latest"]
    statuses = {i["role"]: i["status"] for i in pf.sections[2].data["images"]}
    assert statuses == {"component": "PRESENT", "sdg": "MISSING"}
    assert pf.ok  # MISSING is not a blocker
    assert any("docker.io/library/my-sdg:latest is not present locally" in w for w in pf.warnings)

    unknown = build(tiny_ws, RunConfig(images=ImagesConfig(component="you/app")), image_probe=probe)
    (entry,) = unknown.sections[2].data["images"]
    assert (entry["resolved"], entry["status"], entry["detail"]) == (
        "docker.io/you/app:latest",
        "UNKNOWN",
        "no docker CLI",
    )
    odd = build(tiny_ws, image_probe=lambda ref: "maybe")
    assert odd.sections[2].data["images"][0]["status"] == "UNKNOWN"


@pytest.mark.parametrize(
    ("ref", "resolved"),
    [
        ("python", "docker.io/library/python:latest"),
        ("python:3.11", "docker.io/library/python:3.11"),
        ("you/app:1", "docker.io/you/app:1"),
        ("ghcr.io/x/y", "ghcr.io/x/y:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("app@sha256:abc", "docker.io/library/app@sha256:abc"),
    ],
)
def test_resolve_image_ref(ref: str, resolved: str) -> None:
    assert resolve_image_ref(ref) == resolved


def test_default_probe_without_docker_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert docker_image_probe()("docker.io/library/python:latest") == "UNKNOWN (no docker CLI)"


def test_compute_without_minutes_is_counts_only(default_pf: Preflight) -> None:
    pf = default_pf
    lines = pf.sections[7].lines
    assert "Phase 1: 6 trainings (≤ 7 with a lucky-winner re-run)" in lines
    assert lines[1].startswith("Phase 2: 3 iteration trainings (baseline pre-seeded: no training)")
    assert "total: 15 trainings (≤ 17)" in lines
    assert "time: job counts only (set compute.per_job_minutes for a time estimate)" in lines
    assert "min" not in section(pf, 8).replace("minutes", "")
    data = pf.sections[7].data
    assert data["total"] == {"trainings": 15, "max_trainings": 17}
    assert data["phase2"]["evaluations"] == 8


def test_compute_with_minutes(tiny_ws: Path) -> None:
    cfg = RunConfig(
        automl=AutomlConfig(max_trials=5),
        phase3=Phase3Config(max_trials=3),
        compute=ComputeConfig(per_job_minutes=10),
    )
    minutes = build(tiny_ws, cfg).sections[7]
    data = minutes.data
    assert data["phase1"] == {"trainings": 5, "max_trainings": 6, "minutes": 50, "max_minutes": 60}
    assert data["phase2"]["minutes"] == 30
    assert data["phase3"] == {"trainings": 3, "max_trainings": 4, "minutes": 30, "max_minutes": 40}
    assert data["total"] == {
        "trainings": 11,
        "max_trainings": 13,
        "minutes": 110,
        "max_minutes": 130,
    }
    lines = minutes.lines
    assert "Phase 1: 5 trainings (≤ 6 with a lucky-winner re-run) × 10 min = 50 min (≤ 60 min)" in (
        lines
    )
    assert "total: 11 trainings (≤ 13); 110 min (1.8 h) (≤ 130 min (2.2 h))" in lines

    # deft_only: the baseline is trained here at per-job time; iterations at per-iteration time.
    deft_cfg = dataclasses.replace(
        cfg, compute=ComputeConfig(per_job_minutes=10, per_iteration_minutes=33)
    )
    deft = build(tiny_ws, deft_cfg, phases=("deft",)).sections[7]
    assert deft.data["phase2"] == {
        "iterations": 3,
        "baseline_trainings": 1,
        "trainings": 4,
        "max_trainings": 4,
        "evaluations": 8,
        "minutes": 109,
        "max_minutes": 109,
    }
    assert deft.lines[0].endswith("; 3 × 33 min + 1 × 10 min = 109 min (1.8 h)")


def _seeded_state(results: Path, **deft: Any) -> Path:
    """A run whose baseline was pre-seeded by Phase 1 (its ``train`` stage committed)."""
    return seeded_state(results, config=DeftConfig(**deft), baseline_source="automl_phase1")


def test_resuming_is_detected(tiny_ws: Path, tmp_path: Path) -> None:
    results = tmp_path / "run_x"
    _seeded_state(results)
    pf = build(tiny_ws, phases=("deft", "phase3"), results_dir=results)
    lines = pf.sections[5].lines
    assert f"run: resuming {results} at baseline · evaluate" in lines
    assert "baseline: Phase 1 winner (automl_phase1) — no baseline training" in lines
    assert pf.sections[5].data["resuming"] is True
    assert pf.sections[7].data["phase2"]["baseline_trainings"] == 0
    assert pf.warnings == []

    fresh = build(tiny_ws, results_dir=tmp_path / "new")
    assert f"run: fresh: {tmp_path / 'new'}" in fresh.sections[5].lines


def test_resumed_settings_win_over_the_config(tiny_ws: Path, tmp_path: Path) -> None:
    results = tmp_path / "run_y"
    _seeded_state(results, max_iterations=2)
    pf = build(tiny_ws, results_dir=results)
    assert "max_iterations: 2" in pf.sections[5].lines
    assert any("max_iterations differ" in w for w in pf.warnings)


def test_confirmation_names_only_the_gates_that_apply(tiny_ws: Path) -> None:
    cfg = RunConfig(
        automl=AutomlConfig(guards=GuardConfig(allow_no_gain_over_zero_shot=True)),
        deft=DeftConfig(regression=RegressionGate(enabled=False)),
    )
    line = build(tiny_ws, cfg).sections[8].lines[0]
    assert line == (
        "Proceed? After this, nothing asks again; only these gates can still stop the run: "
        "leakage or missing files in an assembled set and a DEFT stage error."
    )
    only = build(tiny_ws, cfg, phases=("automl",)).sections[8].lines[0]
    assert only == "Proceed? After this, nothing asks again; only an error can still stop the run."


def test_bad_config_blocks_with_the_fix(tiny_ws: Path) -> None:
    cfg = RunConfig(
        automl=AutomlConfig(algorithm="gradient-magic"),
        deft=DeftConfig(kpi_target="very good"),
    )
    pf = build(tiny_ws, cfg, hpo_backend="sagemaker")
    joined = "\n".join(pf.blocking)
    assert "automl.algorithm: unknown search algorithm 'gradient-magic'" in joined
    assert "unknown search backend 'sagemaker'; choose one of optuna, katib" in joined
    assert "deft.kpi_target:" in joined


def test_gpu_rule_of_thumb(tiny_ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert gpu_batch_limit(24) == 8
    assert gpu_batch_limit(48) == 16
    assert gpu_batch_limit(80) is None
    monkeypatch.setattr(preflight, "visible_gpus", lambda: [GpuInfo("RTX 4090", 24 * 10**9)])
    pf = build(tiny_ws, RunConfig(automl=AutomlConfig(batch_size=32)))
    assert "GPU: RTX 4090 (22.4 GiB)" in pf.sections[0].lines
    assert "GPUs: 1" in pf.sections[5].lines
    (warning,) = pf.warnings
    assert warning.startswith("batch size 32 exceeds the GPU memory rule of thumb for RTX 4090")
    assert pf.ok
    small = build(tiny_ws, RunConfig(automl=AutomlConfig(batch_size=8)))
    assert small.warnings == []


def test_phase1_section_shows_the_zero_shot_level_phase1_must_beat(tiny_ws: Path) -> None:
    """The zero-shot guard's level, computed before any training (the same number the
    guard compares with after the search)."""
    from automl_deft.hpo.guards import zero_shot_far
    from automl_deft.hpo.search import plan_search

    pf = build(tiny_ws, check_images=True)
    level = pf.sections[4].data["zero_shot_far_pct"]
    assert isinstance(level, float)
    plan = plan_search(tiny_ws, RunConfig().automl, results_dir=tiny_ws / "never-written")
    assert level == zero_shot_far(plan.problem, RunConfig().automl.guards.zero_shot_method)
    assert not (tiny_ws / "never-written").exists()
    assert f"zero-shot level: {level:.2f}% FAR at 100% recall on the validation set" in (
        section(pf, 5)
    )
    assert "Phase 1's winner must beat it" in section(pf, 5)
    unscored = build(tiny_ws)  # check_images=False: nothing is decoded
    assert unscored.sections[4].data["zero_shot_far_pct"] is None
    assert "zero-shot level: not computed" in section(unscored, 5)


def test_datasets_section_says_what_the_model_sees(tiny_ws: Path, tmp_path: Path) -> None:
    """Greyscale stays one channel; a colour four-light workspace is RGB, tiled."""
    from automl_deft.synth.smt import generate_smt_workspace

    assert (
        "model input: 1 light, greyscale, linear of 64x64 -> 1x64x64; decided from the "
        "images (color_mode: auto)"
    ) in section(build(tiny_ws), 4)
    smt = tmp_path / "smt"
    generate_smt_workspace(smt, seed=0, scale="tiny")
    text = section(build(smt), 4)
    assert "model input: 4 lights, RGB, linear of 128x128 -> 3x512x128" in text
