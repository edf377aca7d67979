"""getdiff count: insertion sites per peak of a BAM or fragments file, against hand counts."""

from __future__ import annotations

import pytest

from getdiff.cli import main

pysam = pytest.importorskip("pysam")

# Peak file order on purpose not genome order: the output keeps it.
PEAK_LINES = ["chr2\t0\t50\tpB", "chr1\t100\t200\tpA", "chr1\t400\t500"]
CONTIGS = {"chr1": 1000, "chr2": 1000}
# (chrom, reference_start, cigar, flag, mapq) -> Tn5 site (forward start + 4, reverse end - 6)
READS = [
    ("chr1", 96, "20M", 0, 60),  # site 100: pA (unshifted 96: none)
    ("chr1", 180, "20M", 16, 60),  # end 200, site 194: pA (unshifted 199: pA)
    ("chr1", 190, "20M", 16, 60),  # end 210, site 204: none (unshifted 209: none)
    ("chr1", 120, "20M", 0, 29),  # site 124 in pA, but MAPQ 29 < 30
    ("chr1", 130, "20M", 0x400, 60),  # site 134 in pA, duplicate
    ("chr1", 140, "20M", 0x100, 60),  # site 144 in pA, secondary
    ("chr1", 150, "20M", 0x800, 60),  # site 154 in pA, supplementary
    ("chr1", 160, "20M", 0x200, 60),  # site 164 in pA, QC fail
    ("chr1", 400, "10M", 0, 60),  # site 404: chr1:400-500 (unshifted 400: too)
    ("chr1", 450, None, 0x4, 0),  # unmapped, placed: never counted
    ("chr2", 10, "30M", 16, 60),  # end 40, site 34: pB (unshifted 39: pB)
    ("chr2", 46, "20M", 0, 60),  # site 50: none, pB ends at 50 (unshifted 46: pB)
]
# chrom start end barcode count -> sites start and end - 1
FRAGMENTS = [
    "chr1\t100\t150\tAAA\t1",  # 100, 149: pA twice
    "chr1\t180\t420\tBBB\t2",  # 180: pA; 419: chr1:400-500
    "chr1\t600\t700\tAAA\t1",  # no peak
    "chr2\t10\t60\tCCC\t1",  # 10: pB; 59: none
]


def write_bam(path, reads):
    header = {"HD": {"VN": "1.6", "SO": "coordinate"}}
    header["SQ"] = [{"SN": name, "LN": length} for name, length in CONTIGS.items()]
    raw = path.with_name("raw.bam")
    with pysam.AlignmentFile(str(raw), "wb", header=header) as out:
        for i, (chrom, start, cigar, flag, mapq) in enumerate(reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag, read.mapping_quality = f"r{i}", flag, mapq
            read.reference_id, read.reference_start = list(CONTIGS).index(chrom), start
            if cigar is not None:
                read.cigarstring = cigar
                read.query_sequence = "A" * read.infer_query_length()
            out.write(read)
    pysam.sort("-o", str(path), str(raw))
    pysam.index(str(path))
    return path


@pytest.fixture
def inputs(tmp_path, write_lines):
    return {
        "peaks": write_lines(tmp_path / "peaks.bed", PEAK_LINES),
        "bam": write_bam(tmp_path / "reads.bam", READS),
        "fragments": write_lines(tmp_path / "fragments.tsv.gz", FRAGMENTS, gz=True),
        "groups": write_lines(tmp_path / "groups.tsv", ["AAA\tT1", "BBB\tT2", "CCC\tT2"]),
        "list": write_lines(tmp_path / "list.txt", ["AAA", "CCC"]),
        "out": tmp_path / "counts.tsv",
    }


def count(inputs, counts_file, *flags):
    """Run ``getdiff count``; the output's lines as lists of fields."""
    argv = ["count", "--counts-file", str(inputs[counts_file]), "--peaks", str(inputs["peaks"])]
    assert main([*argv, "--out", str(inputs["out"]), "--threads", "1", *flags]) == 0
    return [line.split("\t") for line in inputs["out"].read_text().splitlines()]


def counts(inputs, counts_file, *flags):
    return [int(fields[4]) for fields in count(inputs, counts_file, *flags)]


def test_a_bam_gives_one_line_per_peak_in_the_peak_files_order(inputs):
    assert count(inputs, "bam") == [
        ["chr2", "0", "50", "pB", "1"],
        ["chr1", "100", "200", "pA", "2"],
        ["chr1", "400", "500", "chr1:400-500", "1"],
    ]


def test_without_the_shift_the_sites_are_the_5prime_ends(inputs):
    assert counts(inputs, "bam", "--no-tn5-shift") == [2, 1, 1]


@pytest.mark.parametrize(
    "flag",
    ["--min-mapq=0", "--keep-duplicates", "--keep-secondary", "--keep-supplementary"]
    + ["--keep-qcfail"],
)
def test_each_filter_flag_counts_the_one_read_it_kept_out(inputs, flag):
    assert counts(inputs, "bam", flag) == [1, 3, 1]


def test_proper_pairs_only_with_unpaired_reads_is_an_error_not_zeros(inputs, capsys):
    argv = ["count", "--counts-file", str(inputs["bam"]), "--peaks", str(inputs["peaks"])]
    assert main([*argv, "--out", str(inputs["out"]), "--proper-pairs-only"]) == 2
    assert "none of 12 reads on the peaks' chromosomes passes" in capsys.readouterr().err
    assert not inputs["out"].exists()


def test_the_summary_line_gives_reads_seen_kept_and_in_peaks(inputs, capsys):
    count(inputs, "bam")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "12 reads seen, 6 kept (50.0%), 4 of their 6 insertion sites in peaks (66.7%)" in line
    assert "3 of 3 peaks with a site" in line


def test_threads_give_the_same_counts(inputs, tmp_path):
    more = write_bam(tmp_path / "more.bam", READS * 3)
    inputs["more"] = more
    assert counts(inputs, "more") == [3, 6, 3]
    assert counts(inputs, "more", "--threads", "2") == [3, 6, 3]  # the last --threads wins


def test_fragments_count_both_ends_of_every_fragment(inputs):
    assert counts(inputs, "fragments") == [1, 3, 1]


def test_a_barcode_list_counts_only_its_fragments(inputs):
    assert counts(inputs, "fragments", "--barcodes", str(inputs["list"])) == [1, 2, 0]


@pytest.mark.parametrize(("group", "expected"), [("T1", [0, 2, 0]), ("T2", [1, 1, 1])])
def test_a_group_of_the_barcode_table_counts_its_barcodes(inputs, group, expected):
    flags = ["--barcodes", str(inputs["groups"]), "--group", group]
    assert counts(inputs, "fragments", *flags) == expected


def test_barcodes_with_a_bam_are_an_error(inputs, capsys):
    argv = ["count", "--counts-file", str(inputs["bam"]), "--peaks", str(inputs["peaks"])]
    argv += ["--out", str(inputs["out"]), "--barcodes", str(inputs["list"])]
    assert main(argv) == 2
    assert "barcodes need a fragments file; this is a BAM" in capsys.readouterr().err


def test_a_bedgraph_is_refused(inputs, tmp_path, write_lines, capsys):
    inputs["bedgraph"] = write_lines(tmp_path / "c.bedgraph", ["chr1\t100\t200\t7"])
    argv = ["count", "--counts-file", str(inputs["bedgraph"]), "--peaks", str(inputs["peaks"])]
    assert main([*argv, "--out", str(inputs["out"])]) == 2
    assert "is a bedGraph (it already holds counts)" in capsys.readouterr().err
    assert not inputs["out"].exists()
