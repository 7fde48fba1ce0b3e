"""The library's imports point one way: no cycle, no import from a layer above.

Every ``import`` of an ``automl_deft`` module is read from the source (also the
ones inside functions, which run later but are dependencies all the same). The
layers, bottom first, are the architecture the README draws; a module may import
its own layer or any layer below it, never one above it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import automl_deft

PACKAGE = Path(automl_deft.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: no project imports but each other
    (
        "",
        "errors",
        "io",
        "config",
        "jsontypes",
        "phases",
        "credentials",
        "yamlio",
        "redact",
        "k8s_checks",
        "console",
    ),
    # 1: the run's vocabulary: layout, records, the data layout, the one KPI
    ("layout", "records", "workspace", "kpi", "mount"),
    # 2: data and the model
    ("synth", "importers", "model", "validate", "application", "holdout", "serving"),
    # 3: the two engines and the built-in application they drive
    ("hpo", "deft", "aoi_changenet"),
    # 4: the phases joined: handoffs, the run config and plan, the single gate
    ("handoff", "run_config", "plan", "preflight", "scorecard", "model_card", "predict"),
    # 5: the pipeline's steps and the quick start
    ("steps", "quickstart"),
    # 6: the doors: cluster runners and clients, the CLI, test fakes
    ("cluster", "cli", "testing"),
)
"""Layer of each top-level module or subpackage of ``automl_deft``."""

ALLOWED_UPWARD: frozenset[tuple[str, str]] = frozenset(
    {
        # The application registry resolves its built-in by name when first asked
        # (a plug-in point: the lower layer names what implements it, lazily).
        ("automl_deft.application", "automl_deft.aoi_changenet"),
    }
)


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: add {top!r} to a layer in tests/test_layering.py")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from pkg import submodule`` depends on the submodule; ``from mod import
                # name`` on the module.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] in ("components", "pipelines"):
                    graph[name].add(target)
                    continue
                if not target.startswith("automl_deft"):
                    continue
                found = resolve(target)
                if found and found != name:
                    graph[name].add(found)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_the_library() -> None:
    graph = _imports(_modules())
    assert _cycles(graph) == []


def test_no_module_imports_a_layer_above_it() -> None:
    graph = _imports(_modules())
    upward = [
        f"{src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
        for src, targets in sorted(graph.items())
        for dst in sorted(targets)
        if dst.startswith("automl_deft")
        and _layer(dst) > _layer(src)
        and (src, dst) not in ALLOWED_UPWARD
    ]
    assert upward == []


DOORS = len(LAYERS) - 1
"""The top layer (the CLI, the cluster runners): the only one that may load the KFP
wiring in ``pipelines/`` (to compile, submit or run it)."""


def test_only_the_doors_load_the_kfp_wiring() -> None:
    graph = _imports(_modules())
    wiring = sorted(
        f"{src} imports {dst}"
        for src, targets in graph.items()
        for dst in targets
        if dst.split(".")[0] in ("components", "pipelines") and _layer(src) < DOORS
    )
    assert wiring == []


def test_a_cycle_and_an_upward_import_are_caught() -> None:
    """The checks themselves can fail (they are not vacuous)."""
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert _layer("automl_deft.cli.pipeline") > _layer("automl_deft.steps")
