"""Row hygiene: planted duplicates refused, planted label flips flagged (both workspace kinds)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl_deft.deft import hygiene
from automl_deft.deft.config import HygieneConfig
from automl_deft.deft.hygiene import (
    ResidualBounds,
    ScoreReference,
    ScoreThresholds,
    describe_pair,
    judge_label,
    screen_new_rows,
    write_screened,
)
from automl_deft.deft.sdg.base import read_image
from automl_deft.deft.sdg.difference import shift
from automl_deft.errors import StageError
from automl_deft.model.spec import load_spec
from automl_deft.records import HygieneSummary
from automl_deft.synth.smt import generate_smt_workspace
from automl_deft.workspace import (
    SCORE_COLUMN,
    ImageNaming,
    Workspace,
    is_pass,
    read_dataset_csv,
    relative_image_dir,
    resolve_image_path,
)

KINDS = ("exact", "noise", "jpeg", "shift")
"""How a planted copy differs from its training row: byte copy, +-2 grey levels of noise,
a JPEG round trip (with the noise), both sides moved by one pixel."""


@pytest.fixture(scope="module")
def smt_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("smt") / "ws"
    generate_smt_workspace(root, seed=0, scale="tiny", workers=1)
    return root


@pytest.fixture(params=["pcb", "smt"])
def ws(request: pytest.FixtureRequest) -> tuple[Workspace, ImageNaming]:
    """Each workspace kind (read-only) with its image naming."""
    root = request.getfixturevalue("tiny_ws" if request.param == "pcb" else "smt_ws")
    w = Workspace.at(root)
    return w, load_spec(w.spec_path).naming()


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(image).save(path, format="JPEG", quality=90)
    else:
        Image.fromarray(image).save(path, format="PNG")


def _vary(
    image: np.ndarray, kind: str, move: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    if kind == "shift":
        return np.ascontiguousarray(shift(image, *move))
    noisy = np.clip(image.astype(np.int16) + rng.integers(-2, 3, image.shape), 0, 255)
    out = noisy.astype(np.uint8)
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=90)
        with Image.open(buf) as decoded:
            out = np.asarray(decoded.convert("RGB" if out.ndim == 3 else "L")).copy()
    return out


def _plant(
    w: Workspace,
    naming: ImageNaming,
    rows: pd.DataFrame,
    kinds: list[str],
    out: Path,
    prefix: str,
    seed: int = 0,
) -> pd.DataFrame:
    """Copies of ``rows`` under new object names (images under ``out``), one per kind."""
    rng = np.random.default_rng(seed)
    planted = []
    for n, ((_, row), kind) in enumerate(zip(rows.iterrows(), kinds, strict=True)):
        name = f"{prefix}_{n:03d}"
        move = (int(rng.choice([-1, 1])), int(rng.choice([-1, 1])))
        new = row.copy()
        for column in ("input_path", "golden_path"):
            folder = out / prefix / column
            for light in naming.lights:
                src = resolve_image_path(
                    w.images_dir, row[column], row["object_name"], light, naming.ext
                )
                dest = folder / f"{name}_{light}{naming.ext}"
                if kind == "exact":
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(src.read_bytes())
                else:
                    _write(dest, _vary(read_image(src), kind, move, rng))
            new[column] = relative_image_dir(w.images_dir, folder)
        new["object_name"] = name
        new["planted"] = f"{kind}:{row['object_name']}"
        planted.append(new)
    return pd.DataFrame(planted)


def _screen(
    w: Workspace,
    naming: ImageNaming,
    candidates: pd.DataFrame,
    cfg: HygieneConfig | None = None,
    **kw: object,
) -> hygiene.Screened:
    frame = candidates.fillna("").astype(str)
    return screen_new_rows(
        frame,
        read_dataset_csv(w.train_csv),
        images_dir=w.images_dir,
        naming=naming,
        cfg=cfg or HygieneConfig(),
        **kw,  # type: ignore[arg-type]
    )


# -- duplicates ---------------------------------------------------------------------------


def test_planted_duplicates_are_refused_and_real_rows_kept(
    ws: tuple[Workspace, ImageNaming], tmp_path: Path
) -> None:
    w, naming = ws
    train = read_dataset_csv(w.train_csv)
    pool = read_dataset_csv(w.pool_csv)
    rng = np.random.default_rng(0)
    sources = train.iloc[rng.choice(len(train), 20, replace=False)]
    planted = _plant(w, naming, sources, list(KINDS) * 5, tmp_path, "copy")
    real = pool.iloc[rng.choice(len(pool), 60, replace=False)].assign(planted="")
    # copies of real rows of the same batch, after them
    in_batch = _plant(w, naming, real.head(8), list(KINDS) * 2, tmp_path, "again", seed=1)
    mixed = pd.concat([real, planted]).sample(frac=1.0, random_state=0)
    candidates = pd.concat([mixed, in_batch], ignore_index=True).assign(source="mining_pool")

    screened = _screen(w, naming, candidates)

    refused = screened.refused.set_index("object_name")
    copies = candidates[candidates["planted"] != ""]
    caught = copies["object_name"].isin(refused.index)
    rate = caught.mean()
    false_refusals = candidates[candidates["planted"] == ""]["object_name"].isin(refused.index)
    print(f"planted copies refused {rate:.0%}; real rows refused {false_refusals.sum()}/60")
    assert rate >= 0.8
    assert false_refusals.sum() <= 1
    for kind in KINDS:  # every kind of copy is caught (most of the time)
        of_kind = copies["planted"].str.startswith(f"{kind}:")
        assert caught[of_kind].mean() >= 0.6, kind
    # each refused copy names the row it repeats, and where that row is
    for name, row in refused.iterrows():
        source = candidates.set_index("object_name").loc[name, "planted"].split(":")[1]
        where = "train" if str(name).startswith("copy") else "batch"
        assert row["duplicate_of"] == f"{source} ({where})"
        exact = row["hygiene_check"] == "exact_duplicate"
        assert exact == candidates.set_index("object_name").loc[name, "planted"].startswith(
            "exact:"
        )
        assert (row["similarity"] == "") == exact
        if not exact:
            assert float(row["similarity"]) >= HygieneConfig().near_duplicate_similarity
    assert (
        screened.summary.exact_duplicates == (refused["hygiene_check"] == "exact_duplicate").sum()
    )
    assert screened.summary.near_duplicates == (refused["hygiene_check"] == "near_duplicate").sum()
    assert screened.summary.kept == len(screened.kept) == len(candidates) - len(refused)
    assert not screened.kept["object_name"].isin(refused.index).any()
    assert list(screened.kept.columns) == list(candidates.columns)


def test_a_stricter_threshold_lets_noisy_copies_through(tiny_ws: Path, tmp_path: Path) -> None:
    """The near-duplicate decision follows ``near_duplicate_similarity``: at 1.0 only the
    byte-identical copy is refused."""
    w = Workspace.at(tiny_ws)
    naming = load_spec(w.spec_path).naming()
    train = read_dataset_csv(w.train_csv)
    planted = _plant(w, naming, train.head(3), ["exact", "noise", "jpeg"], tmp_path, "copy")
    strict = HygieneConfig(near_duplicate_similarity=1.0001)
    screened = _screen(w, naming, planted.assign(source="sdg"), strict)
    assert screened.refused["object_name"].tolist() == ["copy_000"]
    assert _screen(w, naming, planted.assign(source="sdg")).summary.near_duplicates == 2


def test_descriptor_tells_a_copy_from_another_capture_of_the_same_place() -> None:
    """Synthetic pairs: the same golden captured twice (each with its own illumination
    gradient, speckle and sensor noise) is not a duplicate; a copy with +-2 grey levels
    of noise, or moved by a pixel on both sides, is."""
    rng = np.random.default_rng(0)
    golden = np.zeros((64, 64), np.uint8)
    golden[10:54:8, 4:60] = 255
    golden[4:60, 30:34] = 255
    yy, xx = np.mgrid[0:64, 0:64]

    def capture() -> np.ndarray:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = 4 * (np.cos(angle) * (xx - 32) + np.sin(angle) * (yy - 32)) / 32
        out = golden * 0.9 + 10 + ramp + rng.normal(0, 1.5, golden.shape)
        out[rng.integers(0, 64, 4), rng.integers(0, 64, 4)] += 60
        return np.clip(out, 0, 255).astype(np.uint8)

    test = capture()
    base = describe_pair([test], [golden], channels=1, align=0)
    other = describe_pair([capture()], [golden], channels=1)
    noisy = describe_pair([_vary(test, "noise", (0, 0), rng)], [golden], channels=1)
    moved = describe_pair(
        [_vary(test, "shift", (1, -1), rng)], [_vary(golden, "shift", (1, -1), rng)], channels=1
    )
    assert (other.golden @ base.golden[0]).max() > 0.99  # the same place ...
    assert (other.difference @ base.difference[0]).max() < 0.5  # ... differs otherwise
    assert (noisy.difference @ base.difference[0]).max() > 0.95
    assert (moved.difference @ base.difference[0]).max() > 0.99
    assert (moved.golden @ base.golden[0]).max() > 0.99
    assert np.abs(noisy.gain[0] - base.gain[0]).max() <= hygiene.GAIN_TOLERANCE


# -- label errors -------------------------------------------------------------------------


def _flip(frame: pd.DataFrame, fraction: float, defects: list[str], seed: int) -> np.ndarray:
    """Flip the labels of about ``fraction`` of the rows in place; returns which."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(frame)) < fraction
    frame.loc[flipped, "label"] = [
        str(rng.choice(defects)) if is_pass(lab) else "PASS" for lab in frame.loc[flipped, "label"]
    ]
    return flipped


