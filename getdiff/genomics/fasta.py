"""A genome FASTA read by region (pysam; plain or bgzip with .fai/.gzi): opened with its index
checked against it (rebuilt or refused), bases checked against the IUPAC letters, and peak
chromosome names matched to its records."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from getdiff.errors import InputError
from getdiff.genomics.indexes import IUPAC, check_fasta_index, fai_problem, fasta_problem
from getdiff.genomics.intervals import MISMATCH_HINT
from getdiff.genomics.peaks import harmonise_chrom
from getdiff.io import check_regular_file, is_gzipped

_IUPAC = np.zeros(256, dtype=bool)
_IUPAC[np.frombuffer(IUPAC, dtype=np.uint8)] = True


def open_fasta(path: str | Path) -> Any:
    """pysam.FastaFile of a plain or bgzip FASTA; builds a missing .fai (and .gzi) beside it."""
    import pysam

    path = Path(path)
    check_regular_file(path)
    if not path.exists():
        raise InputError(path, "genome FASTA not found")
    if is_gzipped(path):
        with open(path, "rb") as handle:
            head = handle.read(16)
        if not (head[3] & 4 and head[12:14] == b"BC"):  # the BGZF extra field
            raise InputError(
                path,
                "compressed with gzip, not bgzip, so it cannot be read by region; recompress it: "
                f"zcat {path} | bgzip > {path.with_suffix('')}.bgz (or gunzip it)",
            )
    building = not Path(f"{path}.fai").exists()
    check_fasta_index(path)  # a stale or foreign .fai/.gzi is rebuilt or refused
    try:
        fasta = pysam.FastaFile(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        error = fasta_problem(path)
        if error is not None:
            raise error from None
        raise InputError(
            path,
            f"cannot open or index the FASTA ({err}); index it with: samtools faidx {path} "
            "(a directory you cannot write to needs the .fai made elsewhere and copied beside it)",
        ) from None
    if building:  # the whole file was just read for the index: read it for its faults too
        error, problem = fasta_problem(path), fai_problem(path)
        if error is not None or problem is not None:
            fasta.close()
            raise error or InputError(path, f"its freshly built index does not fit: {problem}")
    return fasta


def fetch_sequence(fasta: Any, chrom: str, start: int, end: int) -> np.ndarray:
    """The bases ``[start, end)`` of ``chrom`` as uint8 codes; a byte that is no IUPAC letter
    (or not ASCII) is an InputError naming the FASTA, the record and the line."""
    path = Path(os.fsdecode(fasta.filename))
    try:
        sequence = np.frombuffer(fasta.fetch(chrom, start, end).encode("ascii"), dtype=np.uint8)
    except UnicodeError:
        sequence = None
    if sequence is None or not _IUPAC[sequence].all():
        error = fasta_problem(path)
        if error is not None:
            raise error
        first = start + (int(np.flatnonzero(~_IUPAC[sequence])[0]) if sequence is not None else 0)
        raise InputError(
            path, f"record {chrom!r}: a byte that is no base letter near base {first + 1:,}"
        )
    return sequence


def fasta_names(path: Path, fasta: Any, chroms: Sequence[str], naming: str) -> dict[str, str]:
    """Peak chromosome -> FASTA reference; a missing one is an InputError with the usual hint."""
    references = set(fasta.references)
    names = {}
    for chrom in chroms:
        if chrom in references:
            names[chrom] = chrom
        elif harmonise_chrom(chrom) in references and naming == "harmonise":
            names[chrom] = harmonise_chrom(chrom)
        else:
            other = harmonise_chrom(chrom)
            hint = (
                f" but has {other!r} (naming mismatch; prepare.chrom_naming: harmonise renames)"
                if other in references
                else f"; it has {sorted(references)[:5]}...; {MISMATCH_HINT}"
            )
            raise InputError(path, f"no sequence {chrom!r} (a peak chromosome) in the FASTA{hint}")
    return names
