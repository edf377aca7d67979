"""prepare's outputs on a committed fixture match those recorded before the reader and the
aggregation were rewritten (getdiff a55ce8e): integers and strings exactly, floats to 1e-6
relative; and that tolerance still fails a change of one input score in its last decimal.

tests/data/prepare_fixture/ holds the inputs (1,510 peaks in shuffled order with nested and
overlapping ones, a narrowPeak counts column, a chromosome not selected; 29,800 hits with a header,
cluster and mapped motif names, hits on a chromosome without peaks) and ``expected.npz``, made by
tests/make_fixtures.py (provenance in ``expected.provenance.json``).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from helpers import prepare_with

from getdiff.tensors import SPLITS, load_regions, load_window_set, region_features

FIXTURE = Path(__file__).parent / "data" / "prepare_fixture"
SETTINGS = dict(
    cell_type="fixture",
    counts_column=7,
    chromosomes=["chr1", "chr2", "chr3"],
    validation_chromosomes=["chr2"],
    test_chromosomes=["chr3"],
    window_size=100,
    max_span=10**6,
    train_stride=50,
    train_jitter=10,
    seed=3,
)
# Floats: the features are float64 arithmetic (sums of parsed scores, a per-cluster max, log10 of
# CPM) rounded once to float32. Another CPU's libm or summation order moves the float64 value by
# a few float64 ulps, which flips the float32 rounding by at most 1 ulp (2^-23 = 1.2e-7
# relative); the recording code (a55ce8e) differs from today's by up to 2.3e-7 (it kept scores
# in float32: motif_max differs by 7e-8, half a float32 ulp). 1e-6 relative is ~8 float32 ulps,
# 4x the largest difference seen; atol 0, since a region without hits is exactly 0 in both. A
# change of one of the 29,800 input scores in its 4th decimal already fails it (the test below).
FLOAT_RTOL = 1e-6


def assert_matches_recorded(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]):
    """Same keys; floats to FLOAT_RTOL, everything else (coordinates, ids, names) exactly."""
    assert sorted(got) == sorted(expected)
    for key in expected:
        if expected[key].dtype.kind == "f":
            np.testing.assert_allclose(
                got[key], expected[key], rtol=FLOAT_RTOL, atol=0, err_msg=key
            )
        else:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def fixture_outputs(outdir: Path, inputs: Path = FIXTURE, **run: object) -> dict[str, np.ndarray]:
    """Run prepare on the fixture's inputs (in folder ``inputs``); the outputs as flat arrays
    (the expected.npz keys)."""
    prepare_with(
        outdir,
        peaks=inputs / "peaks.narrowPeak.gz",
        motif_scan=inputs / "scan.bed.gz",
        cluster_names=inputs / "clusters.txt",
        motif_to_cluster=inputs / "motif_to_cluster.tsv",
        **SETTINGS,
        **run,
    )
    regions = load_regions(outdir / "regions.parquet")
    meta = regions.attrs["getdiff"]
    arrays = {
        "regions.coordinates": regions[["start", "end", "region_id"]].to_numpy(np.int64),
        "regions.chrom": regions["chrom"].to_numpy(str),
        "regions.name": regions["name"].to_numpy(str),
        "regions.features": region_features(regions),
        "motif_max": np.asarray(meta["scaling"]["motif_max"], np.float64),
        "motif_scan": np.array(
            json.dumps({k: v for k, v in meta["motif_scan"].items() if k != "path"}, sort_keys=True)
        ),
    }
    for split in SPLITS:
        window_set = load_window_set(outdir / f"windows_{split}.parquet")
        arrays[f"{split}.region_id"] = window_set.regions["region_id"].to_numpy(np.int64)
        arrays[f"{split}.starts"] = window_set.starts
        arrays[f"{split}.scored"] = window_set.scored
        arrays[f"{split}.features"] = window_set.features
    return arrays


@pytest.mark.parametrize("run", [{}, {"chunk_lines": 997}], ids=["whole", "chunked"])
def test_prepare_outputs_match_the_recorded_ones_floats_to_rounding(tmp_path, run):
    expected = np.load(FIXTURE / "expected.npz")
    got = fixture_outputs(tmp_path / "out", **run)
    assert_matches_recorded(got, expected)
    # The fixture exercises what it claims to.
    assert (got["regions.features"][:, :-1] > 0).any(axis=1).mean() > 0.5
    assert len(got["regions.name"]) == 1500
    assert all(len(got[f"{split}.starts"]) > 0 for split in SPLITS)


def test_the_recorded_outputs_tolerance_fails_one_score_changed_in_its_last_decimal(tmp_path):
    inputs = shutil.copytree(FIXTURE, tmp_path / "inputs")

    def read(name: str) -> list[list[str]]:
        text = gzip.decompress((inputs / name).read_bytes()).decode()
        return [line.split("\t") for line in text.splitlines()]

    peaks = [(int(p[1]), int(p[2])) for p in read("peaks.narrowPeak.gz") if p[0] == "chr1"]
    hits = read("scan.bed.gz")
    # The first chr1 hit within a peak: its score has 4 decimals; add 1 to the last one.
    k = next(
        i
        for i, hit in enumerate(hits)
        if hit[0] == "chr1" and any(s <= int(hit[1]) and int(hit[2]) <= e for s, e in peaks)
    )
    assert len(hits[k][4].split(".")[1]) == 4, hits[k]
    hits[k][4] = f"{float(hits[k][4]) + 1e-4:.4f}"
    text = "".join("\t".join(hit) + "\n" for hit in hits)
    (inputs / "scan.bed.gz").write_bytes(gzip.compress(text.encode()))
    expected = np.load(FIXTURE / "expected.npz")
    got = fixture_outputs(tmp_path / "out", inputs)
    with pytest.raises(AssertionError, match="regions.features"):
        assert_matches_recorded(got, expected)
    # Not a near miss: far beyond the 2.3e-7 by which the recording code and today's differ.
    key = "regions.features"
    changed = got[key] != expected[key]
    deviation = np.abs(got[key] - expected[key])[changed] / np.abs(expected[key][changed])
    assert deviation.max() > 5 * FLOAT_RTOL
