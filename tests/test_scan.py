"""getdiff scan: hits and scores equal a brute-force log-odds scan; motif files and FASTA errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from getdiff.config import load_config
from getdiff.errors import ConfigError, GetdiffError, InputError
from getdiff.genomics.motif_files import read_motif_file, read_motifs
from getdiff.genomics.scan import ScanSettings, log_odds, reverse_complement, scan_motifs

CODES = np.full(256, -1, dtype=np.int64)
for _i, _base in enumerate("ACGT"):
    CODES[ord(_base)] = CODES[ord(_base.lower())] = _i


def random_matrix(rng: np.random.Generator, width: int) -> np.ndarray:
    return rng.dirichlet(np.full(4, 0.4), width).T  # (4, width), columns sum to 1


def meme_text(matrices: dict[str, np.ndarray], sites: int | None = 30) -> str:
    lines = ["MEME version 5", "", "ALPHABET= ACGT", "", "strands: + -", ""]
    for name, matrix in matrices.items():
        nsites = f" nsites= {sites}" if sites else ""
        lines += [f"MOTIF {name} alt_{name}"]
        lines += [f"letter-probability matrix: alength= 4 w= {matrix.shape[1]}{nsites} E= 0"]
        lines += [" ".join(f"{p:.6f}" for p in column) for column in matrix.T] + [""]
    return "\n".join(lines)


def write_fasta(path: Path, sequences: dict[str, str], width: int = 50) -> Path:
    with open(path, "w") as handle:
        for name, sequence in sequences.items():
            handle.write(f">{name} some description\n")
            handle.writelines(
                f"{sequence[i : i + width]}\n" for i in range(0, len(sequence), width)
            )
    return path


def random_genome(rng: np.random.Generator, sizes: dict[str, int]) -> dict[str, str]:
    """Bases with 40% GC, N runs and soft-masked (lowercase) stretches."""
    genome = {}
    for name, size in sizes.items():
        bases = np.array(list("ACGT"))[rng.choice(4, size, p=[0.3, 0.2, 0.2, 0.3])]
        for _ in range(size // 2000):
            start = rng.integers(0, size - 100)
            bases[start : start + rng.integers(1, 40)] = "N"
            start = rng.integers(0, size - 300)
            bases[start : start + 300] = np.char.lower(bases[start : start + 300])
        genome[name] = "".join(bases)
    return genome


def brute_force(
    genome: dict[str, str], matrices: dict[str, np.ndarray], thresholds
) -> pd.DataFrame:
    """Every window of every sequence scored on both strands with numpy; hits at the thresholds."""
    rows = []
    for chrom, sequence in genome.items():
        codes = CODES[np.frombuffer(sequence.encode(), dtype=np.uint8)]
        for (name, matrix), threshold in zip(matrices.items(), thresholds, strict=True):
            width = matrix.shape[1]
            windows = np.lib.stride_tricks.sliding_window_view(codes, width)
            valid = (windows >= 0).all(axis=1)
            for strand, m in (("+", matrix), ("-", reverse_complement(matrix))):
                scores = m[windows.clip(0), np.arange(width)].sum(axis=1)
                for start in np.flatnonzero(valid & (scores >= threshold)):
                    rows.append((chrom, start, start + width, name, scores[start], strand))
    return pd.DataFrame(rows, columns=["chrom", "start", "end", "name", "score", "strand"])


def read_scan(path: Path) -> pd.DataFrame:
    names = ["chrom", "start", "end", "name", "score", "strand"]
    return pd.read_csv(path, sep="\t", header=None, names=names, dtype={"chrom": str})


@pytest.fixture
def scan_inputs(tmp_path: Path) -> dict:
    """A non-human genome (odd sequence names), 2 cell types' peaks, 6 random motifs."""
    rng = np.random.default_rng(11)
    genome = random_genome(rng, {"2L": 30_000, "scaffold_7": 12_000, "chrUn_x": 5_000})
    motifs = {f"M{k}": random_matrix(rng, int(w)) for k, w in enumerate([6, 8, 10, 12, 15, 20])}
    (tmp_path / "motifs.meme").write_text(meme_text(motifs))
    write_fasta(tmp_path / "genome.fa", genome)
    peaks = {
        "a": [("2L", 100, 900), ("2L", 880, 1500), ("2L", 20_000, 20_600), ("scaffold_7", 0, 400)],
        "b": [("2L", 1500, 1800), ("scaffold_7", 11_500, 12_000), ("chrUn_x", 10, 300)],
    }
    for name, rows in peaks.items():
        (tmp_path / f"{name}.bed").write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e in rows))
    sheet = "cell_type\tpeaks\n" + "".join(f"{n}\t{tmp_path / n}.bed\n" for n in peaks)
    (tmp_path / "cell_types.tsv").write_text(sheet)
    config = {
        "cell_types": str(tmp_path / "cell_types.tsv"),
        "genome_fasta": str(tmp_path / "genome.fa"),
        "motifs": str(tmp_path / "motifs.meme"),
        "results": str(tmp_path / "results"),
        "prepare": {"chromosomes": ["2L", "scaffold_7"]},  # chrUn_x is left out on purpose
        "scan": {"pvalue": 0.005},  # plenty of hits in a few kb
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return {"genome": genome, "motifs": motifs, "peaks": peaks, "dir": tmp_path}


def overlaps_any(hits: pd.DataFrame, regions: list[tuple[str, int, int]]) -> np.ndarray:
    hit = np.zeros(len(hits), dtype=bool)
    for chrom, start, end in regions:
        hit |= (hits["chrom"] == chrom) & (hits["start"] < end) & (hits["end"] > start)
    return hit.to_numpy()


@pytest.mark.parametrize("threads", [1, 2])
def test_hits_and_scores_equal_a_brute_force_scan_on_both_strands(scan_inputs, threads):
    config = load_config(scan_inputs["dir"] / "config.yaml")
    result = scan_motifs(ScanSettings.from_config(config, threads), scan_inputs["dir"] / "scan")
    found = read_scan(result.paths["scan"])
    matrices = {
        name: log_odds(motif, result.background, 0.1)
        for name, motif in zip(scan_inputs["motifs"], result.motifs, strict=True)
    }
    genome = {c: s for c, s in scan_inputs["genome"].items() if c != "chrUn_x"}
    expected = brute_force(genome, matrices, result.thresholds)
    # Background: both strands' composition (A = T, C = G) of the scanned sequences.
    assert result.background[0] == pytest.approx(result.background[3])
    assert 0.25 < result.background[0] < 0.35
    key = ["chrom", "start", "end", "name", "strand"]
    merged = found.merge(expected, on=key, how="outer", suffixes=("", "_brute"), indicator=True)
    # Every reported hit is a brute-force hit, with the same score (to the file's 4 decimals).
    assert (merged["_merge"] != "left_only").all()
    both = merged[merged["_merge"] == "both"]
    np.testing.assert_allclose(both["score"], both["score_brute"], atol=5.1e-5)
    # Every brute-force hit overlapping a peak is reported (those beyond may be too).
    regions = [r for rows in scan_inputs["peaks"].values() for r in rows if r[0] != "chrUn_x"]
    missed = merged[(merged["_merge"] == "right_only").to_numpy() & overlaps_any(merged, regions)]
    assert missed.empty, missed
    assert len(both) > 50 and set(both["strand"]) == {"+", "-"}
    # Hits never span an N, and soft-masked bases are scanned.
    assert (found["chrom"] != "chrUn_x").all()
    table = pd.read_csv(result.paths["motifs"], sep="\t")
    assert table["hits"].sum() == len(found) and list(table["name"]) == list(matrices)
    assert result.paths["names"].read_text().split() == list(matrices)
    assert Path(f"{result.paths['scan']}").read_bytes()[:2] == b"\x1f\x8b"
    assert result.paths["index"].exists()


def test_a_motif_too_short_for_the_p_value_keeps_only_its_best_words(tmp_path):
    rng = np.random.default_rng(2)
    genome = {"c1": "".join(rng.choice(list("ACGT"), 20_000))}
    write_fasta(tmp_path / "g.fa", genome)
    matrix = np.full((4, 4), 0.01)
    matrix[[0, 1, 2, 3], [0, 1, 2, 3]] = 0.97  # best word ACGT: p = 0.25**4 > 1e-4
    (tmp_path / "m.meme").write_text(meme_text({"short": matrix / matrix.sum(axis=0)}))
    (tmp_path / "p.bed").write_text("c1\t0\t20000\n")
    (tmp_path / "s.tsv").write_text(f"cell_type\tpeaks\nx\t{tmp_path / 'p.bed'}\n")
    config = load_config_dict(tmp_path, {"prepare": {"chromosomes": ["c1"]}})
    result = scan_motifs(ScanSettings.from_config(config, 1), tmp_path / "out")
    found = read_scan(result.paths["scan"])
    words = {genome["c1"][s:e] for s, e in zip(found["start"], found["end"], strict=True)}
    assert words == {"ACGT"}  # both strands: ACGT is its own reverse complement
    assert genome["c1"].count("ACGT") == (found["strand"] == "+").sum()


def load_config_dict(directory: Path, extra: dict) -> dict:
    config = {
        "cell_types": str(directory / "s.tsv"),
        "genome_fasta": str(directory / "g.fa"),
        "motifs": str(directory / "m.meme"),
        "results": str(directory / "results"),
        **extra,
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config))
    return load_config(directory / "config.yaml")


