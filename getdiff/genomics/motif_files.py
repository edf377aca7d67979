"""Motif files -> position frequency matrices: MEME minimal format and JASPAR files (parsed with
Biopython's ``Bio.motifs``, checked line by line), and the JASPAR releases pyjaspar ships
(``jaspar:CORE:vertebrates``, offline). A matrix without probabilities, of another alphabet (RNA,
protein) or with rows that do not sum to 1 is an error naming the file and line."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from getdiff.errors import ConfigError, InputError
from getdiff.io import check_regular_file, reading

log = logging.getLogger(__name__)

DNA = "ACGT"
JASPAR_PREFIX = "jaspar:"
DEFAULT_SITES = 20.0  # MEME's nsites when a matrix does not state it (as FIMO assumes)
ROW_SUM_TOLERANCE = 0.02  # MEME files round probabilities to a few decimals


@dataclass(frozen=True)
class Motif:
    """One position weight matrix: probabilities (4, width), rows A C G T, from ``sites``."""

    name: str
    alt_name: str
    probabilities: np.ndarray
    sites: float

    @property
    def width(self) -> int:
        return self.probabilities.shape[1]


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _meme_matrix_header(path: Path, line: str, number: int) -> tuple[int | None, float]:
    """``letter-probability matrix: alength= 4 w= 8 nsites= 20 ...`` -> (w, nsites)."""
    fields = dict(re.findall(r"(\w+)=\s*(\S+)", line))
    if fields.get("alength", "4") != "4":
        raise InputError(path, f"alength= {fields['alength']}; expected 4 (A C G T)", number)
    try:
        width = int(fields["w"]) if "w" in fields else None
        sites = float(fields.get("nsites", DEFAULT_SITES))
    except ValueError:
        raise InputError(path, "expected numbers after w= and nsites=", number) from None
    return width, sites if sites > 0 else DEFAULT_SITES


def _meme_rows(lines: list[str], begin: int, width: int | None) -> list[list[str]]:
    """The matrix rows from line index ``begin``: consecutive lines of numbers (w of them)."""
    rows = []
    for line in lines[begin:]:
        fields = line.split()
        if not fields or not re.fullmatch(_NUMBER, fields[0]):
            break
        rows.append(fields)
        if width is not None and len(rows) == width:
            break
    return rows


def _meme_motif(path: Path, lines: list[str], name: tuple[str, str, int], at: int) -> Motif:
    """The motif whose ``letter-probability matrix`` line is ``lines[at]``."""
    motif, alt, header = name
    width, sites = _meme_matrix_header(path, lines[at], at + 1)
    rows = _meme_rows(lines, at + 1, width)
    if not rows or (width is not None and len(rows) != width):
        raise InputError(
            path, f"motif {motif}: {len(rows)} matrix rows; its header declares w= {width}", at + 1
        )
    for offset, fields in enumerate(rows):
        where = at + 2 + offset
        if len(fields) != 4 or not all(re.fullmatch(_NUMBER, f) for f in fields):
            raise InputError(path, f"motif {motif}: expected 4 numbers (A C G T) on a row", where)
        values = np.array(fields, dtype=np.float64)
        if (values < 0).any() or abs(values.sum() - 1) > ROW_SUM_TOLERANCE:
            raise InputError(
                path,
                f"motif {motif}: row sums to {values.sum():.4f} or has a negative entry; expected "
                "probabilities summing to 1",
                where,
            )
    probabilities = np.array(rows, dtype=np.float64).T
    return Motif(motif, alt, probabilities / probabilities.sum(axis=0), sites)


def read_meme(path: Path, text: str) -> list[Motif]:
    """Motifs of a MEME minimal-format text (probabilities kept exactly as written).

    Biopython's reader rounds probabilities x nsites to whole counts (a 0.0465 entry of a
    43-site motif read with the default 20 sites becomes 0.05), so MEME text is read here.
    """
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if line.startswith("ALPHABET"):
            _check_meme_alphabet(path, line, number)
    motifs: list[Motif] = []
    seen: dict[str, int] = {}
    current: tuple[str, str, int] | None = None
    for index, line in enumerate(lines):
        if line.startswith("MOTIF"):
            _require_matrix(path, current)
            fields = line.split()
            if len(fields) < 2:
                raise InputError(path, "MOTIF line without a name", index + 1)
            if fields[1] in seen:
                raise InputError(
                    path,
                    f"motif name {fields[1]!r} appears twice (first on line {seen[fields[1]]})",
                    index + 1,
                )
            seen[fields[1]] = index + 1
            current = (fields[1], " ".join(fields[2:]), index + 1)
        elif line.startswith("letter-probability matrix"):
            if current is None:
                raise InputError(path, "a matrix before any MOTIF line", index + 1)
            motifs.append(_meme_motif(path, lines, current, index))
            current = None
    _require_matrix(path, current)
    return motifs


RNA_REFUSED = (
    "an RNA alphabet; expected DNA (ACGT): RNA motifs (of RNA-binding proteins) are refused, "
    "not scanned as DNA; DNA motifs written with U need their U row or ALPHABET renamed T"
)


def _check_meme_alphabet(path: Path, line: str, number: int) -> None:
    """``ALPHABET= ACGT`` or a MEME 5 alphabet block ``ALPHABET "name" DNA-LIKE``; RNA refused."""
    match = re.match(r"ALPHABET\s*=\s*(\S+)", line)
    like = re.search(r"\b(DNA|RNA|PROTEIN)-LIKE\b", line, flags=re.IGNORECASE)
    letters, kind = match and match.group(1).upper(), like and like.group(1).upper()
    shown = line.strip()
    if letters == "ACGU" or kind == "RNA":
        raise InputError(path, f"{shown}: {RNA_REFUSED}", number)
    if (letters and letters != DNA) or (kind and kind != "DNA"):
        raise InputError(path, f"{shown}; expected ACGT (DNA)", number)


def _require_matrix(path: Path, current: tuple[str, str, int] | None) -> None:
    """A MOTIF line must be followed by its letter-probability matrix before the next one."""
    if current is not None:
        raise InputError(
            path,
            f"motif {current[0]}: no 'letter-probability matrix' before the next MOTIF line or "
            "the end of the file; expected one per motif",
            current[2],
        )


_JASPAR_ROW = re.compile(rf"\s*([A-Za-z])?\s*\[?((?:\s*{_NUMBER})+)\s*\]?\s*")


def _jaspar_counts(path: Path, name: str, rows: list[tuple[int, str]], header: int) -> np.ndarray:
    """(4, width) counts from a JASPAR matrix's rows ``A [ n ... ]`` (or 4 bare rows, A C G T)."""
    if len(rows) != 4:
        where = rows[-1][0] if rows else header
        raise InputError(
            path,
            f"motif {name}: {len(rows)} matrix rows; expected 4 (A, C, G, T: 'A [ counts ]')",
            where,
        )
    counts: dict[str, list[float]] = {}
    for order, (number, line) in enumerate(rows):
        match = _JASPAR_ROW.fullmatch(line)
        if match is None:
            raise InputError(path, f"motif {name}: expected a row 'A [ counts ]'", number)
        letter = (match.group(1) or DNA[order]).upper()
        if letter == "U":
            raise InputError(path, f"motif {name}: a U row, {RNA_REFUSED}", number)
        if letter not in DNA or letter in counts:
            raise InputError(
                path, f"motif {name}: row {letter!r}; expected one row each for A, C, G, T", number
            )
        values = [float(v) for v in match.group(2).split()]
        if counts and len(values) != len(next(iter(counts.values()))):
            raise InputError(
                path, f"motif {name}: {len(values)} columns; the rows above have another", number
            )
        if not all(np.isfinite(v) and v >= 0 for v in values):
            raise InputError(path, f"motif {name}: expected finite counts >= 0", number)
        counts[letter] = values
    matrix = np.array([counts[base] for base in DNA], dtype=np.float64)
    if (matrix.sum(axis=0) <= 0).any():
        raise InputError(path, f"motif {name}: an empty count column", header)
    return matrix


