"""Interval overlaps (half-open BED semantics) and the match-rate rule."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from getdiff.errors import InputError
from getdiff.intervals import LOW_MATCH_RATE, check_match_rate, overlapping


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
