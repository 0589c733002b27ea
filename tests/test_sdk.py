"""The plugin SDK's contract: plugins see only `harness.api`, the core knows no plugin by name, the
core's layers import downwards only, and the API's version has its changelog entry (that every
name is documented is tests/test_docs.py's job)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import harness.api as api
from harness.plugins import get_registry

ROOT = Path(__file__).resolve().parents[1]

#: The core's layers, lowest first: a module may import from its own layer or a lower one only.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.ground",),
    ("harness", "harness.cache", "harness.seeding", "harness.schemas", "harness.hookspecs"),
    ("harness.models",),
    ("harness.evaluation", "harness.hparams", "harness.training"),
    ("harness.tasks", "harness.plugins"),
    ("harness.api", "harness.testing"),
    ("harness.runs", "harness.general"),
    ("harness.commands", "harness.cli"),
)


def _python_files(folder: Path) -> Iterator[Path]:
    yield from (p for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    """The import name of a file of the core (`schemas/` installs as `harness.schemas`)."""
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] == "schemas":
        parts = ["harness", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every absolute module a file imports at run time (at any depth, lazy imports included), with
    its line. Imports under `if TYPE_CHECKING:` never run, so they are left out."""
    found = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append((f"{base}.{node.module}" if node.module else base, node.lineno))
            else:
                found.append((node.module or "", node.lineno))
    return found


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[1]
            ):
                best = (index, len(prefix))
    return None if best is None else best[0]


def _core_files() -> list[Path]:
    return [*_python_files(ROOT / "harness"), ROOT / "schemas" / "__init__.py"]


def test_plugins_import_only_the_api():
    allowed_runtime = {"harness.api"}
    offenders = []
    for folder in (ROOT / "plugins", ROOT / "examples" / "third-party-plugin"):
        for path in _python_files(folder):
            allowed = allowed_runtime | ({"harness.testing"} if "tests" in path.parts else set())
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top == "harness" and module not in allowed:
                    offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offenders, "plugins must import the harness only through harness.api:\n" + "\n".join(offenders)


def test_core_layers_import_downwards_only():
    offenders = []
    for path in _core_files():
        own = _module_name(path)
        own_layer = _layer(own)
        assert own_layer is not None, f"{own} is in no layer of LAYERS: place it"
        for module, line in _imports(path):
            if module.split(".")[0] == "harness_plugins":
                offenders.append(f"{own}:{line} imports the plugin package {module}")
            target = _layer(module) if module.split(".")[0] == "harness" else None
            if target is not None and target > own_layer:
                offenders.append(f"{own}:{line} (layer {own_layer}) imports {module} (layer {target})")
    assert not offenders, "\n".join(offenders)


def test_ground_imports_nothing_of_the_harness():
    imported = [m for m, _ in _imports(ROOT / "harness" / "ground.py") if m.split(".")[0] == "harness"]
    assert imported == []


def test_no_import_cycle_among_core_modules():
    modules = {_module_name(p): p for p in _core_files()}
    graph = {
        name: {m for m, _ in _imports(path) if m in modules and m != name} for name, path in modules.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_api_imports_without_torch():
    code = "import sys, harness.api; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_api_name_resolves():
    for name in api.__all__:
        assert getattr(api, name) is not None, name


def test_api_version_has_a_changelog_entry():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## harness\.api {re.escape(api.API_VERSION)}\b", changelog, re.M), api.API_VERSION


#: Strings of the core that equal a built-in's registered name for a reason other than naming it.
#: `EditCase` field names ("portability", "locality") are the data contract of harness.ground, and
#: "knowedit" is also the name of the paper-shaped leaderboard layout.
NOT_PLUGIN_NAMES = {"portability", "locality", "knowedit"}


def _string_literals(path: Path) -> Iterator[tuple[str, int]]:
    """String constants of a file, docstrings excluded (they may explain with examples)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value, node.lineno


def test_core_names_no_builtin_plugin_component():
    registry = get_registry()
    builtin = {
        name
        for kind in registry.components
        for name, component in registry.components[kind].items()
        if component.plugin.distribution == "knowedit-harness"
    }
    assert {"rome", "edit_succ", "zsre"} <= builtin  # the registry was read
    offenders = []
    for path in _core_files():
        for value, line in _string_literals(path):
            # the whole string, and inside longer text every distinctive token (`edit_succ`,
            # `knowedit-mini`, `smollm2-135m`); plain words like "contains" only as the whole string
            tokens = {value} | {t for t in re.findall(r"[\w-]+", value) if re.search(r"[_\-\d]", t)}
            for name in sorted((tokens & builtin) - NOT_PLUGIN_NAMES):
                offenders.append(f"{path.relative_to(ROOT)}:{line} names {name!r}")
    assert not offenders, "the core names built-in plugins:\n" + "\n".join(offenders)
