"""Motif scanning: a genome FASTA and a motif database -> the motif scan that prepare reads.

``getdiff scan --config FILE --outdir DIR`` (rule ``scan_motifs``) scans the union of every cell
type's peaks (merged, on ``prepare.chromosomes``, widened by the longest motif minus one base and
by ``scan.flank``), so every hit that overlaps a peak is found, as in a genome-wide scan, at the
cost of tens of Mb instead of gigabases. Scanning is MOODS (moods-python), run in ``threads``
processes; the FASTA is read with pysam (plain, or bgzip with .fai/.gzi); motif files are parsed
with Biopython's ``Bio.motifs`` (MEME minimal format, JASPAR format); ``jaspar:CORE:vertebrates``
names the JASPAR release that pyjaspar ships (offline).

Scores (docs/DATA_CONTRACT.md, "Motif scanning"):
- background b: A, C, G, T frequencies of the scanned sequences, both strands (so b_A = b_T);
- a motif's probabilities p from n sites (MEME ``nsites=``, default 20; JASPAR counts: the
  column's total) get the pseudocount ``scan.pseudocount`` spread by the background,
  f = (p n + ps b) / (n + ps), and score log2(f / b) per base (bits), summed over the window;
- a window is a hit when its score is at least the motif's threshold: the score whose p-value under
  the background is ``scan.pvalue`` (MOODS's dynamic programming, as FIMO), and never below 0; a
  motif too short to reach that p-value keeps only its best-scoring words (MOODS's rule);
- both strands: the reverse complement matrix scored with the same threshold (the background is
  strand-symmetric, so both strands have one score distribution);
- lowercase (soft-masked) bases are scanned like uppercase; a window holding any other letter
  (N, IUPAC codes) is never a hit (nor one that runs past a peak region's end).

Inputs are checked before any scanning: the FASTA's index against the FASTA
(:func:`getdiff.indexes.check_fasta_index`: rebuilt or refused), the peaks against the
chromosome lengths (:func:`getdiff.intervals.check_within_lengths`), every fetched base against
the IUPAC letters. Worker processes die with the scan, SIGKILL included (:func:`worker_pool`).

Outputs in DIR, written as one set: ``motif_scan.tsv.gz`` (``chrom start end name score strand``,
0-based, bgzip, sorted) with its tabix index, ``motifs.tsv`` (per motif: width, sites, threshold,
hits) and ``motif_names.txt`` (the motif names in file order: the feature list when no
``motif_to_cluster`` maps motifs to clusters).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import logging
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyranges as pr

from getdiff.config import add_config_arguments, config_from_args, load_cell_types
from getdiff.errors import ConfigError, InputError
from getdiff.indexes import IUPAC, check_fasta_index, fai_problem, fasta_problem
from getdiff.intervals import MISMATCH_HINT, check_within_lengths
from getdiff.io import check_regular_file, exclusive, is_gzipped, output_set, reading
from getdiff.paths import SCAN_FILES, in_folder
from getdiff.peaks import genome_order, harmonise_chrom, read_peak_file

log = logging.getLogger(__name__)

DNA = "ACGT"
JASPAR_PREFIX = "jaspar:"
DEFAULT_SITES = 20.0  # MEME's nsites when a matrix does not state it (as FIMO assumes)
ROW_SUM_TOLERANCE = 0.02  # MEME files round probabilities to a few decimals
# MOODS's lookahead window: its set-up time grows steeply with it (3 s at 8, 61 s at 10 for the
# 2,038 JASPAR CORE vertebrate matrix-strands, measured here) while the scan itself changes little.
MOODS_WINDOW = 8
BATCH_BASES = 1 << 18  # sequence per scanning task (~0.5 s of one process with 1,019 motifs)
BATCH_SPAN = 8 << 20  # genome span fetched per task (regions far apart start a new task)
SCORE_DECIMALS = 4


def output_paths(outdir: str | Path) -> dict[str, Path]:
    """The scan's output set (getdiff.paths.SCAN_FILES); the scan itself first (it marks a
    complete set)."""
    return in_folder(outdir, SCAN_FILES)


# --- motifs ------------------------------------------------------------------------------------


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


# --- worker processes --------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Make this worker die when ``parent`` does (SIGKILL included): the kernel's parent-death
    signal on Linux, else a thread watching the parent's pid. Without it a worker blocks forever
    on its task queue, whose write end the other workers keep open."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _start_pool_worker(parent: int, initializer: Any, initargs: tuple) -> None:
    # Termination signals are the parent's to handle (it then kills its workers): a worker
    # reacting to the terminal's Ctrl-C itself would print its own traceback.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


@contextlib.contextmanager
def worker_pool(
    processes: int, initializer: Any = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A process pool whose workers die with this process; an exception leaving the block (a
    signal's Terminated, an input error) kills the workers instead of waiting for their tasks."""
    pool = ProcessPoolExecutor(
        processes, initializer=_start_pool_worker, initargs=(os.getpid(), initializer, initargs)
    )
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.kill()
        for worker in workers:
            with contextlib.suppress(OSError, ValueError, AssertionError):
                worker.join(5)
        raise
    pool.shutdown(wait=True)


