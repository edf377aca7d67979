"""getdiff.io.ReadAhead: a background producer that keeps order, hands over its errors and stops
when closed; and the scan read ahead giving the same sums as the scan read in place."""

import threading
import time

import numpy as np
import pandas as pd
import pytest

from getdiff.errors import InputError
from getdiff.genomics.motif_scores import aggregate_motif_scores, scan_read_ahead
from getdiff.io import ReadAhead


def test_items_arrive_in_order_and_the_producer_ends():
    with ReadAhead(lambda: iter(range(50)), depth=2) as ahead:
        assert list(ahead) == list(range(50))


def test_the_producers_error_is_raised_where_the_reader_reaches_it():
    def produce():
        yield 1
        yield 2
        raise ValueError("line 3 is bad")

    with ReadAhead(produce) as ahead:
        got = []
        with pytest.raises(ValueError, match="line 3 is bad"):
            for item in ahead:
                got.append(item)
    assert got == [1, 2]


def test_close_stops_an_endless_producer_and_runs_its_cleanup():
    cleaned = threading.Event()

    def produce():
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            cleaned.set()

    ahead = ReadAhead(produce)
    assert next(iter(ahead)) == 1
    began = time.perf_counter()
    ahead.close()
    assert time.perf_counter() - began < 2
    assert cleaned.is_set()
    with pytest.raises(RuntimeError, match="after close"):
        list(ahead)


def test_a_producer_that_fails_to_start_raises_in_the_reader():
    def produce():
        raise FileNotFoundError("scan.bed")

    with ReadAhead(produce) as ahead, pytest.raises(FileNotFoundError):
        list(ahead)


def _scan_and_peaks(tmp_path):
    rng = np.random.default_rng(3)
    peaks = pd.DataFrame(
        {"chrom": ["chr1"] * 40, "start": np.arange(40) * 1000, "end": np.arange(40) * 1000 + 500}
    )
    starts = np.sort(rng.integers(0, 40_000, 3000))
    names = np.array(["AHR", "ZSCAN4", "CTCF"])[rng.integers(0, 3, 3000)]
    pairs = zip(starts, names, strict=True)
    lines = [f"chr1\t{s}\t{s + 12}\t{n}\t{s % 7 + 0.5}\t+" for s, n in pairs]
    scan = tmp_path / "scan.bed"
    scan.write_text("\n".join(lines) + "\n")
    return scan, peaks


@pytest.mark.parametrize("chunk_lines", [1_000_000, 500])
def test_a_scan_read_ahead_sums_as_the_scan_read_in_place(tmp_path, chunk_lines):
    scan, peaks = _scan_and_peaks(tmp_path)
    names = ["AHR", "CTCF", "ZSCAN4"]
    in_place, stats = aggregate_motif_scores(scan, peaks, names, chunk_lines=chunk_lines)
    with scan_read_ahead(scan, chunk_lines) as ahead:
        assert ahead is not None
        ahead_sums, ahead_stats = aggregate_motif_scores(
            scan, peaks, names, chunk_lines=chunk_lines, ahead=ahead
        )
    np.testing.assert_array_equal(ahead_sums.toarray(), in_place.toarray())
    assert ahead_stats == stats
    assert stats["scan_records"] == 3000


def test_a_scan_read_ahead_that_meets_a_bad_line_falls_back_and_names_it(tmp_path):
    scan, peaks = _scan_and_peaks(tmp_path)
    lines = scan.read_text().splitlines()
    lines[1200] = lines[1200].replace("chr1\t", "chr1\t-", 1)  # a negative start
    scan.write_text("\n".join(lines) + "\n")
    with scan_read_ahead(scan, 500) as ahead, pytest.raises(InputError, match=":1201:"):
        aggregate_motif_scores(scan, peaks, ["AHR", "CTCF", "ZSCAN4"], chunk_lines=500, ahead=ahead)


def test_no_read_ahead_for_a_missing_scan_so_its_error_comes_in_order(tmp_path):
    with scan_read_ahead(tmp_path / "absent.bed") as ahead:
        assert ahead is None


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        ReadAhead(lambda: iter(()), depth=0)


def test_reading_after_close_is_an_error_even_when_the_producer_had_finished():
    ahead = ReadAhead(lambda: iter(range(3)), depth=8)
    time.sleep(0.2)
    ahead.close()
    with pytest.raises(RuntimeError, match="after close"):
        list(ahead)


def test_a_dropped_read_ahead_stops_its_thread():
    import gc

    before = threading.active_count()
    ahead = ReadAhead(lambda: iter(range(10**9)))
    next(iter(ahead))
    del ahead
    gc.collect()
    deadline = time.perf_counter() + 5
    while threading.active_count() > before and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before


def test_no_read_ahead_for_a_scan_name_the_system_refuses(tmp_path):
    with scan_read_ahead(tmp_path / ("x" * 300 + ".bed")) as ahead:
        assert ahead is None
