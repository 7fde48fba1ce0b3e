"""Mining: the blocked top-k search against brute force, and the selection rules of mine()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import automl_deft.io
from automl_deft.deft.mining import (
    MINED_FOR,
    MINED_SIMILARITY,
    MiningLedger,
    MiningResult,
    blocked_topk,
    mine,
)
from automl_deft.errors import StageError
from automl_deft.workspace import leakage_keys


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(
    queries: np.ndarray, pool: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Full similarity matrix, sorted by similarity descending then index ascending."""
    ids = np.arange(len(pool)) if rows is None else np.sort(rows)
    sims = queries.astype(np.float32) @ pool[ids].astype(np.float32).T
    order = np.lexsort((np.broadcast_to(ids, sims.shape), -sims), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("block_rows", [1, 3, 7, 64, 100, 4096])
def test_blocked_topk_equals_brute_force(k: int, block_rows: int) -> None:
    rng = np.random.default_rng(k * 1000 + block_rows)
    queries = _unit(rng.standard_normal((9, 8)))
    pool = _unit(rng.standard_normal((100, 8)))
    sims, idx = blocked_topk(queries, pool, k, block_rows=block_rows)
    ref_sims, ref_idx = _brute(queries, pool, k)
    assert sims.shape == idx.shape == (9, k)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, rtol=0, atol=1e-6)
    assert (np.diff(sims, axis=1) <= 0).all()


@pytest.mark.parametrize("block_rows", [1, 2, 4, 100])
def test_blocked_topk_pool_smaller_than_k_returns_every_row(block_rows: int) -> None:
    rng = np.random.default_rng(1)
    queries, pool = _unit(rng.standard_normal((4, 5))), _unit(rng.standard_normal((3, 5)))
    sims, idx = blocked_topk(queries, pool, 5, block_rows=block_rows)
    assert sims.shape == idx.shape == (4, 3)
    np.testing.assert_array_equal(idx, _brute(queries, pool, 3)[1])
    assert sorted(idx[0].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("block_rows", [1, 2, 3, 5, 8, 1000])
def test_blocked_topk_ties_go_to_the_lower_index(block_rows: int) -> None:
    # One-hot queries against repeated prototypes: every similarity is exact, so
    # many rows tie, including across the k-th place and across block edges.
    rng = np.random.default_rng(7)
    protos = np.array([[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0, 0, 1]], dtype=np.float32)
    pool = protos[rng.integers(0, len(protos), size=40)]
    queries = np.eye(3, dtype=np.float32)
    for k in (1, 3, 6, 20):
        sims, idx = blocked_topk(queries, pool, k, block_rows=block_rows)
        ref_sims, ref_idx = _brute(queries, pool, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(sims, ref_sims)
    # The best rows for query 0 are the [1, 0, 0] rows, lowest indices first.
    first = np.flatnonzero((pool == protos[0]).all(axis=1))[:3]
    np.testing.assert_array_equal(
        blocked_topk(queries, pool, 3, block_rows=block_rows)[1][0], first
    )


@pytest.mark.parametrize("block_rows", [2, 16, 1000])
def test_blocked_topk_rows_searches_a_subset_and_returns_pool_indices(block_rows: int) -> None:
    rng = np.random.default_rng(3)
    queries, pool = _unit(rng.standard_normal((6, 4))), _unit(rng.standard_normal((50, 4)))
    rows = rng.choice(50, size=17, replace=False)  # unsorted on purpose
    sims, idx = blocked_topk(queries, pool, 4, block_rows=block_rows, rows=rows)
    ref_sims, ref_idx = _brute(queries, pool, 4, rows)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-6)
    assert set(idx.ravel()) <= set(rows.tolist())


def test_blocked_topk_empty_inputs_and_bad_arguments() -> None:
    q = _unit(np.ones((2, 3)))
    assert blocked_topk(q, np.zeros((0, 3), np.float32), 5)[1].shape == (2, 0)
    assert blocked_topk(np.zeros((0, 3), np.float32), q, 5)[0].shape == (0, 2)
    assert blocked_topk(q, q, 0)[0].shape == (2, 0)
    with pytest.raises(ValueError, match="same width"):
        blocked_topk(q, np.zeros((4, 2), np.float32), 1)
    with pytest.raises(ValueError, match="block_rows >= 1"):
        blocked_topk(q, q, 1, block_rows=0)


# --- mine() -------------------------------------------------------------------------------


def _angle(deg: float) -> list[float]:
    """A unit vector in the plane; cos(a - b) is the similarity of two such vectors."""
    r = np.deg2rad(deg)
    return [float(np.cos(r)), float(np.sin(r))]


def _frame(rows: list[tuple[str, str]], prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "input_path": [f"{prefix}/test"] * len(rows),
            "golden_path": [f"{prefix}/golden"] * len(rows),
            "label": [label for label, _ in rows],
            "object_name": [name for _, name in rows],
            "boardname": ["A"] * len(rows),
        }
    )


