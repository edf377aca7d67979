"""Counts from a BAM/CRAM: Tn5-shifted insertion sites per peak against a hand-computed table,
every read filter, agreement with the equivalent fragments file, chromosome naming (strict and
harmonise; fragments: tests/test_fragments.py) and the errors."""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import prepare_three_peaks

import getdiff.genomics.bam_records as bam_records
from getdiff.config import validate_config
from getdiff.errors import InputError
from getdiff.genomics.bam import (
    ReadFilter,
    _count_bam,
    _count_contig,
    count_read_insertions,
    read_filter,
)
from getdiff.genomics.fragments import count_insertions, counts_format
from getdiff.genomics.insertions import SiteTally
from getdiff.genomics.peaks import load_peaks
from getdiff.tensors import load_regions

pysam = pytest.importorskip("pysam")

PEAKS = pd.DataFrame(
    {"chrom": ["chr1", "chr1", "chr2"], "start": [100, 150, 0], "end": [200, 300, 50]}
)
CONTIGS = {"chr1": 1000, "chr2": 1000, "chrM": 100}
# (chrom, reference_start, cigar, flag, mapq). Sites: forward reference_start + 4, reverse
# reference_end - 6 (reference_end = one past the last aligned base; soft clips do not count).
READS = [
    ("chr1", 96, "20M", 0, 60),  # forward, site 100: peak 1 (its first base)
    ("chr1", 120, "5S10M5D10M", 16, 60),  # reverse, end 145, site 139: peak 1 only
    ("chr1", 146, "20M", 0, 60),  # site 150: peaks 1 and 2 (first base of peak 2)
    ("chr1", 286, "20M", 16, 60),  # end 306, site 300: no peak (peak 2 ends at 300)
    ("chr1", 285, "20M", 16, 60),  # end 305, site 299: peak 2 (its last base)
    ("chr1", 95, "20M", 0, 60),  # site 99: no peak
    ("chr1", 176, "20M", 99, 60),  # paired, properly, site 180: peaks 1 and 2
    ("chr1", 116, "20M", 65, 60),  # paired, not properly, site 120: peak 1
    ("chr2", 0, "20M", 0, 60),  # site 4: chr2 peak
    ("chr2", 10, "30M", 16, 60),  # end 40, site 34: chr2 peak
    ("chrM", 10, "20M", 0, 60),  # no peak on chrM
]
# One read per filter, each at site 120 (peak 1) if it were counted.
FILTERED = {
    "drop_duplicates": ("chr1", 116, "20M", 0x400, 60),
    "drop_secondary": ("chr1", 116, "20M", 0x100, 60),
    "drop_supplementary": ("chr1", 116, "20M", 0x800, 60),
    "drop_qcfail": ("chr1", 116, "20M", 0x200, 60),
    "min_mapq": ("chr1", 116, "20M", 0, 29),
}
UNMAPPED = ("chr1", 116, None, 0x4, 0)  # placed at its mate's position, never counted
EXPECTED = [5, 3, 2]


def default_filter(**changes: object) -> ReadFilter:
    """The schema's prepare.bam defaults, with ``changes``."""
    section = validate_config({"cell_types": "x.tsv", "motif_scan": "s.bed"})["prepare"]["bam"]
    return dataclasses.replace(read_filter(section), **changes)