def test_meme_probabilities_are_read_exactly_and_jaspar_format_too(tmp_path):
    matrix = np.array(
        [[0.046512, 0.906977], [0.093023, 0.046512], [0.093023, 0.0], [0.767442, 0.046511]]
    )
    path = tmp_path / "m.meme"
    path.write_text(meme_text({"PAX": matrix}, sites=None))
    (motif,) = read_motif_file(path)
    np.testing.assert_allclose(motif.probabilities, matrix / matrix.sum(axis=0))
    assert motif.sites == 20 and motif.name == "PAX" and motif.alt_name == "alt_PAX"
    jaspar = tmp_path / "m.jaspar"
    jaspar.write_text(">MA0001.1 AGL3\nA [ 0 3 79 ]\nC [ 94 75 4 ]\nG [ 1 0 3 ]\nT [ 2 19 11 ]\n")
    (motif,) = read_motif_file(jaspar)
    assert motif.name == "MA0001.1" and motif.alt_name == "AGL3" and motif.sites == 97
    np.testing.assert_allclose(motif.probabilities[:, 0], [0, 94 / 97, 1 / 97, 2 / 97])


def test_jaspar_release_by_name():
    motifs = read_motifs("jaspar:CORE:vertebrates")
    assert len(motifs) == 1019  # JASPAR2026, latest versions, as pyjaspar 4.0.0 ships it
    assert len({m.name for m in motifs}) == 1019
    with pytest.raises(ConfigError, match="jaspar:COLLECTION"):
        read_motifs("jaspar:")


