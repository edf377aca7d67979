"""Property-based fuzzing of `getdiff count` on fragments files and barcode tables: every
mutation of a valid file ends in exit 0 with the counts of a line-by-line reference reader, or
exit 2 with one error line naming the file (and the first bad line, where the reference finds
one); never a traceback, never counts from a line the reference refuses."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from getdiff.cli import main

PEAKS = [("chr1", 100, 200), ("chr1", 300, 400), ("chr2", 50, 150)]
FRAGMENTS = [
    "# cellranger-atac",
    "#chrom\tstart\tend\tbarcode\tcount",
    "chr1\t90\t120\tAAAC-1\t1",
    "chr1\t150\t320\tCCCG-1\t2",
    "chr1\t350\t500\tAAAC-1\t1",
    "chr2\t60\t100\tGGGT-1\t1",
    "chr2\t120\t140\tCCCG-1\t1",
    "chrM\t5\t90\tAAAC-1\t1",
]
BARCODES = ["AAAC-1\tT", "CCCG-1\tT", "GGGT-1\tB"]
COORDINATE = re.compile(r" *(-?[0-9]{1,18}) *")
HEADERS = ("#", "track", "browser")
# Inserted values: the characters and tokens of a hostile file ('x' left out: pyarrow reads
# 0x5 as hexadecimal).
VALUES = ["\t", "\n", "\r\n", " ", "-", "-1", "0", "#", '"', ".", "NA", "1e3", "\x00", "é"]
MUTATION = st.tuples(
    st.sampled_from(["insert", "delete_line", "duplicate_line", "truncate", "swap_fields"]),
    st.floats(0, 1, exclude_max=True),
    st.sampled_from(VALUES),
)


def mutate(text: str, kind: str, position: float, value: str) -> str:
    at = int(position * len(text))
    lines = text.split("\n")
    line = int(position * len(lines))
    if kind == "insert":
        return text[:at] + value + text[at:]
    if kind == "delete_line":
        return "\n".join(lines[:line] + lines[line + 1 :])
    if kind == "duplicate_line":
        return "\n".join(lines[: line + 1] + lines[line:])
    if kind == "truncate":
        return text[:at]
    fields = lines[line].split("\t")
    lines[line] = "\t".join(fields[1:2] + fields[:1] + fields[2:])
    return "\n".join(lines)


def reference(text: str, listed: set[str] | None) -> tuple[list[int] | None, int | None]:
    """(counts, None) when every line is a valid fragment (or a '#' line the reader skips);
    (None, line) for the first bad line; (None, None) when the file is not fragments at all."""
    lines = re.split(r"\r\n|\r|\n", text.removeprefix("\ufeff"))
    if lines and lines[-1] == "":
        lines.pop()
    data = [(n, line.split("\t")) for n, line in enumerate(lines, 1) if line]
    heads = [(n, f) for n, f in data if "".join(f).strip() and not f[0].startswith(HEADERS)]
    if not heads or len(heads[0][1]) < 4 or heads[0][1][3].strip() in ("", "."):
        return None, None
    with contextlib.suppress(ValueError):
        float(heads[0][1][3])
        return None, None  # a bedGraph: count refuses it
    first, head = heads[0]
    if (len(head) > 5 and head[5].strip() in ("+", "-", ".")) or (
        len(head) > 4 and not head[4].strip().isdigit()
    ):
        return None, first  # a BED6+, or no read count in column 5: not fragments
    expected, counts = len(head), [0] * len(PEAKS)
    headers = next((n for n, line in enumerate(lines) if not line.startswith("#")), len(lines))
    for number, fields in data:
        if number <= headers or (fields[0].startswith("#") and len(fields) != expected):
            continue  # '#' lines at the top, and '#' lines of another width further down
        found = [COORDINATE.fullmatch(v) for v in fields[1:3]] if len(fields) == expected else []
        if len(found) != 2 or None in found:
            return None, number
        start, end = (int(f.group(1)) for f in found)
        if start < 0 or end <= start:
            return None, number
        if listed is not None and fields[3] not in listed:
            continue
        for i, (chrom, lo, hi) in enumerate(PEAKS):
            counts[i] += fields[0] == chrom and (lo <= start < hi) + (lo <= end - 1 < hi)
    return counts, None


def run_count(root: Path, fragments: bytes, barcodes: bytes | None) -> tuple[int, list[str]]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    peaks = root / "peaks.bed"
    peaks.write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in PEAKS))
    (root / "fragments.tsv").write_bytes(fragments)
    argv = ["count", "--counts-file", str(root / "fragments.tsv"), "--peaks", str(peaks)]
    argv += ["--out", str(root / "out.tsv"), "--threads", "2"]
    if barcodes is not None:
        (root / "barcodes.tsv").write_bytes(barcodes)
        argv += ["--barcodes", str(root / "barcodes.tsv"), "--group", "T"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    return code, [line for line in err.getvalue().splitlines() if "getdiff count" in line]


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_fragments_file_gives_the_reference_counts_or_one_error_line(
    tmp_path_factory, mutations
):
    text = "".join(f"{line}\n" for line in FRAGMENTS)
    for mutation in mutations:
        text = mutate(text, *mutation)
    root = tmp_path_factory.getbasetemp() / "fuzz_fragments"
    code, lines = run_count(root, text.encode(), None)
    counts, bad_line = reference(text, None)
    fragments = root / "fragments.tsv"
    event(f"exit {code}, {'a bad line' if bad_line else 'no bad line'}")
    assert code in (0, 2) and len(lines) == 1, lines
    if code == 0:
        assert counts is not None, (text, lines)
        assert pd.read_csv(root / "out.tsv", sep="\t", header=None)[4].tolist() == counts
        return
    assert lines[0].startswith(f"getdiff count: error: {fragments}"), lines
    if bad_line is not None:
        assert lines[0].startswith(f"getdiff count: error: {fragments}:{bad_line}: "), (text, lines)
    elif counts is not None:  # valid lines: only a whole-file reason may refuse them
        assert sum(counts) == 0 or "chromosome" in lines[0] or "peaks of" in lines[0], lines
    assert not (root / "out.tsv").exists()


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_barcode_table_counts_its_group_or_is_one_error_line_naming_it(
    tmp_path_factory, mutations
):
    text = "".join(f"{line}\n" for line in BARCODES)
    for mutation in mutations:
        text = mutate(text, *mutation)
    root = tmp_path_factory.getbasetemp() / "fuzz_barcodes"
    fragments = "".join(f"{line}\n" for line in FRAGMENTS)
    code, lines = run_count(root, fragments.encode(), text.encode())
    event(f"exit {code}")
    assert code in (0, 2) and len(lines) == 1, lines
    if code == 2:
        assert lines[0].startswith(f"getdiff count: error: {root / 'barcodes.tsv'}"), lines
        return
    rows = [line.split("\t") for line in re.split(r"\r\n|\r|\n", text) if line.strip()]
    rows = [fields for fields in rows if not fields[0].startswith("#")]
    assert all(len(fields) > 1 for fields in rows), text  # --group T with no groups: refused
    groups: dict[str, set[str]] = {}
    for fields in rows:
        groups.setdefault(fields[0].strip(), set()).add(fields[1].strip())
    assert all(len(g) == 1 for g in groups.values()), text  # two groups: refused
    listed = {barcode for barcode, g in groups.items() if g == {"T"}}
    counts, _ = reference(fragments, listed)
    assert pd.read_csv(root / "out.tsv", sep="\t", header=None)[4].tolist() == counts


@pytest.mark.parametrize("value", ["-0", " 7", "7 ", "007"])
def test_coordinates_the_fast_reader_takes_are_valid_for_the_line_reader_too(value):
    from getdiff.genomics.fragments import line_problem

    assert line_problem(["chr1", value, "900", "A"], 4) is None
