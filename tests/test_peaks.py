"""Peak files: parsing, validation errors, chromosome selection, natural sort, counts."""

from __future__ import annotations

import numpy as np
import pytest

from getdiff.errors import InputError
from getdiff.genomics.intervals import read_bed_fields
from getdiff.genomics.peaks import (
    harmonise_chrom,
    load_peaks,
    natural_chrom_key,
    read_bed_regions,
    read_peak_file,
)


def test_header_blank_and_crlf_lines_are_skipped_and_line_numbers_kept(tmp_path, write_lines):
    lines = [
        "track name=x",
        "browser position chr1",
        "# comment",
        "chr1\t10\t20\tp1",
        "",
        "chr2\t5\t9",
    ]
    path = write_lines(tmp_path / "p.bed", lines, eol="\r\n")
    table = read_peak_file(path)
    assert table["chrom"].tolist() == ["chr1", "chr2"]
    assert table["line"].tolist() == [4, 6]
    assert table["end"].tolist() == [20, 9]


def test_gzip_peak_file_is_read(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed.gz", ["chr1\t10\t20"], gz=True)
    assert read_peak_file(path)["start"].tolist() == [10]


def test_missing_or_dot_names_become_coordinates(tmp_path, write_lines):
    path = write_lines(
        tmp_path / "p.bed", ["chr1\t10\t20\t.", "chr1\t30\t40\tpeakB", "chr1\t50\t60"]
    )
    assert read_peak_file(path)["name"].tolist() == ["chr1:10-20", "peakB", "chr1:50-60"]


def test_counts_column_is_one_based(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed", ["chr1\t10\t20\tp\t0\t.\t7.5\t1"])
    assert read_peak_file(path, counts_column=7)["counts"].tolist() == [7.5]


def test_natural_chromosome_order():
    names = ["chrX", "chr10", "chr2", "chr1", "chr22", "chrM", "chrY"]
    assert sorted(names, key=natural_chrom_key) == [
        "chr1",
        "chr2",
        "chr10",
        "chr22",
        "chrX",
        "chrY",
        "chrM",
    ]


@pytest.mark.parametrize(("name", "other"), [("chr1", "1"), ("X", "chrX"), ("chrM", "MT")])
def test_harmonise_chrom_swaps_the_chr_convention(name, other):
    assert harmonise_chrom(name) == other
    assert harmonise_chrom(other) == name


def test_peaks_are_sorted_by_chromosome_start_end_with_values_attached(tmp_path, write_lines):
    lines = [
        "chr10\t5\t9\ta\t0\t.\t1",
        "chr2\t50\t90\tb\t0\t.\t2",
        "chr2\t10\t30\tc\t0\t.\t3",
        "chr2\t10\t20\td\t0\t.\t4",
        "chr1\t100\t200\te\t0\t.\t5",
        "chrX\t1\t2\tf\t0\t.\t6",
    ]
    path = write_lines(tmp_path / "p.bed", lines)
    peaks, _ = load_peaks(path, counts_column=7)
    assert peaks["name"].tolist() == ["e", "d", "c", "b", "a", "f"]
    assert peaks["counts"].tolist() == [5, 4, 3, 2, 1, 6]
    assert peaks["line"].tolist() == [5, 4, 3, 2, 1, 6]


def test_unselected_chromosomes_and_zero_counts_are_dropped_and_counted(tmp_path, write_lines):
    lines = [
        "chr1\t10\t20\ta\t0\t.\t3",
        "chrY\t10\t20\tb\t0\t.\t3",
        "chr1_random\t1\t5\tc\t0\t.\t3",
        "chr1\t30\t40\td\t0\t.\t0",
    ]
    path = write_lines(tmp_path / "p.bed", lines)
    peaks, dropped = load_peaks(path, counts_column=7)
    assert peaks["name"].tolist() == ["a"]
    assert dropped == {"chromosome_not_selected": 2, "zero_accessibility": 1}


def test_zero_counts_are_kept_when_not_dropping(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed", ["chr1\t10\t20\ta\t0\t.\t0"])
    peaks, dropped = load_peaks(path, counts_column=7, drop_zero_accessibility=False)
    assert peaks["counts"].tolist() == [0.0]
    assert "zero_accessibility" not in dropped


def test_counts_file_is_matched_by_exact_coordinates(tmp_path, write_lines):
    peaks_path = write_lines(tmp_path / "p.bed", ["chr1\t10\t20", "chr1\t30\t40", "chr1\t50\t60"])
    counts_path = write_lines(
        tmp_path / "c.bedgraph", ["chr1\t30\t40\t8", "chr1\t10\t20\t2", "chr1\t50\t61\t9"]
    )
    peaks, dropped = load_peaks(peaks_path, counts_file=counts_path)
    assert peaks["start"].tolist() == [10, 30]
    assert peaks["counts"].tolist() == [2.0, 8.0]
    assert dropped["missing_from_counts_file"] == 1


def test_bed_regions_allow_duplicates(tmp_path, write_lines):
    path = write_lines(tmp_path / "r.bed", ["chr1\t10\t20", "chr1\t10\t20"])
    assert len(read_bed_regions(path)) == 2


BAD_PEAK_LINES = [
    ("chr1\t10", "expected at least 3 columns"),
    ("chr1\tten\t20", "start must be an integer below 10^18, got 'ten'"),
    ("chr1\t10\t99999999999999999999999", "end must be an integer below 10^18"),
    ("chr1\t10\t2.5", "end must be an integer"),
    ("chr1\t-5\t20", "coordinates must be >= 0"),
    ("chr1\t20\t20", "start must be < end"),
    ("chr1\t30\t20", "start must be < end"),
    ("chr1\t1\t5\tp\t0\t.\tnan", "expected a finite number (count) in column 7"),
    ("chr1\t1\t5\tp\t0\t.\tinf", "expected a finite number (count) in column 7"),
    ("chr1\t1\t5\tp\t0\t.\tmany", "expected a finite number (count) in column 7, got 'many'"),
    ("chr1\t1\t5\tp\t0\t.\t-3", "count in column 7 must be >= 0"),
    ("chr1\t1\t5\tp", "expected a count in column 7"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_PEAK_LINES)
def test_bad_peak_line_names_file_line_and_expectation(tmp_path, write_lines, line, expected):
    good = "chr1\t100\t200\tok\t0\t.\t4"
    path = write_lines(
        tmp_path / "peaks.bed", ["track x", good, line, good.replace("100\t200", "300\t400")]
    )
    with pytest.raises(InputError) as err:
        read_peak_file(path, counts_column=7)
    assert str(err.value).startswith(f"{path}:3: ")
    assert expected in str(err.value)


def test_first_bad_line_is_reported_when_several_are_bad(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed", ["chr1\t1\t5", "chr1\t9\t3", "chr1\tx\t5"])
    with pytest.raises(InputError, match=r"p\.bed:2: start must be < end"):
        read_peak_file(path)


def test_duplicate_peak_names_both_lines(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed", ["chr1\t1\t5\ta", "chr2\t1\t5\tb", "chr1\t1\t5\tc"])
    with pytest.raises(InputError) as err:
        read_peak_file(path)
    assert str(err.value).startswith(f"{path}:3: duplicate peak chr1:1-5 (same as line 1)")


SUMMITS = [  # MACS2 --call-summits: one line per summit, the peak's coordinates repeated
    "chr1\t100\t500\tp1a\t0\t.\t7\t1\t1\t50",
    "chr1\t100\t500\tp1b\t0\t.\t12\t1\t1\t300",
    "chr1\t900\t1200\tp2\t0\t.\t4\t1\t1\t100",
    "chr1\t100\t500\tp1c\t0\t.\t9\t1\t1\t380",
]


@pytest.mark.parametrize(
    ("how", "names", "counts"),
    [("first", ["p1a", "p2"], [7, 4]), ("merge", ["p1a", "p2"], [12, 4])],
)
def test_repeated_summit_lines_are_folded_as_configured(tmp_path, write_lines, how, names, counts):
    path = write_lines(tmp_path / "summits.narrowPeak", SUMMITS)
    peaks = read_peak_file(path, counts_column=7, duplicates=how)
    assert peaks["name"].tolist() == names and peaks["counts"].tolist() == counts
    assert peaks["line"].tolist() == [1, 3]
    with pytest.raises(InputError, match=r"summits\.narrowPeak:2: duplicate peak chr1:100-500"):
        read_peak_file(path, counts_column=7)


@pytest.mark.parametrize("lines", [[], ["track only", "# nothing else", ""]])
def test_empty_peak_file_is_an_error(tmp_path, write_lines, lines):
    path = write_lines(tmp_path / "p.bed", lines)
    with pytest.raises(InputError, match=r"p\.bed: no peaks found"):
        read_peak_file(path)


def test_no_peak_on_selected_chromosomes_hints_at_naming(tmp_path, write_lines):
    path = write_lines(tmp_path / "p.bed", ["1\t10\t20", "2\t10\t20"])
    with pytest.raises(InputError, match="naming mismatch"):
        load_peaks(path)


def test_counts_file_errors_name_the_counts_file(tmp_path, write_lines):
    peaks_path = write_lines(tmp_path / "p.bed", ["chr1\t10\t20"])
    counts_path = write_lines(tmp_path / "c.bg", ["chr1\t10\t20\tNaN"])
    with pytest.raises(InputError, match=r"c\.bg:1: expected a finite number"):
        load_peaks(peaks_path, counts_file=counts_path)


def test_peak_order_does_not_depend_on_input_order(tmp_path, write_lines):
    rng = np.random.default_rng(0)
    lines = [
        f"chr{c}\t{s}\t{s + 50}\tp{c}_{s}\t0\t.\t{s}" for c in (1, 2, 10) for s in (5, 70, 300)
    ]
    reference, _ = load_peaks(write_lines(tmp_path / "a.bed", lines), counts_column=7)
    shuffled = [lines[i] for i in rng.permutation(len(lines))]
    again, _ = load_peaks(write_lines(tmp_path / "b.bed", shuffled), counts_column=7)
    columns = ["chrom", "start", "end", "name", "counts"]
    assert reference[columns].equals(again[columns])


def test_a_name_with_spaces_in_a_tab_separated_file_stays_one_field(tmp_path, write_lines):
    lines = ["chr1\t10\t20\tpeak one\t5", "chr1\t30\t40\tpeak two\t7", "chr2 50 60 p3 9"]
    path = write_lines(tmp_path / "spaces.bed", lines)
    table = read_peak_file(path, counts_column=5)
    assert table["name"].tolist() == ["peak one", "peak two", "p3"]
    assert table["counts"].tolist() == [5.0, 7.0, 9.0]


def test_a_very_wide_line_does_not_widen_the_table(tmp_path, write_lines):
    wide = "\t".join(["chr1", "10", "20", "p", "3"] + ["x"] * 20000)
    path = write_lines(tmp_path / "wide.bed", [wide, "chr1\t30\t40\tq\t4"])
    fields, _ = read_bed_fields(path, "peaks", 5)
    assert fields.shape == (2, 5)
    assert read_peak_file(path, counts_column=5)["counts"].tolist() == [3.0, 4.0]
