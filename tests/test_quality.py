"""The README's one test command also runs the linters: ruff (lint + format) and mypy --strict."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize(
    "command",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_code_quality(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


SRC = ROOT / "src" / "chertcast"
# The rooms whose order matters, bottom to top: a room imports only rooms on a lower floor, directly
# or through any other module. Siblings (deciding, scheduling) do not import each other. Modules
# not named here (the core and the I/O shell below the engine) are held by the no-cycle rule.
FLOORS = {
    "chertcast.outgoing": 1,
    "chertcast.decide": 2,
    "chertcast.schedule": 2,
    "chertcast.engine": 3,
    "chertcast.outlook": 3,
    "chertcast.progress": 4,
    "chertcast.runner": 4,
    "chertcast.present": 5,
    "chertcast.api": 6,
    "chertcast.cli": 7,
    "chertcast.__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each chertcast module and the chertcast modules it imports (at any depth in the file)."""
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names}
                targets.update(submodules & set(modules))
                if not submodules <= set(modules):  # a name the package itself defines or re-exports
                    targets.add(node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph[module])
    return seen


def test_imports_point_down_no_cycles() -> None:
    graph = import_graph()
    assert set(FLOORS) <= set(graph), "a room named in FLOORS is gone: update the test"
    packages = {name for name in graph if (SRC.parent / name.replace(".", "/") / "__init__.py").exists()}
    cycles = sorted(m for m in graph if m not in packages and m in _reachable(graph, m))
    assert cycles == [], f"modules that import themselves through others: {cycles}"


def test_rooms_import_only_lower_floors() -> None:
    graph = import_graph()
    upward = sorted(
        f"{room} -> {other}"
        for room, floor in FLOORS.items()
        for other in _reachable(graph, room)
        if FLOORS.get(other, 0) >= floor
    )
    assert upward == []


def test_deciding_and_scheduling_are_pure() -> None:
    """No I/O and no clock in the decision function and the scheduler step: nothing to sleep on."""
    for room in ("decide", "schedule", "outgoing"):
        tree = ast.parse((SRC / f"{room}.py").read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not imported & {"anyio", "time", "os", "sys", "sqlite3", "httpx", "chertcast.journal"}, room


def test_present_is_pure() -> None:
    """present.py formats what it is handed: it imports nothing that reads the environment, the
    command line, the clock or a file, and from the rooms beside it only types and constants
    (no function of runner, outlook or the journal, so no journal read hides behind a format)."""
    tree = ast.parse((SRC / "present.py").read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not modules & {"os", "sys", "time", "shutil", "sqlite3", "subprocess", "httpx", "anyio"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in (
            "chertcast.runner",
            "chertcast.outlook",
            "chertcast.journal",
        ):
            functions = [alias.name for alias in node.names if not alias.name[:1].isupper()]
            assert functions == [], f"present imports {functions} from {node.module}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert (node.value.id, node.attr) not in {("sys", "argv"), ("os", "environ"), ("time", "time")}
