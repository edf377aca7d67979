"""Interval overlaps (half-open BED semantics) and the match-rate rule."""

from __future__ import annotations

import gzip
import logging

import numpy as np
import pandas as pd
import pytest

from getdiff.errors import InputError
from getdiff.genomics.intervals import LOW_MATCH_RATE, check_match_rate, overlapping


def table(*rows: tuple[str, int, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["chrom", "start", "end"])


def test_overlap_is_half_open_and_per_chromosome():
    regions = table(("chr1", 0, 10), ("chr1", 10, 20), ("chr2", 0, 10), ("chr1", 25, 30))
    other = table(("chr1", 10, 11), ("chr1", 29, 40))
    assert overlapping(regions, other).tolist() == [False, True, False, True]


def test_nested_intervals_overlap_everything_inside():
    regions = table(("chr1", 5, 6), ("chr1", 50, 60), ("chr1", 200, 300))
    other = table(("chr1", 0, 100), ("chr1", 40, 45))
    assert overlapping(regions, other).tolist() == [True, True, False]


def test_empty_tables_overlap_nothing():
    assert overlapping(table(("chr1", 0, 5)), table()).tolist() == [False]
    assert overlapping(table(), table(("chr1", 0, 5))).tolist() == []


def test_no_match_is_an_error_naming_both_files_with_the_usual_causes():
    with pytest.raises(InputError, match=r"a.bed: no match: 0 of 10 peaks.*b.bed.*genome build"):
        check_match_rate(0, 10, "peaks", "a.bed", "b.bed")


def test_a_low_match_rate_is_a_warning_with_the_numbers(caplog):
    caplog.set_level(logging.INFO)
    assert check_match_rate(1, 10, "peaks", "a.bed", "b.bed") == pytest.approx(0.1)
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "1 of 10 peaks (10.0%)" in warning[0].getMessage()
    caplog.clear()
    check_match_rate(int(10 * LOW_MATCH_RATE), 10, "peaks", "a.bed", "b.bed")
    assert all(r.levelno < logging.WARNING for r in caplog.records)


# --------------------------------------------------------------------------- the two readers

GOOD_PEAKS = (
    b"track name=x\nchr1\t10\t20\tp1\t5\t.\t3.5\nchr2\t5\t9\t.\t1\t.\t0\nchr1\t1\t4\tp3\t0\t.\t2\n"
)
PEAK_VARIANTS = {
    "clean": GOOD_PEAKS,
    "crlf": GOOD_PEAKS.replace(b"\n", b"\r\n"),
    "lone cr": GOOD_PEAKS.replace(b"\n", b"\r"),
    "blank line": GOOD_PEAKS.replace(b"p1\t5\t.\t3.5\n", b"p1\t5\t.\t3.5\n\n"),
    "header mid-file": GOOD_PEAKS.replace(b"chr2", b"# note\nchr2"),
    "spaces": GOOD_PEAKS.replace(b"\t", b"  "),
    "extra columns vary": GOOD_PEAKS.replace(b"\t2\n", b"\t2\textra\tmore\n"),
    "plus sign": GOOD_PEAKS.replace(b"\t10\t", b"\t+10\t"),
    "hex": GOOD_PEAKS.replace(b"\t10\t", b"\t0x10\t"),
    "padded": GOOD_PEAKS.replace(b"chr2\t5", b" chr2 \t 5 "),
    "empty name": GOOD_PEAKS.replace(b"p3", b""),
    "quoted name": GOOD_PEAKS.replace(b"p3", b'"p 3"'),
    "nul in name": GOOD_PEAKS.replace(b"p3", b"p\x003"),
    "19 digits": GOOD_PEAKS.replace(b"\t20\t", b"\t1000000000000000000\t"),
    "nan count": GOOD_PEAKS.replace(b"\t3.5\n", b"\tnan\n"),
    "negative count": GOOD_PEAKS.replace(b"\t3.5\n", b"\t-1\n"),
    "exponent count": GOOD_PEAKS.replace(b"\t3.5\n", b"\t1e3\n"),
    "start >= end": GOOD_PEAKS.replace(b"\t5\t9\t", b"\t9\t5\t"),
    "latin-1": GOOD_PEAKS.replace(b"p1", b"p\xe9"),
    "3 columns": b"chr1\t10\t20\nchr1\t30\t40\n",
    "only headers": b"# nothing\ntrack x\n",
    "duplicate": GOOD_PEAKS + b"chr1\t10\t20\tagain\t5\t.\t1\n",
    "byte-order mark": b"\xef\xbb\xbf" + GOOD_PEAKS,
    "commented-out peak": GOOD_PEAKS.replace(b"chr2\t5", b"#chr2\t5"),
    "track line with the data's fields": GOOD_PEAKS + b"track\t1\t2\tx\t0\t.\t1\n",
    "minus zero count": GOOD_PEAKS.replace(b"\t0\n", b"\t-0\n"),
    "empty chromosome": GOOD_PEAKS.replace(b"chr2\t5", b"\t5"),
    "cp1252 in an unused column after 8 KiB": GOOD_PEAKS
    + b"".join(b"chr1\t%d\t%d\tp\t0\t+\t1\n" % (100 + i * 10, 105 + i * 10) for i in range(460))
    + b"chr1\t30\t40\tq\t0\t\x96\t1\n",
    "byte-order mark, no header": b"\xef\xbb\xbf" + GOOD_PEAKS.split(b"\n", 1)[1],
}


FAST_PEAKS = {
    "clean", "crlf", "lone cr", "quoted name", "nul in name", "exponent count", "3 columns",
    "duplicate", "byte-order mark", "byte-order mark, no header", "minus zero count",
}  # fmt: skip


def outcome(read):
    """What ``read()`` returns, or its InputError's one line."""
    try:
        return read()
    except InputError as err:
        return f"InputError: {err}"


@pytest.mark.parametrize("name", sorted(PEAK_VARIANTS))
@pytest.mark.parametrize("compress", ["plain", "bgzip"])
def test_peak_readers_agree_wherever_the_fast_one_answers(tmp_path, monkeypatch, name, compress):
    import getdiff.genomics.peaks as peaks

    data = PEAK_VARIANTS[name]
    path = tmp_path / "peaks.bed"
    if compress == "bgzip":  # two gzip members, as bgzip writes them
        half = len(data) // 2
        path.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    else:
        path.write_bytes(data)
    counts = None if name == "3 columns" else 7
    answered = peaks._read_fast(path, named=True, counts_index=None if counts is None else 6)
    assert (answered is not None) == (name in FAST_PEAKS)
    fast = outcome(lambda: peaks.read_peak_file(path, counts_column=counts))
    monkeypatch.setattr(peaks, "_read_fast", lambda *args, **kwargs: None)
    slow = outcome(lambda: peaks.read_peak_file(path, counts_column=counts))
    if isinstance(slow, str):
        assert fast == slow
    else:
        pd.testing.assert_frame_equal(fast, slow)


SCAN = "#chrom\tstart\tend\tname\tscore\tstrand\n" + "".join(
    f"chr{1 + i % 2}\t{i * 7}\t{i * 7 + 9}\t{'ABC'[i % 3]}\t{i % 5 + 0.25}\t+\n" for i in range(300)
)
SCAN_VARIANTS = {
    "clean": SCAN,
    "crlf": SCAN.replace("\n", "\r\n"),
    "blank lines": SCAN.replace("\t+\n", "\t+\n\n"),
    "five columns": SCAN.replace("\t+\n", "\n"),
    "extra columns vary": SCAN.replace("\t0.25\t+\n", "\t0.25\t+\tx\ty\n"),
    "hex": SCAN.replace("\t70\t", "\t0x46\t"),
    "negative score": SCAN.replace("\t1.25\t", "\t-1.25\t"),
    "nan score": SCAN.replace("\t1.25\t", "\tnan\t"),
    "unknown cluster": SCAN.replace("\tB\t", "\tD\t", 1),
    "start >= end": SCAN.replace("\t70\t79\t", "\t79\t70\t"),
    "header mid-file": SCAN.replace("chr2\t70", "# mid\nchr2\t70"),
    "padded name": SCAN.replace("\tA\t", "\t A\t"),
    "other naming": SCAN.replace("chr2", "2"),
    "byte-order mark": "\ufeff" + SCAN,
    "byte-order mark, no header": "\ufeff" + SCAN.split("\n", 1)[1],
    "empty chromosome": SCAN.replace("chr2\t70", "\t70"),
    "score past float32": SCAN.replace("\t1.25\t", "\t1e39\t"),
    "scores summing past float32": SCAN.replace("\t1.25\t", "\t3e38\t"),
    "commented-out hit": SCAN.replace("chr2\t70", "#chr2\t70"),
    "cp1252 in the strand after 8 KiB": (SCAN + SCAN.split("\n", 1)[1] * 2).encode()
    + b"chr1\t1\t5\tA\t1\t\x96\n",
}


FAST_SCANS = {
    "clean", "crlf", "five columns", "unknown cluster", "other naming", "byte-order mark",
    "byte-order mark, no header", "scores summing past float32",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCAN_VARIANTS))