@pytest.fixture
def pool() -> tuple[pd.DataFrame, np.ndarray]:
    """Pool rows at known angles; cos 10° = 0.985, cos 20° = 0.940, cos 30° = 0.866."""
    spec = [
        ("short", "s0", 0),
        ("short", "s1", 10),
        ("Short ", "s2", 20),  # normalises to "short"
        ("short", "s3", 30),  # below the 0.9 cutoff for a target at 0°
        ("short", "s4", 60),
        ("open", "o0", 0),  # same direction, other label: never mined for a short
        ("PASS", "p0", 0),
        ("PASS", "p1", 90),
    ]
    frame = _frame([(label, name) for label, name, _ in spec], "pool")
    frame["severity"] = "high"  # extra pool columns travel with the row
    return frame, np.array([_angle(a) for _, _, a in spec], dtype=np.float32)


def _targets(spec: list[tuple[str, str, float]]) -> tuple[pd.DataFrame, np.ndarray]:
    frame = _frame([(label, name) for label, name, _ in spec], "kpi")
    return frame, np.array([_angle(a) for _, _, a in spec], dtype=np.float32)


def test_mine_keeps_the_label_and_the_cutoff(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("SHORT", "t0", 0)])
    result = mine(targets, t_emb, *pool, top_k=5, min_similarity=0.9)
    assert result.rows["object_name"].tolist() == ["s0", "s1", "s2"]
    assert result.rows[MINED_FOR].tolist() == ["t0"] * 3
    assert result.rows[MINED_SIMILARITY].tolist() == ["1.0000", "0.9848", "0.9397"]
    assert result.rows["severity"].tolist() == ["high"] * 3
    assert result.per_label == {
        "short": {
            "targets": 1,
            "pool_rows": 5,
            "already_mined": 0,
            "candidates": 3,
            "selected": 3,
        }
    }
    assert result.warnings == []
    assert result.rows.map(lambda v: isinstance(v, str)).all().all()


def test_mine_top_k_limits_each_target(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("short", "t0", 0)])
    result = mine(targets, t_emb, *pool, top_k=2, min_similarity=0.0)
    assert result.rows["object_name"].tolist() == ["s0", "s1"]


def test_mine_deduplicates_and_credits_the_most_similar_target(
    pool: tuple[pd.DataFrame, np.ndarray],
) -> None:
    # t0 (0°) and t1 (14°) both reach s0, s1 and s2; each row goes to its closer target.
    # t2 and t3 are the same vector: the tie on p1 goes to the first of them.
    targets, t_emb = _targets(
        [("short", "t0", 0), ("short", "t1", 14), ("PASS", "t2", 85), ("PASS", "t3", 85)]
    )
    result = mine(targets, t_emb, *pool, top_k=3, min_similarity=0.9)
    got = dict(zip(result.rows["object_name"], result.rows[MINED_FOR], strict=True))
    assert got == {"s0": "t0", "s1": "t1", "s2": "t1", "p1": "t2"}
    assert result.rows[MINED_SIMILARITY].tolist() == ["1.0000", "0.9976", "0.9945", "0.9962"]
    assert result.per_label["short"]["candidates"] == 6  # 3 per target, before de-duplication
    assert result.per_label["short"]["selected"] == 3
    assert result.per_label["PASS"] == {
        "targets": 2,
        "pool_rows": 2,
        "already_mined": 0,
        "candidates": 2,
        "selected": 1,
    }
    assert len(set(leakage_keys(result.rows))) == len(result.rows)


