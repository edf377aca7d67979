"""Shared pytest fixtures; the plain helpers they use are in helpers.py (import them from there;
pinned_env, prepare_with and prepare_three_peaks are still importable from here).

- ``one_torch_thread`` (autouse): torch runs on one thread in every test.
- ``pinned_kernels``: for a test that promises bit-for-bit equality on one machine (a resumed
  or rerun training against a straight one, in this process): one torch thread and
  deterministic algorithms, both restored afterwards.
- ``write_lines``: :func:`helpers.write_lines` as a fixture.
- ``tiny_clusters``: a 3-name cluster file (``A``, ``B``, ``C``) for hand-computed cases.
- ``small_demo``: demo inputs written once per session (600 peaks per cell type on chr1, chr10,
  chr11, chr21; seed 3) -> dict of paths from :func:`getdiff.demo.write_demo_data`.
- ``toy`` (per module): the toy inputs of helpers.py prepared (W=4, F=4), an untrained tiny
  model saved as train would, its calibration and config.
- ``prepared`` (per module): helpers.py's synthetic training windows, two cell types.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (  # noqa: F401  (pinned_env, prepare_with, prepare_three_peaks: re-exported)
    CELL_TYPES,
    PEAKS,
    SCAN,
    TINY_MODEL,
    TOY_FEATURES,
    TOY_PREPARE,
    F,
    W,
    pinned_env,
    prepare_three_peaks,
    prepare_with,
    write_cli_config,
    write_split,
    write_text,
)
from helpers import write_lines as write_lines_helper

from getdiff.cli import main
from getdiff.demo import write_demo_data
from getdiff.modeling.model import build_model, save_model

SMALL_DEMO_CHROMOSOMES = ["chr1", "chr10", "chr11", "chr21"]


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


@pytest.fixture
def write_lines() -> Callable[..., Path]:
    return write_lines_helper


@pytest.fixture
def tiny_clusters(tmp_path: Path) -> Path:
    return write_lines_helper(tmp_path / "clusters.txt", ["A", "B", "C"])


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("demo") / "data"
    return write_demo_data(out, peaks_per_cell_type=600, chromosomes=SMALL_DEMO_CHROMOSOMES, seed=3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Path]:
    """The toy inputs prepared for real (W=4, F=4) and an untrained tiny model, saved as train."""
    root = tmp_path_factory.mktemp("toy")
    clusters = write_text(root / "clusters.txt", TOY_FEATURES[:-1])
    peaks, scan = write_text(root / "peaks.bed", PEAKS), write_text(root / "scan.bed", SCAN)
    prepare_with(
        cell_type="toy",
        peaks=peaks,
        motif_scan=scan,
        cluster_names=clusters,
        counts_column=5,
        outdir=root / "prepared" / "toy",
        **TOY_PREPARE,
    )
    torch.manual_seed(0)
    model = build_model(
        "tiny", **TINY_MODEL, num_motif=len(TOY_FEATURES), num_regions=TOY_PREPARE["window_size"]
    )
    extra = {"train_feature_mean": [0.5] * len(TOY_FEATURES), "feature_names": TOY_FEATURES}
    save_model(model, root / "model.safetensors", extra_metadata=extra)
    config = write_cli_config(root, peaks, scan, clusters)
    calibration = root / "calibration.parquet"
    argv = ["calibrate", "--config", str(config), "--group", "all", "--model"]
    argv += [str(root / "model.safetensors"), "--prepared-dir", str(root / "prepared")]
    assert main([*argv, "--output", str(calibration)]) == 0
    return {
        "root": root,
        "calibration": calibration,
        "clusters": clusters,
        "peaks": peaks,
        "scan": scan,
        "prepared": root / "prepared",
        "model": root / "model.safetensors",
        "config": config,
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Two cell types; each feature is a per-cell-type constant plus small noise (learnable)."""
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    for cell_type in CELL_TYPES:
        level = rng.uniform(0.2, 0.8, size=F).astype(np.float32)
        for split, n in (("train", 200), ("validation", 80)):
            noise = rng.normal(0, 0.05, size=(n, F)).astype(np.float32)
            features = np.clip(level + noise, 0, 1)
            starts = np.arange(0, n - W + 1, 8, dtype=np.int64)
            write_split(
                root / cell_type / f"windows_{split}.parquet", features, starts, cell_type, split
            )
    return root
