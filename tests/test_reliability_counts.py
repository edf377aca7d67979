"""Reliability of the counters' inputs (`getdiff count`, and `getdiff prepare` with a
``counts_file``): BAM indexes and headers, fragments files, barcode tables, content read as
the wrong format, named pipes and full disks (train's checkpoint and export too).

The bad-input table runs each case through the command line in-process (``getdiff.cli.main``):
exit 2, one last line ``getdiff <command>: error: <file>[:<line>]: <what was expected>``, and
nothing written into the output directory (no result, no temporary file). Then the oddities
that are accepted, with the counts they give.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import Case, assert_refused_in_one_line, files_under, write_lines

import getdiff.genomics.fragments
from getdiff.cli import main

PEAKS = ["chr1\t100\t200\tp1", "chr1\t300\t400\tp2", "chr2\t50\t150\tp3"]  # line k: PEAKS[k - 1]
# Sites (start, end - 1): p1 119, 150; p2 319, 350; p3 60, 99, 120, 139.
FRAGMENTS = [
    "chr1\t90\t120\tAAAC-1\t1",
    "chr1\t150\t320\tCCCG-1\t2",
    "chr1\t350\t500\tAAAC-1\t1",
    "chr2\t60\t100\tGGGT-1\t1",
    "chr2\t120\t140\tCCCG-1\t1",
]
COUNTS = [2, 2, 4]
CONTIGS = {"chr1": 1000, "chr2": 1000}
READS = [("chr1", 96), ("chr1", 120), ("chr1", 310), ("chr2", 50), ("chr2", 90)]  # forward 20M


def edited(lines: list[str], index: int, line: str) -> list[str]:
    return [*lines[:index], line, *lines[index + 1 :]]


def write_bam(path: Path, reads: list[tuple[str, int]], contigs: dict[str, int] = CONTIGS) -> Path:
    """A coordinate-sorted BAM of forward 20M reads (MAPQ 60), without its index."""
    pysam = pytest.importorskip("pysam")
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}}
    header["SQ"] = [{"SN": name, "LN": length} for name, length in contigs.items()]
    names = list(contigs)
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, (chrom, start) in enumerate(sorted(reads, key=lambda r: (names.index(r[0]), r[1]))):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.reference_id, read.reference_start = (
                f"r{i}",
                names.index(chrom),
                start,
            )
            read.cigarstring, read.query_sequence, read.mapping_quality = "20M", "A" * 20, 60
            out.write(read)
    return path


def indexed(path: Path) -> Path:
    pytest.importorskip("pysam").index(str(path))
    return path


def make_fifo(path: Path) -> Path:
    """A named pipe nobody writes to; should a reader ever block on it (a regression), writers
    come and go from 20 s on, so the case fails on its message instead of hanging."""
    os.mkfifo(path)

    def come_and_go() -> None:
        time.sleep(20)
        for _ in range(400):
            with contextlib.suppress(OSError):  # no reader (ENXIO), or the folder is gone
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)

    threading.Thread(target=come_and_go, daemon=True).start()
    return path


class Inputs:
    """One case's files under ``root``: peaks.bed, fragments.tsv, reads.bam; the command lines."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self.out = root / "out"
        self.out.mkdir()
        self.peaks = write_lines(root / "peaks.bed", PEAKS)
        self.fragments = write_lines(root / "fragments.tsv", FRAGMENTS)

    def count(self, counts_file: Path, *extra: str, peaks: Path | None = None) -> list[str]:
        peaks = peaks or self.peaks
        argv = ["count", "--counts-file", str(counts_file), "--peaks", str(peaks)]
        return [*argv, "--out", str(self.out / "counts.tsv"), *extra]

    def bam(self, reads: list[tuple[str, int]] = READS, name: str = "reads.bam") -> Path:
        return indexed(write_bam(self.root / name, reads))

    def prepare(self, counts_file: Path, barcodes: Path | None = None, sheet: Path | None = None):
        """argv of `getdiff prepare` of cell type "t" counted from ``counts_file``."""
        if sheet is None:
            sheet = self.root / "cell_types.tsv"
            row = f"t\t{self.peaks}\t{counts_file}\t{barcodes or ''}"
            write_lines(sheet, ["cell_type\tpeaks\tcounts_file\tbarcodes", row])
        scan = write_lines(self.root / "scan.bed", ["chr1\t110\t120\tA\t2", "chr2\t60\t70\tA\t2"])
        clusters = write_lines(self.root / "clusters.txt", ["A"])
        config = {
            "cell_types": str(sheet),
            "motif_scan": str(scan),
            "cluster_names": str(clusters),
            "prepare": {
                "chromosomes": ["chr1", "chr2"],
                "window_size": 2,
                "validation_chromosomes": ["chr2"],
                "test_chromosomes": [],
            },
        }
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return ["prepare", "--config", str(path), "--cell-type", "t", "--outdir", str(self.out)]


