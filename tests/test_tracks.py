"""bigWig tracks of an imputation (getdiff tracks): values per peak, header sizes, overlaps."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyBigWig
import pytest

from getdiff.cli import main
from getdiff.errors import InputError
from getdiff.outputs.tracks import (
    TRACKS,
    disjoint_pieces,
    read_chrom_sizes,
    read_imputation,
    write_tracks,
)

FEATURE = "accessibility"


def imputation_table(n: int = 60, seed: int = 0, intervals: bool = True) -> pd.DataFrame:
    """Non-overlapping peaks on chr2 and chr10, rows shuffled (unsorted input), raw values as
    impute writes them (float64 from float32 normalised values)."""
    rng = np.random.default_rng(seed)
    chrom = np.where(np.arange(n) % 3 == 0, "chr10", "chr2")
    start = np.zeros(n, np.int64)
    for name in ("chr2", "chr10"):
        at = np.flatnonzero(chrom == name)
        gaps = rng.integers(0, 400, len(at))  # book-ended peaks (gap 0) too
        widths = rng.integers(50, 900, len(at))
        start[at] = np.cumsum(gaps + widths) - widths
    end = start + rng.integers(50, 900, n)
    frame = pd.DataFrame({"chrom": chrom, "start": start, "end": end})
    frame = _non_overlapping(frame)
    observed = rng.gamma(2.0, 50.0, len(frame)).astype(np.float32).astype(np.float64)
    columns = {f"observed_raw.{FEATURE}": observed, f"imputed_raw.{FEATURE}": observed * 1.1 + 3}
    if intervals:
        columns[f"imputed_lower_raw.{FEATURE}"] = observed * 0.5
        columns[f"imputed_upper_raw.{FEATURE}"] = observed * 2.0 + 1
    frame = frame.assign(**columns)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _non_overlapping(frame: pd.DataFrame) -> pd.DataFrame:
    """Each peak's end cut at its chromosome neighbour's start."""
    frame = frame.sort_values(["chrom", "start"]).reset_index(drop=True)
    following = frame.groupby("chrom")["start"].shift(-1)
    frame["end"] = np.where(following.notna(), np.minimum(frame["end"], following), frame["end"])
    return frame[frame["end"] > frame["start"]].reset_index(drop=True)


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def write_fasta(path: Path, sizes: dict[str, int]) -> Path:
    """A plain FASTA of ``sizes`` with the .fai samtools would write."""
    import pysam

    with open(path, "w") as handle:
        for chrom, size in sizes.items():
            handle.write(f">{chrom}\n")
            sequence = "ACGT" * (size // 4 + 1)
            for i in range(0, size, 60):
                handle.write(sequence[i : min(i + 60, size)] + "\n")
    pysam.faidx(str(path))
    return path


def values_at_peaks(path: Path, frame: pd.DataFrame) -> np.ndarray:
    with pyBigWig.open(str(path)) as handle:
        return np.array(
            [
                handle.values(c, int(s), int(e), numpy=True)
                for c, s, e in zip(frame["chrom"], frame["start"], frame["end"], strict=True)
            ],
            dtype=object,
        )


def test_each_peak_reads_back_its_parquet_value_over_its_whole_span(tmp_path):
    frame = imputation_table()
    sizes = {"chr2": 10**6, "chr10": 10**6}
    paths = write_tracks(frame, tmp_path / "ct", sizes)
    assert set(paths) == set(TRACKS)
    for track, column in TRACKS.items():
        expected = frame[f"{column}.{FEATURE}"].to_numpy(np.float32)
        for values, want in zip(values_at_peaks(paths[track], frame), expected, strict=True):
            assert np.all(values == want)  # every base of the peak, to float32 precision


def test_a_second_library_reads_the_same_values_and_sizes(tmp_path):
    pybigtools = pytest.importorskip("pybigtools")
    frame = imputation_table(seed=1)
    sizes = {"chr2": 10**6, "chr10": 10**6}
    path = write_tracks(frame, tmp_path / "ct", sizes)["imputed"]
    reader = pybigtools.open(str(path))
    assert reader.chroms() == sizes
    got = {}
    for chrom in sizes:
        for start, end, value in reader.records(chrom):
            got[(chrom, start, end)] = value
    expected = frame[f"imputed_raw.{FEATURE}"].to_numpy(np.float32)
    keys = list(zip(frame["chrom"], frame["start"], frame["end"], strict=True))
    assert [got[key] for key in keys] == list(expected)
    assert len(got) == len(frame)  # nothing outside the peaks


def test_header_sizes_are_the_fasta_index_every_sequence_in_its_order(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", {"chr10": 20_000, "chr2": 30_000, "chrM": 100})
    frame = imputation_table(n=12)
    sizes = read_chrom_sizes(fasta, frame, "t.parquet")
    assert list(sizes.items()) == [("chr10", 20_000), ("chr2", 30_000), ("chrM", 100)]
    path = write_tracks(frame, tmp_path / "ct", sizes)["observed"]
    with pyBigWig.open(str(path)) as handle:
        assert handle.chroms() == {"chr10": 20_000, "chr2": 30_000, "chrM": 100}


def test_without_a_fasta_index_sizes_are_the_largest_peak_end_and_logged(tmp_path, caplog):
    frame = imputation_table(n=30)
    with caplog.at_level(logging.INFO, logger="getdiff.outputs.tracks"):
        sizes = read_chrom_sizes(tmp_path / "absent.fa", frame, "t.parquet")
    assert list(sizes) == ["chr2", "chr10"]  # natural order
    assert sizes == frame.groupby("chrom")["end"].max().to_dict()
    assert "largest peak end" in caplog.text and "absent.fa.fai does not exist" in caplog.text


def test_a_peak_past_the_fasta_chromosome_or_off_it_is_an_error(tmp_path):
    fasta = write_fasta(tmp_path / "genome.fa", {"chr2": 100, "chr10": 10**5})
    frame = imputation_table(n=12)
    with pytest.raises(InputError, match="past its length 100"):
        read_chrom_sizes(fasta, frame, "t.parquet")
    fasta = write_fasta(tmp_path / "other.fa", {"chr2": 10**5})
    with pytest.raises(InputError, match="'chr10' is not in the FASTA index"):
        read_chrom_sizes(fasta, frame, "t.parquet")


def test_overlapping_peaks_are_cut_into_pieces_holding_the_mean_of_their_peaks():
    # [0,100) = 1, [50,150) = 3, [60,70) = 8 (nested), [150,200) = 5 (book-ended), unsorted
    starts, ends = np.array([150, 50, 0, 60]), np.array([200, 150, 100, 70])
    values = np.array([5.0, 3.0, 1.0, 8.0])
    pieces = disjoint_pieces(starts, ends, values)
    assert pieces.starts.tolist() == [0, 50, 60, 70, 100, 150]
    assert pieces.ends.tolist() == [50, 60, 70, 100, 150, 200]
    assert pieces.values.tolist() == [1.0, 2.0, 4.0, 2.0, 3.0, 5.0]


def test_pieces_match_a_base_by_base_mean_on_random_overlapping_peaks():
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        starts = rng.integers(0, 300, n)
        ends = starts + rng.integers(1, 80, n)
        values = rng.random(n) * 1000
        pieces = disjoint_pieces(starts, ends, values)
        total, count = np.zeros(400), np.zeros(400)
        for s, e, v in zip(starts, ends, values, strict=True):
            total[s:e] += v
            count[s:e] += 1
        got = np.full(400, np.nan)
        for s, e, v in zip(pieces.starts, pieces.ends, pieces.values, strict=True):
            got[s:e] = v
        expected = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert np.all(pieces.starts[1:] >= pieces.ends[:-1])  # sorted and disjoint


def test_overlapping_and_unsorted_input_still_gives_a_valid_file(tmp_path):
    frame = pd.DataFrame(
        {
            "chrom": ["chr1", "chr1", "chr1", "chr2"],
            "start": [500, 100, 150, 0],
            "end": [600, 200, 300, 50],
            f"observed_raw.{FEATURE}": [7.0, 2.0, 4.0, 9.0],
            f"imputed_raw.{FEATURE}": [1.0, 1.0, 1.0, 1.0],
        }
    )
    path = write_tracks(frame, tmp_path / "ct", {"chr1": 1000, "chr2": 100})["observed"]
    with pyBigWig.open(str(path)) as handle:
        assert handle.intervals("chr1") == ((100, 150, 2.0), (150, 200, 3.0), (200, 300, 4.0),
                                            (500, 600, 7.0))  # fmt: skip
        assert handle.intervals("chr2") == ((0, 50, 9.0),)
        assert np.isnan(handle.values("chr1", 300, 301)[0])  # between peaks: no value


def test_a_table_without_intervals_gives_observed_and_imputed_only(tmp_path, caplog):
    frame = imputation_table(n=10, intervals=False)
    with caplog.at_level(logging.WARNING, logger="getdiff.outputs.tracks"):
        paths = write_tracks(frame, tmp_path / "ct", {"chr2": 10**6, "chr10": 10**6})
    assert set(paths) == {"observed", "imputed"}
    assert not (tmp_path / "ct.lower.bw").exists()
    assert "no lower, upper tracks" in caplog.text


def test_bedgraph_holds_the_same_pieces_under_a_track_line(tmp_path):
    frame = imputation_table(n=20)
    paths = write_tracks(
        frame, tmp_path / "ct", {"chr2": 10**6, "chr10": 10**6}, bedgraph=True, label="liver"
    )
    lines = paths["upper.bedGraph"].read_text().splitlines()
    assert lines[0].startswith('track type=bedGraph name="liver accessibility upper"')
    table = pd.read_csv(paths["upper.bedGraph"], sep="\t", skiprows=1, header=None)
    with pyBigWig.open(str(paths["upper"])) as handle:
        expected = [(c, *iv) for c in ("chr2", "chr10") for iv in handle.intervals(c)]
    assert [tuple(row) for row in table.itertuples(index=False)] == [
        (c, s, e, pytest.approx(v, rel=1e-7)) for c, s, e, v in expected
    ]


def test_cli_writes_the_four_tracks_from_an_imputation_file(tmp_path):
    frame = imputation_table(n=25)
    source = write_parquet(tmp_path / "demo_liver.parquet", frame)
    fasta = write_fasta(tmp_path / "genome.fa", {"chr2": 10**5, "chr10": 10**5})
    prefix = tmp_path / "tracks" / "demo_liver"
    args = ["tracks", "--imputation", str(source), "--prefix", str(prefix)]
    assert main([*args, "--genome-fasta", str(fasta)]) == 0
    for track in TRACKS:
        assert (tmp_path / "tracks" / f"demo_liver.{track}.bw").is_file()
    assert sorted(p.name for p in (tmp_path / "tracks").iterdir()) == sorted(
        f"demo_liver.{t}.bw" for t in TRACKS
    )  # no temporary file left
    read = read_imputation(source)
    assert len(read) == len(frame)


def test_cli_error_for_a_file_that_is_not_an_imputation_is_one_line(tmp_path, capsys):
    bad = write_parquet(tmp_path / "x.parquet", pd.DataFrame({"a": [1]}))
    assert main(["tracks", "--imputation", str(bad), "--prefix", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("getdiff tracks: error: ") and "no column 'chrom'" in err[-1]
