"""Reliability of `getdiff scan`: the genome FASTA and its index, the peaks against the genome,
motif files, --threads, full disks, named pipes, and kills.

The bad-input table runs each case through the command line in-process (``getdiff.cli.main``):
exit 2, one last line ``getdiff scan: error: <file>[:<line>]: <what was expected>``, and nothing
written into the output directory (no result, no temporary file). Then the cases that are
handled without an error (a stale index rebuilt), and the kills (no worker outlives the scan).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pysam
import pytest
import yaml
from helpers import Case, assert_refused_in_one_line, files_under, write_lines

import getdiff.genomics.indexes
import getdiff.genomics.scan
from getdiff.cli import main

rng = np.random.default_rng(5)
GENOME = {
    name: "".join(rng.choice(list("ACGT"), size)) for name, size in (("c1", 3000), ("c2", 900))
}
PEAKS = ["c1\t100\t400", "c1\t1000\t1300", "c2\t50\t300"]  # line k is PEAKS[k - 1]
MOTIF_ROWS = ["0.7 0.1 0.1 0.1", "0.1 0.7 0.1 0.1", "0.1 0.1 0.7 0.1", "0.1 0.1 0.1 0.7"]
MEME = [
    "MEME version 5",
    "",
    "ALPHABET= ACGT",
    "",
    "MOTIF M1 one",
    "letter-probability matrix: alength= 4 w= 4 nsites= 20",
    *MOTIF_ROWS,
    "",
    "MOTIF M2 two",
    "letter-probability matrix: alength= 4 w= 4 nsites= 20",
    *MOTIF_ROWS[::-1],
]  # line k is MEME[k - 1]
JASPAR = [">MA1 one", "A [ 7 1 1 1 ]", "C [ 1 7 1 1 ]", "G [ 1 1 7 1 ]", "T [ 1 1 1 7 ]"]


def fasta_text(genome: dict[str, str], width: int = 60) -> str:
    return "".join(
        f">{name}\n" + "".join(f"{seq[i : i + width]}\n" for i in range(0, len(seq), width))
        for name, seq in genome.items()
    )


class Inputs:
    """One case's scan inputs under ``root``: genome.fa, peaks.bed, motifs.meme, a config."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        root.mkdir(parents=True, exist_ok=True)
        self.out = root / "out"
        self.fasta = root / "genome.fa"
        self.fasta.write_text(fasta_text(GENOME))
        self.peaks = write_lines(root / "peaks.bed", PEAKS)
        self.motifs = write_lines(root / "motifs.meme", MEME)
        self.sheet = root / "cell_types.tsv"
        self.sheet.write_text(f"cell_type\tpeaks\nx\t{self.peaks}\n")
        self.config = root / "config.yaml"
        self.write_config()

    def write_config(self, **keys: object) -> Path:
        config = {
            "cell_types": str(self.sheet),
            "genome_fasta": str(self.fasta),
            "motifs": str(self.motifs),
            "prepare": {"chromosomes": ["c1", "c2"]},
            "scan": {"pvalue": 0.01, "threads": 1},
            **keys,
        }
        self.config.write_text(yaml.safe_dump(config))
        return self.config

    def argv(self, *extra: str) -> list[str]:
        return ["scan", "--config", str(self.config), "--outdir", str(self.out), *extra]

    def indexed(self) -> None:
        """Build the FASTA's index now (so a later rewrite leaves it stale)."""
        pysam.FastaFile(str(self.fasta)).close()
        old = time.time() - 100
        os.utime(f"{self.fasta}.fai", (old, old))
        os.utime(self.fasta, (old - 10, old - 10))

    def read_only_directory(self) -> None:
        """As in a shared genome directory (chmod does not bind for root: patched instead)."""
        self.monkeypatch.setattr(getdiff.genomics.indexes, "_writable", lambda directory: False)


def make_fifo(path: Path) -> None:
    """A named pipe nobody writes to; should a reader ever block on it (a regression), writers
    come and go from 20 s on, so the case fails on its message instead of hanging."""
    os.mkfifo(path)

    def come_and_go() -> None:
        time.sleep(20)
        for _ in range(400):
            with contextlib.suppress(OSError):  # no reader yet (ENXIO), or the folder is gone
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)

    threading.Thread(target=come_and_go, daemon=True).start()


# --- the index against its FASTA ---------------------------------------------------------------


def fasta_rewritten_after_its_fai(inputs: Inputs) -> Case:
    inputs.indexed()
    inputs.fasta.write_text(fasta_text({"c0": "ACGT" * 50, **GENOME}))
    inputs.read_only_directory()
    return Case(inputs.argv(), f"{inputs.fasta}.fai", None, f"samtools faidx {inputs.fasta}")