# --- scores ------------------------------------------------------------------------------------


def log_odds(motif: Motif, background: np.ndarray, pseudocount: float) -> np.ndarray:
    """(4, width) log2 odds of the pseudocounted motif frequencies against the background."""
    sites = motif.sites
    frequencies = (motif.probabilities * sites + pseudocount * background[:, None]) / (
        sites + pseudocount
    )
    return np.log2(frequencies / background[:, None])


def reverse_complement(matrix: np.ndarray) -> np.ndarray:
    """Rows A C G T -> T G C A and columns reversed."""
    return matrix[::-1, ::-1].copy()


def _thresholds_from_p(task: tuple[list[np.ndarray], list[float], float]) -> list[float]:
    import MOODS.tools

    matrices, background, pvalue = task
    return [MOODS.tools.threshold_from_p(m.tolist(), background, pvalue) for m in matrices]


def score_thresholds(
    matrices: Sequence[np.ndarray], background: np.ndarray, pvalue: float, processes: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Per matrix: the score at p-value ``pvalue`` under the background (MOODS), at least 0, and
    whether ``pvalue`` is reachable at all. A matrix whose best word is already more frequent
    than ``pvalue`` gets a threshold just under its best score, so only its best words are hits
    (MOODS's rule, and so the Vierstra scan's; FIMO would report none)."""
    chunks = [list(matrices[i::processes]) for i in range(processes)]
    tasks = [(chunk, background.tolist(), pvalue) for chunk in chunks]
    if processes > 1:
        with worker_pool(processes) as pool:
            parts = list(pool.map(_thresholds_from_p, tasks))
    else:
        parts = [_thresholds_from_p(tasks[0])]
    found = np.empty(len(matrices), dtype=np.float64)
    for i, part in enumerate(parts):
        found[i::processes] = part
    best_word = np.array(
        [np.prod(((m == m.max(axis=0)) * background[:, None]).sum(axis=0)) for m in matrices]
    )
    return np.maximum(found, 0.0), best_word <= pvalue


# --- sequence ----------------------------------------------------------------------------------


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


def read_scan_peaks(
    peak_files: Sequence[Path], chromosomes: Sequence[str]
) -> dict[Path, pd.DataFrame]:
    """Each peak file's peaks on ``chromosomes`` (``chrom start end line``)."""
    found = {}
    for path in peak_files:
        peaks = read_peak_file(path, duplicates="first")
        found[path] = peaks.loc[
            peaks["chrom"].isin(list(chromosomes)), ["chrom", "start", "end", "line"]
        ]
    if all(peaks.empty for peaks in found.values()):
        raise InputError(peak_files[0], f"no peak lies on prepare.chromosomes {chromosomes[:5]}...")
    return found


def scan_regions(
    peak_files: Sequence[Path] | dict[Path, pd.DataFrame], chromosomes: Sequence[str], widen: int
) -> pd.DataFrame:
    """Union of the peaks on ``chromosomes``, widened by ``widen`` bp each side, merged; sorted.
    ``peak_files``: the files, or their peaks as :func:`read_scan_peaks` gives them."""
    if not isinstance(peak_files, dict):
        peak_files = read_scan_peaks(peak_files, chromosomes)
    peaks = pd.concat(list(peak_files.values()), ignore_index=True)
    ranges = pr.PyRanges(
        pd.DataFrame(
            {
                "Chromosome": peaks["chrom"].to_numpy(),
                "Start": np.maximum(peaks["start"].to_numpy(np.int64) - widen, 0),
                "End": peaks["end"].to_numpy(np.int64) + widen,
            }
        )
    )
    # slack=1 also merges book-ended regions, so no motif is lost at the seam.
    merged = ranges.merge(slack=1).df
    regions = pd.DataFrame(
        {
            "chrom": merged["Chromosome"].astype(str).to_numpy(),
            "start": merged["Start"].to_numpy(np.int64),
            "end": merged["End"].to_numpy(np.int64),
        }
    )
    order = genome_order(regions["chrom"], regions["start"].to_numpy(), regions["end"].to_numpy())
    return regions.iloc[order].reset_index(drop=True)


@dataclass(frozen=True)
class Batch:
    """Regions of one chromosome scanned as one task (their sequences joined by an N)."""

    fasta_chrom: str
    chrom: str
    starts: np.ndarray
    ends: np.ndarray


def batches(regions: pd.DataFrame, names: dict[str, str], lengths: dict[str, int]) -> list[Batch]:
    """Consecutive regions in tasks of about BATCH_BASES bases and at most ~BATCH_SPAN span."""
    tasks = []
    for chrom, table in regions.groupby("chrom", sort=False):
        fasta_chrom = names[chrom]
        starts = table["start"].to_numpy(np.int64)
        ends = np.minimum(table["end"].to_numpy(np.int64), lengths[fasta_chrom])
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        if not len(starts):
            continue
        by_bases = np.cumsum(ends - starts) // BATCH_BASES
        by_span = (starts - starts[0]) // BATCH_SPAN
        key = by_bases * (by_span.max() + 1) + by_span  # both non-decreasing along the regions
        cuts = np.flatnonzero(np.diff(key)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(starts)], strict=True):
            tasks.append(Batch(fasta_chrom, str(chrom), starts[lo:hi], ends[lo:hi]))
    return tasks


