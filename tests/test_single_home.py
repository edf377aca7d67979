"""Every default and output name has one home: the schema's defaults (getdiff.defaults) and
getdiff.paths. A copy written elsewhere in the package, the rules or the benchmarks fails here."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from getdiff import paths
from getdiff.config import validate_config
from getdiff.defaults import DEFAULTS, schema_defaults
from getdiff.evaluation.inference import SamplerSettings
from getdiff.modeling.diffusion import GaussianDiffusion
from getdiff.modeling.model import ModelConfig, make_config
from getdiff.modeling.task import SPEC_TASK

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sorted([*(ROOT / "getdiff").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
RULES = sorted([ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")])
# Files another session is editing (issue 24, items left to it): the copy they still hold.
PENDING: dict[str, str] = {}
# Output names; "config.yaml", "adapter" and "plots" are also ordinary words and keys elsewhere.
NAMES = sorted(
    {
        *paths.SCAN_FILES.values(),
        paths.REGIONS_FILE,
        paths.MANIFEST_FILE,
        paths.TRAIN_FILES["model"],
        paths.TRAIN_FILES["history"],
        paths.LAST_CHECKPOINT,
        paths.CALIBRATION_FILE,
        paths.EVALUATE_FILES["metrics"],
        paths.EVALUATE_FILES["per_feature"],
        paths.INTERPRET_FILES["effects"],
        paths.INTERPRET_FILES["distance"],
    }
)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@functools.cache
def _parsed() -> list[tuple[str, ast.Module]]:
    """(path, syntax tree) of every module of getdiff/ and benchmarks/."""
    return [(_relative(p), ast.parse(p.read_text(encoding="utf-8"))) for p in PYTHON]


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_defaults_are_what_a_minimal_config_resolves_to():
    config = {"cell_types": "cells.tsv", "motif_scan": "scan.bed"}
    assert validate_config(config) == {**schema_defaults(), **config}
    assert DEFAULTS == schema_defaults()


def test_signature_defaults_are_the_schemas():
    diffusion = GaussianDiffusion()
    schedule = DEFAULTS["diffusion"]
    assert diffusion.num_timesteps == schedule["num_timesteps"]
    assert diffusion.betas[0].item() == pytest.approx(schedule["beta_start"])
    assert diffusion.betas[-1].item() == pytest.approx(schedule["beta_end"])
    assert SamplerSettings() == SamplerSettings.from_config(DEFAULTS["evaluate"])
    assert ModelConfig().num_regions == DEFAULTS["prepare"]["window_size"]
    assert ModelConfig().positions == DEFAULTS["model"]["positions"]
    assert SPEC_TASK == DEFAULTS["task"]


def test_the_mask_ratio_is_no_model_option():
    assert "mask_ratio" not in ModelConfig.__dataclass_fields__
    with pytest.raises(Exception, match="mask_ratio"):
        make_config("tiny", mask_ratio=0.5)


# (module, class or None, function or dataclass, names whose default must not be a literal)
KNOWN_DEFAULTS = [
    (
        "getdiff/modeling/diffusion.py",
        "GaussianDiffusion",
        "__init__",
        {"num_timesteps", "beta_start"},
    ),
    ("getdiff/modeling/diffusion.py", "GaussianDiffusion", "__init__", {"beta_end"}),
    ("getdiff/modeling/diffusion.py", "GaussianDiffusion", "sample", {"method", "steps", "eta"}),
    ("getdiff/modeling/diffusion.py", "GaussianDiffusion", "sample", {"num_samples"}),
    (
        "getdiff/evaluation/inference.py",
        None,
        "SamplerSettings",
        {"method", "steps", "eta", "num_samples"},
    ),
    ("getdiff/evaluation/inference.py", None, "SamplerSettings", {"seed", "batch_size"}),
    ("getdiff/modeling/model.py", None, "ModelConfig", {"num_regions", "positions"}),
    ("getdiff/modeling/model.py", None, "make_config", {"preset"}),
    ("getdiff/modeling/model.py", None, "build_model", {"preset"}),
    ("getdiff/modeling/checkpoint.py", None, "build_pretrain", {"preset"}),
    ("getdiff/modeling/lora.py", None, "lora_config", {"r", "alpha", "dropout", "adaln"}),
    ("getdiff/modeling/lora.py", None, "apply_lora", {"r", "alpha", "dropout", "adaln"}),
    ("getdiff/evaluation/evaluate.py", None, "evaluate_group", {"split"}),
    ("getdiff/evaluation/impute.py", None, "impute_cell_type", {"unseen"}),
    ("getdiff/evaluation/inference.py", None, "cell_type_index", {"unseen"}),
]


def _defaults_of(tree: ast.Module, owner: str | None, name: str) -> dict[str, ast.expr]:
    scope = tree.body
    if owner:
        scope = next(n for n in scope if isinstance(n, ast.ClassDef) and n.name == owner).body
    node = next(n for n in scope if getattr(n, "name", None) == name)
    if isinstance(node, ast.ClassDef):  # a dataclass: its annotated fields
        fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and s.value]
        return {s.target.id: s.value for s in fields}
    args = node.args.args[len(node.args.args) - len(node.args.defaults) :]
    return {a.arg: d for a, d in zip(args, node.args.defaults, strict=True)}


@pytest.mark.parametrize("module, owner, name, keys", KNOWN_DEFAULTS)
def test_known_defaults_are_not_copied(module, owner, name, keys):
    defaults = _defaults_of(ast.parse((ROOT / module).read_text(encoding="utf-8")), owner, name)
    copied = sorted(k for k in keys if isinstance(defaults[k], ast.Constant))
    assert not copied, f"{module}: {name} writes its own default of {copied}; read DEFAULTS"


def test_spec_task_is_not_a_literal():
    tree = ast.parse((ROOT / "getdiff" / "modeling" / "task.py").read_text(encoding="utf-8"))
    (value,) = [
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "SPEC_TASK" for t in n.targets)
    ]
    assert not isinstance(value, ast.Dict)


# The mask-ratio argument's position in each masking function.
MASK_RATIO_ARGUMENT = {"complementary_masks": 1, "num_masked": 1, "random_masks": 2}


def test_no_literal_mask_ratio_is_passed():
    found = []
    for module, tree in _parsed():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = getattr(node.func, "id", getattr(node.func, "attr", None))
            if func not in MASK_RATIO_ARGUMENT or module in PENDING:
                continue
            position = MASK_RATIO_ARGUMENT[func]
            given = [k.value for k in node.keywords if k.arg == "mask_ratio"]
            given += node.args[position : position + 1]
            if any(isinstance(arg, ast.Constant) for arg in given):
                found.append(f"{module}:{node.lineno}: {func}")
    assert not found, "a literal mask ratio (diffusion.mask_ratio, or diffusion.HALF): " + str(
        found
    )


def test_the_window_size_is_written_only_in_the_schema():
    window = DEFAULTS["prepare"]["window_size"]
    found = [
        f"{module}:{node.lineno}"
        for module, tree in _parsed()
        if module not in PENDING
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value == window
    ]
    assert not found, f"the window size {window} written as a number (read DEFAULTS): {found}"


@pytest.mark.parametrize("name", NAMES)
def test_output_names_are_spelled_only_in_getdiff_paths(name):
    found = [
        f"{module}:{line}"
        for module, tree in _parsed()
        if module != "getdiff/paths.py"
        for line, value in _strings(tree)
        if value == name or value.endswith(f"/{name}")
    ]
    quoted = re.compile(rf"[\"']([^\"'\s]*/)?{re.escape(name)}[\"']")
    for rules in RULES:
        for number, line in enumerate(rules.read_text(encoding="utf-8").splitlines(), start=1):
            if quoted.search(line):
                found.append(f"{_relative(rules)}:{number}")
    assert not found, f"{name!r} spelled outside getdiff/paths.py: {found}"


def test_windows_files_are_named_by_getdiff_paths():
    pattern = re.compile(r"windows_\{")
    found = [
        f"{module}:{line}"
        for module, tree in _parsed()
        if module != "getdiff/paths.py"
        for line, value in _strings(tree)
        # f"windows_{split}.parquet" holds the constant "windows_"
        if value == "windows_" or re.fullmatch(r"windows_\w+\.parquet", value)
    ]
    found += [_relative(r) for r in RULES if pattern.search(r.read_text(encoding="utf-8"))]
    assert not found, f"a windows file named outside getdiff.paths.windows_file: {found}"
