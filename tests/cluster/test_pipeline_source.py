"""Where the pipelines come from: the source tree, never the installed distribution."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import setuptools

from automl_deft.cluster.pipeline_source import SOURCE_PACKAGES, load_pipelines, source_root
from automl_deft.errors import UserError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_pipelines puts its tree first on sys.path: undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def test_the_pipelines_load_from_the_tree_automl_deft_runs_from() -> None:
    assert source_root() == REPO
    pipelines = load_pipelines()
    assert Path(pipelines.__file__).resolve() == REPO / "pipelines" / "__init__.py"
    components = sys.modules["components"]
    assert Path(components.__file__ or "").resolve() == REPO / "components" / "__init__.py"
    assert pipelines.NAMES == ("automl-deft", "automl-only", "deft-only")


def test_a_tree_without_the_pipelines_names_the_fix(tmp_path: Path) -> None:
    (tmp_path / "automl_deft").mkdir()
    with pytest.raises(
        UserError,
        match=(
            rf"^{re.escape(str(tmp_path))} has no components/ or pipelines/ next to "
            r"automl_deft/: the pipeline definitions are not part of the installed package; "
            r"run automl-deft from a checkout \(pip install -e \.\) or in the component image$"
        ),
    ):
        load_pipelines(tmp_path)


def test_a_same_named_package_from_elsewhere_is_refused(tmp_path: Path) -> None:
    for name in SOURCE_PACKAGES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("", encoding="utf-8")
    load_pipelines()  # this repository's are imported first
    with pytest.raises(
        UserError,
        match=(
            rf"^`components` imports from {re.escape(str(REPO / 'components'))}, not from "
            rf"{re.escape(str(tmp_path / 'components'))}: another package named "
            "'components' shadows automl-deft's; uninstall it or use a separate environment$"
        ),
    ):
        load_pipelines(tmp_path)


def test_the_distribution_installs_no_top_level_package_but_automl_deft() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = setuptools.find_packages(
        str(REPO), include=find.get("include", ["*"]), exclude=find.get("exclude", ())
    )
    assert "automl_deft" in packages
    assert {p.split(".")[0] for p in packages} == {"automl_deft"}
