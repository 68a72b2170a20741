"""The layering rule of docs/ARCHITECTURE.md, checked from the code's own imports.

entry points (``iris_scorer``) → adapters (``app``, ``consumers``, ``consumers.backfill``) → ``ml``.
Imports point down only, adapters do not import each other's packages sideways except the batch
adapter's use of the shared Kafka plumbing in ``consumers``, no two packages import each other
(directly or round a loop), and ``ml`` starts no server, event loop, thread or process pool.
Every import counts, also the ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("iris_scorer", "app", "consumers", "consumers.backfill", "ml")
LAYER = {"iris_scorer": 0, "app": 1, "consumers": 1, "consumers.backfill": 1, "ml": 2}
#: sideways imports allowed inside the adapters layer: the batch adapter reads and writes Kafka
#: with the same client configuration and producer as the stream worker.
SIDEWAYS_ALLOWED = {("consumers.backfill", "consumers")}
#: what "starts a server, an event loop, a thread or a process pool" looks like in an import
FORBIDDEN_IN_ML = (
    "uvicorn",
    "multiprocessing",
    "concurrent.futures",
    "threading.Thread",
    "asyncio.run",
    "asyncio.new_event_loop",
    "faststream",
    "aiokafka",
    "confluent_kafka",
    "starlette",
)


def package_of(module: str) -> str | None:
    """The longest of PACKAGES that ``module`` belongs to (None: not ours)."""
    best = None
    for package in PACKAGES:
        inside = module == package or module.startswith(package + ".")
        if inside and (best is None or len(package) > len(best)):
            best = package
    return best


def source_modules() -> Iterator[tuple[str, Path]]:
    for package in ("iris_scorer", "app", "consumers", "ml"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``module`` imports (absolute names), with the line, also from inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # ``from ml import tracking`` imports the module ml.tracking
                yield f"{base}.{alias.name}", node.lineno


def internal_edges() -> list[tuple[str, str, str, int]]:
    """(importer module, imported module, file, line) for every import of one of our modules."""
    edges = []
    for module, path in source_modules():
        for target, line in imports_of(module, path):
            if package_of(target) is not None:
                edges.append((module, target, str(path.relative_to(ROOT)), line))
    return edges


def test_the_code_has_the_packages_the_rule_names() -> None:
    found = {package_of(module) for module, _ in source_modules()}
    assert found == set(PACKAGES)


def test_imports_point_down_only() -> None:
    wrong = []
    for importer, target, file, line in internal_edges():
        src, dst = package_of(importer), package_of(target)
        assert src is not None and dst is not None
        if src == dst or (src, dst) in SIDEWAYS_ALLOWED:
            continue
        if LAYER[dst] <= LAYER[src]:
            wrong.append(f"{file}:{line}: {src} imports {target} ({dst} is not below {src})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for importer, target, _, _ in internal_edges():
        src, dst = package_of(importer), package_of(target)
        if src is not None and dst is not None and src != dst:
            graph[src].add(dst)
    # consumers.backfill lives inside consumers: the parent importing its child package would be
    # a loop through the folder, which the rule above already forbids for the other direction.
    assert "consumers.backfill" not in graph["consumers"], "consumers imports consumers.backfill"
    assert find_cycle(graph) is None, f"package import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_no_import_cycle_between_modules() -> None:
    ours = {module for module, _ in source_modules()}
    graph: dict[str, set[str]] = {m: set() for m in ours}
    for importer, target, _, _ in internal_edges():
        is_package = (ROOT / Path(*target.split("."))).is_dir()  # its __init__: docs only
        if target in ours and target != importer and not is_package:
            graph[importer].add(target)
    cycle = find_cycle(graph)
    assert cycle is None, f"module import cycle: {' -> '.join(cycle or [])}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    colour: dict[str, int] = dict.fromkeys(graph, 0)  # 0 new, 1 on the path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt, 2) == 1:
                return [*path[path.index(nxt) :], nxt]
            if colour.get(nxt) == 0 and (found := visit(nxt)) is not None:
                return found
        path.pop()
        colour[node] = 2
        return None

    for start in sorted(graph):
        if colour[start] == 0 and (found := visit(start)) is not None:
            return found
    return None


@pytest.mark.parametrize("forbidden", FORBIDDEN_IN_ML)
def test_ml_starts_no_server_loop_thread_or_pool(forbidden: str) -> None:
    hits = []
    for module, path in source_modules():
        if package_of(module) != "ml":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"]
            if any(n == forbidden or n.startswith(forbidden + ".") for n in names):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hits, f"ml uses {forbidden}: {', '.join(hits)}"


def test_importing_every_module_changes_no_process_state() -> None:
    """Importing any module of ours leaves the environment, the collector and MLflow's global
    URIs as they were (heavy things load in lifespans and commands, not at import)."""
    modules = sorted(module for module, _ in source_modules())
    probe = f"""
import gc, os, sys
before_env = dict(os.environ)
import mlflow
before_uri = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
import importlib
for name in {modules!r}:
    importlib.import_module(name)
changed = {{k for k in set(os.environ) | set(before_env) if os.environ.get(k) != before_env.get(k)}}
changed = {{k for k in changed if not k.startswith("_MLFLOW_")}}  # MLflow's own telemetry session id
assert not changed, changed
assert gc.isenabled(), "an import disabled the garbage collector"
assert gc.get_freeze_count() == 0, "an import froze the heap"
assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before_uri, "an import set MLflow's URIs"
print("clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-2000:]


def test_a_fluent_mlflow_scope_leaves_the_process_as_it_was(tmp_path: Path) -> None:
    """The training stages need MLflow's fluent API; its scope restores the global URIs and the
    environment variables MLflow's setters write (children of the process would inherit them)."""
    probe = f"""
import os, mlflow
from ml import tracking
before = ({{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}}, mlflow.get_tracking_uri(), mlflow.get_registry_uri())
with tracking.fluent_run_uri("sqlite:///{tmp_path / "scoped.db"}"):
    assert mlflow.get_tracking_uri().endswith("scoped.db")
after = ({{k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}}, mlflow.get_tracking_uri(), mlflow.get_registry_uri())
assert after == before, (before, after)
print("clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-2000:]


#: "modules of at most about 300 lines": the largest today is ml/windows.py (337), the one
#: windowing implementation with its count- and event-time windows kept together
MODULE_LINES = 340


def test_modules_are_at_most_about_300_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in ("iris_scorer", "app", "consumers", "ml")
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MODULE_LINES
    }
    assert not long, f"split these modules by concept: {long}"
