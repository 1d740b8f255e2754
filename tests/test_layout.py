"""The shape of the proxy package: no import cycle anywhere, no module over 400 lines; and of
the tests: each says in a docstring the behaviour it pins down."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "proxy"
TESTS = Path(__file__).resolve().parent
MAX_LINES = 400


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package rooted at `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that importing `name` runs, from every import statement in it
    (at the top, in functions, under TYPE_CHECKING alike)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from package import module` imports that module too.
            targets = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            # Importing a.b.c runs a, a.b and a.b.c; the packages that contain `name` itself
            # are already running when it is imported, so they are no edge.
            for end in range(1, len(parts) + 1):
                module = ".".join(parts[:end])
                if module in modules and module != name and not name.startswith(module + "."):
                    found.add(module)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return list(e.args[1])
    return None


def test_the_package_has_no_import_cycle() -> None:
    """No module of proxy/ imports, directly or through others, a module that imports it."""
    graph = import_graph(PACKAGE)
    assert len(graph) > 40 and graph["proxy.cli"]  # the walk found the package and its imports
    assert find_cycle(graph) is None


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    """The check sees cycles the way they arise here: a lazy import back into the command line."""
    package = tmp_path / "app"
    (package / "demo").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("def main():\n    from .demo import run\n")
    (package / "demo" / "__init__.py").write_text("from .runner import run\n")
    (package / "demo" / "runner.py").write_text("from ..cli import main\nrun = main\n")
    cycle = find_cycle(import_graph(package))
    assert cycle is not None
    assert set(cycle) == {"app.cli", "app.demo", "app.demo.runner"}


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path: Path) -> None:
    """A package's __init__ that re-exports its modules, which import each other, is fine."""
    package = tmp_path / "app" / "store"
    package.mkdir(parents=True)
    (package.parent / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .files import FileStore\n")
    (package / "record.py").write_text("FORMAT = 1\n")
    (package / "files.py").write_text("from .record import FORMAT\nfrom ..store import record\n")
    assert find_cycle(import_graph(package.parent)) is None


def test_every_module_is_small() -> None:
    """Every module of proxy/ stays under the size that keeps it to one job."""
    sizes = {name: len(path.read_text().splitlines()) for name, path in module_files(PACKAGE).items()}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES} == {}


def undocumented_tests(root: Path) -> list[str]:
    """"file:line name" of every test function under `root` without a docstring."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name.startswith("test_") and not ast.get_docstring(node)):
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return found


def test_every_test_says_what_it_pins_down() -> None:
    """Each test has a docstring naming the behaviour it checks (DESIGN.md, Tests)."""
    assert undocumented_tests(TESTS) == []


def test_an_undocumented_test_is_found(tmp_path: Path) -> None:
    """The check sees a test without a docstring, and only that one."""
    (tmp_path / "test_x.py").write_text(
        'def test_a() -> None:\n    """Says."""\n\n\ndef test_b() -> None:\n    pass\n')
    assert undocumented_tests(tmp_path) == ["test_x.py:5 test_b"]
