"""Property-based fuzzing of the scanner's parsers: every mutation of a valid MEME file, JASPAR
file, FASTA or FASTA index ends in a result or an InputError (one line), never another exception.
And an index that passes the check reads exactly the bases the FASTA holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from getdiff.errors import InputError
from getdiff.genomics.fasta import fetch_sequence, open_fasta
from getdiff.genomics.motif_files import read_motif_file

MEME = (
    b"MEME version 5\n\nALPHABET= ACGT\n\nstrands: + -\n\n"
    b"MOTIF M1 one\nletter-probability matrix: alength= 4 w= 2 nsites= 20 E= 0\n"
    b"0.7 0.1 0.1 0.1\n0.1 0.1 0.1 0.7\n\n"
    b"MOTIF M2\nletter-probability matrix: alength= 4 w= 1\n0.25 0.25 0.25 0.25\n"
)
JASPAR = b">MA1 one\nA [ 7 1 ]\nC [ 1 7 ]\nG [ 1 1 ]\nT [ 1 1 ]\n>MA2\n1 2\n1 2\n3 4\n0 0\n"
FASTA = b">c1 first\nACGTACGTAC\nacgtnnACGT\nACG\n>c2\nGGGGCCCCAA\nTT\n\n"
GENOME = {"c1": "ACGTACGTACACGTNNACGTACG", "c2": "GGGGCCCCAATT"}  # upper-cased

VALUES = [b"\t", b"\n", b" ", b"-", b">", b"U", b"1e400", b"nan", b"[", b"]", b"\xe9", b"\x00"]
MUTATION = st.tuples(
    st.sampled_from(["truncate", "flip", "insert", "delete", "none"]),
    st.floats(0, 0.999),
    st.sampled_from(VALUES),
)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: a failure prints as is
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def mutate(data: bytes, kind: str, position: float, value: bytes) -> bytes:
    at = int(position * len(data))
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    if kind == "insert":
        return data[:at] + value + data[at:]
    if kind == "delete":
        return data[:at] + data[at + len(value) :]
    return data


@pytest.mark.parametrize(("name", "valid"), [("m.meme", MEME), ("m.jaspar", JASPAR)])
@FUZZ
@given(mutation=MUTATION)
def test_mutated_motif_files_give_motifs_or_an_input_error(tmp_path, name, valid, mutation):
    path = tmp_path / name
    path.write_bytes(mutate(valid, *mutation))
    try:
        motifs = read_motif_file(path)
    except InputError as err:
        assert "\n" not in str(err)
        return
    for motif in motifs:
        assert motif.probabilities.shape == (4, motif.width) and motif.width >= 1
        assert abs(motif.probabilities.sum(axis=0) - 1).max() < 1e-9


def sequences(path: Path) -> dict[str, str]:
    fasta = open_fasta(path)
    try:
        return {
            name: fetch_sequence(fasta, name, 0, length).tobytes().decode().upper()
            for name, length in zip(fasta.references, fasta.lengths, strict=True)
        }
    finally:
        fasta.close()


@FUZZ
@given(mutation=MUTATION)
def test_mutated_fasta_reads_its_own_records_or_gives_an_input_error(tmp_path, mutation):
    directory = tmp_path / "case"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    path = directory / "g.fa"
    data = mutate(FASTA, *mutation)
    path.write_bytes(data)
    try:
        found = sequences(path)
    except InputError as err:
        assert "\n" not in str(err)
        return
    # Whatever was read is what a plain parse of the text holds (records, bases).
    expected: dict[str, str] = {}
    name = None
    for line in data.decode("ascii").splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0] if line[1:].split() else ""
            expected[name] = ""
        elif name is not None:
            expected[name] += "".join(line.split()).upper()
    assert found == {k: v for k, v in expected.items() if k in found}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("indexed")
    plain = directory / "g.fa"
    plain.write_bytes(FASTA)
    pysam.FastaFile(str(plain)).close()
    return directory


@FUZZ
@given(mutation=MUTATION, other=st.booleans())
def test_a_mutated_fai_is_rebuilt_or_refused_never_trusted(tmp_path, indexed, mutation, other):
    """A .fai mutated (or from another FASTA) either fits the file or is rebuilt: the bases read
    are always the FASTA's own."""
    directory = tmp_path / "case"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    path = directory / "g.fa"
    data = FASTA.replace(b"ACG\n>", b"ACGTA\n>") if other else FASTA  # another FASTA
    path.write_bytes(data)
    fai = (indexed / "g.fa.fai").read_bytes()
    Path(f"{path}.fai").write_bytes(mutate(fai, *mutation))
    try:
        found = sequences(path)
    except InputError as err:
        assert "\n" not in str(err)
        return
    if not other:
        assert found == GENOME
    else:
        assert found == {**GENOME, "c1": GENOME["c1"] + "TA"}
