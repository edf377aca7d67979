"""getdiff used as a Snakemake module by another workflow (README.md, "Use as a module"): its own
Snakefile, config and cell-type sheet, ``use rule * from getdiff as getdiff_*``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]

# The README's example, with the path of this checkout for the module's snakefile.
OUTER_SNAKEFILE = """\
configfile: "config/config.yaml"


module getdiff:
    snakefile:
        config["getdiff_snakefile"]
    config:
        config["getdiff"]


use rule * from getdiff as getdiff_*


rule all:
    default_target: True
    input:
        rules.getdiff_all.input,
"""


def outer_workflow(directory: Path) -> Path:
    """A second workflow in ``directory`` that imports getdiff with one demo cell type."""
    (directory / "config").mkdir()
    (directory / "config" / "cell_types.tsv").write_text(
        "cell_type\tpeaks\tcounts_column\ndemo_liver\tdemo/peaks/demo_liver.narrowPeak.gz\t7\n"
    )
    getdiff = {
        **TINY_RUN,
        "cell_types": "config/cell_types.tsv",
        "motif_scan": "demo/motif_scan.bed.gz",
        "impute": {"splits": ["test"], "num_samples": 1},
    }
    config = {"getdiff_snakefile": str(ROOT / "Snakefile"), "getdiff": getdiff}
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (directory / "Snakefile").write_text(OUTER_SNAKEFILE)
    return directory / "Snakefile"


def outer_snakemake(directory: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_a_workflow_that_imports_getdiff_as_a_module_runs_the_tiny_config(tmp_path):
    outer_workflow(tmp_path)
    planned = outer_snakemake(tmp_path, "-n", "-p").stdout
    for rule in ("getdiff_demo_data", "getdiff_prepare", "getdiff_train", "getdiff_evaluate"):
        assert rule in planned, rule
    # The rules call this checkout's getdiff, not the outer workflow's folder.
    assert f"PYTHONPATH={ROOT}$" in planned and f"PYTHONPATH={tmp_path}" not in planned
    outer_snakemake(tmp_path)
    metrics = json.loads((tmp_path / "results" / "evaluate" / "all" / "metrics.json").read_text())
    assert list(metrics["per_cell_type"]) == ["demo_liver"]
    assert (tmp_path / "results" / "impute" / "all" / "demo_liver.parquet").exists()
