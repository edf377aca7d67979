"""Shared pytest fixtures and helpers.

- ``one_torch_thread`` (autouse): torch runs on one thread in every test.
- ``pinned_kernels``: for a test that promises bit-for-bit equality on one machine (a resumed
  or rerun training against a straight one, in this process): one torch thread and
  deterministic algorithms, both restored afterwards.
- ``pinned_env()``: ``os.environ`` with one thread for torch's and numpy's math libraries, for
  child processes whose outputs a test compares bit for bit.
- ``write_lines(path, lines, gz=False)``: write text lines (helper, importable as a fixture).
- ``tiny_clusters``: a 3-name cluster file (``A``, ``B``, ``C``) for hand-computed cases.
- ``small_demo``: demo inputs written once per session (600 peaks per cell type on chr1, chr10,
  chr11, chr21; seed 3) -> dict of paths from :func:`getdiff.demo.write_demo_data`.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from getdiff.demo import write_demo_data

SMALL_DEMO_CHROMOSOMES = ["chr1", "chr10", "chr11", "chr21"]


def _write_lines(path: Path, lines: Sequence[str], gz: bool = False, eol: str = "\n") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(f"{line}{eol}" for line in lines).encode()
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is fastest, and on a 2-core machine with the
    other core busy, 2 threads made tiny ops ~100x slower. Reset around every test, since some
    tests (and the CLI in-process) set torch's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pinned_kernels():
    """Bit-for-bit equality of two float computations holds on one machine when both run the
    same kernels in the same order: pin the thread count (a reduction split over other threads
    adds in another order) and ask for deterministic algorithms (an op with a nondeterministic
    kernel raises instead of differing from run to run). Restores both."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_num_threads(threads)


# Child processes compared bit for bit with each other run on one thread whatever the machine's
# core count (the CLI's --threads pins torch; these pin what runs before it and numpy's BLAS).
PINNED_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def pinned_env() -> dict[str, str]:
    return {**os.environ, **PINNED_THREADS}


@pytest.fixture
def write_lines() -> Callable[..., Path]:
    return _write_lines


@pytest.fixture
def tiny_clusters(tmp_path: Path) -> Path:
    return _write_lines(tmp_path / "clusters.txt", ["A", "B", "C"])


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo") / "data"
    return write_demo_data(out, peaks_per_cell_type=600, chromosomes=SMALL_DEMO_CHROMOSOMES, seed=3)


RUN_KEYS = ("chunk_lines", "use_index")
ROW_KEYS = ("cell_type", "peaks", "counts_column", "counts_file", "barcodes")
TOP_KEYS = ("motif_scan", "cluster_names", "motif_to_cluster", "genome")


def prepare_with(outdir: Path, **flat) -> dict[str, Path]:
    """Run prepare_cell_type from flat keywords: sheet columns, top-level config keys, prepare:
    keys (schema defaults for the rest) and the run options chunk_lines/use_index."""
    from getdiff.config import validate_config
    from getdiff.prepare import PrepareSettings, prepare_cell_type

    row = {key: flat.pop(key) for key in ROW_KEYS if key in flat}
    run = {key: flat.pop(key) for key in RUN_KEYS if key in flat}
    top = {key: str(flat.pop(key)) for key in TOP_KEYS if flat.get(key) is not None}
    for key in TOP_KEYS:
        flat.pop(key, None)
    config = validate_config({"cell_types": "unused.tsv", **top, "prepare": flat})
    return prepare_cell_type(PrepareSettings.from_config(config, row, **run), outdir)


def prepare_three_peaks(tmp_path: Path, **inputs) -> Path:
    """prepare on three peaks (two overlapping on chr1, one on chr2), a two-hit scan and clusters
    A, B, chr2 held out, plus ``inputs`` (the counts source, its options); -> regions.parquet."""
    peaks = ["chr1\t100\t200", "chr1\t150\t300", "chr2\t0\t50"]
    hits = ["chr1\t110\t120\tA\t3", "chr2\t5\t9\tB\t2"]
    prepare_with(
        tmp_path / "out",
        cell_type=inputs.pop("cell_type", "T"),
        peaks=_write_lines(tmp_path / "peaks.bed", peaks),
        motif_scan=_write_lines(tmp_path / "scan.bed", hits),
        cluster_names=_write_lines(tmp_path / "clusters.txt", ["A", "B"]),
        chromosomes=["chr1", "chr2"],
        window_size=2,
        max_span=10**9,
        validation_chromosomes=[],
        test_chromosomes=["chr2"],
        **inputs,
    )
    return tmp_path / "out" / "regions.parquet"