def fai_of_another_fasta(inputs: Inputs) -> Case:
    other = inputs.root / "other.fa"
    other.write_text(fasta_text({"c1": "ACGT" * 900, "c2": "A" * 900}, width=80))
    pysam.FastaFile(str(other)).close()
    Path(f"{other}.fai").replace(f"{inputs.fasta}.fai")
    inputs.read_only_directory()
    return Case(inputs.argv(), f"{inputs.fasta}.fai", None, "this index does not fit")


def bgzip_fasta_rewritten_after_its_gzi(inputs: Inputs) -> Case:
    plain = inputs.root / "plain.fa"
    plain.write_text(fasta_text(GENOME))
    bgzip = inputs.root / "genome.fa.gz"
    pysam.tabix_compress(str(plain), str(bgzip), force=True)
    pysam.FastaFile(str(bgzip)).close()
    plain.write_text(fasta_text({"c0": "ACGT" * 3000, **GENOME}))
    pysam.tabix_compress(str(plain), str(bgzip), force=True)
    inputs.write_config(genome_fasta=str(bgzip))
    inputs.read_only_directory()
    return Case(inputs.argv(), f"{bgzip}.fai", None, f"samtools faidx {bgzip}")


def fai_is_a_named_pipe(inputs: Inputs) -> Case:
    make_fifo(Path(f"{inputs.fasta}.fai"))
    return Case(inputs.argv(), f"{inputs.fasta}.fai", None, "not a regular file")


# --- the FASTA itself --------------------------------------------------------------------------


def fasta_two_records_of_one_name(inputs: Inputs) -> Case:
    inputs.fasta.write_text(fasta_text(GENOME) + ">c1\nACGT\n")
    return Case(inputs.argv(), inputs.fasta, 68, "two records named 'c1' (lines 1 and 68)")


def fasta_non_ascii_byte(inputs: Inputs) -> Case:
    lines = fasta_text(GENOME).encode().split(b"\n")
    lines[3] = lines[3][:10] + "é".encode() + lines[3][12:]
    inputs.fasta.write_bytes(b"\n".join(lines))
    return Case(inputs.argv(), inputs.fasta, 4, "record 'c1': byte")


def fasta_digit_among_bases(inputs: Inputs) -> Case:
    lines = fasta_text(GENOME).split("\n")
    lines[5] = lines[5][:7] + "7" + lines[5][8:]
    inputs.fasta.write_text("\n".join(lines))
    return Case(inputs.argv(), inputs.fasta, 6, "byte '7' is not a base letter")


def fasta_header_not_ascii(inputs: Inputs) -> Case:
    inputs.fasta.write_bytes(fasta_text(GENOME).replace(">c2", ">c2 \xe9t\xe9").encode("latin-1"))
    return Case(inputs.argv(), inputs.fasta, 52, "a header line that is not ASCII")


def fasta_named_pipe(inputs: Inputs) -> Case:
    inputs.fasta.unlink()
    make_fifo(inputs.fasta)
    return Case(inputs.argv(), inputs.fasta, None, "not a regular file")


# --- the peaks against the genome --------------------------------------------------------------


def peak_past_the_chromosome_end(inputs: Inputs) -> Case:
    write_lines(inputs.peaks, [*PEAKS, "c2\t800\t1200"])
    return Case(inputs.argv(), inputs.peaks, 4, "ends past the end of c2 (900 bp in the FASTA")


def peak_wholly_past_the_chromosome_end(inputs: Inputs) -> Case:
    write_lines(inputs.peaks, ["c1\t5000\t5200", *PEAKS])
    return Case(inputs.argv(), inputs.peaks, 1, "ends past the end of c1 (3,000 bp")


# --- motif files -------------------------------------------------------------------------------


def meme_motif_without_a_matrix(inputs: Inputs) -> Case:
    write_lines(inputs.motifs, [*MEME[:4], "MOTIF M0 lost", "", *MEME[4:]])
    return Case(inputs.argv(), inputs.motifs, 5, "motif M0: no 'letter-probability matrix'")


def meme_last_motif_without_a_matrix(inputs: Inputs) -> Case:
    write_lines(inputs.motifs, [*MEME, "", "MOTIF M9 last"])
    return Case(inputs.argv(), inputs.motifs, len(MEME) + 2, "motif M9: no 'letter-probability")


def meme_rna_alphabet(inputs: Inputs) -> Case:
    write_lines(inputs.motifs, edited(MEME, 2, "ALPHABET= ACGU"))
    return Case(inputs.argv(), inputs.motifs, 3, "an RNA alphabet; expected DNA (ACGT)")