def test_mine_keeps_one_of_two_pool_rows_with_the_same_leakage_key(
    pool: tuple[pd.DataFrame, np.ndarray],
) -> None:
    frame, emb = pool
    frame = pd.concat([frame, frame.iloc[[1]]], ignore_index=True)
    emb = np.vstack([emb, np.array([_angle(1)], dtype=np.float32)])
    targets, t_emb = _targets([("short", "t0", 0)])
    result = mine(targets, t_emb, frame, emb, top_k=5, min_similarity=0.9)
    assert result.rows["object_name"].tolist() == ["s0", "s2", "s1"]  # pool order
    assert result.rows[MINED_SIMILARITY].tolist()[-1] == "0.9998"  # the closer copy


def test_ledger_excludes_earlier_picks_across_iterations(
    pool: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    path = tmp_path / "mining" / "ledger.json"
    targets, t_emb = _targets([("short", "t0", 0)])
    ledger = MiningLedger.load(path)
    assert len(ledger) == 0 and not path.exists()

    first = mine(targets, t_emb, *pool, top_k=2, min_similarity=0.9, ledger=ledger)
    assert first.rows["object_name"].tolist() == ["s0", "s1"]
    assert len(ledger) == 0  # mine() itself never records anything
    ledger.commit(first)
    assert path.is_file()

    reloaded = MiningLedger.load(path)
    assert reloaded.entries == {k: 1 for k in leakage_keys(first.rows)}
    second = mine(targets, t_emb, *pool, top_k=2, min_similarity=0.9, ledger=reloaded, iteration=2)
    # The search skips mined rows, so the target's next-nearest unmined rows come up.
    assert second.rows["object_name"].tolist() == ["s2"]  # s3 is below the cutoff
    assert second.per_label["short"]["already_mined"] == 2
    reloaded.commit(second)
    assert set(MiningLedger.load(path).entries.values()) == {1, 2}
    assert reloaded.picked(leakage_keys(pool[0])).tolist() == [
        True,
        True,
        True,
        False,
        False,
        False,
        False,
        False,
    ]


def test_ledger_add_keeps_the_first_iteration(tmp_path: Path) -> None:
    ledger = MiningLedger(tmp_path / "l.json")
    ledger.add(["a", "b"], 1)
    ledger.add(["b", "c"], 2)
    assert ledger.entries == {"a": 1, "b": 1, "c": 2}


def test_ledger_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ledger.json"
    ledger = MiningLedger(path, {"a": 1})
    ledger.save()
    before = path.read_text()

    def broken_dumps(*args: object, **kwargs: object) -> str:
        raise OSError("disk full")

    ledger.add(["b"], 2)
    monkeypatch.setattr(automl_deft.io.json, "dumps", broken_dumps)
    with pytest.raises(OSError, match="disk full"):
        ledger.save()
    monkeypatch.undo()
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]  # no temp file left
    assert json.loads(before)["entries"] == {"a": 1}


def test_ledger_load_rejects_foreign_and_corrupt_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StageError, match=r"^mining ledger .*bad\.json cannot be read"):
        MiningLedger.load(bad)
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"entries": {}}')
    with pytest.raises(StageError, match=r"is not a mining ledger \(no 'automl-deft-mining-"):
        MiningLedger.load(foreign)