def _joined_sequence(fasta: Any, batch: Batch) -> tuple[bytes, np.ndarray]:
    """The batch's sequences joined with one N between regions, and each region's offset."""
    span_start = int(batch.starts[0])
    sequence = fetch_sequence(fasta, batch.fasta_chrom, span_start, int(batch.ends[-1]))
    lengths = batch.ends - batch.starts
    offsets = np.r_[0, np.cumsum(lengths + 1)[:-1]]
    region = np.repeat(np.arange(len(lengths)), lengths)
    joined = np.full(int(offsets[-1] + lengths[-1]), ord("N"), dtype=np.uint8)
    base = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    joined[offsets[region] + base] = sequence[batch.starts[region] - span_start + base]
    return joined.tobytes(), offsets


def base_counts(fasta: Any, batch: Batch) -> np.ndarray:
    """Counts of A, C, G, T (either case) in the batch's regions."""
    joined, _ = _joined_sequence(fasta, batch)
    counts = np.bincount(np.frombuffer(joined, dtype=np.uint8) & 0xDF, minlength=256)
    return counts[[ord(b) for b in DNA]].astype(np.int64)


class _Worker:
    """Per-process state: the open FASTA, a MOODS scanner holding every matrix, their widths."""

    fasta: Any = None
    scanner: Any = None
    widths: np.ndarray = np.zeros(0, dtype=np.int64)
    names: Any = None


def _start_worker(
    fasta_path: str,
    matrices: list[list[list[float]]],
    background: list[float],
    thresholds: list,
    names: list[str],
) -> None:
    import MOODS.scan
    import pysam

    _Worker.fasta = pysam.FastaFile(fasta_path)  # checked by the parent (open_fasta)
    _Worker.widths = np.array([len(m[0]) for m in matrices], dtype=np.int64)
    _Worker.names = pa.array(names)
    if matrices:
        _Worker.scanner = MOODS.scan.Scanner(MOODS_WINDOW)
        _Worker.scanner.set_motifs(matrices, background, thresholds)