# --- BAM: stale or foreign index, peaks that do not fit its header -----------------------------


def bam_rewritten_after_its_bai(inputs: Inputs) -> Case:
    bam = inputs.bam()
    index = Path(f"{bam}.bai")
    write_bam(bam, READS)  # rewritten (its first records where they were), the index kept
    old = bam.stat().st_mtime_ns - 10**9
    os.utime(index, ns=(old, old))
    return Case(inputs.count(bam), index, None, "older than reads.bam (the file was rewritten")


def bai_of_another_bam(inputs: Inputs) -> Case:
    other = inputs.bam(READS + [("chr1", 500 + i) for i in range(40)], name="other.bam")
    bam = write_bam(inputs.root / "reads.bam", READS)
    index = Path(f"{bam}.bai")
    shutil.copy(f"{other}.bai", index)  # copied after the BAM: newer, yet not its index
    return Case(inputs.count(bam), index, None, "is not a record of that reference in the BAM")


def bai_listing_other_references(inputs: Inputs) -> Case:
    other = indexed(write_bam(inputs.root / "o.bam", READS, {**CONTIGS, "chr3": 50}))
    bam = write_bam(inputs.root / "reads.bam", READS)
    index = Path(f"{bam}.bai")
    shutil.copy(f"{other}.bai", index)
    return Case(inputs.count(bam), index, None, "it lists 3 references, the BAM's header 2")


def stale_bai_by_another_name_beside_a_fresh_one(inputs: Inputs) -> Case:
    bam = inputs.bam()
    stale = bam.with_suffix(".bai")  # reads.bai, left from an older index
    shutil.copy(f"{bam}.bai", stale)
    old = bam.stat().st_mtime_ns - 10**9
    os.utime(stale, ns=(old, old))
    return Case(inputs.count(bam), stale, None, f"rebuild it: rm {stale} && samtools index {bam}")


def cram_rewritten_after_its_crai(inputs: Inputs) -> Case:
    pysam = pytest.importorskip("pysam")
    raw = inputs.bam()
    cram = inputs.root / "reads.cram"
    pysam.sort("-O", "cram", "--output-fmt-option", "no_ref=1", "-o", str(cram), str(raw))
    index = indexed(cram).with_name("reads.cram.crai")
    old = cram.stat().st_mtime_ns - 10**9
    os.utime(index, ns=(old, old))
    return Case(inputs.count(cram), index, None, "older than reads.cram (the file was rewritten")


def bam_peak_past_the_chromosome_end(inputs: Inputs) -> Case:
    peaks = write_lines(inputs.root / "long.bed", [*PEAKS, "chr1\t900\t1200\tp4"])
    argv = inputs.count(inputs.bam(), peaks=peaks)
    return Case(argv, peaks, 4, "ends past the end of chr1 (1,000 bp in the header of")


def bam_peak_on_a_chromosome_the_header_lacks(inputs: Inputs) -> Case:
    peaks = write_lines(inputs.root / "more.bed", [*PEAKS, "chr3\t10\t20\tp4"])
    argv = inputs.count(inputs.bam(), peaks=peaks)
    return Case(argv, peaks, 4, "no sequence 'chr3' in the header of")


