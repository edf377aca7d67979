"""Shared pytest fixtures and helpers.

- ``one_torch_thread`` (autouse): torch runs on one thread in every test.
- ``write_lines(path, lines, gz=False)``: write text lines (helper, importable as a fixture).
- ``tiny_clusters``: a 3-name cluster file (``A``, ``B``, ``C``) for hand-computed cases.
- ``small_demo``: demo inputs written once per session (600 peaks per cell type on chr1, chr10,
  chr11, chr21; seed 3) -> dict of paths from :func:`getdiff.demo.write_demo_data`.
"""

from __future__ import annotations

import gzip
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
def write_lines() -> Callable[..., Path]:
    return _write_lines


@pytest.fixture
def tiny_clusters(tmp_path: Path) -> Path:
    return _write_lines(tmp_path / "clusters.txt", ["A", "B", "C"])


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo") / "data"
    return write_demo_data(out, peaks_per_cell_type=600, chromosomes=SMALL_DEMO_CHROMOSOMES, seed=3)