# MOODS 1.9.4 misses the hits of a matrix shorter than its window that end in the last window
# bases before an N or the sequence's end. So MOODS is given no N and no end: every letter other
# than A, C, G, T (and the separators between regions) becomes filler, the sequence is padded
# with filler, and the hits touching filler are dropped here.
_FILLER = np.frombuffer(b"ACGT", dtype=np.uint8)[np.random.default_rng(0).integers(0, 4, 4096)]
_VALID = np.zeros(256, dtype=bool)
_VALID[np.frombuffer(b"ACGTacgt", dtype=np.uint8)] = True
_IUPAC = np.zeros(256, dtype=bool)
_IUPAC[np.frombuffer(IUPAC, dtype=np.uint8)] = True


def _scannable(joined: bytes) -> tuple[str, np.ndarray]:
    """The sequence given to MOODS (no N, padded at the end) and the prefix sum of invalid
    positions of ``joined``, to drop any window that touches one."""
    codes = np.frombuffer(joined, dtype=np.uint8)
    invalid = ~_VALID[codes]
    padded = np.concatenate([codes, _FILLER[:MOODS_WINDOW]])
    padded[: len(codes)][invalid] = _FILLER[np.flatnonzero(invalid) % len(_FILLER)]
    return padded.tobytes().decode("ascii"), np.r_[0, np.cumsum(invalid)]


def batch_hits(batch: Batch) -> dict[str, np.ndarray]:
    """Hits of every matrix in the batch: start, matrix (2 x motif + strand), score; sorted."""
    joined, offsets = _joined_sequence(_Worker.fasta, batch)
    sequence, invalid_before = _scannable(joined)
    found = _Worker.scanner.scan(sequence)
    positions, matrix, scores = [], [], []
    for index, matches in enumerate(found):
        if matches:
            positions.append(np.fromiter((m.pos for m in matches), np.int64, len(matches)))
            scores.append(np.fromiter((m.score for m in matches), np.float64, len(matches)))
            matrix.append(np.full(len(matches), index, dtype=np.int32))
    if not positions:
        empty = np.zeros(0, dtype=np.int64)
        return {"start": empty, "matrix": empty.astype(np.int32), "score": empty.astype(float)}
    position, matrix = np.concatenate(positions), np.concatenate(matrix)
    end = position + _Worker.widths[matrix]
    clean = end <= len(joined)
    clean[clean] = invalid_before[end[clean]] == invalid_before[position[clean]]
    position, matrix, score = position[clean], matrix[clean], np.concatenate(scores)[clean]
    region = np.searchsorted(offsets, position, side="right") - 1
    hits = {
        "start": batch.starts[region] + position - offsets[region],
        "matrix": matrix,
        "score": score,
    }
    order = np.lexsort((hits["matrix"], hits["start"]))
    return {key: value[order] for key, value in hits.items()}


def _in_order(pool: ProcessPoolExecutor | None, function: Any, tasks: Sequence) -> Iterator:
    """``map`` with at most 4 tasks per worker in flight (bounded memory), results in order."""
    if pool is None:
        yield from map(function, tasks)
        return
    pending: deque[Future] = deque()
    depth = 4 * pool._max_workers
    for task in tasks:
        pending.append(pool.submit(function, task))
        if len(pending) >= depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _hit_lines(batch: Batch, hits: dict[str, np.ndarray]) -> bytes:
    """The batch's hits as scan lines: chrom start end name score strand."""
    motif = hits["matrix"] // 2
    table = pa.table(
        {
            "chrom": pa.array(np.full(len(motif), batch.chrom)),
            "start": pa.array(hits["start"]),
            "end": pa.array(hits["start"] + _Worker.widths[hits["matrix"]]),
            "name": pa.DictionaryArray.from_arrays(
                pa.array(motif), _Worker.names
            ).dictionary_decode(),
            "score": pa.array(np.round(hits["score"], SCORE_DECIMALS)),
            "strand": pa.array(np.where(hits["matrix"] % 2, "-", "+")),
        }
    )
    sink = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pacsv.write_csv(table, sink, options)
    return sink.getvalue()