def prepare_bam_peak_past_the_chromosome_end(inputs: Inputs) -> Case:
    write_lines(inputs.peaks, [*PEAKS, "chr2\t990\t1100\tp4"])
    return Case(inputs.prepare(inputs.bam()), inputs.peaks, 4, "ends past the end of chr2")


# --- content read as the wrong format ----------------------------------------------------------


def counts_table_taken_for_fragments(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "counts.bed", [f"{p}\t{i + 5}" for i, p in enumerate(PEAKS)])
    return Case(inputs.count(table), table, None, "a table of counts per peak, not fragments")


def prepare_counts_table_taken_for_fragments(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "counts.bed", [f"{p}\t{i + 5}" for i, p in enumerate(PEAKS)])
    return Case(inputs.prepare(table), table, None, "cut -f 1-3,5")


def bed_without_names_as_counts_file(inputs: Inputs) -> Case:
    table = write_lines(
        inputs.root / "counts.bed", ["chr1\t100\t200\t.\t5", "chr1\t300\t400\t.\t2"]
    )
    return Case(inputs.count(table), table, 1, "column 4 of the first data line is '.', no barcode")


def fragments_with_numeric_barcodes(inputs: Inputs) -> Case:
    lines = [f"{line.rsplit(chr(9), 2)[0]}\t{i}\t1" for i, line in enumerate(FRAGMENTS)]
    path = write_lines(inputs.fragments, lines)
    return Case(inputs.count(path), path, 1, "fragments with numeric barcodes, or a bedGraph")


def prepare_fragments_with_numeric_barcodes(inputs: Inputs) -> Case:
    lines = [f"{line.rsplit(chr(9), 2)[0]}\t{i}\t1" for i, line in enumerate(FRAGMENTS)]
    path = write_lines(inputs.fragments, lines)
    return Case(inputs.prepare(path), path, 1, "5 columns with a number in column 4 ('0')")


def sam_as_counts_file(inputs: Inputs) -> Case:
    sam = write_lines(inputs.root / "reads.sam", ["@HD\tVN:1.6\tSO:coordinate", "@SQ\tSN:chr1"])
    return Case(inputs.count(sam), sam, 1, "a SAM file (text); expected a BAM/CRAM: samtools")


def bed3_as_counts_file(inputs: Inputs) -> Case:
    bed = write_lines(inputs.root / "regions.bed", [p.rsplit("\t", 1)[0] for p in PEAKS])
    return Case(inputs.count(bed), bed, 1, "3 tab-separated columns on the first data line")


def fragments_separated_by_spaces(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, [line.replace("\t", " ") for line in FRAGMENTS])
    return Case(inputs.count(path), path, 1, "(separated by spaces? fragments are tab-separated)")


def narrowpeak_as_counts_file(inputs: Inputs) -> Case:
    lines = [f"chr1\t{s}\t{s + 80}\tpeak{s}\t500\t.\t7.5\t-1\t3.2\t40" for s in (90, 310)]
    path = write_lines(inputs.root / "replicate.narrowPeak", lines)
    return Case(inputs.count(path), path, 1, "column 6 of the first data line is a strand ('.')")


def fragments_with_a_fractional_count_column(inputs: Inputs) -> Case:
    path = write_lines(inputs.root / "signal.bed", ["chr1\t90\t120\tpeak_a\t2.5"])
    return Case(inputs.prepare(path), path, 1, "column 5 of the first data line ('2.5') is no")


def fragments_negative_start(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, edited(FRAGMENTS, 2, "chr1\t-5\t500\tAAAC-1\t1"))
    return Case(inputs.count(path), path, 3, "start is negative (-5); expected coordinates >= 0")


def fragments_end_before_start(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, edited(FRAGMENTS, 3, "chr2\t100\t60\tGGGT-1\t1"))
    return Case(inputs.count(path), path, 4, "end 60 is not past start 100")


