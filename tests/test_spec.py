from __future__ import annotations

import copy

import pytest

from automl_deft.errors import SpecError
from automl_deft.model.spec import (
    Spec,
    deep_merge,
    default_spec_dict,
    load_spec,
    parse_set_option,
    save_spec,
    spec_from_dict,
)


def test_deep_merge_nested_dotted_and_lists_replace() -> None:
    base = {"train": {"optim": {"lr": 1.0, "momentum": 0.9}, "classify": {"cls_weight": [1, 2]}}}
    snapshot = copy.deepcopy(base)
    out = deep_merge(
        base,
        {
            "train": {"optim": {"lr": 0.5}},
            "train.classify.cls_weight": [1, 30],
            "model.backbone.type": "efficientnet_lite0",
        },
    )
    assert out == {
        "train": {"optim": {"lr": 0.5, "momentum": 0.9}, "classify": {"cls_weight": [1, 30]}},
        "model": {"backbone": {"type": "efficientnet_lite0"}},
    }
    assert base == snapshot  # inputs untouched


def test_deep_merge_does_not_alias_override_values() -> None:
    override = {"a": {"b": [1, 2]}}
    out = deep_merge({}, override)
    out["a"]["b"].append(3)
    assert override == {"a": {"b": [1, 2]}}


def test_default_spec_round_trips(tmp_path) -> None:
    path = tmp_path / "spec.yaml"
    save_spec(default_spec_dict(), path)
    assert load_spec(path) == Spec()
    assert load_spec(path, {"train.num_epochs": 3}).train.num_epochs == 3


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ({"train": {"optim": {"lr": "fast"}}}, r"spec key 'train.optim.lr': expected a number"),
        ({"train": {"nm_epochs": 3}}, r"unknown spec key 'train.nm_epochs'"),
        ({"modle": {}}, r"unknown spec key 'modle'"),
        ({"train": {"num_epochs": 2.5}}, r"'train.num_epochs': expected an integer"),
        ({"train": {"amp": "yes"}}, r"'train.amp': expected true/false"),
        ({"train": {"classify": {"cls_weight": [1, "x"]}}}, r"'train.classify.cls_weight\[1\]'"),
        ({"model": {"backbone": {"type": "resnet"}}}, r"'model.backbone.type': 'resnet'"),
        ({"dataset": {"classify": "big"}}, r"'dataset.classify': expected a mapping"),
        (
            {"model": {"classify": {"learnable_difference_modules": 5}}},
            r"learnable_difference_modules must be in 1..4",
        ),
        ({"dataset": {"classify": {"fpratio_sampling": 0}}}, r"fpratio_sampling must be in"),
    ],
)
def test_invalid_specs_name_the_key(fragment, message) -> None:
    with pytest.raises(SpecError, match=message):
        spec_from_dict(fragment)


def test_load_spec_errors(tmp_path) -> None:
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("train:\n  optim:\n    lr: fast\n")
    with pytest.raises(SpecError, match=r"wrong.yaml: spec key 'train.optim.lr'"):
        load_spec(wrong)


def test_parse_set_option() -> None:
    assert parse_set_option(["train.num_epochs=3", "train.classify.cls_weight=[1, 20]"]) == {
        "train.num_epochs": 3,
        "train.classify.cls_weight": [1, 20],
    }
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        parse_set_option(["train.num_epochs"])


def test_naming_orders_lights_by_channel() -> None:
    spec = spec_from_dict(
        {"dataset": {"classify": {"num_input": 2, "input_map": {"B": 1, "A": 0}}}}
    )
    assert spec.naming().lights == ("A", "B")