def meme_rna_alphabet_block(inputs: Inputs) -> Case:
    write_lines(inputs.motifs, edited(MEME, 2, 'ALPHABET "RNA" RNA-LIKE'))
    return Case(inputs.argv(), inputs.motifs, 3, "an RNA alphabet")


def jaspar_with_three_rows(inputs: Inputs) -> Case:
    path = write_lines(inputs.root / "m.jaspar", [*JASPAR, ">MA2 two", *JASPAR[1:4]])
    inputs.write_config(motifs=str(path))
    return Case(inputs.argv(), path, 9, "motif MA2: 3 matrix rows; expected 4")


def jaspar_with_a_u_row(inputs: Inputs) -> Case:
    path = write_lines(inputs.root / "m.jaspar", edited(JASPAR, 4, "U [ 1 1 1 7 ]"))
    inputs.write_config(motifs=str(path))
    return Case(inputs.argv(), path, 5, "a U row, an RNA alphabet")


def jaspar_with_rows_of_unequal_length(inputs: Inputs) -> Case:
    path = write_lines(inputs.root / "m.jaspar", edited(JASPAR, 2, "C [ 1 7 1 ]"))
    inputs.write_config(motifs=str(path))
    return Case(inputs.argv(), path, 3, "motif MA1: 3 columns")


def jaspar_unknown_release(inputs: Inputs) -> Case:
    inputs.write_config(motifs="jaspar:CORE:vertebrates:JASPAR2099")
    return Case(inputs.argv(), inputs.config, None, "available: JASPAR2026, JASPAR2024")


def motif_file_named_pipe(inputs: Inputs) -> Case:
    inputs.motifs.unlink()
    make_fifo(inputs.motifs)
    return Case(inputs.argv(), inputs.motifs, None, "not a regular file")


def peaks_named_pipe(inputs: Inputs) -> Case:
    inputs.peaks.unlink()
    make_fifo(inputs.peaks)
    return Case(inputs.argv(), inputs.peaks, None, "not a regular file")


def sheet_named_pipe(inputs: Inputs) -> Case:
    inputs.sheet.unlink()
    make_fifo(inputs.sheet)
    return Case(inputs.argv(), inputs.sheet, None, "not a regular file")


# --- settings and disks ------------------------------------------------------------------------


def threads_negative(inputs: Inputs) -> Case:
    return Case(inputs.argv("--threads", "-1"), "--threads -1", None, "expected a whole number")


def threads_zero(inputs: Inputs) -> Case:
    return Case(inputs.argv("--threads", "0"), "--threads 0", None, "expected a whole number >= 1")


def disk_full_while_writing(inputs: Inputs) -> Case:
    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no name

    inputs.monkeypatch.setattr(getdiff.genomics.scan, "_write_tables", full)
    return Case(inputs.argv(), inputs.out, None, "No space left on device")


def edited(lines: list[str], index: int, line: str) -> list[str]:
    return [*lines[:index], line, *lines[index + 1 :]]


BAD_SCAN_INPUTS: list[Callable[[Inputs], Case]] = [
    fasta_rewritten_after_its_fai,
    fai_of_another_fasta,
    bgzip_fasta_rewritten_after_its_gzi,
    fai_is_a_named_pipe,
    fasta_two_records_of_one_name,
    fasta_non_ascii_byte,
    fasta_digit_among_bases,
    fasta_header_not_ascii,
    fasta_named_pipe,
    peak_past_the_chromosome_end,
    peak_wholly_past_the_chromosome_end,
    meme_motif_without_a_matrix,
    meme_last_motif_without_a_matrix,
    meme_rna_alphabet,
    meme_rna_alphabet_block,
    jaspar_with_three_rows,
    jaspar_with_a_u_row,
    jaspar_with_rows_of_unequal_length,
    jaspar_unknown_release,
    motif_file_named_pipe,
    peaks_named_pipe,
    sheet_named_pipe,
    threads_negative,
    threads_zero,
    disk_full_while_writing,
]


@pytest.mark.parametrize("make_case", BAD_SCAN_INPUTS, ids=[f.__name__ for f in BAD_SCAN_INPUTS])
def test_bad_scan_input_exits_2_naming_file_line_and_expectation_and_writes_nothing(
    make_case, tmp_path, monkeypatch, capsys
):
    case = make_case(Inputs(tmp_path, monkeypatch))
    assert main(case.argv) == 2
    assert_refused_in_one_line(case, capsys.readouterr().err, tmp_path)
    assert files_under(tmp_path / "out") == []


# --- handled without an error ------------------------------------------------------------------