def fragments_end_equal_to_start(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, edited(FRAGMENTS, 1, "chr1\t150\t150\tCCCG-1\t2"))
    return Case(inputs.count(path), path, 2, "end 150 is not past start 150")


def fragments_not_a_number_as_start(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, edited(FRAGMENTS, 4, "chr2\tNA\t140\tCCCG-1\t1"))
    return Case(
        inputs.count(path), path, 5, "start must be a whole number below 10^18 (0-based), got 'NA'"
    )


def fragments_malformed_line_with_two_threads(inputs: Inputs) -> Case:
    lines = ["# cellranger-atac", *edited(FRAGMENTS, 3, "chr2\t60")]
    path = write_lines(inputs.root / "fragments.tsv.gz", lines, gz=True)
    argv = inputs.count(path, "--threads", "2")
    return Case(argv, path, 5, "2 tab-separated fields, expected 5 as on the first data line")


def fragments_malformed_line_of_a_later_block_with_two_threads(inputs: Inputs) -> Case:
    inputs.monkeypatch.setattr(getdiff.genomics.fragments, "BLOCK_BYTES", 64)
    many = [f"chr1\t{s}\t{s + 30}\tAAAC-1\t1" for s in range(100, 5000, 7)]
    lines = [*FRAGMENTS, *many, "chr1\t7000\t7100\tAAAC-1"]  # one field short
    path = write_lines(inputs.root / "fragments.tsv.gz", lines, gz=True)
    return Case(inputs.count(path, "--threads", "2"), path, len(lines), "4 tab-separated fields")


def prepare_fragments_malformed_line_with_two_threads(inputs: Inputs) -> Case:
    path = write_lines(inputs.fragments, edited(FRAGMENTS, 3, "chr2\tsixty\t100\tGGGT-1\t1"))
    argv = [*inputs.prepare(path), "--threads", "2"]
    return Case(argv, path, 4, "start must be a whole number below 10^18 (0-based), got 'sixty'")


# --- barcode tables ----------------------------------------------------------------------------


def barcode_under_two_groups(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "groups.tsv", ["AAAC-1\tT", "CCCG-1\tB", "AAAC-1\tB"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table), "--group", "T")
    return Case(argv, table, 3, "barcode 'AAAC-1' is listed under group 'T' (line 1) and group 'B'")


def barcode_table_matching_no_fragment(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "barcodes.txt", ["AAAC", "CCCG"])  # the -1 suffix dropped
    argv = inputs.count(inputs.fragments, "--barcodes", str(table))
    return Case(argv, table, None, "no match: none of its 2 barcodes occurs in the 5 fragments")


def prepare_barcode_table_matching_no_fragment(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "barcodes.tsv", ["AAAC\tt", "CCCG\tt"])
    argv = inputs.prepare(inputs.fragments, barcodes=table)
    return Case(
        argv, table, None, f"none of its 2 barcodes occurs in the 5 fragments of {inputs.fragments}"
    )


def barcode_table_of_groups_without_a_group_named(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "groups.tsv", ["AAAC-1\tT", "CCCG-1\tB"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table))
    return Case(argv, table, None, "a barcode<TAB>group table: name the group (--group)")


def barcode_list_without_groups_given_a_group(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "barcodes.txt", ["AAAC-1", "CCCG-1"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table), "--group", "T")
    return Case(argv, table, None, "one barcode per line, no groups, but group 'T' was asked")


def barcode_table_separated_by_spaces(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "groups.txt", ["AAAC-1 T", "CCCG-1 T"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table))
    return Case(argv, table, None, "barcode and group separated by a space, not a tab?")


def barcode_table_with_an_empty_group(inputs: Inputs) -> Case:
    table = write_lines(inputs.root / "groups.tsv", ["AAAC-1\tT", "CCCG-1\t"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table), "--group", "T")
    return Case(argv, table, 2, "an empty barcode or group")


# --- not a regular file ------------------------------------------------------------------------


