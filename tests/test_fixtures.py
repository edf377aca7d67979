"""tests/make_fixtures.py remakes every saved fixture, to the tolerances its tests compare at,
and writes its provenance beside it; every committed fixture carries a provenance that names it."""

from __future__ import annotations

import hashlib
import json

import make_fixtures
import torch
from make_fixtures import DATA, PREPARE_EXPECTED, TINY_MODEL_OUTPUTS, provenance_path

FIXTURES = [TINY_MODEL_OUTPUTS, PREPARE_EXPECTED]
KEYS = {"file", "sha256", "getdiff_commit", "date", "torch", "numpy", "cpu"}
KEYS |= {"torch_cpu_capability", "torch_threads"}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_generator_remakes_every_saved_fixture_to_its_tests_tolerance(tmp_path):
    threads = torch.get_num_threads()
    written = make_fixtures.remake(tmp_path)
    assert torch.get_num_threads() == threads  # restored
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(FIXTURES)
    make_fixtures.check(tmp_path)  # AssertionError beyond the tests' tolerances
    for path in written:
        record = json.loads(provenance_path(path).read_text())
        assert KEYS <= set(record)
        assert record["file"] == path.name and record["sha256"] == sha256(path)
        assert record["torch"] == torch.__version__ and record["torch_threads"] == 1


def test_every_committed_fixture_has_its_provenance_beside_it():
    for name in FIXTURES:
        record = json.loads(provenance_path(DATA / name).read_text())
        assert KEYS <= set(record), name
        # It describes this very file: a remade fixture needs its provenance remade too.
        assert record["file"] == (DATA / name).name and record["sha256"] == sha256(DATA / name)