def write_bam(path, reads, contigs=CONTIGS, index=True, order="coordinate"):
    """Write ``reads`` as a BAM (or CRAM, by suffix; no reference needed), sorted + indexed."""
    header = {
        "HD": {"VN": "1.6", "SO": order},
        "SQ": [{"SN": n, "LN": ln} for n, ln in contigs.items()],
    }
    raw = path.with_name(path.stem + ".raw.bam")
    names = list(contigs)
    with pysam.AlignmentFile(str(raw), "wb", header=header) as out:
        for i, (chrom, start, cigar, flag, mapq) in enumerate(reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name, read.flag, read.mapping_quality = f"r{i}", flag, mapq
            read.reference_id, read.reference_start = names.index(chrom), start
            if cigar is not None:
                read.cigarstring = cigar
                length = read.infer_query_length()
                read.query_sequence = "A" * length
                read.query_qualities = pysam.qualitystring_to_array("I" * length)
            out.write(read)
    if order != "coordinate":
        raw.replace(path)
        return path
    if path.suffix == ".cram":
        pysam.sort("-O", "cram", "--output-fmt-option", "no_ref=1", "-o", str(path), str(raw))
    else:
        pysam.sort("-o", str(path), str(raw))
    if index:
        pysam.index(str(path))
    return path


@pytest.fixture
def bam(tmp_path):
    return write_bam(tmp_path / "reads.bam", [*READS, *FILTERED.values(), UNMAPPED])


def test_insertion_sites_per_peak_match_the_hand_computed_table(bam):
    # peak 1: 100, 139, 150, 180, 120; peak 2: 150, 299, 180; chr2: 4, 34.
    assert count_read_insertions(bam, PEAKS, default_filter()).tolist() == EXPECTED


@pytest.mark.parametrize("setting", sorted(FILTERED))
def test_turning_a_filter_off_counts_the_read_it_dropped(bam, setting):
    change = {setting: 0} if setting == "min_mapq" else {setting: False}
    counts = count_read_insertions(bam, PEAKS, default_filter(**change))
    assert counts.tolist() == [EXPECTED[0] + 1, *EXPECTED[1:]]


def test_the_mapq_threshold_is_inclusive(bam):
    counts = count_read_insertions(bam, PEAKS, default_filter(min_mapq=29))
    assert counts.tolist() == [EXPECTED[0] + 1, *EXPECTED[1:]]


def test_proper_pairs_only_keeps_the_properly_paired_read(bam):
    counts = count_read_insertions(bam, PEAKS, default_filter(require_proper_pair=True))
    assert counts.tolist() == [1, 1, 0]


def test_without_the_shift_sites_are_the_read_ends(bam):
    # 5' ends: 96, 144, 146, 305, 304, 95, 176, 116 on chr1; 0 and 39 on chr2.
    counts = count_read_insertions(bam, PEAKS, default_filter(tn5_shift=False))
    assert counts.tolist() == [4, 1, 2]


def test_paired_reads_count_as_their_fragments_file(tmp_path, write_lines):
    rng = np.random.default_rng(1)
    starts = np.sort(rng.integers(0, 700, 40))
    lengths = rng.integers(30, 250, 40)
    reads, lines = [], []
    for i, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist(), strict=True)):
        end = start + int(length)
        reads += [("chr1", start, "20M", 99, 60), ("chr1", end - 20, "20M", 147, 60)]
        lines.append(f"chr1\t{start + 4}\t{end - 5}\tBC{i}\t1")
    bam = write_bam(tmp_path / "pairs.bam", reads)
    fragments = write_lines(tmp_path / "pairs.tsv", lines)
    peaks = PEAKS[PEAKS["chrom"] == "chr1"]
    from_bam = count_read_insertions(bam, peaks, default_filter())
    assert from_bam.tolist() == count_insertions(fragments, peaks).tolist()
    assert from_bam.sum() > 0


def test_a_cram_counts_as_the_bam(tmp_path, bam):
    cram = write_bam(tmp_path / "reads.cram", [*READS, *FILTERED.values(), UNMAPPED])
    assert counts_format(cram) == "cram" and counts_format(bam) == "bam"
    assert count_read_insertions(cram, PEAKS, default_filter()).tolist() == EXPECTED


def test_a_bam_without_an_index_names_the_samtools_fix(tmp_path):
    path = write_bam(tmp_path / "reads.bam", READS, index=False)
    with pytest.raises(
        InputError, match=r"reads\.bam: has no index.*fix: samtools index \S*reads\.bam$"
    ):
        count_read_insertions(path, PEAKS, default_filter())


def test_an_unsorted_bam_names_the_sort_and_index_fix(tmp_path):
    path = write_bam(tmp_path / "reads.bam", READS, order="queryname")
    with pytest.raises(
        InputError,
        match=r"reads\.bam: is sorted by queryname, not by coordinate; fix: samtools sort -o "
        r"\S*reads\.sorted\.bam \S*reads\.bam && samtools index \S*reads\.sorted\.bam",
    ):
        count_read_insertions(path, PEAKS, default_filter())