def test_mine_warns_on_a_label_missing_from_the_pool(
    pool: tuple[pd.DataFrame, np.ndarray],
) -> None:
    targets, t_emb = _targets([("bridge", "t0", 0), ("short", "t1", 0)])
    result = mine(targets, t_emb, *pool)
    assert result.warnings == [
        "label 'bridge': 0 rows in the mining pool; nothing to mine — add pool data or rely on SDG"
    ]
    assert result.per_label["bridge"]["pool_rows"] == 0
    assert len(result.rows) == 3


def test_mine_warns_when_every_row_of_a_label_was_mined(
    pool: tuple[pd.DataFrame, np.ndarray], tmp_path: Path
) -> None:
    ledger = MiningLedger(tmp_path / "l.json")
    ledger.add(leakage_keys(pool[0].iloc[[5]]), 1)  # the only "open" row
    targets, t_emb = _targets([("open", "t0", 0)])
    result = mine(targets, t_emb, *pool, ledger=ledger, iteration=2)
    assert result.warnings == [
        "label 'open': all 1 pool rows were mined in earlier iterations; nothing left to "
        "mine — add pool data or rely on SDG"
    ]


def test_mine_warns_when_the_yield_halves(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("short", "t0", 0)])
    assert mine(targets, t_emb, *pool, previous_selected=6).warnings == []  # 3 of 6: not < half
    result = mine(targets, t_emb, *pool, previous_selected=7)
    assert result.warnings == [
        "mining yield halved: 7 → 3; the pool is running out of similar rows"
    ]
    assert mine(targets, t_emb, *pool, previous_selected=0).warnings == []


def test_mine_on_an_empty_pool(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame = pool[0].iloc[0:0]
    targets, t_emb = _targets([("short", "t0", 0), ("PASS", "t1", 0)])
    result = mine(targets, t_emb, frame, np.zeros((0, 2), np.float32))
    assert result.rows.empty
    assert list(result.rows.columns) == [*frame.columns, MINED_FOR, MINED_SIMILARITY]
    assert [w.split(":")[0] for w in result.warnings] == ["label 'PASS'", "label 'short'"]
    json.dumps(result.to_dict())


def test_mine_without_targets_selects_nothing(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, _ = _targets([])
    result = mine(targets, np.zeros((0, 2), np.float32), *pool)
    assert result.rows.empty and result.per_label == {} and result.warnings == []


def test_mining_result_summary_is_json_ready(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("short", "t0", 0), ("bridge", "t1", 0)])
    result = mine(targets, t_emb, *pool, top_k=4, min_similarity=0.95, iteration=3)
    summary = json.loads(json.dumps(result.to_dict()))
    assert isinstance(result, MiningResult)
    assert summary["iteration"] == 3 and summary["metric"] == "cosine"
    assert summary["top_k_per_target"] == 4 and summary["min_similarity"] == 0.95
    assert summary["targets"] == 2 and summary["selected"] == 2 and summary["candidates"] == 2
    assert len(summary["warnings"]) == 1 and set(summary["per_label"]) == {"bridge", "short"}


def test_mine_rejects_embeddings_that_do_not_match(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("short", "t0", 0)])
    with pytest.raises(StageError, match=r"^pool embeddings have shape \(7, 2\) for 8 pool rows"):
        mine(targets, t_emb, pool[0], pool[1][:7])
    with pytest.raises(StageError, match="target embeddings have 3 dimensions, pool embeddings 2"):
        mine(targets, np.ones((1, 3), np.float32), *pool)
    with pytest.raises(StageError, match=r"^pool embeddings hold NaN or infinite values; re-embed"):
        mine(targets, t_emb, pool[0], np.full_like(pool[1], np.nan))


def test_mine_blocks_give_the_same_selection(pool: tuple[pd.DataFrame, np.ndarray]) -> None:
    targets, t_emb = _targets([("short", "t0", 3), ("PASS", "t1", 80)])
    whole = mine(targets, t_emb, *pool, top_k=3, min_similarity=0.5)
    for block_rows in (1, 2, 3):
        blocked = mine(targets, t_emb, *pool, top_k=3, min_similarity=0.5, block_rows=block_rows)
        pd.testing.assert_frame_equal(blocked.rows, whole.rows)
