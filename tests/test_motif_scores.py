"""Motif aggregation: sum of overlapping hit scores per peak and cluster, scan validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from getdiff.errors import InputError
from getdiff.genomics.motif_scores import (
    aggregate_motif_scores,
    load_cluster_names,
    load_motif_mapping,
)

CLUSTERS = ["A", "B", "C"]


def dense_sums(*args, **kwargs) -> tuple[np.ndarray, dict]:
    """aggregate_motif_scores with the sums as a dense float32 array."""
    sums, stats = aggregate_motif_scores(*args, **kwargs)
    return sums.toarray(), stats


def peaks_frame(rows: list[tuple[str, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["chrom", "start", "end"])


def brute_force(peaks: pd.DataFrame, hits: pd.DataFrame, clusters: list[str]) -> np.ndarray:
    """Reference: every (peak, hit) pair checked for any overlap of half-open intervals."""
    out = np.zeros((len(peaks), len(clusters)))
    for i, p in enumerate(peaks.itertuples()):
        for h in hits.itertuples():
            if h.chrom == p.chrom and h.start < p.end and h.end > p.start:
                out[i, clusters.index(h.name)] += h.score
    return out


def test_default_cluster_names_are_the_282_clusters_in_order():
    names = load_cluster_names()
    assert len(names) == 282
    assert names[:3] == ["AHR", "AIRE", "AP1/1"]
    assert names[16] == "CTCF"
    assert names[-1] == "ZSCAN4"


def test_duplicate_cluster_name_is_an_error(tmp_path, write_lines):
    path = write_lines(tmp_path / "c.txt", ["A", "B", "A"])
    with pytest.raises(InputError, match="listed twice"):
        load_cluster_names(path)


def test_hand_computed_sums_with_half_open_edges_and_nested_peaks(tmp_path, write_lines):
    peaks = peaks_frame(
        [("chr1", 100, 200), ("chr1", 150, 160), ("chr1", 300, 400), ("chr2", 0, 50)]
    )
    scan = write_lines(
        tmp_path / "scan.bed",
        [
            "chr1\t90\t100\tA\t1.0",  # ends where peak 0 starts: no overlap
            "chr1\t90\t101\tA\t2.0",  # overlaps peak 0 by 1 bp
            "chr1\t155\t158\tB\t3.0",  # inside peak 0 and nested peak 1
            "chr1\t199\t310\tC\t4.0",  # spans peaks 0 and 2
            "chr1\t400\t410\tA\t8.0",  # starts where peak 2 ends: no overlap
            "chr1\t350\t360\tB\t0.5",
            "chr1\t350\t360\tB\t0.25",  # same cluster twice: summed
            "chr2\t49\t60\tC\t5.0",
            "chr3\t0\t10\tA\t9.0",  # chromosome without peaks
        ],
    )
    features, stats = dense_sums(scan, peaks, CLUSTERS)
    expected = [[2.0, 3.0, 4.0], [0.0, 3.0, 0.0], [0.0, 0.75, 4.0], [0.0, 0.0, 5.0]]
    np.testing.assert_array_equal(features, np.array(expected, dtype=np.float32))
    assert features.dtype == np.float32
    assert stats["hits_overlapping_peaks"] == 6
    assert stats["hits_on_chromosomes_without_peaks"] == 1
    assert stats["scan_records"] == 9


def test_result_rows_follow_the_callers_peak_order(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["chr1\t10\t11\tA\t1", "chr2\t10\t11\tB\t2"])
    peaks = peaks_frame([("chr2", 0, 20), ("chr1", 0, 20)])
    features, _ = dense_sums(scan, peaks, CLUSTERS)
    np.testing.assert_array_equal(features, [[0, 2, 0], [1, 0, 0]])


def test_random_cases_match_brute_force_for_any_chunk_size(tmp_path, write_lines):
    rng = np.random.default_rng(7)
    starts = rng.integers(0, 2000, 40)
    peaks = peaks_frame(
        [
            (f"chr{c}", int(s), int(s + w))
            for c, s, w in zip(
                rng.integers(1, 3, 40), starts, rng.integers(1, 300, 40), strict=True
            )
        ]
    ).drop_duplicates(ignore_index=True)
    hit_start = rng.integers(0, 2300, 300)
    hits = pd.DataFrame(
        {
            "chrom": [f"chr{c}" for c in rng.integers(1, 4, 300)],
            "start": hit_start,
            "end": hit_start + rng.integers(1, 40, 300),
            "name": rng.choice(CLUSTERS, 300),
            "score": np.round(rng.uniform(0, 10, 300), 3),
        }
    )
    scan = write_lines(
        tmp_path / "scan.bed",
        [f"{h.chrom}\t{h.start}\t{h.end}\t{h.name}\t{h.score}" for h in hits.itertuples()],
    )
    expected = brute_force(peaks, hits, CLUSTERS)
    for chunk_lines in (1, 17, 10_000):
        features, _ = dense_sums(scan, peaks, CLUSTERS, chunk_lines=chunk_lines)
        np.testing.assert_allclose(features, expected, rtol=1e-5)


def test_gzip_scan_with_header_crlf_blank_lines_and_extra_columns(tmp_path, write_lines):
    lines = [
        "track name=scan",
        "#chrom\tstart",
        "chr1\t5\t15\tA\t2\t+\tx\ty",
        "",
        "chr1\t6\t7\tB\t1",
    ]
    scan = write_lines(tmp_path / "scan.bed.gz", lines, gz=True, eol="\r\n")
    features, _ = dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS)
    np.testing.assert_array_equal(features, [[2, 1, 0]])


def test_mapping_file_maps_motif_names_to_clusters(tmp_path, write_lines):
    mapping = load_motif_mapping(
        write_lines(tmp_path / "map.tsv", ["# motif\tcluster", "M1\tA", "M2\tA", "M3\tC"]),
        CLUSTERS,
    )
    scan = write_lines(
        tmp_path / "scan.bed", ["chr1\t1\t2\tM1\t1", "chr1\t1\t2\tM2\t2", "chr1\t1\t2\tB\t4"]
    )
    features, _ = dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS, mapping=mapping)
    np.testing.assert_array_equal(features, [[3, 4, 0]])


def test_mapping_to_unknown_cluster_is_an_error_with_line(tmp_path, write_lines):
    path = write_lines(tmp_path / "map.tsv", ["M1\tA", "M2\tCC"])
    with pytest.raises(InputError, match=r"map\.tsv:2: unknown cluster 'CC' \(closest known: C"):
        load_motif_mapping(path, CLUSTERS)


def test_unknown_cluster_error_lists_closest_names_and_line(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["chr1\t1\t2\tCTCF\t1", "chr1\t1\t2\tCTCFL\t1"])
    with pytest.raises(InputError) as err:
        dense_sums(scan, peaks_frame([("chr1", 0, 10)]), load_cluster_names())
    message = str(err.value)
    assert message.startswith(f"{scan}:2: unknown motif cluster 'CTCFL' (closest known: CTCF")
    assert "unknown_clusters: drop" in message


def test_unknown_clusters_can_be_dropped_and_counted(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["chr1\t1\t2\tA\t1", "chr1\t1\t2\tZ\t1"])
    features, stats = dense_sums(
        scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS, unknown_clusters="drop"
    )
    np.testing.assert_array_equal(features, [[1, 0, 0]])
    assert stats["hits_unknown_cluster_dropped"] == 1


def test_chromosome_naming_mismatch_is_an_error_in_strict_mode(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["#h", "1\t1\t2\tA\t1"])
    with pytest.raises(InputError) as err:
        dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS)
    assert str(err.value).startswith(f"{scan}:2: chromosome naming mismatch: the scan has '1'")
    assert "chrom_naming: harmonise" in str(err.value)


def test_chromosome_naming_is_harmonised_on_request(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["1\t1\t2\tA\t1", "chrX\t1\t2\tB\t1"])
    peaks = peaks_frame([("chr1", 0, 10), ("X", 0, 10)])
    features, _ = dense_sums(scan, peaks, CLUSTERS, chrom_naming="harmonise")
    np.testing.assert_array_equal(features, [[1, 0, 0], [0, 1, 0]])


def test_scan_without_any_hit_on_peak_chromosomes_is_an_error(tmp_path, write_lines):
    scan = write_lines(tmp_path / "scan.bed", ["Chr1\t1\t2\tA\t1"])
    with pytest.raises(InputError, match="no motif hit lies on the peaks' chromosomes"):
        dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS)


@pytest.mark.parametrize("lines", [[], ["# header only"]])
def test_empty_scan_is_an_error(tmp_path, write_lines, lines):
    scan = write_lines(tmp_path / "scan.bed", lines)
    with pytest.raises(InputError, match=r"scan\.bed: no motif hits found"):
        dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS)


BAD_SCAN_LINES = [
    ("chr1\t1\t2\tA", "expected at least 5 columns: chrom start end name score"),
    ("chr1\t1\t2", "expected at least 5 columns"),
    ("chr1\tone\t2\tA\t1", "start (column 2) must be an integer"),
    ("chr1\t1\t2.5\tA\t1", "end (column 3) must be an integer"),
    ("chr1\t1\t99999999999999999999999\tA\t1", "end (column 3) must be an integer below 10^18"),
    ("chr1\t1\t2\tA\thigh", "score (column 5) must be a finite number"),
    ("chr1\t1\t2\tA\tnan", "score (column 5) must be a finite number"),
    ("chr1\t1\t2\tA\t-inf", "score (column 5) must be a finite number"),
    ("chr1\t1\t2\tA\t-0.5", "score (column 5) must be >= 0"),
    ("chr1\t-1\t2\tA\t1", "coordinates must be >= 0"),
    ("chr1\t5\t5\tA\t1", "start must be < end"),
]


@pytest.mark.parametrize("chunk_lines", [1, 1000])
@pytest.mark.parametrize(("line", "expected"), BAD_SCAN_LINES)
def test_bad_scan_line_names_file_line_and_expectation(
    tmp_path, write_lines, line, expected, chunk_lines
):
    scan = write_lines(
        tmp_path / "scan.bed", ["#header", "chr1\t1\t2\tA\t1", "chr1\t3\t4\tB\t2", line]
    )
    with pytest.raises(InputError) as err:
        dense_sums(scan, peaks_frame([("chr1", 0, 10)]), CLUSTERS, chunk_lines=chunk_lines)
    assert str(err.value).startswith(f"{scan}:4: ")
    assert expected in str(err.value)


def test_missing_scan_is_an_error(tmp_path):
    with pytest.raises(InputError, match="motif scan not found"):
        dense_sums(tmp_path / "nope.bed", peaks_frame([("chr1", 0, 1)]), CLUSTERS)


def test_tabix_query_gives_the_same_sums_as_streaming(tmp_path):
    pysam = pytest.importorskip("pysam")
    peaks = peaks_frame(
        [("chr1", 100, 200), ("chr1", 150, 250), ("chr1", 300, 310), ("chr2", 5, 8)]
    )
    lines = [
        "chr1\t50\t60\tA\t1",
        "chr1\t190\t305\tB\t2",  # spans the gap between two merged peak blocks
        "chr1\t240\t260\tC\t3",
        "chr1\t305\t306\tA\t4",
        "chr2\t1\t6\tC\t5",
    ]
    plain = tmp_path / "scan.bed"
    plain.write_text("\n".join(lines) + "\n")
    scan = tmp_path / "scan.bed.gz"
    pysam.tabix_compress(str(plain), str(scan))
    pysam.tabix_index(str(scan), preset="bed")
    streamed, _ = dense_sums(scan, peaks, CLUSTERS, use_index=False)
    queried, _ = dense_sums(scan, peaks, CLUSTERS, use_index=True)
    expected = [[0, 2, 0], [0, 2, 3], [4, 2, 0], [0, 0, 5]]
    np.testing.assert_array_equal(streamed, expected)
    np.testing.assert_array_equal(queried, expected)


def test_a_tbi_older_than_its_scan_is_refused_or_streamed_past(tmp_path, monkeypatch, caplog):
    import os

    import getdiff.genomics.motif_scores

    pysam = pytest.importorskip("pysam")
    peaks = peaks_frame([("chr1", 100, 200), ("chr2", 5, 8)])
    plain = tmp_path / "scan.bed"
    plain.write_text("chr1\t150\t160\tA\t1\nchr2\t1\t6\tC\t5\n")
    scan = tmp_path / "scan.bed.gz"
    pysam.tabix_compress(str(plain), str(scan))
    pysam.tabix_index(str(scan), preset="bed")
    old = scan.stat().st_mtime - 100
    os.utime(f"{scan}.tbi", (old, old))  # the scan rewritten after indexing
    with pytest.raises(InputError, match=r"scan.bed.gz.tbi: this index does not fit .*tabix -f"):
        dense_sums(scan, peaks, CLUSTERS, use_index=True)
    monkeypatch.setattr(
        getdiff.genomics.motif_scores, "INDEX_MIN_BYTES", 0
    )  # would be queried by region
    streamed, _ = dense_sums(scan, peaks, CLUSTERS)
    np.testing.assert_array_equal(streamed, [[1, 0, 0], [0, 0, 5]])
    assert any("streamed instead" in r.getMessage() for r in caplog.records)
