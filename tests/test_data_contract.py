"""docs/DATA_CONTRACT.md names every metadata key that train writes into the model file and
impute into the imputation table (read from the code, so a new key fails here until the
contract states it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "docs" / "DATA_CONTRACT.md").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    """The contract's text from the heading that starts with ``heading`` to the next one."""
    match = re.search(rf"^## {re.escape(heading)}.*?(?=^## )", CONTRACT, re.M | re.S)
    assert match, f"docs/DATA_CONTRACT.md has no section '## {heading}...'"
    return match.group(0)


def _dict_keys(module: str, name: str) -> list[str]:
    """The constant keys of the dict literal(s) assigned to ``name`` in getdiff/<module>.py."""
    tree = ast.parse((ROOT / "getdiff" / f"{module}.py").read_text(encoding="utf-8"))
    keys = [
        key.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == name for t in node.targets)
        and isinstance(node.value, ast.Dict)
        for key in node.value.keys
        if isinstance(key, ast.Constant)
    ]
    assert keys, f"getdiff/{module}.py assigns no dict literal to {name}"
    return keys


@pytest.mark.parametrize(
    "module, name, heading",
    [
        ("training/model_files", "metadata", "Model file"),
        ("evaluation/impute", "info", "Imputations"),
    ],
)
def test_the_contract_names_every_metadata_key_written(module, name, heading):
    section = _section(heading)
    missing = [key for key in _dict_keys(module, name) if f"`{key}`" not in section]
    assert not missing, f"docs/DATA_CONTRACT.md, '{heading}', does not name {missing}"
