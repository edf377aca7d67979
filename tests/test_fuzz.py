"""Property-based fuzzing of the prepare command's inputs: every mutation of valid peak, scan,
sheet and config files ends in exit 0 with loadable outputs, or exit 2 with one error line."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import PEAKS, SCAN, text, write_cli_config, write_text
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from getdiff.cli import main
from getdiff.prepare import output_paths
from getdiff.tensors import load_regions, load_window_set


def mutate(data: bytes, kind: str, position: float, value: bytes) -> bytes:
    """One mutation of a file's bytes at a relative position."""
    at = int(position * len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :] if data else data
    if kind == "insert":
        return data[:at] + value + data[at:]
    if kind == "swap_columns":
        lines = data.split(b"\n")
        return b"\n".join(b"\t".join(line.split(b"\t")[::-1]) for line in lines)
    if kind == "latin1":
        return data.decode().replace("chr", "chr\u00e9").encode("latin-1", errors="replace")
    return data


VALUES = [b"\t", b"\n", b" ", b"-", b"1e400", b"99999999999999999999999", b"nan", b"#", b"\x00"]
MUTATION = st.tuples(
    st.sampled_from(["truncate", "flip", "insert", "swap_columns", "latin1", "none"]),
    st.floats(0, 0.999),
    st.sampled_from(VALUES),
)
CONFIG_EDITS = [
    {},
    {"window_size": 0},
    {"window_size": 10**9},
    {"max_span": -1},
    {"test_chromosomes": ["chr99"]},
    {"chromosomes": []},
    {"train_stride": "x"},
]


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Path:
    return write_text(tmp_path_factory.mktemp("fuzz") / "clusters.txt", ["A", "B", "C"])


@settings(
    max_examples=60,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failure prints as is
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    peaks=MUTATION,
    scan=MUTATION,
    sheet=MUTATION,
    edit=st.sampled_from(CONFIG_EDITS),
)
def test_mutated_inputs_exit_0_with_outputs_or_2_with_one_line(
    tmp_path, clusters, peaks, scan, sheet, edit
):
    root = tmp_path / "case"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    peak_path, scan_path = root / "peaks.bed", root / "scan.bed"
    peak_path.write_bytes(mutate(text(PEAKS), *peaks))
    scan_path.write_bytes(mutate(text(SCAN), *scan))
    config = write_cli_config(root, peak_path, scan_path, clusters)
    settings_ = yaml.safe_load(config.read_text())
    settings_["prepare"].update(edit)
    config.write_text(yaml.safe_dump(settings_))
    sheet_path = root / "cell_types.tsv"
    sheet_path.write_bytes(mutate(sheet_path.read_bytes(), *sheet))
    outdir = root / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        argv = ["prepare", "--config", str(config), "--cell-type", "toy", "--outdir", str(outdir)]
        code = main(argv)
    lines = stderr.getvalue().strip().splitlines()
    assert "Traceback" not in stderr.getvalue()
    if code == 0:
        paths = output_paths(outdir)
        load_regions(paths["regions"])
        for split in ("train", "validation", "test"):
            load_window_set(paths[split])
    else:
        assert code == 2
        assert lines[-1].startswith("getdiff prepare: error: "), lines[-1:]
        assert not outdir.exists() or not any(outdir.iterdir())