def fragments_named_pipe(inputs: Inputs) -> Case:
    fifo = make_fifo(inputs.root / "fifo.tsv")
    return Case(
        inputs.count(fifo), fifo, None, "not a regular file (a named pipe, socket or device)"
    )


def fragments_path_is_a_directory(inputs: Inputs) -> Case:
    directory = inputs.root / "fragments.d"
    directory.mkdir()
    return Case(inputs.count(directory), directory, None, "cannot read the file: Is a directory")


def barcodes_named_pipe(inputs: Inputs) -> Case:
    fifo = make_fifo(inputs.root / "barcodes.txt")
    argv = inputs.count(inputs.fragments, "--barcodes", str(fifo))
    return Case(argv, fifo, None, "not a regular file (a named pipe, socket or device)")


def bai_named_pipe(inputs: Inputs) -> Case:
    bam = write_bam(inputs.root / "reads.bam", READS)
    index = make_fifo(Path(f"{bam}.bai"))
    return Case(inputs.count(bam), index, None, "not a regular file")


def prepare_sheet_named_pipe(inputs: Inputs) -> Case:
    fifo = make_fifo(inputs.root / "sheet.tsv")
    argv = inputs.prepare(inputs.fragments, sheet=fifo)
    return Case(argv, fifo, None, "not a regular file (a named pipe, socket or device)")


# --- full disks --------------------------------------------------------------------------------


def disk_full_while_writing_counts(inputs: Inputs) -> Case:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no name

    inputs.monkeypatch.setattr(pd.DataFrame, "to_csv", full)
    out = inputs.out / "counts.tsv"
    return Case(inputs.count(inputs.fragments), out, None, "No space left on device")


BAD_COUNT_INPUTS: list[Callable[[Inputs], Case]] = [
    bam_rewritten_after_its_bai,
    bai_of_another_bam,
    bai_listing_other_references,
    stale_bai_by_another_name_beside_a_fresh_one,
    cram_rewritten_after_its_crai,
    bam_peak_past_the_chromosome_end,
    bam_peak_on_a_chromosome_the_header_lacks,
    prepare_bam_peak_past_the_chromosome_end,
    counts_table_taken_for_fragments,
    prepare_counts_table_taken_for_fragments,
    bed_without_names_as_counts_file,
    fragments_with_numeric_barcodes,
    prepare_fragments_with_numeric_barcodes,
    sam_as_counts_file,
    bed3_as_counts_file,
    fragments_separated_by_spaces,
    narrowpeak_as_counts_file,
    fragments_with_a_fractional_count_column,
    fragments_negative_start,
    fragments_end_before_start,
    fragments_end_equal_to_start,
    fragments_not_a_number_as_start,
    fragments_malformed_line_with_two_threads,
    fragments_malformed_line_of_a_later_block_with_two_threads,
    prepare_fragments_malformed_line_with_two_threads,
    barcode_under_two_groups,
    barcode_table_matching_no_fragment,
    prepare_barcode_table_matching_no_fragment,
    barcode_table_of_groups_without_a_group_named,
    barcode_list_without_groups_given_a_group,
    barcode_table_separated_by_spaces,
    barcode_table_with_an_empty_group,
    fragments_named_pipe,
    fragments_path_is_a_directory,
    barcodes_named_pipe,
    bai_named_pipe,
    prepare_sheet_named_pipe,
    disk_full_while_writing_counts,
]


@pytest.mark.parametrize("make_case", BAD_COUNT_INPUTS, ids=[f.__name__ for f in BAD_COUNT_INPUTS])
def test_bad_count_input_exits_2_naming_file_line_and_expectation_and_writes_nothing(
    make_case, tmp_path, monkeypatch, capsys
):
    case = make_case(Inputs(tmp_path, monkeypatch))
    assert main(case.argv) == 2
    assert_refused_in_one_line(case, capsys.readouterr().err, tmp_path)
    assert files_under(tmp_path / "out") == []


# --- accepted oddities, with the counts they give ----------------------------------------------


