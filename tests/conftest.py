"""Shared fixtures: one tiny synthetic workspace per session, copied for tests that mutate it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny synthetic workspace (do not modify: copy it with ``tiny_ws_copy``)."""
    from automl_deft.synth.demo import generate_demo_workspace

    root = tmp_path_factory.mktemp("tiny") / "ws"
    generate_demo_workspace(root, seed=0, scale="tiny")
    return root


@pytest.fixture
def tiny_ws_copy(tiny_ws: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny workspace that a test may corrupt."""
    dest = tmp_path / "ws"
    shutil.copytree(tiny_ws, dest)
    return dest