GOOD = "0.25 0.25 0.25 0.25"
HEAD = "MEME version 4\n\nALPHABET= ACGT\n\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD, r"m.meme: no motifs found in this MEME file"),
        ("hello\n", r"m.meme: not a motif file: expected MEME minimal format"),
        (
            HEAD
            + f"MOTIF a\nletter-probability matrix: alength= 4 w= 2\n{GOOD}\n0.5 0.5 0.5 0.5\n",
            r"m.meme:8: motif a: row sums to 2.0000",
        ),
        (
            HEAD + f"MOTIF a\nletter-probability matrix: alength= 4 w= 3\n{GOOD}\n{GOOD}\n\n",
            r"m.meme:6: motif a: 2 matrix rows; its header declares w= 3",
        ),
        (
            HEAD + "MOTIF a\nletter-probability matrix: alength= 5 w= 1\n0.2 0.2 0.2 0.2 0.2\n",
            r"m.meme:6: alength= 5; expected 4",
        ),
        (
            HEAD + "MOTIF a\nletter-probability matrix: alength= 4 w= 1\n0.5 0.5 0\n",
            r"m.meme:7: motif a: expected 4 numbers",
        ),
        (
            HEAD
            + f"MOTIF a\nletter-probability matrix: alength= 4 w= 1\n{GOOD}\n\n"
            + f"MOTIF a\nletter-probability matrix: alength= 4 w= 1\n{GOOD}\n",
            r"m.meme:9: motif name 'a' appears twice \(first on line 5\)",
        ),
        ("MEME version 4\n\nALPHABET= ACGU\n", r"m.meme:3: ALPHABET= ACGU: an RNA alphabet"),
    ],
    ids=["empty", "not-motifs", "row-sum", "rows-vs-w", "alength", "row-width", "dup", "rna"],
)
def test_malformed_motif_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "m.meme"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_motif_file(path)


