"""The Snakemake workflow: dry runs (jobs, profiles, a fourth cell type) and one end-to-end run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import DEMO, ROOT, TINY_RUN, snakemake, write_config

from getdiff.tensors import load_regions, load_windows


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = output.split("Job stats:")[1]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)
        if m.group(1) != "total"
    }


def test_dry_run_of_the_shipped_config_plans_every_stage(tmp_path):
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "cell_types.tsv"):
        (tmp_path / "config" / name).write_text((ROOT / "config" / name).read_text())
    counts = job_counts(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    assert counts == {
        "all": 1,
        "demo_data": 1,
        "scan_motifs": 1,
        "prepare": 3,
        "train": 1,
        "calibrate": 1,
        "evaluate": 1,
        "impute": 3,
        "tracks": 3,
        "anndata": 3,
        "locus_view": 1,
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
    per_cell_type = ("prepare", "impute", "tracks", "anndata")
    for rule in per_cell_type:
        assert four[rule] == three[rule] + 1, rule
    assert {k: v for k, v in four.items() if k not in per_cell_type} == {
        k: v for k, v in three.items() if k not in per_cell_type
    }


def test_groups_give_one_train_and_evaluate_job_each(tmp_path):
    groups = {"blood": ["demo_myeloid", "demo_lymphoid"], "liver": ["demo_liver"]}
    config = write_config(tmp_path, DEMO, train={"groups": groups})
    counts = job_counts(snakemake(tmp_path, "-n", "--cores", "1", "--configfile", config).stdout)
    assert counts["train"] == 2 and counts["evaluate"] == 2 and counts["impute"] == 3
    assert counts["calibrate"] == 2


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


def check_motif_sums(regions_path: Path, scan_dir: Path, covered: float) -> None:
    """Prepared motif features x their scaling = the scores of the hits overlapping each peak,
    summed per motif here by a plain pandas join."""
    regions = load_regions(regions_path)
    meta = regions.attrs["getdiff"]
    names = meta["feature_names"][:-1]
    assert names == (scan_dir / "motif_names.txt").read_text().split()
    columns = ["chrom", "start", "end", "name", "score", "strand"]
    hits = pd.read_csv(scan_dir / "motif_scan.tsv.gz", sep="\t", header=None, names=columns)
    peaks = regions[["chrom", "start", "end"]].reset_index(drop=True)
    expected = np.zeros((len(peaks), len(names)))
    for chrom, block in hits.groupby("chrom"):
        rows = np.flatnonzero(peaks["chrom"] == chrom)  # sorted, disjoint demo peaks
        starts, ends = peaks["start"].to_numpy()[rows], peaks["end"].to_numpy()[rows]
        last = np.searchsorted(starts, block["end"].to_numpy()) - 1  # last peak starting before
        for candidate in (last, last - 1):  # a hit can reach into two neighbouring peaks
            ok = (candidate >= 0) & (ends[np.maximum(candidate, 0)] > block["start"].to_numpy())
            motif = pd.Index(names).get_indexer(block["name"][ok])
            np.add.at(expected, (rows[candidate[ok]], motif), block["score"].to_numpy()[ok])
    scale = np.asarray(meta["scaling"]["motif_max"], dtype=np.float64)
    features = regions[names].to_numpy(np.float64) * np.where(scale > 0, scale, 1.0)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-3)
    assert expected.any(axis=1).mean() > covered  # the fraction of peaks with a hit


def check_browser_outputs(results: Path, fai: Path) -> None:
    """bigWig tracks hold each peak's raw value with the FASTA's sizes, each h5ad loads with
    anndata, and the locus view has its default locus (issue 27)."""
    import anndata
    import pyBigWig

    sizes = dict(line.split("\t")[:2] for line in fai.read_text().splitlines())
    imputed = pd.read_parquet(results / "impute" / "all" / "demo_liver.parquet")
    peaks = list(zip(imputed["chrom"], imputed["start"], strict=True))
    for track, column in (("observed", "observed"), ("upper", "imputed_upper")):
        with pyBigWig.open(str(results / "tracks" / "all" / f"demo_liver.{track}.bw")) as bw:
            assert {c: str(n) for c, n in bw.chroms().items()} == sizes
            got = [bw.values(c, s, s + 1)[0] for c, s in peaks]
        expected = imputed[f"{column}_raw.accessibility"].to_numpy(np.float32)
        np.testing.assert_array_equal(np.float32(got), expected)
    adata = anndata.read_h5ad(results / "impute" / "all" / "demo_liver.h5ad")
    assert adata.shape == (len(imputed), 282) and adata.uns["getdiff"]["model"]
    assert list(adata.obs["region_id"]) == list(imputed["region_id"])
    assert len(list((results / "tracks" / "all" / "loci").glob("chr11_*.png"))) == 1


@pytest.mark.slow
def test_end_to_end_run_writes_every_output_with_the_right_shapes(tmp_path):
    from getdiff.genomics.peaks import read_peak_file

    tiny = {**TINY_RUN, "demo": {**TINY_RUN["demo"], "fragments_for": "demo_myeloid"}}
    config = write_config(tmp_path, DEMO, fragments=("demo_myeloid",), scan=True, **tiny)
    snakemake(tmp_path, "--cores", "2", "--configfile", config)
    results = tmp_path / "results"

    # The motif features are the per-peak sums of the hits of the workflow's own scan.
    check_motif_sums(results / "prepare" / "demo_liver" / "regions.parquet", results / "scan", 0.9)

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
        "interval_reliability.png",
    }
    # Every predictor's intervals are scored, at both levels, from the validation calibration.
    assert metrics["intervals"]["calibration_split"] == "validation"
    for scores in metrics["per_cell_type"].values():
        for predictor in predictors:
            intervals = scores["accessibility"][predictor]["intervals"]
            assert set(intervals) == {"0.5", "0.9", "reliability"}
            assert 0 <= intervals["0.5"]["coverage"] <= intervals["0.9"]["coverage"] <= 1
            assert len(intervals["0.9"]["coverage_by_width_quintile"]) == 5

    imputed = pd.read_parquet(results / "impute" / "all" / "demo_liver.parquet")
    assert set(imputed["split"]) == {"validation", "test"}
    assert imputed["region_id"].is_unique
    bounds = {
        f"imputed_{side}{raw}.{feature}"
        for side in ("lower", "upper")
        for raw in ("", "_raw")
        for feature in ("accessibility", "CTCF")
    }
    assert {"imputed.accessibility", "imputed_raw.CTCF"} | bounds <= set(imputed.columns)
    assert not any(c.startswith("imputed_std") for c in imputed.columns)  # not an uncertainty
    for unit in ("", "_raw"):
        lower = imputed[f"imputed_lower{unit}.accessibility"]
        upper = imputed[f"imputed_upper{unit}.accessibility"]
        assert (lower >= 0).all() and (lower < upper).all()
    info = json.loads(
        pq.read_schema(results / "impute" / "all" / "demo_liver.parquet").metadata[b"getdiff"]
    )
    assert info["intervals"]["level"] == 0.9
    assert info["intervals"]["calibration_split"] == "validation"
    # impute draws 2 samples, evaluate (whose predictions were calibrated) 1: recorded, not silent
    assert info["intervals"]["sampler_differences"] == ["num_samples: calibrated 1, here 2"]
    for stage in ("prepare", "train", "calibrate", "evaluate", "impute", "tracks", "anndata"):
        assert any((results / "benchmarks" / stage).rglob("*.tsv")), stage
        assert any((results / "logs" / stage).rglob("*.log")), stage
    check_browser_outputs(results, tmp_path / "demo" / "genome.fa.gz.fai")

    # Everything is up to date: a second run has nothing to do.
    again = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", config)
    assert "Nothing to be done" in again.stdout + again.stderr

    report = snakemake(tmp_path, "--report", "report.html", "--configfile", config)
    assert report.returncode == 0 and (tmp_path / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_accessibility_task_with_positions_runs_end_to_end(tmp_path):
    sections = {
        **TINY_RUN,
        "task": {"predict": "accessibility", "scaling": "window"},
        "model": {"preset": "tiny", "positions": "rotary"},
        "impute": {"splits": ["test"]},
        "interpret": {"designs": 2, "bootstrap": 20},
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
    check_interpretation(tmp_path, config, results)


def interpret(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "getdiff", "interpret", *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True)


def check_interpretation(workdir: Path, config: Path, results: Path) -> None:
    """The interpret rule's tables and plots, and getdiff interpret --regions with its errors."""
    effects = pd.read_csv(results / "interpret" / "all" / "motif_effects.tsv", sep="\t")
    columns = ["cell_type", "motif", "n_regions", "cis_effect", "cis_low", "cis_high"]
    columns += ["context_effect", "context_low", "context_high", "differential_cis"]
    assert set(columns) <= set(effects.columns)
    assert len(effects) == 282 and set(effects["cell_type"]) == {"demo_liver"}
    measured = effects[effects["n_regions"] >= 20]
    assert len(measured) > 100 and measured["cis_effect"].notna().all()
    assert (measured["cis_low"] <= measured["cis_high"]).all()
    assert np.allclose(measured["differential_cis"], 0)  # one cell type: its own mean
    # the ridge baseline beside the model: measured where the model's effect is
    assert measured["ridge_cis_effect"].notna().all()
    assert effects["ridge_context_effect"].isna().equals(effects["context_effect"].isna())
    by_distance = pd.read_csv(results / "interpret" / "all" / "context_by_distance.tsv", sep="\t")
    assert set(by_distance["band"]) == {"0-10kb", "10-30kb", "30-100kb"}
    plots = results / "interpret" / "all" / "plots"
    names = {p.name for p in plots.glob("*.png")}
    assert names == {"motif_effects.png", "context_by_distance.png"}

    test = load_regions(results / "prepare" / "demo_liver" / "regions.parquet")
    test = test[test["chrom"] == "chr11"].iloc[5]
    far = "chr1\t1\t2\n"  # before every demo peak (the first 1% of a chromosome has none)
    (workdir / "regions.bed").write_text(f"chr11\t{test['start']}\t{test['end']}\n{far}")
    (workdir / "none.bed").write_text(far)
    common = ["--config", str(config), "--group", "all", "--prepared-dir", str(results / "prepare")]
    common += ["--model", str(results / "train" / "all" / "model.safetensors")]
    out = str(workdir / "perturbed.tsv")
    motifs = f"{effects['motif'][0]},{effects['motif'][1]}"
    calibration = str(results / "calibrate" / "all" / "calibration.parquet")
    run = interpret(
        workdir, *common, "--regions", "regions.bed", "--motifs", motifs, "--output", out,
        "--calibration", calibration,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "1 of 2 regions overlap a peak" in run.stderr
    table = pd.read_csv(out, sep="\t")
    assert set(table["cell_type"]) == {"demo_liver"} and (table["split"] == "test").all()
    assert np.allclose(table["effect"], table["predicted"] - table["perturbed"], atol=1e-4)
    assert (table["predicted_low"] <= table["predicted_high"]).all()
    for extra, message in (
        (["--regions", "regions.bed", "--motifs", "CTFC"], "did you mean CTCF"),
        (["--regions", "none.bed", "--motifs", "CTCF"], "none of its 1 regions overlaps a peak"),
    ):
        failed = interpret(workdir, *common, *extra, "--output", out)
        assert failed.returncode == 2 and message in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def jaspar_meme(path: Path, collection: str, tax_group: str, limit: int) -> Path:
    """Matrices of pyjaspar's JASPAR copy written the way jaspar.elixir.no's MEME download is."""
    from pyjaspar import jaspardb

    motifs = jaspardb().fetch_motifs(collection=collection, tax_group=[tax_group])[:limit]
    lines = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", ""]
    lines += ["Background letter frequencies", "A 0.25 C 0.25 G 0.25 T 0.25", ""]
    for motif in motifs:
        counts = np.array([list(motif.counts[b]) for b in "ACGT"])
        sites = int(counts[:, 0].sum())
        lines.append(f"MOTIF {motif.matrix_id} {motif.name}")
        lines.append(
            f"letter-probability matrix: alength= 4 w= {motif.length} nsites= {sites} E= 0"
        )
        lines += ["  " + "  ".join(f"{p:.6f}" for p in column / sites) for column in counts.T]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.mark.slow
def test_a_fly_genome_with_a_jaspar_meme_file_runs_by_editing_the_config_only(tmp_path):
    """Non-human sequence names, a FASTA with line width 70 and an index built by the workflow,
    JASPAR insect motifs from a MEME file: every motif is a feature, no GET checkpoint."""
    rng = np.random.default_rng(0)
    chroms = {"2L": 420_000, "3R": 300_000, "X": 300_000}
    with open(tmp_path / "dm6.fa", "w") as fasta:
        for name, size in chroms.items():
            sequence = "".join(
                np.array(list("ACGT"))[rng.choice(4, size, p=[0.29, 0.21, 0.21, 0.29])]
            )
            fasta.write(f">{name}\n")
            fasta.writelines(f"{sequence[i : i + 70]}\n" for i in range(0, size, 70))
    rows = []
    for name, size in chroms.items():
        for start in range(1000, size - 1000, 700):
            rows.append(f"{name}\t{start}\t{start + 300}\tp\t{rng.integers(1, 200)}\n")
    (tmp_path / "fly.bed").write_text("".join(rows))
    (tmp_path / "sheet.tsv").write_text("cell_type\tpeaks\tcounts_column\nfly_gut\tfly.bed\t5\n")
    jaspar_meme(tmp_path / "JASPAR2026_CORE_insects.meme", "CORE", "insects", 40)
    config = {
        "cell_types": "sheet.tsv",
        "genome_fasta": "dm6.fa",
        "motifs": "JASPAR2026_CORE_insects.meme",
        "genome": "dm6",
        "prepare": {
            "chromosomes": list(chroms),
            "validation_chromosomes": ["3R"],
            "test_chromosomes": ["X"],
            "window_size": 100,
        },
        **{k: v for k, v in TINY_RUN.items() if k in ("model", "train")},
        "impute": {"splits": ["test"], "num_samples": 1},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--cores", "2", "--configfile", str(tmp_path / "config.yaml"))
    results = tmp_path / "results"
    assert (tmp_path / "dm6.fa.fai").exists()
    check_motif_sums(results / "prepare" / "fly_gut" / "regions.parquet", results / "scan", 0.5)
    regions = load_regions(results / "prepare" / "fly_gut" / "regions.parquet")
    assert len(regions.attrs["getdiff"]["feature_names"]) == 41  # 40 motifs + accessibility
    assert set(regions["chrom"]) == set(chroms)
    metrics = json.loads((results / "evaluate" / "all" / "metrics.json").read_text())
    assert np.isfinite(metrics["per_cell_type"]["fly_gut"]["accessibility"]["model"]["mse"])
    imputed = pd.read_parquet(results / "impute" / "all" / "fly_gut.parquet")
    assert "imputed.MA0013.1" in imputed.columns


def test_a_users_configfile_names_what_it_inherits_from_the_shipped_config(tmp_path):
    """Snakemake merges --configfile over config/config.yaml: every key the user's file leaves
    out and the shipped demo config sets away from the schema's default is printed."""
    (tmp_path / "config").mkdir()
    for name in ("config.yaml", "cell_types.tsv"):
        (tmp_path / "config" / name).write_text((ROOT / "config" / name).read_text())
    user = tmp_path / "mine.yaml"
    user.write_text(yaml.safe_dump({"model": {"preset": "tiny", "positions": "none"}}))
    result = snakemake(tmp_path, "-n", "--configfile", str(user))
    log = result.stdout + result.stderr
    assert "so they apply" in log and "model.cell_type_embedding=true" in log
    assert "model.positions" not in log  # the user set it
    assert "model.preset" not in log  # the shipped value is the schema default
    alone = snakemake(
        tmp_path, "-n", "--configfile", str(user), "--replace-workflow-config", check=False
    )
    assert "so they apply" not in alone.stdout + alone.stderr


def test_evaluate_cell_types_outside_the_group_are_calibrated_and_scored(tmp_path):
    """Leave-cell-type-out: a model trained on two cell types is calibrated and evaluated on
    the third's windows too (evaluate.cell_types); train reads only the group's."""
    groups = {"two": ["demo_myeloid", "demo_lymphoid"]}
    config = write_config(tmp_path, DEMO, train={"groups": groups}, evaluate={"cell_types": DEMO})
    plan = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", config).stdout
    jobs = {block.split("\n", 1)[0].strip(): block for block in plan.split("rule ")[1:]}
    for rule in ("calibrate:", "evaluate:"):
        assert "prepare/demo_liver/windows_" in jobs[rule], rule
    assert "prepare/demo_liver/" not in jobs["train:"]


def test_a_cell_type_in_no_group_is_imputed_by_the_group_its_sheet_row_names(tmp_path):
    """The sheet's impute_with: demo_liver, in no group, is calibrated and imputed (with its
    tracks and AnnData) by the model group "two", which never trains on it."""
    groups = {"two": ["demo_myeloid", "demo_lymphoid"]}
    config = write_config(tmp_path, DEMO, train={"groups": groups})
    alone = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", config)
    assert "demo_liver are in no train.groups group" in alone.stdout + alone.stderr
    assert job_counts(alone.stdout)["impute"] == 2
    sheet = tmp_path / "cell_types.tsv"
    header, *rows = sheet.read_text().splitlines()
    rows = [row + ("\ttwo" if row.startswith("demo_liver\t") else "\t") for row in rows]
    sheet.write_text("\n".join([f"{header}\timpute_with", *rows]) + "\n")
    result = snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", config)
    assert "no model imputes" not in result.stdout + result.stderr
    counts = job_counts(result.stdout)
    assert counts["impute"] == counts["tracks"] == counts["anndata"] == 3
    assert counts["train"] == counts["calibrate"] == 1
    jobs = result.stdout.split("rule ")[1:]
    impute = [job for job in jobs if job.startswith("impute:") and "demo_liver" in job]
    assert len(impute) == 1 and "results/impute/two/demo_liver.parquet" in impute[0]
    (calibrate,) = [job for job in jobs if job.startswith("calibrate:")]
    assert "prepare/demo_liver/windows_validation" in calibrate
    (train,) = [job for job in jobs if job.startswith("train:")]
    assert "prepare/demo_liver/" not in train