def test_reads_out_of_order_within_a_contig_are_an_error():
    reads = [
        SimpleNamespace(flag=0, mapping_quality=60, reference_start=s, reference_end=s + 20)
        for s in (50, 10)
    ]
    fake = SimpleNamespace(fetch=lambda contig: iter(reads))
    tally = SiteTally(PEAKS, "x.bam", "p.bed", "strict")
    with pytest.raises(
        InputError, match=r"x\.bam: is not sorted by coordinate on chr1; fix: samtools sort"
    ):
        _count_contig(fake, "chr1", "chr1", default_filter(), tally, _stats())


def _stats():
    from getdiff.genomics.bam import _ReadStats

    return _ReadStats()


def test_bam_contigs_named_without_chr_are_an_error_or_renamed(tmp_path):
    bare = [(chrom.replace("chr", ""), *rest) for chrom, *rest in READS]
    contigs = {name.replace("chr", ""): length for name, length in CONTIGS.items()}
    path = write_bam(tmp_path / "bare.bam", bare, contigs=contigs)
    with pytest.raises(InputError, match="naming mismatch: this file has '1', the peaks .* 'chr1'"):
        count_read_insertions(path, PEAKS, default_filter(), "p.bed")
    harmonised = count_read_insertions(path, PEAKS, default_filter(), "p.bed", "harmonise")
    assert harmonised.tolist() == EXPECTED


def test_reads_in_no_peak_are_an_error(tmp_path):
    path = write_bam(tmp_path / "far.bam", [("chr1", 600, "20M", 0, 60)])
    with pytest.raises(InputError, match=r"far\.bam: no insertion site lies in any peak of p\.bed"):
        count_read_insertions(path, PEAKS, default_filter(), "p.bed")


def test_reads_on_no_peak_chromosome_are_an_error(tmp_path):
    path = write_bam(tmp_path / "m.bam", [("chrM", 10, "20M", 0, 60)], contigs={"chrM": 100})
    with pytest.raises(InputError, match=r"no read lies on a chromosome of the peaks .*\['chrM'\]"):
        count_read_insertions(path, PEAKS, default_filter(), "p.bed")


def test_no_read_passing_the_filters_is_an_error_with_the_reasons(tmp_path):
    path = write_bam(tmp_path / "dup.bam", [FILTERED["drop_duplicates"], FILTERED["min_mapq"]])
    with pytest.raises(
        InputError,
        match=r"none of 2 reads .* passes the read filters .*'duplicate': 1.*'low_mapq': 1",
    ):
        count_read_insertions(path, PEAKS, default_filter())


def test_a_damaged_bam_is_an_error_naming_it(tmp_path, bam):
    broken = tmp_path / "broken.bam"
    broken.write_bytes(bam.read_bytes()[:60])
    with pytest.raises(InputError, match=r"broken\.bam: "):
        count_read_insertions(broken, PEAKS, default_filter())


def test_a_corrupt_block_inside_a_bam_is_an_error_naming_it(tmp_path):
    rng = np.random.default_rng(2)
    reads = [("chr1", int(s), "20M", 0, 60) for s in np.sort(rng.integers(0, 900, 20_000))]
    path = write_bam(tmp_path / "big.bam", reads)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside a BGZF block of chr1's reads, past the header
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(data)
    index = Path(f"{path}.bai")
    os.utime(index, ns=(path.stat().st_mtime_ns + 1, path.stat().st_mtime_ns + 1))  # not stale
    with pytest.raises(InputError, match=r"big\.bam: cannot be read as BAM/CRAM"):
        count_read_insertions(path, PEAKS, default_filter())


def test_barcodes_with_a_bam_are_an_error(tmp_path, bam, write_lines):
    peaks = write_lines(tmp_path / "p.bed", ["chr1\t100\t200"])
    with pytest.raises(
        InputError, match="barcodes need a fragments file; the counts_file is a BAM"
    ):
        load_peaks(peaks, counts_file=bam, barcodes=np.array(["AAA"]), read_filter=default_filter())


def test_prepare_takes_accessibility_from_a_bam_with_the_configured_filters(tmp_path, bam):
    regions = prepare_three_peaks(tmp_path, counts_file=bam, bam={"drop_duplicates": False})
    meta = load_regions(regions).attrs["getdiff"]
    assert meta["scaling"]["accessibility"]["total_counts"] == sum(EXPECTED) + 1


