"""Reliability: bad inputs fail clearly and write nothing; killed training resumes exactly;
a failed Snakemake job leaves no outputs and a rerun completes.

Every bad-input case runs through the command line in-process (``getdiff.cli.main``) and must
exit with code 2, print ``getdiff <command>: error: <file>[:<line>]: <what was expected>`` and
leave its output directory empty (no result, no temporary file).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from helpers import (
    PEAKS,
    SCAN,
    SITES,
    TINY_MODEL,
    TOY_FEATURES,
    Case,
    assert_refused_in_one_line,
    files_under,
    pinned_env,
    snakemake,
    text,
    write_cli_config,
    write_config,
    write_text,
)
from safetensors.torch import load_file

from getdiff.cli import main
from getdiff.demo import write_demo_data
from getdiff.modeling.model import build_model, save_model
from getdiff.prepare import output_paths
from getdiff.tensors import load_regions

# --------------------------------------------------------------------------- bad-input table


class Inputs:
    """Builds one case's inputs under ``root``: the toy files, edited, and the command line."""

    def __init__(self, root: Path, toy: dict[str, Path]) -> None:
        self.root = root
        self.toy = toy
        self.out = root / "out"

    def prepare(
        self,
        peaks: list[str] | bytes | None = PEAKS,
        scan: list[str] | bytes | None = SCAN,
        peaks_name: str = "peaks.bed",
        scan_name: str = "scan.bed",
        **sections,
    ) -> tuple[list[str], Path, Path, Path]:
        """(argv of `getdiff prepare`, peaks path, scan path, config path); None = no file."""
        paths = []
        for name, content in ((peaks_name, peaks), (scan_name, scan)):
            path = self.root / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            elif content is not None:
                write_text(path, content)
            paths.append(path)
        config = write_cli_config(self.root, *paths, self.toy["clusters"], **sections)
        argv = ["prepare", "--config", str(config), "--cell-type", "toy", "--outdir", str(self.out)]
        return argv, paths[0], paths[1], config

    def prepared_copy(self, edit: Callable[[pa.Table], pa.Table], split: str) -> Path:
        """A prepared dir whose ``toy/windows_{split}.parquet`` is the toy one after ``edit``,
        with a manifest listing it (so the check under test is the one that fires)."""
        source = self.toy["prepared"] / "toy" / f"windows_{split}.parquet"
        target = self.root / "prepared" / "toy" / source.name
        target.parent.mkdir(parents=True)
        pq.write_table(edit(pq.read_table(source)), target)
        manifest = json.loads((source.parent / "manifest.json").read_text())
        manifest["files"][target.name] = target.stat().st_size
        (target.parent / "manifest.json").write_text(json.dumps(manifest))
        return target

    def train(self, checkpoint: Path | None = None) -> list[str]:
        """argv of `getdiff train` on the toy windows, importing ``checkpoint`` if given."""
        config = yaml.safe_load(self.toy["config"].read_text())
        config["model"]["pretrained_checkpoint"] = None if checkpoint is None else str(checkpoint)
        path = self.root / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        prepared = str(self.toy["prepared"])
        argv = ["train", "--config", str(path), "--group", "all", "--prepared-dir", prepared]
        return [*argv, "--outdir", str(self.out)]


def edited(lines: list[str], index: int, line: str) -> list[str]:
    return [*lines[:index], line, *lines[index + 1 :]]


