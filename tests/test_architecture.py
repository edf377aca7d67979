"""ARCHITECTURE.md's layer table stays true: every module of getdiff/ is in one layer, and a
module imports getdiff modules of its own layer or the layers above it only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layers() -> dict[str, int]:
    """Module -> its row in ARCHITECTURE.md's layer table (0 = the top)."""
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    return {
        module: number
        for number, row in enumerate(rows)
        for module in re.findall(r"`(\w+)`", row.split("|")[2])
    }


def _getdiff_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "getdiff":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("getdiff."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("getdiff."))
    return found


MODULES = sorted(p.stem for p in (ROOT / "getdiff").glob("*.py") if not p.stem.startswith("__"))


def test_every_module_is_in_one_layer():
    assert sorted(_layers()) == MODULES


def test_modules_import_only_their_own_layer_or_the_layers_above():
    layers = _layers()
    upward = [
        f"{module} imports {dep}"
        for module in MODULES
        for dep in _getdiff_imports(ROOT / "getdiff" / f"{module}.py")
        if dep in layers and layers[dep] > layers[module]
    ]
    assert not upward, f"imports from a lower layer of ARCHITECTURE.md: {upward}"