@pytest.mark.parametrize("chunk_lines", [7, 1_000_000])
def test_scan_readers_agree_wherever_the_fast_one_answers(tmp_path, monkeypatch, name, chunk_lines):
    import getdiff.genomics.motif_scores as motifs
    from getdiff.genomics.intervals import IrregularText

    path = tmp_path / "scan.bed"
    text = SCAN_VARIANTS[name]
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    peaks = table(("chr1", 0, 500), ("chr1", 100, 120), ("chr2", 50, 2000), ("chr1", 10, 11))

    def read():
        sums, stats = motifs.aggregate_motif_scores(
            path, peaks, ["A", "B", "C"], chunk_lines=chunk_lines, use_index=False
        )
        return sums.toarray(), stats

    def declined(*args, **kwargs):
        raise IrregularText("forced")
        yield

    try:
        answered = bool(list(motifs._arrow_chunks(path, chunk_lines)))
    except IrregularText:
        answered = False
    assert answered == (name in FAST_SCANS)
    fast = outcome(read)
    monkeypatch.setattr(motifs, "_arrow_chunks", declined)
    slow = outcome(read)
    if isinstance(slow, str):
        assert fast == slow
    else:
        np.testing.assert_array_equal(fast[0], slow[0])
        assert fast[1] == slow[1]
