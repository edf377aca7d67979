"""prepare's outputs on a committed fixture equal those recorded before the reader and the
aggregation were rewritten (getdiff a55ce8e), to 1e-6 relative.

tests/data/prepare_fixture/ holds the inputs (1,510 peaks in shuffled order with nested and
overlapping ones, a narrowPeak counts column, a chromosome not selected; 29,800 hits with a header,
cluster and mapped motif names, hits on a chromosome without peaks) and ``expected.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import prepare_with

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


def fixture_outputs(outdir: Path, **run: object) -> dict[str, np.ndarray]:
    """Run prepare on the fixture; the outputs as flat arrays (the expected.npz keys)."""
    prepare_with(
        outdir,
        peaks=FIXTURE / "peaks.narrowPeak.gz",
        motif_scan=FIXTURE / "scan.bed.gz",
        cluster_names=FIXTURE / "clusters.txt",
        motif_to_cluster=FIXTURE / "motif_to_cluster.tsv",
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
def test_prepare_outputs_equal_the_recorded_ones(tmp_path, run):
    expected = np.load(FIXTURE / "expected.npz")
    got = fixture_outputs(tmp_path / "out", **run)
    assert sorted(got) == sorted(expected.files)
    for key in expected.files:
        if expected[key].dtype.kind == "f":
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # The fixture exercises what it claims to.
    assert (got["regions.features"][:, :-1] > 0).any(axis=1).mean() > 0.5
    assert len(got["regions.name"]) == 1500
    assert all(len(got[f"{split}.starts"]) > 0 for split in SPLITS)