def counted(inputs: Inputs, argv: list[str]) -> list[int]:
    assert main(argv) == 0
    table = pd.read_csv(inputs.out / "counts.tsv", sep="\t", header=None)
    return table[4].tolist()


def test_a_quote_in_a_barcode_is_part_of_it_not_the_start_of_a_quoted_field(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    lines = edited(FRAGMENTS, 0, 'chr1\t90\t120\t"AAAC-1\t1')  # would swallow lines up to a quote
    path = write_lines(inputs.fragments, lines)
    assert counted(inputs, inputs.count(path)) == COUNTS


def test_header_lines_at_the_top_are_skipped_whatever_their_fields(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    header = ["# id=x", "#chrom\tstart\tend\tbarcode\tcount"]
    path = write_lines(tmp_path / "fragments.tsv.gz", [*header, *FRAGMENTS], gz=True)
    assert counted(inputs, inputs.count(path, "--threads", "2")) == COUNTS


def test_a_barcode_listed_twice_in_one_group_counts_once(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    table = write_lines(tmp_path / "groups.tsv", ["AAAC-1\tT", "AAAC-1\tT", "GGGT-1\tB"])
    argv = inputs.count(inputs.fragments, "--barcodes", str(table), "--group", "T")
    assert counted(inputs, argv) == [1, 1, 0]


def test_a_bai_rebuilt_after_the_bam_is_used_and_counts_every_read(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    bam = inputs.bam()
    write_bam(bam, [*READS, ("chr1", 340)])  # rewritten, then indexed again
    indexed(bam)
    assert counted(inputs, inputs.count(bam)) == [2, 2, 2]


def test_a_peak_ending_at_the_chromosome_end_of_the_bam_header_is_counted(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    peaks = write_lines(tmp_path / "edge.bed", [*PEAKS, "chr2\t900\t1000\tp4"])
    bam = inputs.bam([*READS, ("chr2", 950)])
    assert counted(inputs, inputs.count(bam, peaks=peaks)) == [2, 1, 2, 1]


def test_a_peak_file_given_as_fragments_and_fragments_as_peaks_warn_of_a_swap(
    tmp_path, monkeypatch, caplog
):
    inputs = Inputs(tmp_path, monkeypatch)
    peaks = write_lines(tmp_path / "named.bed", [f"{line}\t{i}" for i, line in enumerate(PEAKS)])
    argv = inputs.count(peaks, peaks=inputs.fragments)  # swapped
    assert main(argv) == 0
    assert "are the fragments file and the peak file swapped?" in caplog.text


def test_fragments_without_a_peak_chromosome_warn_naming_it(tmp_path, monkeypatch, caplog):
    inputs = Inputs(tmp_path, monkeypatch)
    path = write_lines(inputs.fragments, [line for line in FRAGMENTS if line.startswith("chr1")])
    assert counted(inputs, inputs.count(path)) == [2, 2, 0]
    assert "no insertion site in any peak of 1 chromosome(s)" in caplog.text
    assert "(chr2), 1 peaks: their counts are 0" in caplog.text


def test_the_match_rates_of_a_barcode_table_are_logged(tmp_path, monkeypatch, caplog):
    inputs = Inputs(tmp_path, monkeypatch)
    table = write_lines(tmp_path / "barcodes.txt", ["AAAC-1", "TTTT-1", "GGGG-1", "CCCC-1"])
    assert counted(inputs, inputs.count(inputs.fragments, "--barcodes", str(table))) == [1, 1, 0]
    logged = caplog.text
    assert "1 of 4 listed barcodes found in the fragments (25.0%)" in logged
    assert "2 of 5 fragments with a listed barcode (40.0%)" in logged


# --- full disks while training: torch.save's and safetensors' own errors -----------------------

SITES = [
    (chrom, start) for chrom, n in (("chr1", 6), ("chr2", 4)) for start in range(100, 1100, 100)[:n]
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """6 peaks on chr1 (train), 4 on chr2 (validation), counts in column 5, one hit each;
    prepared (W=2) once for the training cases."""
    root = tmp_path_factory.mktemp("train")
    peaks = write_lines(
        root / "peaks.bed", [f"{c}\t{s}\t{s + 50}\tp\t{s // 100}" for c, s in SITES]
    )
    scan = write_lines(root / "scan.bed", [f"{c}\t{s + 10}\t{s + 20}\tA\t2" for c, s in SITES])
    sheet = write_lines(
        root / "cell_types.tsv", [f"cell_type\tpeaks\tcounts_column\nt\t{peaks}\t5"]
    )
    config = {
        "cell_types": str(sheet),
        "motif_scan": str(scan),
        "cluster_names": str(write_lines(root / "clusters.txt", ["A"])),
        "prepare": {
            "chromosomes": ["chr1", "chr2"],
            "window_size": 2,
            "max_span": 10**9,
            "validation_chromosomes": ["chr2"],
            "test_chromosomes": [],
        },
        "model": {
            "preset": "tiny",
            "overrides": {"embed_dim": 16, "num_layers": 1, "num_heads": 2},
        },
        "train": {"device": "cpu", "batch_size": 2, "max_steps": 2, "val_windows": 1},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["prepare", "--config", str(path), "--cell-type", "t", "--outdir", str(root / "p" / "t")]
    assert main(argv) == 0
    return {"config": path, "prepared": root / "p"}


def train_argv(prepared: dict[str, Path], outdir: Path) -> list[str]:
    argv = ["train", "--config", str(prepared["config"]), "--group", "all"]
    return [*argv, "--prepared-dir", str(prepared["prepared"]), "--outdir", str(outdir)]


def test_torch_save_failing_on_a_full_disk_is_one_line_naming_the_checkpoint(
    prepared, tmp_path, monkeypatch, capsys
):
    import getdiff.training.train

    def full(*args: object, **kwargs: object) -> None:  # torch's zip writer: no errno, no name
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(getdiff.training.train.torch, "save", full)
    assert main(train_argv(prepared, tmp_path / "out")) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"getdiff train: error: {tmp_path / 'out'}"), last
    assert "/checkpoints/best-" in last or "/checkpoints/last.pt" in last, last
    assert ".pt: writing failed (torch: [enforce fail" in last and "is the disk full?" in last
    assert list(tmp_path.rglob("*.tmp")) == [] and list(tmp_path.rglob("*.pt")) == []


def test_safetensors_failing_on_a_full_disk_is_one_line_naming_the_model_file(
    prepared, tmp_path, monkeypatch, capsys
):
    import safetensors

    import getdiff.modeling.model

    def full(*args: object, **kwargs: object) -> None:
        message = "Error while serializing: I/O error: No space left on device (os error 28)"
        raise safetensors.SafetensorError(message)

    monkeypatch.setattr(getdiff.modeling.model, "save_file", full)
    out = tmp_path / "out"
    assert main(train_argv(prepared, out)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"getdiff train: error: {out / 'model.safetensors'}: No space left on device"
    assert list(tmp_path.rglob("*.tmp")) == [] and not (out / "model.safetensors").exists()


def test_a_writer_failing_inside_a_set_names_the_member_not_its_temporary_name(tmp_path):
    import safetensors

    from getdiff.io import atomic_dir, output_set

    paths = {"model": tmp_path / "model.safetensors", "adapter": tmp_path / "adapter"}
    message = "Error while serializing: I/O error: Disk quota exceeded (os error 122)"
    with pytest.raises(OSError) as raised, output_set(paths, directories={"adapter"}) as tmp:
        with atomic_dir(tmp["adapter"]) as inner:  # as lora.save_adapters writes it
            (inner / "adapter_config.json").write_text("{}")
            raise safetensors.SafetensorError(message)
    assert raised.value.filename == str(tmp_path / "adapter")
    assert raised.value.strerror == "Disk quota exceeded"
    assert list(tmp_path.iterdir()) == []
