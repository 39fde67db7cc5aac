"""The layout's rules, checked on the source: the map lists every module, imports point one way.

- compare/__init__.py (the map) names every subpackage and every module of compare/;
- no module of a compare/ subpackage imports a command module (compare.train, ...): the
  commands sit on top, the machinery below them;
- the modules of compare/ import each other without a cycle;
- manual/ and torchref/ import neither each other nor compare/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import compare

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(path.stem for path in (ROOT / "compare").glob("*.py") if path.stem != "__init__")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module that ``path`` imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # from compare import x
    return names


def package_modules(package: str) -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted((ROOT / package).rglob("*.py"))}


def test_the_map_names_every_module_of_compare():
    the_map = compare.__doc__
    for path in (ROOT / "compare").rglob("*.py"):
        if path.stem == "__init__":
            assert path.parent.name in the_map, f"the map in compare/__init__.py lacks the package {path.parent.name}"
        elif path.parent.name == "compare":  # a command: the map lists it by its name, ``train``
            assert path.stem in the_map, f"the map in compare/__init__.py lacks the command {path.stem}"
        else:  # by its file name, so that gate.py is not found in "gated"
            assert path.name in the_map, f"the map in compare/__init__.py lacks {path}"


def test_the_machinery_never_imports_a_command():
    commands = {f"compare.{name}" for name in COMMANDS}
    for module, imports in package_modules("compare").items():
        if module.count(".") >= 2:  # compare.<subpackage>.<module>
            assert not imports & commands, f"{module} imports the command module(s) {sorted(imports & commands)}"


def test_compare_has_no_import_cycle():
    graph = package_modules("compare")
    graph = {
        module: {name for name in imports if name in graph and name != module} for module, imports in graph.items()
    }
    finished, on_path = set(), []

    def visit(module):
        if module in on_path:
            raise AssertionError(f"import cycle: {' -> '.join(on_path[on_path.index(module) :] + [module])}")
        if module in finished:
            return
        on_path.append(module)
        for name in sorted(graph[module]):
            visit(name)
        on_path.pop()
        finished.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_two_implementations_stand_alone():
    for package, forbidden in (("manual", ("torchref", "compare")), ("torchref", ("manual", "compare"))):
        for module, imports in package_modules(package).items():
            bad = sorted(name for name in imports if name.split(".")[0] in forbidden)
            assert not bad, f"{module} imports {bad}"


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, f"README.md's table does not link docs/{page.name}"


def test_every_module_the_map_names_exists():
    the_map = compare.__doc__
    files = {path.name for path in (ROOT / "compare").rglob("*.py")} | {"page.html"}
    named = set(re.findall(r"\b(\w+\.(?:py|html))\b", the_map))
    assert named <= files, f"the map in compare/__init__.py names modules that do not exist: {sorted(named - files)}"
