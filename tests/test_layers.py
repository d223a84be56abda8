"""The package's layers, as DESIGN's module map orders them: no module imports a higher layer,
no import cycle exists between modules, and every module belongs to a place of the map.

Imports are read from the source (every ``import`` statement, at module level or inside a
function, except those under ``if TYPE_CHECKING:``), so a lazy import inside a function counts:
it is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ccdask"

#: Lowest first. A module may import its own layer's modules and lower layers only.
LAYERS: list[tuple[str, ...]] = [
    ("_version", "errors"),
    ("utils",),
    ("sections", "dq"),
    ("frame",),
    ("io",),
    ("profiles",),
    ("catalog",),
    ("calibrate",),
    ("combine",),
    ("cache",),
    ("config",),
    ("cluster",),  # night.reduce opens the embedded cluster when given no client
    ("night",),
    ("coadd",),  # reduced frames reprojected and stacked by the combine engine
    ("simulate",),
    ("cli",),
    ("__init__", "__main__"),  # python -m ccdask: the command line
]
PLACE = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """Absolute names of the ccdask modules (or module attributes) ``path`` imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "ccdask")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "ccdask":
                    for a in child.names:
                        found.add(f"{target}.{a.name}")
            visit(child)

    visit(ast.parse(source))
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to (``pkg.mod.attr`` → ``pkg.mod``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _place(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = {_resolve(n, modules) for n in _imports(path)}
        # a package's own __init__ is imported by its submodules' imports: not a dependency of it
        graph[name] = {
            d for d in deps if d and d != name and not (name.startswith(d + ".") and _place(d) == _place(name))
        }
    return graph


def test_every_module_belongs_to_the_map():
    strays = sorted(m for m in _modules() if _place(m) not in PLACE)
    assert not strays, f"modules outside DESIGN's map: {strays}"


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, deps in _graph().items():
        for dep in deps:
            if PLACE[_place(dep)] > PLACE[_place(module)]:
                wrong.append(f"{module} imports {dep}")
    assert not wrong, "imports of a higher layer:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                walk(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return cycles


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..catalog import Entry\n", {"ccdask.catalog.Entry"}),
        ("def f():\n    from ..night import reduce\n", {"ccdask.night.reduce"}),
        ("import typing\nif typing.TYPE_CHECKING:\n    from ..night import Plan\n", set()),
    ],
)
def test_the_import_reader_sees_lazy_and_skips_type_checking(source, expected):
    assert _imports_in(source, "ccdask.calibrate") == expected
