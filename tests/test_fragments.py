"""Counts from a fragments file: insertion sites per peak against a hand-computed table,
barcode lists and groups (pseudobulk), format detection, streaming and the errors."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_three_peaks

import getdiff.genomics.fragments as fragments
from getdiff.errors import InputError
from getdiff.genomics.fragments import count_insertions, counts_format, read_barcodes
from getdiff.tensors import load_regions

PEAKS = pd.DataFrame(
    {"chrom": ["chr1", "chr1", "chr2"], "start": [100, 150, 0], "end": [200, 300, 50]}
)
# Insertion sites are start and end - 1 (0-based): 90/119, 160/169 (both peaks 1 and 2),
# 250/399, 10/19 (chr2), and chrM (no peak there).
FRAGMENTS = [
    "# id=demo",
    "# pipeline=cellranger-atac",
    "chr1\t90\t120\tAAA\t1",
    "chr1\t160\t170\tBBB\t3",
    "chr1\t250\t400\tAAA\t1",
    "chr2\t10\t20\tCCC\t1",
    "chrM\t1\t5\tAAA\t2",
]


@pytest.fixture
def fragments_file(tmp_path, write_lines):
    return write_lines(tmp_path / "fragments.tsv.gz", FRAGMENTS, gz=True)


def test_insertion_sites_per_peak_match_the_hand_computed_table(fragments_file):
    counts = count_insertions(fragments_file, PEAKS, source="peaks.bed")
    # peak 1: 119, 160, 169; peak 2 (overlaps peak 1): 160, 169, 250; chr2: 10, 19.
    assert counts.tolist() == [3, 3, 2]


def test_a_barcode_list_counts_only_its_fragments(fragments_file, tmp_path, write_lines):
    listed = write_lines(tmp_path / "barcodes.txt", ["AAA"])
    counts = count_insertions(fragments_file, PEAKS, read_barcodes(listed, "any"))
    assert counts.tolist() == [1, 1, 0]


def test_two_barcode_groups_of_one_file_give_two_cell_types(fragments_file, tmp_path, write_lines):
    table = write_lines(tmp_path / "groups.tsv", ["AAA\tT1", "BBB\tT2", "CCC\tT2"])
    t1 = count_insertions(fragments_file, PEAKS, read_barcodes(table, "T1"))
    t2 = count_insertions(fragments_file, PEAKS, read_barcodes(table, "T2"))
    assert t1.tolist() == [1, 1, 0] and t2.tolist() == [2, 2, 2]
    assert (t1 + t2).tolist() == count_insertions(fragments_file, PEAKS).tolist()


def test_counts_do_not_depend_on_the_block_size(fragments_file, monkeypatch):
    whole = count_insertions(fragments_file, PEAKS)
    monkeypatch.setattr(fragments, "BLOCK_BYTES", 32)  # a few lines per block
    assert count_insertions(fragments_file, PEAKS).tolist() == whole.tolist()


def test_the_format_is_read_from_the_content(fragments_file, tmp_path, write_lines):
    assert counts_format(fragments_file) == "fragments"
    bedgraph = write_lines(tmp_path / "fragments.bed", ["track x", "chr1\t100\t200\t7"])
    assert counts_format(bedgraph) == "bedgraph"
    bam = tmp_path / "reads.txt"
    with gzip.open(bam, "wb") as handle:  # BGZF is gzip; a BAM starts with BAM\1 inside
        handle.write(b"BAM\x01" + bytes(20))
    assert counts_format(bam) == "bam"  # counted by getdiff.genomics.bam (tests/test_bam.py)


def test_a_barcode_list_matching_no_fragment_is_blamed_naming_both_files(
    fragments_file, tmp_path, write_lines
):
    listed = write_lines(tmp_path / "barcodes.txt", ["ZZZ", "YYY"])
    with pytest.raises(InputError, match=r"barcodes\.txt: no match: none of its 2 barcodes .*5 f"):
        count_insertions(fragments_file, PEAKS, read_barcodes(listed, "x"), barcode_file=listed)


def test_a_group_absent_from_the_barcode_table_is_an_error(tmp_path, write_lines):
    table = write_lines(tmp_path / "groups.tsv", ["AAA\tT1"])
    with pytest.raises(
        InputError, match=r"groups\.tsv: no barcode of group 'T9'; groups: \['T1'\]"
    ):
        read_barcodes(table, "T9")


def test_fragments_on_no_peak_chromosome_are_an_error_with_the_hint(tmp_path, write_lines):
    renamed = [line.replace("chr", "NC_0000") for line in FRAGMENTS[2:]]  # RefSeq-style names
    path = write_lines(tmp_path / "f.tsv", renamed)
    with pytest.raises(
        InputError, match=r"no fragment lies on a chromosome of the peaks \(p\.bed\).*'chr1' vs '1'"
    ):
        count_insertions(path, PEAKS, source="p.bed")


def test_fragments_named_without_chr_are_a_naming_error_or_renamed(tmp_path, write_lines):
    path = write_lines(tmp_path / "f.tsv", [line.replace("chr", "") for line in FRAGMENTS[2:]])
    with pytest.raises(InputError, match="naming mismatch: this file has '1'.*harmonise"):
        count_insertions(path, PEAKS, source="p.bed")
    assert count_insertions(path, PEAKS, chrom_naming="harmonise").tolist() == [3, 3, 2]


def test_fragments_in_no_peak_are_an_error(tmp_path, write_lines):
    path = write_lines(tmp_path / "f.tsv", ["chr1\t1000\t1100\tAAA\t1"])
    with pytest.raises(InputError, match="no insertion site lies in any peak of p.bed"):
        count_insertions(path, PEAKS, source="p.bed")


def test_a_malformed_fragment_line_is_an_error_naming_the_file(tmp_path, write_lines):
    path = write_lines(tmp_path / "f.tsv", ["chr1\t90\t120\tAAA\t1", "chr1\tx\t120\tAAA\t1"])
    with pytest.raises(InputError, match=r"f\.tsv:2: start must be a whole number.*got .x."):
        count_insertions(path, PEAKS)


def test_prepare_takes_accessibility_from_a_fragments_file(tmp_path, write_lines):
    fragments_file = write_lines(tmp_path / "fragments.tsv", FRAGMENTS)
    groups = write_lines(tmp_path / "groups.tsv", ["AAA\tT1", "BBB\tT2", "CCC\tT2"])
    path = prepare_three_peaks(
        tmp_path,
        cell_type="T2",
        counts_file=fragments_file,
        barcodes=groups,
        drop_zero_accessibility=False,
    )
    regions = load_regions(path)
    # counts 2, 2, 2 -> equal log-CPM -> every normalised accessibility is 1
    np.testing.assert_allclose(regions["accessibility"].to_numpy(), 1.0)
    meta = regions.attrs["getdiff"]
    assert meta["scaling"]["accessibility"]["total_counts"] == 6


def test_a_fragments_file_without_the_count_column_is_read(tmp_path, write_lines):
    four = [line.rsplit("\t", 1)[0] if not line.startswith("#") else line for line in FRAGMENTS]
    path = write_lines(tmp_path / "f.tsv", four)
    assert count_insertions(path, PEAKS).tolist() == [3, 3, 2]


def test_demo_fragments_give_the_peak_counts_of_their_cell_type(tmp_path):
    from getdiff.demo import write_demo_data
    from getdiff.genomics.peaks import read_peak_file

    paths = write_demo_data(
        tmp_path / "demo", 400, chromosomes=["chr1", "chr21"], seed=5, fragments_for="demo_liver"
    )
    fragments_file = paths["fragments_demo_liver"]
    assert fragments_file.name == "demo_liver.fragments.tsv.gz"
    assert counts_format(fragments_file) == "fragments"
    peaks = read_peak_file(paths["peaks_demo_liver"], counts_column=7)
    counts = count_insertions(fragments_file, peaks)
    np.testing.assert_array_equal(counts, peaks["counts"].to_numpy())