def scan_lines(out: Path) -> list[str]:
    import gzip

    return gzip.decompress((out / "motif_scan.tsv.gz").read_bytes()).decode().splitlines()


def test_a_stale_fai_in_a_writable_directory_is_rebuilt_with_a_warning(
    tmp_path, monkeypatch, caplog
):
    inputs = Inputs(tmp_path, monkeypatch)
    inputs.indexed()
    inputs.fasta.write_text(fasta_text({"c0": "ACGT" * 50, **GENOME}))
    assert main(inputs.argv()) == 0
    assert any("rebuilding it" in r.getMessage() for r in caplog.records)
    fresh = Inputs(tmp_path / "fresh", monkeypatch)  # the same genome, indexed afresh
    fresh.fasta.write_text(inputs.fasta.read_text())
    assert main(fresh.argv()) == 0
    assert scan_lines(inputs.out) == scan_lines(fresh.out) and scan_lines(fresh.out)


def test_an_older_fai_that_fits_its_fasta_is_used_with_a_warning_when_read_only(
    tmp_path, monkeypatch, caplog
):
    inputs = Inputs(tmp_path, monkeypatch)
    inputs.indexed()
    os.utime(inputs.fasta)  # touched (copied in after its index): same bytes, newer mtime
    inputs.read_only_directory()
    assert main(inputs.argv()) == 0
    assert any("used as is" in r.getMessage() for r in caplog.records)


def test_a_peak_ending_exactly_at_the_chromosome_end_is_scanned(tmp_path, monkeypatch):
    inputs = Inputs(tmp_path, monkeypatch)
    write_lines(inputs.peaks, [*PEAKS, "c2\t600\t900"])
    assert main(inputs.argv()) == 0


# --- kills: no worker outlives the scan --------------------------------------------------------


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid and fields[0] != "Z":
                    found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[0] != "Z":
                living.add(pid)
    return living


def start_long_scan(tmp_path: Path, monkeypatch) -> tuple[subprocess.Popen, set[int]]:
    """`python -m getdiff scan --threads 2` on 4 Mb of peaks x 200 motifs, once its workers run."""
    inputs = Inputs(tmp_path, monkeypatch)
    big = np.random.default_rng(1)
    inputs.fasta.write_text(fasta_text({"c1": "".join(big.choice(list("ACGT"), 4_000_000))}))
    write_lines(inputs.peaks, ["c1\t0\t4000000"])
    motifs = ["MEME version 5", "", "ALPHABET= ACGT", ""]
    for k in range(200):
        matrix = big.dirichlet(np.full(4, 0.5), 12)
        motifs += [f"MOTIF M{k}", "letter-probability matrix: alength= 4 w= 12"]
        motifs += [" ".join(f"{p:.6f}" for p in row) for row in matrix] + [""]
    write_lines(inputs.motifs, motifs)
    inputs.write_config(prepare={"chromosomes": ["c1"]})
    log = open(tmp_path / "scan.log", "w")  # noqa: SIM115 (the child keeps its own copy)
    process = subprocess.Popen(
        [sys.executable, "-m", "getdiff", *inputs.argv("--threads", "2")],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while process.poll() is None and time.monotonic() < deadline:
        workers = children(process.pid)
        if len(workers) >= 2 and "scanning" in (tmp_path / "scan.log").read_text():
            break
        time.sleep(0.05)
    assert process.poll() is None and len(workers) >= 2, (tmp_path / "scan.log").read_text()
    return process, children(process.pid) | workers


def wait_gone(pids: set[int], seconds: float = 10.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_sigkill_of_scan_leaves_no_worker_alive(tmp_path, monkeypatch):
    process, workers = start_long_scan(tmp_path, monkeypatch)
    try:
        process.kill()
        assert process.wait() == -signal.SIGKILL
        assert wait_gone(workers) == set()
    finally:
        for pid in alive(workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_of_the_process_group_exits_with_one_line_and_no_traceback(
    tmp_path, monkeypatch, signum
):
    process, workers = start_long_scan(tmp_path, monkeypatch)
    try:
        os.killpg(process.pid, signum)  # as Ctrl-C (or a scheduler) signals every process
        assert process.wait(60) == 128 + signum
        assert wait_gone(workers) == set()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    log = (tmp_path / "scan.log").read_text()
    assert "Traceback" not in log, log
    last = log.strip().splitlines()[-1]
    assert (
        last == f"getdiff scan: terminated by {signal.Signals(signum).name}; no partial output left"
    )
    assert not (tmp_path / "out" / "motif_scan.tsv.gz").exists()
    assert list(tmp_path.rglob("*.tmp")) == []
