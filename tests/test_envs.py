"""Conda env files stay in step with pyproject.toml, and every rule names an existing env file.

Conda channels are unreachable in CI, so this is the check that `--use-conda` would get a
consistent environment.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge/bioconda name, where they differ.
CONDA_NAMES = {
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",
    "moods-python": "moods",
    "pyBigWig": "pybigwig",
}
# Packages of the workflow extra that the rules' commands import (the others run Snakemake).
WORKFLOW_ONLY = {"snakemake", "pygments"}


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    workflow = [Requirement(r) for r in extras["workflow"]]
    return requirements + [r for r in workflow if r.name not in WORKFLOW_ONLY]


def test_no_extra_repeats_a_core_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {Requirement(r).name for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        repeated = sorted(core & {Requirement(r).name for r in requirements})
        assert not repeated, f"extra {extra!r} repeats core dependencies {repeated}"


# What the process that runs Snakemake imports of getdiff's dependencies (README.md, "Running
# the workflow", and getdiff/training/launch.py say so): the modules the rule files import, no
# torch.
SNAKEMAKE_PROCESS_NEEDS = {"jsonschema", "numpy", "pandas", "pyarrow", "yaml"}
IMPORT_NAMES = {"pyyaml": "yaml", "moods-python": "MOODS", "biopython": "Bio"}


def test_the_snakemake_process_imports_only_the_documented_dependencies():
    rules = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    modules = sorted(
        {m for r in rules for m in re.findall(r"^from (getdiff[\w.]*) import", r.read_text(), re.M)}
    )
    assert "getdiff.config" in modules
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [Requirement(r).name for r in project["dependencies"]]
    imports = {IMPORT_NAMES.get(n, n) for n in names}
    code = f"import sys; import {', '.join(modules)}; print(' '.join(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert {m.split(".")[0] for m in loaded} & imports == SNAKEMAKE_PROCESS_NEEDS
    readme = (ROOT / "README.md").read_text()
    documented = re.search(r"The environment that runs `snakemake` itself needs ([^(]+)", readme)
    pypi = {IMPORT_NAMES.get(n, n): n for n in names}
    assert set(re.findall(r"`([\w-]+)`", documented.group(1))) == {
        pypi[m] for m in SNAKEMAKE_PROCESS_NEEDS
    }


def _env_pins(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    pins = {}
    for dep in env["dependencies"]:
        assert isinstance(dep, str), f"{path.name}: pip sections are not allowed ({dep})"
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*=\s*([0-9][0-9.]*)", dep)
        assert match, f"{path.name}: dependency {dep!r} must be pinned as 'name =X.Y'"
        pins[match.group(1)] = match.group(2)
    return pins


ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))


def test_env_files_exist():
    assert ENV_FILES


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_uses_conda_forge_then_bioconda(env_file: Path):
    channels = yaml.safe_load(env_file.read_text())["channels"]
    assert channels[:2] == ["conda-forge", "bioconda"]
    assert "defaults" not in channels


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_every_pyproject_dependency_compatibly(env_file: Path):
    pins = _env_pins(env_file)
    for requirement in _pyproject_requirements():
        conda_name = CONDA_NAMES.get(requirement.name, requirement.name)
        assert conda_name in pins, f"{env_file.name} lacks {conda_name} ({requirement})"
        # A pin "=X.Y" means any X.Y.*; X.Y.0 must satisfy pyproject's specifier.
        version = Version(pins[conda_name])
        assert SpecifierSet(str(requirement.specifier)).contains(version), (
            f"{env_file.name}: {conda_name} ={pins[conda_name]} does not satisfy {requirement}"
        )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_matches_requires_python(env_file: Path):
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains(Version(_env_pins(env_file)["python"]))


def _rules_with_conda() -> list[tuple[Path, str, str]]:
    found = []
    for smk in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        text = smk.read_text()
        for rule in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule |\Z)", text, re.S | re.M):
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", rule.group(2))
            found.append((smk, rule.group(1), conda.group(1) if conda else ""))
    return found


def test_every_rule_that_runs_a_command_names_an_existing_env_file():
    rules = _rules_with_conda()
    assert {name for _, name, _ in rules} >= {"prepare", "train", "evaluate", "impute"}
    for smk, name, conda in rules:
        if name == "all":
            continue
        assert conda, f"rule {name} in {smk.name} has no conda: directive"
        assert (smk.parent / conda).resolve().is_file(), f"rule {name}: {conda} does not exist"