def test_fasta_errors_name_the_file_and_the_fix(scan_inputs):
    directory = scan_inputs["dir"]
    config = load_config(directory / "config.yaml")
    # Missing index: built beside the FASTA.
    settings = ScanSettings.from_config(config, 1)
    scan_motifs(settings, directory / "out")
    assert (directory / "genome.fa.fai").exists()
    # gzip, not bgzip.
    gz = directory / "genome.fa.gz"
    gz.write_bytes(gzip.compress((directory / "genome.fa").read_bytes()))
    with pytest.raises(InputError, match=r"genome.fa.gz: compressed with gzip, not bgzip.*bgzip"):
        scan_motifs(
            ScanSettings.from_config({**config, "genome_fasta": str(gz)}, 1), directory / "o2"
        )
    # A peak chromosome the FASTA lacks, with and without the 'chr' hint.
    renamed = {("chr2L" if c == "2L" else c): s for c, s in scan_inputs["genome"].items()}
    fasta = write_fasta(directory / "renamed.fa", renamed)
    settings = ScanSettings.from_config({**config, "genome_fasta": str(fasta)}, 1)
    with pytest.raises(InputError, match=r"renamed.fa: no sequence '2L'.*has 'chr2L' \(naming"):
        scan_motifs(settings, directory / "o3")
    harmonised = {**config, "genome_fasta": str(fasta)}
    harmonised["prepare"] = {**config["prepare"], "chrom_naming": "harmonise"}
    found = read_scan(
        scan_motifs(ScanSettings.from_config(harmonised, 1), directory / "o4").paths["scan"]
    )
    assert set(found["chrom"]) == {"2L", "scaffold_7"}  # named as the peaks name them
    missing = {c: s for c, s in scan_inputs["genome"].items() if c != "scaffold_7"}
    fasta = write_fasta(directory / "missing.fa", missing)
    settings = ScanSettings.from_config({**config, "genome_fasta": str(fasta)}, 1)
    with pytest.raises(InputError, match=r"missing.fa: no sequence 'scaffold_7'"):
        scan_motifs(settings, directory / "o5")
    assert not (directory / "o3" / "motif_scan.tsv.gz").exists()  # no partial outputs


def test_config_scans_when_fasta_and_motifs_are_given(tmp_path):
    from getdiff.config import validate_config

    config = validate_config({"cell_types": "s.tsv", "genome_fasta": "g.fa", "motifs": "m.meme"})
    assert config["motif_scan"] == "results/scan/motif_scan.tsv.gz"
    assert config["cluster_names"] == "results/scan/motif_names.txt"
    assert validate_config(config) == config  # idempotent
    mapped = validate_config(
        {"cell_types": "s", "genome_fasta": "g", "motifs": "m", "motif_to_cluster": "map.tsv"}
    )
    assert mapped["cluster_names"] is None  # the bundled 282 clusters
    with pytest.raises(ConfigError, match="'motifs': needed with the other"):
        validate_config({"cell_types": "s.tsv", "genome_fasta": "g.fa"})
    with pytest.raises(ConfigError, match="not both"):
        validate_config({"cell_types": "s", "genome_fasta": "g", "motifs": "m", "motif_scan": "x"})
    with pytest.raises(ConfigError, match="give 'motif_scan'"):
        validate_config({"cell_types": "s.tsv"})


