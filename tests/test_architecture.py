"""ARCHITECTURE.md's layer table stays true: every module of getdiff/ is in one layer, in the
folder its row names, and a module imports getdiff modules of its own layer or the layers above
it only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "getdiff"


def _layers() -> dict[str, int]:
    """Module (dotted below getdiff, e.g. ``genomics.bam``) -> its row in the layer table (0 = the
    top)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    layers = {}
    for number, row in enumerate(rows):
        cells = row.split("|")
        folder = cells[2].strip().strip("`").removeprefix("getdiff/").strip("/")
        for module in re.findall(r"`(\w+)`", cells[3]):
            layers[f"{folder}.{module}" if folder else module] = number
    return layers


def _path(module: str) -> Path:
    return PACKAGE / Path(*module.split(".")).with_suffix(".py")


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


MODULES = sorted(_name(p) for p in PACKAGE.rglob("*.py") if not p.stem.startswith("__"))


def _getdiff_imports(path: Path) -> set[str]:
    """The getdiff modules ``path`` imports (dotted below getdiff)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("getdiff"):
            base = node.module.removeprefix("getdiff").removeprefix(".")
            for alias in node.names:  # ``from getdiff.training import distributed`` too
                dotted = f"{base}.{alias.name}" if base else alias.name
                found.add(dotted if dotted in MODULES else base)
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("getdiff.") for a in node.names if a.name.startswith("getdiff.")
            )
    return found - {""}


def test_every_module_is_in_one_layer():
    assert sorted(_layers()) == MODULES


def test_modules_import_only_their_own_layer_or_the_layers_above():
    layers = _layers()
    upward = [
        f"{module} imports {dep}"
        for module in MODULES
        for dep in _getdiff_imports(_path(module))
        if dep in layers and layers[dep] > layers[module]
    ]
    assert not upward, f"imports from a lower layer of ARCHITECTURE.md: {upward}"


def test_no_import_cycle():
    graph = {module: _getdiff_imports(_path(module)) & set(MODULES) for module in MODULES}
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == 2:
            return
        assert state.get(module) != 1, f"import cycle: {' -> '.join([*trail, module])}"
        state[module] = 1
        for dep in sorted(graph[module]):
            visit(dep, [*trail, module])
        state[module] = 2

    for module in MODULES:
        visit(module, [])