def _scan_batch(batch: Batch) -> tuple[bytes, np.ndarray]:
    """The batch's scan lines as BGZF blocks (compressed in the worker, so the writer only
    appends bytes; no end-of-file block) and the hits per motif."""
    from Bio import bgzf

    hits = batch_hits(batch)
    sink = io.BytesIO()
    writer = bgzf.BgzfWriter(fileobj=sink)
    writer.write(_hit_lines(batch, hits))
    writer.flush()
    per_motif = np.bincount(hits["matrix"] // 2, minlength=len(_Worker.names))
    return sink.getvalue(), per_motif


@dataclass(frozen=True)
class ScanSettings:
    """The ``scan:`` section plus the inputs it reads."""

    genome_fasta: Path
    motifs: str
    peak_files: tuple[Path, ...]
    chromosomes: tuple[str, ...]
    chrom_naming: str
    pvalue: float
    pseudocount: float
    flank: int
    threads: int

    @classmethod
    def from_config(cls, config: dict[str, Any], threads: int | None = None) -> ScanSettings:
        if not config.get("genome_fasta") or not config.get("motifs"):
            raise ConfigError("getdiff scan needs the keys 'genome_fasta' and 'motifs'")
        check_regular_file(config["cell_types"])  # a named pipe would block the sheet's reader
        sheet = load_cell_types(config["cell_types"])
        section = config["scan"]
        return cls(
            genome_fasta=Path(config["genome_fasta"]),
            motifs=str(config["motifs"]),
            peak_files=tuple(dict.fromkeys(Path(p) for p in sheet["peaks"])),
            chromosomes=tuple(config["prepare"]["chromosomes"]),
            chrom_naming=config["prepare"]["chrom_naming"],
            pvalue=section["pvalue"],
            pseudocount=section["pseudocount"],
            flank=section["flank"],
            threads=section["threads"] if threads is None else threads,
        )

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads}: expected a whole number >= 1")


def _background(fasta: Any, tasks: Sequence[Batch], path: Path) -> np.ndarray:
    counts = sum((base_counts(fasta, batch) for batch in tasks), np.zeros(4, dtype=np.int64))
    if counts.sum() == 0:
        raise InputError(path, "the peaks' sequences hold no A, C, G or T (all N?)")
    at, cg = counts[0] + counts[3], counts[1] + counts[2]
    background = np.array([at, cg, cg, at], dtype=np.float64) / (2 * counts.sum())
    return np.maximum(background, 1e-6)


def _bases(tasks: Sequence[Batch]) -> int:
    return sum(int((b.ends - b.starts).sum()) for b in tasks)


def _write_scan(
    temps: dict[str, Path], results: Iterator, tasks: Sequence[Batch], n_motifs: int
) -> np.ndarray:
    """Append the workers' BGZF blocks into the scan, end it and index it; hits per motif."""
    import pysam
    from Bio import bgzf

    per_motif = np.zeros(n_motifs, dtype=np.int64)
    total_bases = _bases(tasks)
    done, began, reported = 0, time.perf_counter(), 0.0
    with open(temps["scan"], "wb") as out:
        for batch, (blocks, counts) in zip(tasks, results, strict=True):
            out.write(blocks)
            per_motif += counts
            done += int((batch.ends - batch.starts).sum())
            elapsed = time.perf_counter() - began
            if elapsed - reported > 10 or done == total_bases:
                reported = elapsed
                log.info(
                    "scanned %.2f of %.2f Mb (%.0f%%), %d hits, %.3f Mb/s",
                    done / 1e6,
                    total_bases / 1e6,
                    100 * done / max(total_bases, 1),
                    per_motif.sum(),
                    done / 1e6 / max(elapsed, 1e-9),
                )
        out.write(bgzf._bgzf_eof)
    pysam.tabix_index(str(temps["scan"]), preset="bed", force=True, keep_original=True)
    Path(f"{temps['scan']}.tbi").replace(temps["index"])
    return per_motif


def _write_tables(temps: dict[str, Path], motifs: Sequence[Motif], thresholds, hits) -> None:
    table = pd.DataFrame(
        {
            "name": [m.name for m in motifs],
            "alt_name": [m.alt_name for m in motifs],
            "width": [m.width for m in motifs],
            "sites": [m.sites for m in motifs],
            "threshold": np.round(thresholds, SCORE_DECIMALS),
            "hits": hits,
        }
    )
    table.to_csv(temps["motifs"], sep="\t", index=False)
    temps["names"].write_text("".join(f"{m.name}\n" for m in motifs), encoding="utf-8")


