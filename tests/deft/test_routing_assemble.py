"""Routing rules and assembling/validating an iteration's training set."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from automl_deft.deft.assemble import assemble, validate_training_set, write_assembled
from automl_deft.deft.routing import route
from automl_deft.errors import StageError
from automl_deft.workspace import ImageNaming, Workspace, read_dataset_csv


def _weak(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "input_path": [f"k/{i}" for i in range(len(labels))],
            "golden_path": [f"g/{i}" for i in range(len(labels))],
            "label": labels,
            "object_name": [f"o{i}" for i in range(len(labels))],
        }
    )


def test_route_mining_sdg_both_and_dropped() -> None:
    weak = _weak(["PASS", "open", "Short", "odd"])
    r = route(weak, pool_labels={"PASS", "short"}, sdg_labels=frozenset({"open", "short"}))
    assert sorted(r.mining) == ["PASS", "short"]
    assert sorted(r.sdg) == ["open", "short"]
    assert r.dropped == ["odd"]
    assert r.to_dict()["rows"]["sdg"] == {"open": 1, "short": 1}


def test_route_nothing_routable_is_a_stage_error() -> None:
    with pytest.raises(StageError, match="no weak sample can be routed"):
        route(_weak(["odd"]), pool_labels=None, sdg_labels=frozenset({"open"}))


def test_route_pass_never_goes_to_sdg() -> None:
    r = route(_weak(["PASS"]), pool_labels={"PASS"}, sdg_labels=None)
    assert list(r.mining) == ["PASS"] and not r.sdg


def test_route_empty_weak_is_empty() -> None:
    r = route(_weak([]), pool_labels=None, sdg_labels=None)
    assert not r.mining and not r.sdg and not r.dropped


def test_assemble_is_monotonic_and_skips_duplicates(tiny_ws: Path, tmp_path: Path) -> None:
    ws = Workspace.at(tiny_ws)
    train = read_dataset_csv(ws.train_csv)
    pool = read_dataset_csv(ws.pool_csv)
    mined = pool.head(5).copy()
    mined["mined_for"] = "kpi_1"
    mined["mined_similarity"] = "0.9500"
    dup = pd.concat([mined, mined.head(1), train.head(1)], ignore_index=True)
    a1 = assemble(train, None, sdg_rows=None, mined_rows=dup, iteration=1)
    assert a1.previous_rows == len(train)
    assert a1.mined_rows == 5 and a1.skipped_duplicates == 2
    assert len(a1.frame) == len(train) + 5
    assert "mined_for" not in a1.frame.columns
    assert a1.frame.iloc[: len(train)]["object_name"].tolist() == train["object_name"].tolist()
    csv, prov = write_assembled(a1, tmp_path, 1)
    provenance = pd.read_csv(prov, dtype=str, keep_default_na=False)
    assert provenance["source"].value_counts().to_dict() == {
        "base_train": len(train),
        "mining_pool": 5,
    }
    # Iteration 2 on top: earlier additions become previous_iter_train, base stays base.
    a2 = assemble(
        read_dataset_csv(csv), provenance, sdg_rows=None, mined_rows=pool.iloc[5:7], iteration=2
    )
    assert len(a2.frame) == len(a1.frame) + 2
    assert a2.provenance["source"].value_counts().to_dict() == {
        "base_train": len(train),
        "previous_iter_train": 5,
        "mining_pool": 2,
    }
    validate_training_set(
        a2.frame,
        val_frame=read_dataset_csv(ws.val_csv),
        kpi_frame=read_dataset_csv(ws.kpi_csv),
        images_dir=ws.images_dir,
        naming=ImageNaming(),
    )


def test_validation_hard_stops_on_leakage_and_missing_files(tiny_ws: Path) -> None:
    ws = Workspace.at(tiny_ws)
    train, val, kpi = (read_dataset_csv(p) for p in (ws.train_csv, ws.val_csv, ws.kpi_csv))
    leaky = pd.concat([train, kpi.head(2)], ignore_index=True)
    with pytest.raises(StageError, match=r"leakage in iter1 assembled set \(2 row"):
        validate_training_set(
            leaky,
            val_frame=val,
            kpi_frame=kpi,
            images_dir=ws.images_dir,
            naming=ImageNaming(),
            where="iter1 assembled set",
        )
    missing = train.head(3).copy()
    missing.loc[0, "object_name"] = "nope"
    with pytest.raises(StageError, match="nope"):
        validate_training_set(
            missing, val_frame=val, kpi_frame=kpi, images_dir=ws.images_dir, naming=ImageNaming()
        )