def read_jaspar_file(path: Path, text: str) -> list[Motif]:
    """Motifs of a JASPAR-format text: ``>ID name`` then four rows ``A [ counts ]`` (or four bare
    rows of counts, A C G T). Read here, so that every error names its line."""
    blocks: list[tuple[int, str, list[tuple[int, str]]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith(">"):
            blocks.append((number, line.lstrip()[1:].strip(), []))
        elif line.strip():
            blocks[-1][2].append((number, line))
    motifs, seen = [], {}
    for number, header, rows in blocks:
        if not header:
            raise InputError(path, "a '>' line without a motif name", number)
        name, *alt = header.split(maxsplit=1)
        if name in seen:
            raise InputError(
                path, f"motif name {name!r} appears twice (first on line {seen[name]})", number
            )
        seen[name] = number
        counts = _jaspar_counts(path, name, rows, number)
        totals = counts.sum(axis=0)
        motifs.append(Motif(name, "".join(alt), counts / totals, float(np.median(totals))))
    return motifs


def _counts_motif(bio: Any) -> Motif:
    """A Motif from a Biopython JASPAR motif: its counts normalised, sites = median column total."""
    counts = np.array([list(bio.counts[base]) for base in DNA], dtype=np.float64)
    totals = counts.sum(axis=0)
    return Motif(bio.matrix_id, bio.name, counts / totals, float(np.median(totals)))


def read_motif_file(path: str | Path) -> list[Motif]:
    """Motifs of a MEME minimal or JASPAR file (validated; names unique)."""
    path = Path(path)
    check_regular_file(path)
    with reading(path):
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise InputError(path, "motif file not found") from None
    if re.search(r"^MEME version", text, flags=re.MULTILINE):
        fmt, motifs = "MEME", read_meme(path, text)
    elif text.lstrip().startswith(">"):
        fmt, motifs = "JASPAR", read_jaspar_file(path, text)
    else:
        raise InputError(
            path,
            "not a motif file: expected MEME minimal format (a 'MEME version' line) or JASPAR "
            "format ('>ID name' lines, then rows 'A [ counts ]' for A, C, G, T)",
        )
    if not motifs:
        raise InputError(path, f"no motifs found in this {fmt} file")
    return motifs


def read_jaspar_release(source: str) -> list[Motif]:
    """``jaspar:COLLECTION[:TAX_GROUP[:RELEASE]]`` from pyjaspar's offline copy of JASPAR."""
    parts = source[len(JASPAR_PREFIX) :].split(":")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ConfigError(
            f"key 'motifs': {source!r}; expected jaspar:COLLECTION[:TAX_GROUP[:RELEASE]], e.g. "
            "jaspar:CORE:vertebrates"
        )
    try:
        from pyjaspar import jaspardb
    except ImportError:
        raise ConfigError("key 'motifs': jaspar: needs the pyjaspar package") from None
    kwargs = {"release": parts[2]} if len(parts) == 3 else {}
    if kwargs:
        # pyjaspar prints an unknown release and returns a database that fails later: ask first.
        releases = jaspardb().get_releases()
        if parts[2] not in releases:
            raise ConfigError(
                f"key 'motifs': {source!r}: no JASPAR release {parts[2]!r} in pyjaspar's copy; "
                f"available: {', '.join(releases)}"
            )
    try:
        database = jaspardb(**kwargs)
    except Exception as err:  # pyjaspar reports a broken copy in various ways
        raise ConfigError(f"key 'motifs': {source!r}: {err}") from None
    query = {"collection": parts[0], "tax_group": [parts[1]] if len(parts) > 1 else None}
    found = database.fetch_motifs(**query)
    if not found:
        raise ConfigError(f"key 'motifs': {source!r} selects no matrix in {database.release}")
    motifs = [_counts_motif(bio) for bio in found]
    log.info("%s: %d matrices from %s (pyjaspar)", source, len(motifs), database.release)
    return motifs


def read_motifs(source: str) -> list[Motif]:
    """The motifs named by ``motifs:`` (a file path or ``jaspar:...``)."""
    if source.startswith(JASPAR_PREFIX):
        return read_jaspar_release(source)
    return read_motif_file(source)