def _bgzf(data: bytes, block: int) -> bytes:
    """``data`` as BGZF blocks of ``block`` uncompressed bytes, then the EOF block."""
    out = []
    for lo in [*range(0, len(data), block), len(data)]:
        part = data[lo : lo + block]
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = packer.compress(part) + packer.flush()
        out += [
            b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\x06\0BC\x02\0",
            (len(payload) + 25).to_bytes(2, "little"),
        ]
        out += [payload, zlib.crc32(part).to_bytes(4, "little"), len(part).to_bytes(4, "little")]
    return b"".join(out)


def _many_reads(n: int = 6000) -> list[tuple]:
    """Reads of varied CIGARs, strands, flags and MAPQs over chr1 and chr2, sorted."""
    rng = np.random.default_rng(5)
    cigars = ["20M", "5S15M", "10M3D10M", "8M2I10M", "10M100N10M", "3S10M2S"]
    reads = [
        (
            chrom,
            int(rng.integers(0, 900)),
            cigars[rng.integers(len(cigars))],
            int(rng.choice([0, 16, 99, 147, 0x400, 0x100, 16 | 0x800])),
            int(rng.integers(20, 61)),
        )
        for chrom in ("chr1", "chr2")
        for _ in range(n // 2)
    ]
    return sorted(reads, key=lambda r: (r[0], r[1]))


def _expected(reads: list[tuple], peaks: pd.DataFrame) -> list[int]:
    """Counts computed from the read list itself, one read at a time (pysam's CIGAR lengths)."""
    counts = [0] * len(peaks)
    for chrom, start, cigar, flag, mapq in reads:
        if flag & 0xF04 or mapq < 30:
            continue
        segment = pysam.AlignedSegment()
        segment.reference_start, segment.cigarstring = start, cigar
        site = segment.reference_end - 6 if flag & 16 else start + 4
        for row, peak in enumerate(peaks.itertuples()):
            counts[row] += peak.chrom == chrom and peak.start <= site < peak.end
    return counts


@pytest.fixture
def big_bam(tmp_path):
    return write_bam(tmp_path / "many.bam", _many_reads())


def test_many_reads_match_a_read_by_read_count(big_bam):
    expected = _expected(_many_reads(), PEAKS)
    assert count_read_insertions(big_bam, PEAKS, default_filter()).tolist() == expected


def test_forked_workers_count_as_one_process(big_bam, monkeypatch):
    monkeypatch.setattr(bam_records, "CHUNK_BYTES", 4096)  # many chunks, a span per contig
    one = count_read_insertions(big_bam, PEAKS, default_filter(), threads=1)
    assert (
        count_read_insertions(big_bam, PEAKS, default_filter(), threads=2).tolist() == one.tolist()
    )


def test_records_straddling_bgzf_blocks_and_chunks_count_the_same(big_bam, tmp_path, monkeypatch):
    # htslib starts each record in a new block where it fits; other writers cut anywhere.
    straddling = tmp_path / "straddling.bam"
    straddling.write_bytes(_bgzf(gzip.decompress(big_bam.read_bytes()), 1000))
    pysam.index(str(straddling))
    expected = count_read_insertions(big_bam, PEAKS, default_filter()).tolist()
    assert count_read_insertions(straddling, PEAKS, default_filter()).tolist() == expected
    monkeypatch.setattr(bam_records, "CHUNK_BYTES", 3000)  # records cut by chunk ends too
    assert count_read_insertions(straddling, PEAKS, default_filter()).tolist() == expected


def test_a_bam_out_of_order_within_a_contig_is_an_error(tmp_path):
    reads = [("chr1", 96, "20M", 0, 60), ("chr1", 10, "20M", 0, 60)]
    path = write_bam(tmp_path / "unsorted.bam", reads, order="coordinate", index=False)
    raw = path.with_name(path.stem + ".raw.bam")
    raw.replace(path)  # the unsorted records under a coordinate header
    tally = SiteTally(PEAKS, path, "p.bed", "strict")
    with pytest.raises(InputError, match=r"unsorted\.bam: is not sorted by coordinate on chr1"):
        _count_bam(path, list(CONTIGS), default_filter(), tally, _stats(), 1)