def truncated_gzip(lines: list[str]) -> tuple[bytes, int]:
    """gzip of the lines cut at 60%, and the line its data ends in (1-based)."""
    data = gzip.compress(text(lines))
    cut = data[: len(data) * 6 // 10]
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    return cut, readable.count(b"\n") + 1


def peaks_malformed_line(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t400"))
    return Case(argv, peaks, 5, "expected at least 3 columns: chrom start end")


def peaks_truncated_last_line(inputs: Inputs) -> Case:
    data = text(PEAKS[:-1]) + b"chr11\t400\t450\tchr11_4"  # cut before its count, no EOL
    argv, peaks, _, _ = inputs.prepare(peaks=data)
    return Case(argv, peaks, len(PEAKS), "expected a count in column 5 (counts_column)")


def peaks_start_not_before_end(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t450\t450\tp\t4"))
    return Case(argv, peaks, 5, "start must be < end (0-based half-open BED)")


def peaks_nan_count(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t400\t450\tp\tNaN"))
    return Case(argv, peaks, 5, "expected a finite number (count) in column 5, got 'NaN'")


def peaks_inf_count(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t400\t450\tp\tinf"))
    return Case(argv, peaks, 5, "expected a finite number (count) in column 5, got 'inf'")


def peaks_negative_count(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t400\t450\tp\t-3"))
    return Case(argv, peaks, 5, "count in column 5 must be >= 0")


def peaks_empty_file(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=b"")
    return Case(argv, peaks, None, "no peaks found: the file is empty or holds only header lines")


def peaks_truncated_gzip(inputs: Inputs) -> Case:
    data, line = truncated_gzip(PEAKS)
    argv, peaks, _, _ = inputs.prepare(peaks=data, peaks_name="peaks.bed.gz")
    return Case(argv, peaks, line, "gzip data is truncated or corrupt")


def peaks_not_utf8(inputs: Inputs) -> Case:
    data = text(PEAKS).replace(b"chr1_400", b"chr1_\xff\xfe")
    argv, peaks, _, _ = inputs.prepare(peaks=data)
    return Case(argv, peaks, 5, "not UTF-8 text; expected a plain-text (or gzip/bgzip)")


def peaks_file_missing(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=None, peaks_name="absent.bed")
    return Case(argv, peaks, None, "cannot read the file: No such file or directory")


def peaks_chromosome_naming_mismatch(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=[line.removeprefix("chr") for line in PEAKS])
    return Case(argv, peaks, None, "(naming mismatch: the peaks use names without/with 'chr')")


def peaks_fewer_than_window_size(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(prepare={"window_size": 7})
    return Case(argv, peaks, None, "no chromosome has at least window_size=7 kept peaks")


def scan_chromosome_naming_mismatch(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=[line.removeprefix("chr") for line in SCAN])
    return Case(argv, scan, 1, "chromosome naming mismatch: the scan has '1', the peaks have")


def scan_unknown_cluster(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320\tBx\t1"))
    return Case(argv, scan, 3, "unknown motif cluster 'Bx' (closest known: B)")


def scan_malformed_line(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320"))
    return Case(argv, scan, 3, "expected at least 5 columns: chrom start end name score")


def scan_start_not_before_end(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t320\t310\tA\t1"))
    return Case(argv, scan, 3, "start must be < end (0-based half-open BED)")


def scan_nan_score(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320\tA\tnan"))
    return Case(argv, scan, 3, "score (column 5) must be a finite number")


def scan_inf_score(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320\tA\tinf"))
    return Case(argv, scan, 3, "score (column 5) must be a finite number")


def scan_negative_score(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320\tA\t-1.5"))
    return Case(argv, scan, 3, "score (column 5) must be >= 0")


def scan_truncated_gzip(inputs: Inputs) -> Case:
    data, line = truncated_gzip(SCAN)
    argv, _, scan, _ = inputs.prepare(scan=data, scan_name="scan.bed.gz")
    return Case(argv, scan, line, "gzip data is truncated or corrupt")


def config_unknown_key(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(prepare={"windowsize": 4})
    return Case(
        argv, config, None, "unknown key 'prepare.windowsize' (did you mean 'prepare.window_size'?)"
    )


def config_wrong_type(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(prepare={"window_size": "four"})
    return Case(argv, config, None, "key 'prepare.window_size': 'four' is not of type 'integer'")


def windows_wrong_feature_width(inputs: Inputs) -> Case:
    def narrow(table: pa.Table) -> pa.Table:
        values = feature_matrix(table)[:, :-1].reshape(-1)
        column = pa.FixedSizeListArray.from_arrays(pa.array(values), len(TOY_FEATURES) - 1)
        return table.set_column(table.schema.get_field_index("features"), "features", column)

    path = inputs.prepared_copy(narrow, "test")
    output = inputs.out / "toy.parquet"
    argv = ["impute", "--config", str(inputs.toy["config"]), "--model"]
    argv += [str(inputs.toy["model"]), "--cell-type", "toy", "--prepared-dir"]
    argv += [str(path.parents[1]), "--output", str(output)]
    return Case(argv, path, None, "expected fixed_size_list<float>[4] (one value per feature")


def windows_of_another_window_size(inputs: Inputs) -> Case:
    def resize(table: pa.Table) -> pa.Table:
        meta = json.loads(table.schema.metadata[b"getdiff"])
        meta["window_size"], meta["window_starts"], meta["score_from"] = 3, [0], [0]
        meta["n_windows"] = 1
        return table.replace_schema_metadata({b"getdiff": json.dumps(meta)})

    path = inputs.prepared_copy(resize, "test")
    argv = ["impute", "--config", str(inputs.toy["config"]), "--model"]
    argv += [str(inputs.toy["model"]), "--cell-type", "toy", "--prepared-dir"]
    argv += [str(path.parents[1]), "--output", str(inputs.out / "toy.parquet")]
    return Case(argv, path, None, "has windows of 3 regions but the model expects 4")


def windows_without_metadata(inputs: Inputs) -> Case:
    path = inputs.prepared_copy(lambda table: table.replace_schema_metadata(None), "test")
    argv = ["evaluate", "--config", str(inputs.toy["config"]), "--group", "all", "--model"]
    argv += [str(inputs.toy["model"]), "--prepared-dir", str(path.parents[1])]
    argv += ["--calibration", str(inputs.toy["calibration"]), "--outdir", str(inputs.out)]
    return Case(argv, path, None, "no 'getdiff' metadata: expected a file written by getdiff")


def checkpoint_with_mismatched_shapes(inputs: Inputs) -> Case:
    from getdiff.modeling.checkpoint import build_pretrain

    other = build_pretrain("tiny", **{**TINY_MODEL, "embed_dim": 32}, num_motif=len(TOY_FEATURES))
    path = inputs.root / "checkpoint-799.pth"
    torch.save({"model": other.v1_state_dict()}, path)
    expected = "shape-mismatched keys ['cls_token (1, 1, 32) (model expects (1, 1, 16))'"
    return Case(inputs.train(path), path, None, expected)


class Opaque:
    """An arbitrary pickled object, which torch.load(weights_only=True) must refuse."""


def checkpoint_with_pickled_object(inputs: Inputs) -> Case:
    path = inputs.root / "checkpoint-799.pth"
    torch.save({"model": {"cls_token": torch.zeros(1)}, "extra": Opaque()}, path)
    return Case(inputs.train(path), path, None, "refusing to unpickle a non-tensor object")


def resume_checkpoint_truncated(inputs: Inputs) -> Case:
    path = inputs.out / "checkpoints" / "last.pt"  # left by a crashed copy, not by getdiff
    path.parent.mkdir(parents=True)
    torch.save({"step": 1, "model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return Case(inputs.train(), path, None, "unreadable checkpoint (PytorchStreamReader failed")


def feature_matrix(table: pa.Table) -> np.ndarray:
    column = table.column("features").combine_chunks()
    return column.flatten().to_numpy().reshape(len(table), -1)


# --- inputs that match nothing, or models applied to other features: errors, never zeros ---


def scan_on_another_genome_build(inputs: Inputs) -> Case:
    shifted = [f"{c}\t{s + 10_000_010}\t{s + 10_000_020}\tA\t2" for c, s in SITES]
    argv, _, scan, _ = inputs.prepare(scan=shifted)
    return Case(argv, scan, None, "no match: 0 of 14 peaks with motif hits (0.0%)")


def counts_file_offset_by_one_base(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare()
    lines = [f"{c}\t{s + 1}\t{s + 51}\t{s // 100}" for c, s in SITES]
    counts = write_text(inputs.root / "counts.bedGraph", lines)
    sheet = inputs.root / "cell_types.tsv"
    sheet.write_text(f"cell_type\tpeaks\tcounts_file\tcounts_column\ntoy\t{peaks}\t{counts}\t\n")
    return Case(argv, counts, None, "no match: 0 of 14 peaks found in the counts")


def impute_argv(
    inputs: Inputs, prepared: Path, config: Path | None = None, model: Path | None = None
) -> list[str]:
    argv = ["impute", "--config", str(config or inputs.toy["config"])]
    argv += ["--model", str(model or inputs.toy["model"]), "--cell-type", "toy"]
    return [*argv, "--prepared-dir", str(prepared), "--output", str(inputs.out / "toy.parquet")]


def windows_with_features_in_another_order(inputs: Inputs) -> Case:
    def reorder(table: pa.Table) -> pa.Table:
        meta = json.loads(table.schema.metadata[b"getdiff"])
        meta["feature_names"] = ["B", "A", "C", "accessibility"]
        return table.replace_schema_metadata({b"getdiff": json.dumps(meta)})

    path = inputs.prepared_copy(reorder, "test")
    return Case(impute_argv(inputs, path.parents[1]), path, None, "feature 1 is 'B'")


def impute_with_missing_regions(inputs: Inputs, line: str) -> tuple[list[str], Path]:
    """argv of `getdiff impute` on the toy windows with a one-line missing-regions BED."""
    bed = write_text(inputs.root / "missing.bed", [line])
    config = yaml.safe_load(inputs.toy["config"].read_text())
    config["impute"] = {"missing_regions": str(bed)}
    path = inputs.root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return impute_argv(inputs, inputs.toy["prepared"], path), bed


def missing_regions_named_without_chr(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "11\t100\t150")
    return Case(argv, bed, None, "chromosome naming mismatch: '11' here, 'chr11'")


def missing_regions_overlapping_no_window(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "chr11\t90000\t90100")
    return Case(argv, bed, None, "no match: 0 of 1 missing regions on windows")


# --- hostile files: wrong columns and numbers, empty, not text, not a file, unreadable ---

COUNTS = [f"{c}\t{s}\t{s + 50}\t{s // 100}" for c, s in SITES]  # line k is COUNTS[k - 1]
SHEET_HEADER = "cell_type\tpeaks\tcounts_file\tcounts_column"


def unblock_readers(fifo: Path, after: float = 20.0, during: float = 20.0) -> None:
    """Should a reader ever block on ``fifo`` (a regression), writers that come and go from
    ``after`` seconds on end each wait: the case then fails on its message, never hangs."""

    def come_and_go() -> None:
        time.sleep(after)
        deadline = time.monotonic() + during
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # no reader (ENXIO) or the folder is gone
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)

    threading.Thread(target=come_and_go, daemon=True).start()


def hostile_path(path: Path, kind: str) -> Path:
    """``path`` made a directory, a named pipe nobody writes to, a symlink to itself or a
    file nobody may read (skipped where that does not bind: root reads it anyway)."""
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
        unblock_readers(path)
    elif kind == "loop":
        path.symlink_to(path.name)
    elif kind == "unreadable":
        write_text(path, PEAKS).chmod(0)
        with contextlib.suppress(PermissionError), open(path, "rb"):
            pytest.skip(f"chmod 0 does not bind here (euid {os.geteuid()})")
    return path


def peaks_fractional_start(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t400.5\t450\tp\t4"))
    return Case(argv, peaks, 5, "start must be an integer below 10^18, got '400.5'")


def peaks_negative_start(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1\t-5\t450\tp\t4"))
    return Case(argv, peaks, 5, "coordinates must be >= 0 (0-based BED)")


def peaks_coordinate_beyond_int64(inputs: Inputs) -> Case:
    line = f"chr1\t400\t{2**63}\tp\t4"
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, line))
    return Case(argv, peaks, 5, f"end must be an integer below 10^18, got '{2**63}'")


def peaks_header_only(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=["track name=toy", "#chrom\tstart\tend"])
    return Case(argv, peaks, None, "no peaks found: the file is empty or holds only header lines")


def peaks_duplicate_peak(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 5, "chr1\t400\t450\tagain\t7"))
    return Case(argv, peaks, 6, "duplicate peak chr1:400-450 (same as line 5); expected each")


def peaks_space_separated_with_spaces_in_names(inputs: Inputs) -> Case:
    # Without a tab the line is split on spaces, so the name's second word lands in column 5.
    argv, peaks, _, _ = inputs.prepare(peaks=edited(PEAKS, 4, "chr1 400 450 peak four 4"))
    return Case(argv, peaks, 5, "expected a finite number (count) in column 5, got 'four'")


def peaks_utf16_spreadsheet_export(inputs: Inputs) -> Case:
    argv, peaks, _, _ = inputs.prepare(peaks="\n".join(PEAKS).encode("utf-16"))
    return Case(argv, peaks, 1, "not UTF-8 text; expected a plain-text (or gzip/bgzip)")


def peaks_path_is_a_directory(inputs: Inputs) -> Case:
    peaks = hostile_path(inputs.root / "peaks.bed", "directory")
    argv, *_ = inputs.prepare(peaks=None)
    return Case(argv, peaks, None, "cannot read the file: Is a directory")


def peaks_named_pipe(inputs: Inputs) -> Case:
    peaks = hostile_path(inputs.root / "peaks.bed", "fifo")
    argv, *_ = inputs.prepare(peaks=None)
    return Case(argv, peaks, None, "not a regular file (a named pipe, socket or device)")


def peaks_symlink_loop(inputs: Inputs) -> Case:
    peaks = hostile_path(inputs.root / "peaks.bed", "loop")
    argv, *_ = inputs.prepare(peaks=None)
    return Case(argv, peaks, None, "cannot read the file: Too many levels of symbolic links")


def peaks_permission_denied(inputs: Inputs) -> Case:
    peaks = hostile_path(inputs.root / "peaks.bed", "unreadable")
    argv, *_ = inputs.prepare(peaks=None)
    return Case(argv, peaks, None, "cannot read the file: Permission denied")


def scan_fractional_start(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310.5\t320\tA\t1"))
    return Case(argv, scan, 3, "start (column 2) must be an integer below 10^18")


def scan_coordinate_beyond_int64(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, f"chr1\t310\t{2**64}\tA\t1"))
    return Case(argv, scan, 3, "end (column 3) must be an integer below 10^18")


def scan_negative_start(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t-10\t320\tA\t1"))
    return Case(argv, scan, 3, "coordinates must be >= 0 (0-based BED)")


def scan_empty_file(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=b"")
    return Case(argv, scan, None, "no motif hits found: the file is empty or holds only header")


def scan_header_only(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=["#chrom\tstart\tend\tname\tscore"])
    return Case(argv, scan, None, "no motif hits found: the file is empty or holds only header")


def scan_not_utf8(inputs: Inputs) -> Case:
    data = text(SCAN).replace(b"chr1\t410\t420\tA", b"chr1\t410\t420\t\xc4")  # Latin-1
    argv, _, scan, _ = inputs.prepare(scan=data)
    return Case(argv, scan, 4, "not UTF-8 text; expected a plain-text (or gzip/bgzip)")


def scan_space_separated(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=[line.replace("\t", " ") for line in SCAN])
    return Case(argv, scan, 1, "expected at least 5 columns: chrom start end name score")


def scan_name_with_space_inside(inputs: Inputs) -> Case:
    argv, _, scan, _ = inputs.prepare(scan=edited(SCAN, 2, "chr1\t310\t320\tA 1\t1"))
    return Case(argv, scan, 3, "unknown motif cluster 'A 1' (closest known: A)")


def scan_named_pipe(inputs: Inputs) -> Case:
    scan = hostile_path(inputs.root / "scan.bed", "fifo")
    argv, *_ = inputs.prepare(scan=None)
    return Case(argv, scan, None, "not a regular file (a named pipe, socket or device)")


def scan_symlink_loop(inputs: Inputs) -> Case:
    scan = hostile_path(inputs.root / "scan.bed", "loop")
    argv, *_ = inputs.prepare(scan=None)
    return Case(argv, scan, None, "cannot read the file: Too many levels of symbolic links")


def scan_path_is_a_directory(inputs: Inputs) -> Case:
    scan = hostile_path(inputs.root / "scan.bed", "directory")
    argv, *_ = inputs.prepare(scan=None)
    return Case(argv, scan, None, "cannot read the file: Is a directory")


def with_counts_file(inputs: Inputs, counts: list[str] | bytes, name: str) -> tuple[list, Path]:
    """argv of `getdiff prepare` on the toy files with counts from the file ``name``."""
    argv, peaks, _, _ = inputs.prepare()
    path = inputs.root / name
    path.write_bytes(counts if isinstance(counts, bytes) else text(counts))
    write_text(inputs.root / "cell_types.tsv", [SHEET_HEADER, f"toy\t{peaks}\t{path}\t"])
    return argv, path


def counts_file_three_columns(inputs: Inputs) -> Case:
    lines = edited(COUNTS, 2, "chr1\t300\t350")
    argv, counts = with_counts_file(inputs, lines, "counts.bedGraph")
    return Case(argv, counts, 3, "expected 4 columns: chrom start end count")


def counts_file_nan_count(inputs: Inputs) -> Case:
    lines = edited(COUNTS, 2, "chr1\t300\t350\tnan")
    argv, counts = with_counts_file(inputs, lines, "counts.bedGraph")
    return Case(argv, counts, 3, "expected a finite number (count) in column 4, got 'nan'")


def counts_file_header_only(inputs: Inputs) -> Case:
    argv, counts = with_counts_file(inputs, ["track type=bedGraph"], "counts.bedGraph")
    return Case(argv, counts, None, "no counts found: the file is empty or holds only header")


def counts_file_duplicate_peak(inputs: Inputs) -> Case:
    argv, counts = with_counts_file(inputs, [*COUNTS, COUNTS[0]], "counts.bedGraph")
    return Case(argv, counts, 15, "duplicate peak chr1:100-150 (same as line 1)")


def counts_file_truncated_gzip(inputs: Inputs) -> Case:
    data, line = truncated_gzip(COUNTS)
    argv, counts = with_counts_file(inputs, data, "counts.bedGraph.gz")
    return Case(argv, counts, line, "gzip data is truncated or corrupt")


def counts_file_named_without_chr(inputs: Inputs) -> Case:
    lines = [line.removeprefix("chr") for line in COUNTS]
    argv, counts = with_counts_file(inputs, lines, "counts.bedGraph")
    return Case(argv, counts, None, "no match: 0 of 14 peaks found in the counts")


def with_cluster_names(inputs: Inputs, names: list[str] | bytes | None) -> tuple[list, Path]:
    """argv of `getdiff prepare` on the toy files with the cluster-name file ``names``."""
    argv, peaks, scan, _ = inputs.prepare()
    clusters = inputs.root / "clusters.txt"
    if names is not None:
        clusters.write_bytes(names if isinstance(names, bytes) else text(names))
    write_cli_config(inputs.root, peaks, scan, clusters)
    return argv, clusters


def cluster_names_empty(inputs: Inputs) -> Case:
    argv, clusters = with_cluster_names(inputs, ["", ""])
    return Case(argv, clusters, None, "no cluster names found: expected one name per line")


def cluster_names_listed_twice(inputs: Inputs) -> Case:
    argv, clusters = with_cluster_names(inputs, ["A", "B", "", "B", "C"])
    return Case(argv, clusters, 4, "cluster name 'B' is listed twice (first on line 2)")


def cluster_names_not_utf8(inputs: Inputs) -> Case:
    argv, clusters = with_cluster_names(inputs, "A\nB\nC\nSOX\u00e9\n".encode("latin-1"))
    return Case(argv, clusters, 4, "not UTF-8 text")


def cluster_names_with_reserved_accessibility(inputs: Inputs) -> Case:
    argv, clusters = with_cluster_names(inputs, TOY_FEATURES)
    return Case(argv, clusters, None, "'accessibility' is reserved for the last feature")


def cluster_names_path_is_a_directory(inputs: Inputs) -> Case:
    hostile_path(inputs.root / "clusters.txt", "directory")
    argv, clusters = with_cluster_names(inputs, None)
    return Case(argv, clusters, None, "cannot read the file: Is a directory")


def missing_regions_start_not_before_end(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "chr11\t150\t100")
    return Case(argv, bed, 1, "start must be < end (0-based half-open BED)")


def missing_regions_two_columns(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "chr11:100-150\tmasked")
    return Case(argv, bed, 1, "expected at least 3 columns: chrom start end")


def missing_regions_header_only(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "#chrom\tstart\tend")
    return Case(argv, bed, None, "no regions found: the file is empty or holds only header")


def missing_regions_exponent_coordinate(inputs: Inputs) -> Case:
    argv, bed = impute_with_missing_regions(inputs, "chr11\t1e2\t150")
    return Case(argv, bed, 1, "start must be an integer below 10^18, got '1e2'")


# --- inputs matching nothing ---


def scan_only_on_unplaced_contigs(inputs: Inputs) -> Case:
    scan = [f"chrUn_KI270302v1\t{s + 10}\t{s + 20}\tA\t2" for _, s in SITES]
    argv, _, scan_path, _ = inputs.prepare(scan=scan)
    return Case(argv, scan_path, None, "no motif hit lies on the peaks' chromosomes")


def peaks_on_no_selected_chromosome(inputs: Inputs) -> Case:
    split = {"validation_chromosomes": ["chr3"], "test_chromosomes": ["chr4"]}
    argv, peaks, _, _ = inputs.prepare(prepare={"chromosomes": ["chr2", "chr3", "chr4"], **split})
    return Case(argv, peaks, None, "no peak lies on the selected chromosomes ['chr2', 'chr3'")


# --- configuration: typos, types, ranges, splits, devices, the cell-type sheet ---


def edited_config(inputs: Inputs, edit: Callable[[dict], object]) -> Path:
    """The toy config changed in place by ``edit``, written under the case's root."""
    config = yaml.safe_load(inputs.toy["config"].read_text())
    edit(config)
    path = inputs.root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_argv(inputs: Inputs, config: Path) -> list[str]:
    argv = ["train", "--config", str(config), "--group", "all"]
    return [*argv, "--prepared-dir", str(inputs.toy["prepared"]), "--outdir", str(inputs.out)]


def config_unknown_top_level_key(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(result="results")
    return Case(argv, config, None, "unknown key 'result' (did you mean 'results'?)")


def config_unknown_key_three_deep(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(model={"preset": "tiny", "lora": {"alfa": 32}})
    return Case(
        argv, config, None, "unknown key 'model.lora.alfa' (did you mean 'model.lora.alpha'"
    )


def config_unknown_train_key(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["train"].update(max_step=5))
    expected = "unknown key 'train.max_step' (did you mean 'train.max_steps'?)"
    return Case(train_argv(inputs, config), config, None, expected)


def config_chromosomes_as_one_string(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(prepare={"chromosomes": "chr1,chr10,chr11"})
    expected = "key 'prepare.chromosomes': 'chr1,chr10,chr11' is not of type 'array'"
    return Case(argv, config, None, expected)


def config_batch_size_as_text(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["train"].update(batch_size="8"))
    expected = "key 'train.batch_size': '8' is not of type 'integer'"
    return Case(train_argv(inputs, config), config, None, expected)


def config_lora_dropout_above_one(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["model"].update(lora={"dropout": 5}))
    expected = "key 'model.lora.dropout': 5 is greater than the maximum of 1"
    return Case(train_argv(inputs, config), config, None, expected)


def config_model_dropout_out_of_range(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["model"]["overrides"].update(dropout=1.5))
    expected = "model option dropout must be in [0, 1), got 1.5"
    return Case(train_argv(inputs, config), config, None, expected)


def config_num_heads_not_dividing_embed_dim(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["model"]["overrides"].update(num_heads=3))
    expected = "model.embed_dim (16) must be divisible by model.num_heads (3)"
    return Case(train_argv(inputs, config), config, None, expected)


def config_beta_start_above_beta_end(inputs: Inputs) -> Case:
    betas = {"beta_start": 0.02, "beta_end": 0.0001}
    config = edited_config(inputs, lambda c: c.update(diffusion=betas))
    argv = impute_argv(inputs, inputs.toy["prepared"], config)
    return Case(argv, config, None, "key 'diffusion.beta_end': expected beta_start <= beta_end")


def config_train_device_mps(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["train"].update(device="mps"))
    expected = "key 'train.device': 'mps' is not supported; use auto, cpu, cuda or cuda:N"
    return Case(train_argv(inputs, config), config, None, expected)


def config_impute_device_unknown(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c.update(impute={"device": "gpu"}))
    argv = impute_argv(inputs, inputs.toy["prepared"], config)
    return Case(argv, config, None, "key 'impute.device': 'gpu' is not a device name")


def config_validation_chromosome_not_selected(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(prepare={"validation_chromosomes": ["chr12"]})
    expected = "key 'prepare.validation_chromosomes': ['chr12'] not in prepare.chromosomes"
    return Case(argv, config, None, expected)


def config_validation_and_test_chromosomes_overlap(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare(prepare={"test_chromosomes": ["chr10"]})
    expected = "['chr10'] also in prepare.test_chromosomes; expected disjoint splits"
    return Case(argv, config, None, expected)


def config_group_with_unknown_cell_type(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c["train"].update(groups={"all": ["toy", "liver"]}))
    expected = "key 'train.groups.all': unknown cell type(s) ['liver']; known: ['toy']"
    return Case(train_argv(inputs, config), config, None, expected)


def config_not_yaml(inputs: Inputs) -> Case:
    argv, _, _, config = inputs.prepare()
    config.write_text(config.read_text() + "prepare:\n\twindow_size: 4\n")
    return Case(argv, config, None, "not valid YAML")


def with_sheet(inputs: Inputs, rows: list[str], cell_type: str = "toy") -> tuple[list, Path]:
    """argv of `getdiff prepare --cell-type CELL_TYPE`, the sheet holding ``rows`` ({peaks}:
    the toy peaks)."""
    argv, peaks, _, _ = inputs.prepare()
    lines = [SHEET_HEADER, *(row.format(peaks=peaks) for row in rows)]
    sheet = write_text(inputs.root / "cell_types.tsv", lines)
    return [*argv[:4], cell_type, *argv[5:]], sheet


def sheet_cell_type_listed_twice(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["toy\t{peaks}\t\t5", "toy\t{peaks}\t\t5"])
    return Case(argv, sheet, None, "cell type 'toy' is listed twice")


def sheet_row_without_peaks(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["toy\t\t\t5"])
    return Case(argv, sheet, None, "line 2: column '(row)': 'peaks' is a required property")


def sheet_row_with_extra_fields(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["toy\t{peaks}\t\t5", "liver\t{peaks}\t\t5\tadult"])
    return Case(argv, sheet, None, "line 3: 5 tab-separated fields (or a NUL byte); expected")


def sheet_without_the_requested_cell_type(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["toy\t{peaks}\t\t5"], cell_type="liver")
    return Case(argv, sheet, None, "no cell type 'liver'; known: ['toy']")


def sheet_counts_column_not_a_number(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["toy\t{peaks}\t\tscore"])
    return Case(argv, sheet, None, "line 2: counts_column must be an integer column number")


# --- models that do not fit the windows, and model files that are not models ---


def model_for(inputs: Inputs, features: list[str], window_size: int, **metadata) -> Path:
    """A tiny model like the toy one for ``features`` and ``window_size``, saved as train does
    (``metadata``: more of its extra metadata)."""
    torch.manual_seed(0)
    model = build_model("tiny", **TINY_MODEL, num_motif=len(features), num_regions=window_size)
    extra = {"train_feature_mean": [0.5] * len(features), "feature_names": features, **metadata}
    path = inputs.root / "model.safetensors"
    save_model(model, path, extra_metadata=extra)
    return path


def evaluate_argv(inputs: Inputs, model: Path) -> list[str]:
    argv = ["evaluate", "--config", str(inputs.toy["config"]), "--group", "all", "--model"]
    argv += [str(model), "--prepared-dir", str(inputs.toy["prepared"])]
    argv += ["--calibration", str(inputs.toy["calibration"])]
    return [*argv, "--outdir", str(inputs.out)]


def toy_test_windows(inputs: Inputs) -> Path:
    return inputs.toy["prepared"] / "toy" / "windows_test.parquet"


def model_trained_on_other_feature_names(inputs: Inputs) -> Case:
    model = model_for(inputs, ["CTCF", "AP1/1", "NFY", "accessibility"], 4)
    argv = impute_argv(inputs, inputs.toy["prepared"], model=model)
    expected = "feature 1 is 'A' but the model was trained with 'CTCF' there"
    return Case(argv, toy_test_windows(inputs), None, expected)


def model_with_another_feature_count(inputs: Inputs) -> Case:
    model = model_for(inputs, ["A", "B", "C", "D", "accessibility"], 4)
    expected = "has 4 features per region but the model expects 5"
    return Case(evaluate_argv(inputs, model), toy_test_windows(inputs), None, expected)


def model_of_another_window_size(inputs: Inputs) -> Case:
    model = model_for(inputs, TOY_FEATURES, 6)
    expected = "has windows of 4 regions but the model expects 6"
    return Case(evaluate_argv(inputs, model), toy_test_windows(inputs), None, expected)


def model_file_is_a_torch_checkpoint(inputs: Inputs) -> Case:
    model = inputs.root / "model.safetensors"
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 16)}}, model)
    argv = impute_argv(inputs, inputs.toy["prepared"], model=model)
    return Case(argv, model, None, "not a readable .safetensors model file")


def model_file_truncated(inputs: Inputs) -> Case:
    model = inputs.root / "model.safetensors"
    model.write_bytes(inputs.toy["model"].read_bytes()[:5000])
    return Case(evaluate_argv(inputs, model), model, None, "not a readable .safetensors model")


def model_file_missing(inputs: Inputs) -> Case:
    model = inputs.root / "results" / "train" / "all" / "model.safetensors"
    argv = impute_argv(inputs, inputs.toy["prepared"], model=model)
    return Case(argv, model, None, "not a readable .safetensors model file")


# --- a model's recorded settings, the intervals' calibration, names that are paths ---


def model_trained_with_another_diffusion_schedule(inputs: Inputs) -> Case:
    model = model_for(inputs, TOY_FEATURES, 4, diffusion={"num_timesteps": 1000})
    config = edited_config(inputs, lambda c: c.update(diffusion={"num_timesteps": 500}))
    argv = impute_argv(inputs, inputs.toy["prepared"], config, model=model)
    expected = "key 'diffusion.num_timesteps' is 500 but"
    return Case(argv, config, None, expected)


def config_ddim_steps_above_num_timesteps(inputs: Inputs) -> Case:
    sampler = {"sampler": "ddim", "ddim_steps": 2000}
    config = edited_config(inputs, lambda c: c.update(impute=sampler))
    argv = impute_argv(inputs, inputs.toy["prepared"], config)
    expected = "key 'impute.ddim_steps': 2000 steps cannot be taken from diffusion.num_timesteps"
    return Case(argv, config, None, expected)


def calibration_of_another_sampler(inputs: Inputs) -> Case:
    config = edited_config(inputs, lambda c: c.update(evaluate={"num_samples": 3}))
    argv = evaluate_argv(inputs, inputs.toy["model"])
    argv[2] = str(config)
    expected = "was calibrated with other sampler settings than evaluate's (num_samples"
    return Case(argv, inputs.toy["calibration"], None, expected)


def calibration_file_not_parquet(inputs: Inputs) -> Case:
    bogus = write_text(inputs.root / "calibration.parquet", ["cell_type\tlevel"])
    argv = evaluate_argv(inputs, inputs.toy["model"])
    argv[argv.index("--calibration") + 1] = str(bogus)
    return Case(argv, bogus, None, "is not a calibration file written by getdiff calibrate")


def history_empty(inputs: Inputs) -> Case:
    history = write_text(inputs.root / "history.tsv", [])
    argv = [*evaluate_argv(inputs, inputs.toy["model"]), "--history", str(history)]
    return Case(argv, history, None, "is not a training history: expected getdiff train's")


def sheet_cell_type_dot_dot(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, ["..\t{peaks}\t\t5"], cell_type="..")
    return Case(argv, sheet, None, "line 2: column 'cell_type': '..' does not match")


def sheet_cell_type_hidden(inputs: Inputs) -> Case:
    argv, sheet = with_sheet(inputs, [".toy\t{peaks}\t\t5"], cell_type=".toy")
    return Case(argv, sheet, None, "line 2: column 'cell_type': '.toy' does not match")


# --- output locations that cannot be written ---


def prepare_outdir_is_a_file(inputs: Inputs) -> Case:
    argv, *_ = inputs.prepare()
    inputs.out.write_text("not a directory\n")
    return Case(argv, inputs.out, None, "is a file, not a directory; expected an output directory")


def evaluate_outdir_under_a_file(inputs: Inputs) -> Case:
    blocking = write_text(inputs.out / "evaluate", ["a file where a folder should be"])
    argv = evaluate_argv(inputs, inputs.toy["model"])
    argv[-1] = str(blocking / "all")
    return Case(argv, blocking, None, "is a file, not a directory; expected an output directory")


def train_outdir_is_a_file(inputs: Inputs) -> Case:
    argv = inputs.train()
    inputs.out.write_text("not a directory\n")
    return Case(argv, inputs.out, None, "is a file, not a directory; expected an output directory")


def impute_output_is_a_directory(inputs: Inputs) -> Case:
    argv = impute_argv(inputs, inputs.toy["prepared"])
    output = Path(argv[-1])
    output.mkdir(parents=True)
    return Case(argv, output, None, "is a directory; expected the path of a file to write")


def impute_output_in_read_only_directory(inputs: Inputs) -> Case:
    argv = impute_argv(inputs, inputs.toy["prepared"])
    inputs.out.mkdir()
    inputs.out.chmod(0o555)
    with contextlib.suppress(PermissionError), open(inputs.out / "probe", "w"):
        pytest.skip(f"chmod 555 does not bind here (euid {os.geteuid()})")
    return Case(argv, inputs.out, None, "Permission denied: expected a writable output directory")


def demo_data_out_is_a_file(inputs: Inputs) -> Case:
    inputs.out.write_text("not a directory\n")
    argv = ["demo-data", "--out", str(inputs.out), "--peaks-per-cell-type", "1000"]
    return Case(argv, inputs.out, None, "is a file, not a directory; expected an output directory")


BAD_INPUTS = [
    peaks_malformed_line,
    peaks_truncated_last_line,
    peaks_start_not_before_end,
    peaks_nan_count,
    peaks_inf_count,
    peaks_negative_count,
    peaks_empty_file,
    peaks_truncated_gzip,
    peaks_not_utf8,
    peaks_file_missing,
    peaks_chromosome_naming_mismatch,
    peaks_fewer_than_window_size,
    scan_chromosome_naming_mismatch,
    scan_unknown_cluster,
    scan_malformed_line,
    scan_start_not_before_end,
    scan_nan_score,
    scan_inf_score,
    scan_negative_score,
    scan_truncated_gzip,
    config_unknown_key,
    config_wrong_type,
    windows_wrong_feature_width,
    windows_of_another_window_size,
    windows_without_metadata,
    checkpoint_with_mismatched_shapes,
    checkpoint_with_pickled_object,
    resume_checkpoint_truncated,
    scan_on_another_genome_build,
    counts_file_offset_by_one_base,
    windows_with_features_in_another_order,
    missing_regions_named_without_chr,
    missing_regions_overlapping_no_window,
    peaks_fractional_start,
    peaks_negative_start,
    peaks_coordinate_beyond_int64,
    peaks_header_only,
    peaks_duplicate_peak,
    peaks_space_separated_with_spaces_in_names,
    peaks_utf16_spreadsheet_export,
    peaks_path_is_a_directory,
    peaks_named_pipe,
    peaks_symlink_loop,
    peaks_permission_denied,
    scan_fractional_start,
    scan_coordinate_beyond_int64,
    scan_negative_start,
    scan_empty_file,
    scan_header_only,
    scan_not_utf8,
    scan_space_separated,
    scan_name_with_space_inside,
    scan_named_pipe,
    scan_symlink_loop,
    scan_path_is_a_directory,
    counts_file_three_columns,
    counts_file_nan_count,
    counts_file_header_only,
    counts_file_duplicate_peak,
    counts_file_truncated_gzip,
    counts_file_named_without_chr,
    cluster_names_empty,
    cluster_names_listed_twice,
    cluster_names_not_utf8,
    cluster_names_with_reserved_accessibility,
    cluster_names_path_is_a_directory,
    missing_regions_start_not_before_end,
    missing_regions_two_columns,
    missing_regions_header_only,
    missing_regions_exponent_coordinate,
    scan_only_on_unplaced_contigs,
    peaks_on_no_selected_chromosome,
    config_unknown_top_level_key,
    config_unknown_key_three_deep,
    config_unknown_train_key,
    config_chromosomes_as_one_string,
    config_batch_size_as_text,
    config_lora_dropout_above_one,
    config_model_dropout_out_of_range,
    config_num_heads_not_dividing_embed_dim,
    config_beta_start_above_beta_end,
    config_train_device_mps,
    config_impute_device_unknown,
    config_validation_chromosome_not_selected,
    config_validation_and_test_chromosomes_overlap,
    config_group_with_unknown_cell_type,
    config_not_yaml,
    sheet_cell_type_listed_twice,
    sheet_row_without_peaks,
    sheet_row_with_extra_fields,
    sheet_without_the_requested_cell_type,
    sheet_counts_column_not_a_number,
    model_trained_on_other_feature_names,
    model_with_another_feature_count,
    model_of_another_window_size,
    model_file_is_a_torch_checkpoint,
    model_file_truncated,
    model_file_missing,
    prepare_outdir_is_a_file,
    evaluate_outdir_under_a_file,
    train_outdir_is_a_file,
    impute_output_is_a_directory,
    impute_output_in_read_only_directory,
    demo_data_out_is_a_file,
    model_trained_with_another_diffusion_schedule,
    config_ddim_steps_above_num_timesteps,
    calibration_of_another_sampler,
    calibration_file_not_parquet,
    history_empty,
    sheet_cell_type_dot_dot,
    sheet_cell_type_hidden,
]


@pytest.mark.parametrize("make_case", BAD_INPUTS, ids=[f.__name__ for f in BAD_INPUTS])
def test_bad_input_exits_2_naming_file_line_and_expectation_and_writes_nothing(
    make_case, tmp_path, toy, capsys
):
    case = make_case(Inputs(tmp_path, toy))
    before = files_under(tmp_path / "out")
    assert main(case.argv) == 2
    assert_refused_in_one_line(case, capsys.readouterr().err, tmp_path)
    assert files_under(tmp_path / "out") == before  # nothing written (nor removed)


# --------------------------------------------------------------------------- accepted oddities


def test_crlf_inputs_are_accepted_and_give_the_same_tensors_as_lf(tmp_path, toy):
    lf = Inputs(tmp_path / "lf", toy)
    crlf = Inputs(tmp_path / "crlf", toy)
    for inputs, eol in ((lf, "\n"), (crlf, "\r\n")):
        inputs.root.mkdir()
        scan = gzip.compress(text(SCAN, eol))
        argv, *_ = inputs.prepare(peaks=text(PEAKS, eol), scan=scan, scan_name="scan.bed.gz")
        assert main(argv) == 0
    expected = load_regions(lf.out / "regions.parquet")
    pd.testing.assert_frame_equal(load_regions(crlf.out / "regions.parquet"), expected)
    assert set(files_under(crlf.out)) == {p.name for p in output_paths(crlf.out).values()}


def test_peak_chromosome_absent_from_the_scan_is_a_warning_naming_it(tmp_path, toy, caplog):
    inputs = Inputs(tmp_path, toy)
    argv, _, scan, _ = inputs.prepare(scan=[line for line in SCAN if not line.startswith("chr11")])
    assert main(argv) == 0
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f"{scan} has no motif hit on peak chromosome(s) ['chr11']" in m for m in warning)
    assert any("their 4 peaks get all-zero motif features" in m for m in warning)
    test = load_regions(inputs.out / "regions.parquet").query("chrom == 'chr11'")
    assert (test[["A", "B", "C"]] == 0).all().all()


def test_scan_contigs_without_peaks_are_counted_not_errors(tmp_path, toy):
    inputs = Inputs(tmp_path, toy)
    extra = ["chrUn_KI270302v1\t10\t20\tA\t1", "chrY\t10\t20\tB\t1"]
    argv, *_ = inputs.prepare(scan=[*SCAN, *extra])
    assert main(argv) == 0
    meta = load_regions(inputs.out / "regions.parquet").attrs["getdiff"]
    assert meta["motif_scan"]["hits_on_chromosomes_without_peaks"] == 2


# --------------------------------------------------------------------------- kill and resume

MAX_STEPS, CHECKPOINT_EVERY = 400, 30
RESUME_SETTINGS = {
    "device": "cpu",
    "batch_size": 2,
    "max_steps": MAX_STEPS,
    "warmup_steps": 10,
    "lr": 3e-3,
    "log_every": 100,
    "eval_every": 25,  # best.pt predates the first last.pt: resuming must carry the best on
    "checkpoint_every": CHECKPOINT_EVERY,
    "val_windows": 1,
}


def start_training(config: Path, prepared: Path, outdir: Path) -> subprocess.Popen:
    """`python -m getdiff train` on one thread, its stderr in ``outdir``.log. The runs compared
    bit for bit are all started so, on this machine: the same kernels, threads and order."""
    command = [sys.executable, "-m", "getdiff", "train", "--config", str(config)]
    command += ["--group", "all", "--prepared-dir", str(prepared), "--outdir", str(outdir)]
    with open(f"{outdir}.log", "a") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [*command, "--threads", "1"], stdout=log, stderr=log, env=pinned_env()
        )


def test_sigkilled_training_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, toy):
    config = yaml.safe_load(toy["config"].read_text())
    config["train"] = RESUME_SETTINGS
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    last = resumed / "checkpoints" / "last.pt"
    # Both run at once (2 cores); the second is killed as soon as its first checkpoint exists.
    uninterrupted = start_training(config_path, toy["prepared"], straight)
    killed = start_training(config_path, toy["prepared"], resumed)
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and killed.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        killed.kill()
        assert killed.wait() == -9, Path(f"{resumed}.log").read_text()

        state = torch.load(last, map_location="cpu", weights_only=True)  # as train.py does
        assert state["step"] % CHECKPOINT_EVERY == 0 and 0 < state["step"] < MAX_STEPS
        for path in (resumed / "checkpoints").glob("[!.]*"):  # hidden: an unfinished write
            torch.load(path, map_location="cpu", weights_only=True)
        assert not (resumed / "model.safetensors").exists()

        assert start_training(config_path, toy["prepared"], resumed).wait() == 0
        assert uninterrupted.wait() == 0, Path(f"{straight}.log").read_text()
    finally:
        for process in (uninterrupted, killed):
            process.kill()
            process.wait()
    assert f"resuming from {last} at step {state['step']}" in Path(f"{resumed}.log").read_text()
    expected = load_file(straight / "model.safetensors")
    got = load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# --------------------------------------------------------------------------- Snakemake


@pytest.mark.slow
def test_failed_prepare_job_leaves_no_outputs_and_a_rerun_completes(tmp_path):
    write_demo_data(tmp_path / "demo", 3000, chromosomes=["chr1", "chr10", "chr11"], seed=0)
    config = write_config(
        tmp_path,
        ["demo_liver"],
        demo={"enabled": False},
        prepare={"max_span": 250_000_000, "window_size": 200},
    )
    peaks = tmp_path / "demo" / "peaks" / "demo_liver.narrowPeak.gz"
    good = peaks.read_bytes()
    lines = gzip.decompress(good).decode().split("\n")
    fields = lines[56].split("\t")
    lines[56] = "\t".join([fields[0], fields[2], fields[1], *fields[3:]])  # start > end
    peaks.write_bytes(gzip.compress("\n".join(lines).encode()))
    outputs = output_paths(tmp_path / "results" / "prepare" / "demo_liver")
    target = str(outputs["regions"].relative_to(tmp_path))

    failed = snakemake(tmp_path, target, "--cores", "1", "--configfile", config, check=False)
    assert failed.returncode != 0
    report = failed.stdout + failed.stderr
    assert "Error in rule prepare" in report
    assert "log: results/logs/prepare/demo_liver.log" in report
    assert files_under(outputs["regions"].parent) == []
    log = (tmp_path / "results" / "logs" / "prepare" / "demo_liver.log").read_text()
    assert "demo/peaks/demo_liver.narrowPeak.gz:57: start must be < end" in log

    peaks.write_bytes(good)
    snakemake(tmp_path, target, "--cores", "1", "--configfile", config)
    assert all(path.is_file() for path in outputs.values())
    assert files_under(outputs["regions"].parent) == sorted(p.name for p in outputs.values())