def _flip_candidates(w: Workspace) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """60 pool rows (30 PASS, 30 defects) with a third of them flipped; the candidates,
    which are flipped, and which are truly PASS."""
    pool = read_dataset_csv(w.pool_csv)
    rows = pd.concat(
        [pool[pool["label"] == "PASS"].head(30), pool[pool["label"] != "PASS"].head(30)],
        ignore_index=True,
    )
    true_pass = (rows["label"] == "PASS").to_numpy()
    defects = sorted(set(pool["label"]) - {"PASS"})
    flipped = _flip(rows, 1 / 3, defects, seed=3)
    return rows.assign(source="mining_pool"), flipped, true_pass


def _plausible_scores(
    true_pass: np.ndarray, unsure: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A decent model's out-of-sample scores of rows whose *true* class is known: PASS
    0.01-0.3, defects 0.7-0.99; rows in ``unsure`` 0.4-0.6."""
    scores = np.where(
        true_pass, rng.uniform(0.01, 0.3, len(true_pass)), rng.uniform(0.7, 0.99, len(true_pass))
    )
    scores[unsure] = rng.uniform(0.4, 0.6, int(unsure.sum()))
    return scores


def _reference(w: Workspace, rng: np.random.Generator) -> ScoreReference:
    val = read_dataset_csv(w.val_csv)
    passes = (val["label"] == "PASS").to_numpy()
    return ScoreReference(val["label"], _plausible_scores(passes, np.zeros(len(val), bool), rng))


def _rates(
    screened: hygiene.Screened, rows: pd.DataFrame, flipped: np.ndarray
) -> tuple[float, float]:
    flagged = rows["object_name"].isin(screened.flagged["object_name"]).to_numpy()
    return float(flagged[flipped].mean()), float(flagged[~flipped].mean())


def test_flipped_labels_flagged_by_the_residual_check_alone(
    ws: tuple[Workspace, ImageNaming],
) -> None:
    """No model: the independent check flags flipped labels. On bare boards a flip shows
    plainly (a good pair has no blob at all); on SMT a good pair's benign change overlaps
    the smallest defects', so fewer are caught there (the model signal makes up for it,
    next test)."""
    w, naming = ws
    rows, flipped, _ = _flip_candidates(w)
    screened = _screen(w, naming, rows)
    caught, false_flags = _rates(screened, rows, flipped)
    smt = naming.ext == ".jpg"
    print(f"residual alone: flipped flagged {caught:.0%}, correct rows flagged {false_flags:.0%}")
    assert caught >= (0.65 if smt else 0.8)
    assert false_flags <= 0.15
    assert set(screened.flagged["signals"]) == {"residual"}
    assert (screened.flagged[SCORE_COLUMN] == "").all()
    assert screened.summary.warnings == [
        "no model scores: label errors judged by the residual check alone"
    ]
    assert screened.summary.flagged_label_errors == len(screened.flagged)
    assert "t_PASS" not in screened.summary.thresholds
    bound = float(screened.summary.thresholds["residual_pass_above_px"])
    assert bound >= hygiene.MIN_PASS_BOUND_PX
    # flagged rows stay (label_errors: flag)
    assert len(screened.kept) == len(rows)


def test_flipped_labels_flagged_with_model_scores(ws: tuple[Workspace, ImageNaming]) -> None:
    """A plausible model (a third of the flipped rows scored as unsure) and the residual
    together catch >= 80% of the flips on both kinds; correct rows, false alarms included,
    are mostly left alone."""
    w, naming = ws
    rows, flipped, true_pass = _flip_candidates(w)
    rng = np.random.default_rng(4)
    unsure = flipped & (rng.random(len(rows)) < 1 / 3)
    scores = _plausible_scores(true_pass, unsure, rng)
    # hard negatives: correct PASS rows the model scores high (below the defects' mean)
    false_alarm = ~flipped & true_pass & (rng.random(len(rows)) < 0.5)
    scores[false_alarm] = rng.uniform(0.6, 0.75, int(false_alarm.sum()))
    reference = _reference(w, rng)

    screened = _screen(w, naming, rows, scores=scores, reference=reference)

    caught, false_flags = _rates(screened, rows, flipped)
    flagged = rows["object_name"].isin(screened.flagged["object_name"]).to_numpy()
    print(f"with scores: flipped flagged {caught:.0%}, correct rows flagged {false_flags:.0%}")
    assert caught >= 0.8
    assert false_flags <= 0.15
    assert flagged[false_alarm].mean() <= 0.2
    t = screened.summary.thresholds
    assert 0.7 < float(t["t_PASS"]) < 0.95 and 0.7 < float(t["t_defect"]) < 0.95
    assert float(t["reference_auc"]) > 0.99
    assert screened.summary.warnings == []
    assert {s for row in screened.flagged["signals"] for s in row.split("+")} <= {
        "model",
        "residual",
    }
    assert "model" in set(screened.flagged["signals"].str.split("+").sum())
    row = screened.flagged.iloc[0]
    assert float(row[SCORE_COLUMN]) == pytest.approx(
        scores[rows["object_name"] == row["object_name"]][0], rel=1e-5
    )
    assert row["label_error_reason"].startswith(f"labelled {row['label']} but ")


def test_a_model_that_has_not_learnt_is_not_listened_to(tiny_ws: Path) -> None:
    """Scores that do not separate the reference's classes (AUC ~0.5) leave the residual
    check alone, and the summary says why."""
    w = Workspace.at(tiny_ws)
    rows, _, _ = _flip_candidates(w)
    rng = np.random.default_rng(5)
    val = read_dataset_csv(w.val_csv)
    reference = ScoreReference(val["label"], rng.uniform(0.4, 0.45, len(val)))
    screened = _screen(
        w, ImageNaming(), rows, scores=rng.uniform(0.4, 0.45, len(rows)), reference=reference
    )
    alone = _screen(w, ImageNaming(), rows)
    assert screened.flagged["object_name"].tolist() == alone.flagged["object_name"].tolist()
    assert set(screened.flagged["signals"]) == {"residual"}
    assert len(screened.summary.warnings) == 1
    assert (
        "the model does not separate the reference's classes yet" in (screened.summary.warnings[0])
    )
    assert float(screened.summary.thresholds["reference_auc"]) < hygiene.MIN_REFERENCE_AUC
    assert screened.flagged[SCORE_COLUMN].ne("").all()  # the scores are still listed


def test_label_rule() -> None:
    """The model signal flags alone; the residual flags unless the model confidently
    confirms the label, and always when it is strong; without a model it flags alone."""
    bounds = ResidualBounds(pass_above=10, pass_strong=100, defect_at_most=2)
    cl = ScoreThresholds(t_pass=0.9, t_defect=0.8, auc=0.99)  # PASS confirmed <= 0.1, defect >= 0.8
    assert judge_label("PASS", 0, 0.85, bounds, cl).signals == ("model",)
    assert judge_label("PASS", 0, 0.7, bounds, cl).signals == ()  # a false alarm
    assert judge_label("PASS", 50, 0.5, bounds, cl).signals == ("residual",)  # model unsure
    assert judge_label("PASS", 50, 0.05, bounds, cl).signals == ()  # confidently PASS
    assert judge_label("PASS", 150, 0.05, bounds, cl).signals == ("residual",)  # strong
    assert judge_label("PASS", 50, 0.9, bounds, cl).signals == ("model", "residual")
    assert judge_label("PASS", 50, None, bounds, None).signals == ("residual",)
    assert judge_label("open", 0, 0.05, bounds, cl).signals == ("model", "residual")
    assert judge_label("open", 0, 0.85, bounds, cl).signals == ()  # confidently a defect
    assert judge_label("open", 0, 0.6, bounds, cl).signals == ("residual",)
    assert judge_label("open", 30, 0.3, bounds, cl).signals == ()
    assert judge_label("open", 0, float("nan"), bounds, cl).signals == ("residual",)
    off = ResidualBounds(None, None, None)
    assert judge_label("open", 0, None, off, None).signals == ()
    assert judge_label("Pass", 11, None, bounds, None).signals == ("residual",)
    verdict = judge_label("open", 0, 0.05, bounds, cl)
    assert verdict.reason == (
        "labelled open but the model scores it 0.05 (PASS rows average 0.1) and its largest "
        "change (0 px) is no more than a good pair's (<= 2 px, under most training defects)"
    )


def test_residual_bounds_follow_the_training_rows() -> None:
    change = np.array([0] * 95 + [3] * 5 + [0, 8, 9, 12, 20, 30, 40, 50, 60, 70])
    passes = np.array([True] * 100 + [False] * 10)
    b = hygiene.residual_bounds(change, passes)
    assert b.pass_above == hygiene.MIN_PASS_BOUND_PX  # 99th percentile 3 px < 4
    assert b.pass_strong == pytest.approx(np.percentile(change[~passes], 50))
    assert b.defect_at_most == 0  # the PASS rows' 90th percentile
    # too many training defects show nothing: no residual check of defect labels
    many_zero = np.array([0] * 100 + [0, 0, 9, 12, 20, 30, 40, 50, 60, 70])
    assert hygiene.residual_bounds(many_zero, passes).defect_at_most is None
    assert hygiene.residual_bounds(change[:3], passes[:3]) == ResidualBounds(None, None, None)


def test_score_reference_and_scores_must_match() -> None:
    with pytest.raises(StageError, match="hygiene reference has 2 labels but 3 scores"):
        hygiene.score_thresholds(ScoreReference(pd.Series(["PASS", "open"]), np.zeros(3)))
    few = ScoreReference(pd.Series(["PASS"] * 9 + ["open"]), np.linspace(0, 1, 10))
    assert hygiene.score_thresholds(few) is None


def test_scores_must_cover_every_candidate(tiny_ws: Path) -> None:
    w = Workspace.at(tiny_ws)
    pool = read_dataset_csv(w.pool_csv).head(3).assign(source="mining_pool")
    with pytest.raises(StageError, match="hygiene got 2 scores for 3 candidates"):
        _screen(w, ImageNaming(), pool, scores=np.zeros(2))


# -- behaviour and outputs ----------------------------------------------------------------


def _mixed_batch(w: Workspace, naming: ImageNaming, tmp_path: Path) -> pd.DataFrame:
    """Two exact copies of training rows (sdg) and 30 pool rows with 10 flips (mined)."""
    train = read_dataset_csv(w.train_csv)
    copies = _plant(w, naming, train.head(2), ["exact", "exact"], tmp_path, "copy")
    rows, _, _ = _flip_candidates(w)
    return pd.concat([copies.assign(source="sdg"), rows.head(30)], ignore_index=True)


def test_exclude_leaves_flagged_rows_out_and_flag_keeps_them(tiny_ws: Path, tmp_path: Path) -> None:
    w = Workspace.at(tiny_ws)
    naming = ImageNaming()
    batch = _mixed_batch(w, naming, tmp_path)
    flag = _screen(w, naming, batch)
    exclude = _screen(w, naming, batch, HygieneConfig(label_errors="exclude"))
    assert len(flag.flagged) > 0
    assert flag.flagged["object_name"].tolist() == exclude.flagged["object_name"].tolist()
    assert flag.kept["object_name"].isin(flag.flagged["object_name"]).sum() == len(flag.flagged)
    assert not exclude.kept["object_name"].isin(exclude.flagged["object_name"]).any()
    assert len(exclude.kept) == len(flag.kept) - len(flag.flagged)
    s = exclude.summary
    assert s.excluded_label_errors == s.flagged_label_errors == len(exclude.flagged)
    assert flag.summary.excluded_label_errors == 0
    assert s.candidates == len(batch) and s.kept == len(exclude.kept)
    assert s.by_source["sdg"] == {
        "candidates": 2,
        "kept": 0,
        "exact_duplicates": 2,
        "near_duplicates": 0,
        "flagged_label_errors": 0,
        "excluded_label_errors": 0,
    }
    mined = s.by_source["mining_pool"]
    assert mined["candidates"] == 30
    assert mined["kept"] == 30 - mined["flagged_label_errors"]
    assert s.thresholds["label_errors"] == "exclude"


def test_disabled_keeps_everything(tiny_ws: Path, tmp_path: Path) -> None:
    w = Workspace.at(tiny_ws)
    batch = _mixed_batch(w, ImageNaming(), tmp_path)
    screened = _screen(w, ImageNaming(), batch, HygieneConfig(enabled=False))
    pd.testing.assert_frame_equal(screened.kept, batch.fillna("").astype(str))
    assert screened.refused.empty and screened.flagged.empty
    s = screened.summary
    assert (s.candidates, s.kept, s.exact_duplicates, s.flagged_label_errors) == (32, 32, 0, 0)
    assert s.by_source["sdg"]["kept"] == 2 and s.by_source["mining_pool"]["candidates"] == 30
    assert s.warnings and "disabled" in s.warnings[0]


def test_write_screened_round_trips(tiny_ws: Path, tmp_path: Path) -> None:
    w = Workspace.at(tiny_ws)
    screened = _screen(w, ImageNaming(), _mixed_batch(w, ImageNaming(), tmp_path / "img"))
    out = tmp_path / "dataset"
    write_screened(screened, out)
    summary = HygieneSummary.from_json(json.loads((out / "hygiene.json").read_text()), "hygiene")
    assert summary == screened.summary
    refused = pd.read_csv(out / "hygiene_refused.csv", dtype=str, keep_default_na=False)
    flagged = pd.read_csv(out / "hygiene_flagged.csv", dtype=str, keep_default_na=False)
    assert refused["hygiene_check"].tolist() == ["exact_duplicate"] * 2
    assert refused["similarity"].tolist() == ["", ""]
    assert len(flagged) == summary.flagged_label_errors > 0
    for column in ("label_error_reason", "siamese_score", "change_px", "signals", "source"):
        assert column in flagged.columns
    # nothing flagged or refused still writes both files, with their columns
    empty = _screen(w, ImageNaming(), read_dataset_csv(w.pool_csv).head(0).assign(source=""))
    write_screened(empty, tmp_path / "none")
    assert "hygiene_check" in pd.read_csv(tmp_path / "none" / "hygiene_refused.csv").columns
    assert "signals" in pd.read_csv(tmp_path / "none" / "hygiene_flagged.csv").columns


def test_a_generated_defect_is_flagged_only_when_both_signals_agree(
    ws: tuple[Workspace, ImageNaming],
) -> None:
    """The same flipped rows as mined rows and as generated ones: a generated defect label
    is one by construction, so the residual alone does not flag it (a faint painted defect
    is what SDG is asked for); generated PASS rows are judged like any other."""
    w, naming = ws
    rows, _, _ = _flip_candidates(w)
    mined = _screen(w, naming, rows)
    made = _screen(w, naming, rows.assign(source="sdg"))
    pass_labelled = set(rows.loc[rows["label"] == "PASS", "object_name"])
    mined_defects = set(mined.flagged["object_name"]) - pass_labelled
    assert mined_defects  # the residual alone flags some defect labels of mined rows ...
    assert not set(made.flagged["object_name"]) - pass_labelled  # ... never of generated ones
    assert set(made.flagged["object_name"]) == set(mined.flagged["object_name"]) & pass_labelled
