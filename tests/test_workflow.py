"""The Snakemake workflow: dry runs (jobs, profiles, a fourth cell type) and one end-to-end run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from getdiff.tensors import load_regions, load_windows

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    result = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, check=False, cwd=workdir
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = output.split("Job stats:")[1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
        if m.group(1) != "total"
    }


def write_config(
    directory: Path, cell_types: list[str], fragments: tuple[str, ...] = (), **sections
) -> Path:
    """A demo config in ``directory`` with the given cell types (demo inputs under demo/); those
    in ``fragments`` take their counts from the demo's fragments file instead of column 7."""
    sheet = directory / "cell_types.tsv"
    rows = ["cell_type\tpeaks\tcounts_file\tcounts_column"]
    for ct in cell_types:
        counts = f"demo/fragments/{ct}.fragments.tsv.gz\t" if ct in fragments else "\t7"
        rows.append(f"{ct}\tdemo/peaks/{ct}.narrowPeak.gz\t{counts}")
    sheet.write_text("\n".join(rows) + "\n")
    config = {
        "cell_types": str(sheet),
        "motif_scan": "demo/motif_scan.bed.gz",
        "demo": {"enabled": True, "outdir": "demo"},
        "prepare": {"max_span": 250_000_000},
        **sections,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


DEMO = ["demo_myeloid", "demo_liver", "demo_lymphoid"]


def test_dry_run_of_the_shipped_config_plans_every_stage(tmp_path):
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "cell_types.tsv"):
        (tmp_path / "config" / name).write_text((ROOT / "config" / name).read_text())
    counts = job_counts(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    assert counts == {
        "all": 1,
        "demo_data": 1,
        "prepare": 3,
        "train": 1,
        "evaluate": 1,
        "impute": 3,
    }


def test_a_fourth_cell_type_adds_exactly_its_prepare_and_impute_jobs(tmp_path):
    three = job_counts(
        snakemake(
            tmp_path, "-n", "--cores", "1", "--configfile", write_config(tmp_path, DEMO)
        ).stdout
    )
    # The new cell type's peaks are the user's own file, not demo output.
    (tmp_path / "demo" / "peaks").mkdir(parents=True)
    (tmp_path / "demo" / "peaks" / "demo_extra.narrowPeak.gz").write_bytes(b"")
    config = write_config(tmp_path, [*DEMO, "demo_extra"])
    four = job_counts(snakemake(tmp_path, "-n", "--cores", "1", "--configfile", config).stdout)
    assert four["prepare"] == three["prepare"] + 1
    assert four["impute"] == three["impute"] + 1
    assert {k: v for k, v in four.items() if k not in ("prepare", "impute")} == {
        k: v for k, v in three.items() if k not in ("prepare", "impute")
    }


def test_groups_give_one_train_and_evaluate_job_each(tmp_path):
    groups = {"blood": ["demo_myeloid", "demo_lymphoid"], "liver": ["demo_liver"]}
    config = write_config(tmp_path, DEMO, train={"groups": groups})
    counts = job_counts(snakemake(tmp_path, "-n", "--cores", "1", "--configfile", config).stdout)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and counts["impute"] == 3


def test_bad_config_fails_the_dry_run_naming_the_key(tmp_path):
    config = write_config(tmp_path, DEMO, train={"batch_size": "eight"})
    result = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert "batch_size" in result.stdout + result.stderr


@pytest.mark.parametrize("profile", ["slurm", "cluster-generic", "local"])
def test_profiles_parse_and_dry_run(tmp_path, profile):
    config = write_config(tmp_path, DEMO)
    result = snakemake(
        tmp_path, "-n", "--profile", str(ROOT / "profiles" / profile), "--configfile", config
    )
    assert "train" in result.stdout


TINY = {
    "demo": {
        "enabled": True,
        "outdir": "demo",
        "peaks_per_cell_type": 7000,
        "chromosomes": ["chr1", "chr10", "chr11"],
    },
    "prepare": {"max_span": 250_000_000},
    "model": {"preset": "tiny"},
    "train": {
        "max_steps": 20,
        "warmup_steps": 2,
        "batch_size": 4,
        "eval_every": 10,
        "checkpoint_every": 10,
        "log_every": 5,
        "val_windows": 4,
    },
    "impute": {"splits": ["validation", "test"], "num_samples": 2},
}


@pytest.mark.slow
def test_end_to_end_run_writes_every_output_with_the_right_shapes(tmp_path):
    from getdiff.peaks import read_peak_file

    tiny = {**TINY, "demo": {**TINY["demo"], "fragments_for": "demo_myeloid"}}
    config = write_config(tmp_path, DEMO, fragments=("demo_myeloid",), **tiny)
    snakemake(tmp_path, "--cores", "2", "--configfile", config)
    results = tmp_path / "results"

    # demo_myeloid's accessibility came from its fragments file: the same counts as column 7.
    myeloid = load_regions(results / "prepare" / "demo_myeloid" / "regions.parquet")
    peaks = read_peak_file(tmp_path / "demo" / "peaks" / "demo_myeloid.narrowPeak.gz", 7)
    total = myeloid.attrs["getdiff"]["scaling"]["accessibility"]["total_counts"]
    assert total == peaks["counts"].sum() and len(myeloid) == len(peaks)

    regions = load_regions(results / "prepare" / "demo_liver" / "regions.parquet")
    assert regions.columns[-1] == "accessibility"
    windows, meta = load_windows(results / "prepare" / "demo_liver" / "windows_test.parquet")
    assert windows.dtype == np.float32 and windows.shape[1:] == (900, 283)
    assert windows.shape[0] >= 1
    assert meta["cell_type"] == "demo_liver" and meta["split"] == "test"
    assert meta["feature_names"][-1] == "accessibility" and len(meta["feature_names"]) == 283

    metrics = json.loads((results / "evaluate" / "all" / "metrics.json").read_text())
    predictors = ("model", "train_mean", "neighbour_mean", "window_mean", "ridge")
    assert list(metrics["per_cell_type"]) == DEMO
    for scores in [*metrics["per_cell_type"].values(), metrics["pooled_across_cell_types"]]:
        for part in ("accessibility", "motifs", "all_features"):
            for predictor in predictors:
                for name in ("mse", "r2"):
                    assert np.isfinite(scores[part][predictor][name]), (part, predictor, name)
            for predictor in ("model", "neighbour_mean", "ridge"):
                assert np.isfinite(scores[part][predictor]["pearson"]), (part, predictor)
                assert np.isfinite(scores[part][predictor]["within_window_pearson"])
        # A constant predictor has no defined correlation with the masked values.
        assert scores["accessibility"]["train_mean"]["pearson"] is None
    per_feature = pd.read_csv(results / "evaluate" / "all" / "metrics_per_feature.tsv", sep="\t")
    assert set(per_feature["predictor"]) == set(predictors)
    assert set(per_feature["cell_type"]) == {*DEMO, "pooled"}
    assert {p.name for p in (results / "evaluate" / "all" / "plots").iterdir()} >= {
        "accessibility_density.png",
        "pearson_by_cell_type.png",
        "accessibility_spread.png",
        "per_feature_pearson.png",
        "training_curves.png",
    }

    imputed = pd.read_parquet(results / "impute" / "all" / "demo_liver.parquet")
    assert set(imputed["split"]) == {"validation", "test"}
    assert imputed["region_id"].is_unique
    assert {"imputed.accessibility", "imputed_std.accessibility", "imputed_raw.CTCF"} <= set(
        imputed.columns
    )
    assert (imputed["imputed_std.accessibility"] > 0).all()  # two draws differ
    for stage in ("prepare", "train", "evaluate", "impute"):
        assert any((results / "benchmarks" / stage).rglob("*.tsv")), stage
        assert any((results / "logs" / stage).rglob("*.log")), stage

    # Everything is up to date: a second run has nothing to do.
    again = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", config)
    assert "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(tmp_path, "--report", "report.html", "--configfile", config)
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_accessibility_task_with_positions_runs_end_to_end(tmp_path):
    sections = {
        **TINY,
        "task": {"predict": "accessibility", "scaling": "window"},
        "model": {"preset": "tiny", "positions": "rotary"},
        "impute": {"splits": ["test"]},
    }
    config = write_config(tmp_path, ["demo_liver"], **sections)
    snakemake(tmp_path, "--cores", "2", "--configfile", config)
    results = tmp_path / "results"
    metrics = json.loads((results / "evaluate" / "all" / "metrics.json").read_text())
    assert metrics["task"] == {"predict": "accessibility", "scaling": "window"}
    scores = metrics["per_cell_type"]["demo_liver"]
    assert set(scores) == {"accessibility"}  # motif features are inputs, not predictions
    assert np.isfinite(scores["accessibility"]["ridge"]["pearson"])
    imputed = pd.read_parquet(results / "impute" / "all" / "demo_liver.parquet")
    assert [c for c in imputed.columns if c.startswith("imputed.")] == ["imputed.accessibility"]
    assert "observed.CTCF" in imputed.columns