@dataclass(frozen=True)
class ScanResult:
    """What a scan wrote, and the background and per-motif thresholds it used."""

    paths: dict[str, Path]
    background: np.ndarray
    thresholds: np.ndarray
    motifs: list[Motif]


def scan_motifs(settings: ScanSettings, outdir: str | Path) -> ScanResult:
    """Scan the peaks' union for every motif; write the output set (see the module docstring)."""
    began = time.perf_counter()
    motifs = read_motifs(settings.motifs)
    fasta = open_fasta(settings.genome_fasta)
    fasta_source = f"the FASTA {settings.genome_fasta}"
    widen = max(m.width for m in motifs) - 1 + settings.flank
    peaks = read_scan_peaks(settings.peak_files, settings.chromosomes)
    chroms = list(pd.unique(pd.concat([p["chrom"] for p in peaks.values()])))
    names = fasta_names(settings.genome_fasta, fasta, chroms, settings.chrom_naming)
    lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
    for path, table in peaks.items():  # never clipped into all-zero features
        check_within_lengths(path, table, {c: lengths[names[c]] for c in chroms}, fasta_source)
    regions = scan_regions(peaks, settings.chromosomes, widen)
    tasks = batches(regions, names, lengths)
    background = _background(fasta, tasks, settings.genome_fasta)
    forward = [log_odds(m, background, settings.pseudocount) for m in motifs]
    thresholds, reachable = score_thresholds(forward, background, settings.pvalue, settings.threads)
    matrices = [x for m in forward for x in (m, reverse_complement(m))]
    unreachable = [m.name for m, ok in zip(motifs, reachable, strict=True) if not ok]
    if unreachable:
        log.warning(
            "%d motifs are too short to reach p < %g (even their best word is more frequent): "
            "only their best-scoring words count as hits (as MOODS does): %s",
            len(unreachable),
            settings.pvalue,
            ", ".join(unreachable[:10]) + (", ..." if len(unreachable) > 10 else ""),
        )
    log.info(
        "scanning %d motifs (both strands, p < %g) over %d regions, %.2f Mb (peaks of %d files "
        "merged, widened by %d bp), background A/T %.3f C/G %.3f, %d processes",
        len(motifs),
        settings.pvalue,
        len(regions),
        _bases(tasks) / 1e6,
        len(settings.peak_files),
        widen,
        background[0],
        background[1],
        settings.threads,
    )
    setup = (
        str(settings.genome_fasta),
        [m.tolist() for m in matrices],
        background.tolist(),
        np.repeat(thresholds, 2).tolist(),
        [m.name for m in motifs],
    )
    paths = output_paths(outdir)
    with exclusive(Path(outdir), "getdiff scan"), output_set(paths) as temps:
        if settings.threads > 1:
            with worker_pool(settings.threads, _start_worker, setup) as pool:
                hits = _write_scan(temps, _in_order(pool, _scan_batch, tasks), tasks, len(motifs))
        else:
            _start_worker(*setup)
            hits = _write_scan(temps, _in_order(None, _scan_batch, tasks), tasks, len(motifs))
        _write_tables(temps, motifs, thresholds, hits)
    log.info(
        "motif scan: %d hits (%.2f per kb per motif), %d motifs without a hit -> %s (%.1f s)",
        hits.sum(),
        hits.sum() / max(_bases(tasks) / 1e3, 1) / len(motifs),
        int((hits == 0).sum()),
        paths["scan"],
        time.perf_counter() - began,
    )
    return ScanResult(paths, background, thresholds, motifs)


def run(args: argparse.Namespace) -> None:
    settings = ScanSettings.from_config(config_from_args(args), args.threads)
    scan_motifs(settings, args.outdir)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="genome FASTA + motifs -> motif scan of the peaks (bgzip + tabix)",
        description=__doc__.split("\n\n")[0],
    )
    add_config_arguments(parser)
    parser.add_argument("--outdir", required=True, help="directory receiving the scan")
    parser.add_argument(
        "--threads", type=int, default=None, help="processes (default scan.threads)"
    )
    parser.set_defaults(func=run)


__all__ = [
    "Motif",
    "ScanResult",
    "ScanSettings",
    "log_odds",
    "output_paths",
    "read_motifs",
    "reverse_complement",
    "scan_motifs",
    "score_thresholds",
]