def test_cli_scan_reports_errors_in_one_line(scan_inputs, capsys):
    from getdiff.cli import main

    directory = scan_inputs["dir"]
    (directory / "motifs.meme").write_text(HEAD)
    code = main(
        ["scan", "--config", str(directory / "config.yaml"), "--outdir", str(directory / "o")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no motifs found" in err[0]
    assert isinstance(InputError("x", "y"), GetdiffError)


def test_thresholds_are_moods_own_to_the_bit():
    """getdiff's banded dynamic programming returns MOODS.tools.threshold_from_p's double, on
    JASPAR CORE vertebrate matrices and both strands, under skewed backgrounds, pseudocounts and
    p-values from a motif's best word (unreachable) to past every word (MOODS's minimum - 1)."""
    import MOODS.tools

    from getdiff.genomics.scan import threshold_from_p

    motifs = read_motifs("jaspar:CORE:vertebrates")
    settings = [
        ((0.295, 0.205, 0.205, 0.295), 0.1, 1e-4, motifs[::5]),
        ((0.25, 0.25, 0.25, 0.25), 0.1, 1e-5, motifs[1::17]),
        ((0.4, 0.1, 0.1, 0.4), 0.01, 1e-3, motifs[2::17]),
        ((0.2, 0.3, 0.3, 0.2), 1.0, 0.05, motifs[3::17]),
        ((0.3, 0.2, 0.2, 0.3), 0.1, 1e-9, motifs[4::17]),
        ((0.3, 0.2, 0.2, 0.3), 0.1, 1.0, motifs[5::101]),
    ]
    rng = np.random.default_rng(7)
    checked = 0
    for background, pseudocount, pvalue, chosen in settings:
        b = np.array(background)
        matrices = [log_odds(m, b, pseudocount) for m in chosen]
        matrices += [reverse_complement(m) for m in matrices[::4]]
        matrices += [np.log2(random_matrix(rng, w) / b[:, None]) for w in (1, 2, 3, 25)]
        for matrix in matrices:
            want = MOODS.tools.threshold_from_p(matrix.tolist(), list(background), pvalue)
            assert threshold_from_p(matrix, b, pvalue) == want, (matrix, background, pvalue)
            checked += 1
    assert checked > 300


def test_bgzf_blocks_are_bgzip_readable_by_region(tmp_path):
    """The scan's own BGZF writer: gzip and Biopython's BGZF reader read back the bytes, every
    block is a BGZF block of at most 64 KiB (incompressible data too), tabix indexes it."""
    import pysam
    from Bio import bgzf

    from getdiff.genomics.scan import bgzf_blocks

    rng = np.random.default_rng(3)
    assert bgzf_blocks(b"") == b""
    lines = "".join(
        f"chr1\t{s}\t{s + 10}\tM{s % 7}\t{s / 1000:.4f}\t+\n" for s in range(0, 3_000_000, 97)
    ).encode()
    for data in (lines, rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(), b"x"):
        path = tmp_path / "blocks.gz"
        path.write_bytes(bgzf_blocks(data) + bgzf._bgzf_eof)
        assert gzip.decompress(path.read_bytes()) == data
        with bgzf.BgzfReader(str(path), "rb") as reader:
            assert reader.read(len(data) + 1) == data
        with open(path, "rb") as handle:
            sizes = [block[1] for block in bgzf.BgzfBlocks(handle)]
        assert max(sizes) <= 1 << 16 and len(sizes) >= len(data) // 0xFF00 + 1
    path = tmp_path / "lines.tsv.gz"
    path.write_bytes(bgzf_blocks(lines) + bgzf._bgzf_eof)
    pysam.tabix_index(str(path), preset="bed", force=True, keep_original=True)
    with pysam.TabixFile(str(path)) as tabix:
        found = [row.split("\t")[1] for row in tabix.fetch("chr1", 1_000_000, 1_000_300)]
    assert found == [str(s) for s in range(0, 3_000_000, 97) if 1_000_000 - 10 < s < 1_000_300]


def test_fast_match_wrapping_keeps_moods_hits():
    """MOODS's hit objects wrapped by object.__setattr__ read the same positions and scores."""
    import MOODS.scan

    from getdiff.genomics.scan import _fast_match_wrapping

    rng = np.random.default_rng(5)
    matrices = [np.log2(random_matrix(rng, w) / 0.25) for w in (4, 9, 14)]
    sequence = "".join(rng.choice(list("ACGT"), 20_000))
    scanner = MOODS.scan.Scanner(7)
    scanner.set_motifs([m.tolist() for m in matrices], [0.25] * 4, [2.0, 6.0, 9.0])

    def hits() -> list[list[tuple[int, float]]]:
        return [[(m.pos, m.score) for m in found] for found in scanner.scan(sequence)]

    before = hits()
    _fast_match_wrapping(MOODS.scan.match)
    assert MOODS.scan.match.__setattr__ is object.__setattr__
    assert hits() == before and sum(map(len, before)) > 100
    match = scanner.scan(sequence)[0][0]
    match.pos = 3  # the property still sets the C++ field
    assert match.pos == 3
