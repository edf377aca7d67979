"""Region x feature tensors on disk: normalisation, window layout, Parquet writing and loading.

The contract (columns, metadata keys, units) is written once in ``docs/DATA_CONTRACT.md``. In short:

- ``regions.parquet``: one row per kept peak in genome order: ``chrom, start, end, name,
  region_id`` then one float32 column per feature (the cluster names, then ``accessibility``).
- ``windows_{split}.parquet``: the rows of the split's chromosomes (those holding at least one
  window) once, in genome order: ``chrom, start, end, name, region_id, features`` where
  ``features`` is a FixedSizeList<float32>[F]. The windows are in the metadata: window ``k`` is
  rows ``window_starts[k] : window_starts[k] + window_size``, of which positions
  ``>= score_from[k]`` are scored (the others were already scored by the previous window).
- File-level metadata: JSON under the key ``getdiff`` (feature_names, cell_type, genome, split,
  window_size, scaling, getdiff_version, ...).

Normalisation (as GET): motif column c -> ``score / max_c`` over the cell type's kept peaks,
clipped to [0, 1] (0 when the cluster has no hit). Accessibility -> ``aCPM = log10(counts /
total * 1e5 + 1)`` divided by its max; the constant 1.0 when the cell type has no counts.
:func:`to_raw_units` inverts both.

Loading: :func:`load_window_set` returns a :class:`WindowSet` whose ``windows(index)`` gathers
(n, window_size, F) float32 without Python loops; :func:`load_windows` gathers all windows at
once (memory: n_windows x window_size x F x 4 bytes, e.g. 600 train windows ~ 0.6 GB at 900 x 283).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from getdiff.errors import InputError
from getdiff.paths import MANIFEST_FILE as MANIFEST
from getdiff.paths import SPLITS, windows_file

if TYPE_CHECKING:
    from scipy import sparse

log = logging.getLogger(__name__)

METADATA_KEY = b"getdiff"
ACCESSIBILITY = "accessibility"


def windows_path(prepared_dir: str | Path, cell_type: str, split: str) -> Path:
    """``{prepared_dir}/{cell_type}/windows_{split}.parquet``."""
    return Path(prepared_dir) / cell_type / windows_file(split)


CPM_SCALE = 1e5  # GET's "CPM" uses 1e5, not 1e6
# The coordinate columns every prepared file starts with. Every field is non-null (prepare
# writes no missing value), so the Parquet writer skips definition levels: a fifth of its time.
_COORDINATE_FIELDS = [
    pa.field("chrom", pa.string(), nullable=False),
    pa.field("start", pa.int64(), nullable=False),
    pa.field("end", pa.int64(), nullable=False),
    pa.field("name", pa.string(), nullable=False),
    pa.field("region_id", pa.int64(), nullable=False),
]
COORDINATE_COLUMNS = [field_.name for field_ in _COORDINATE_FIELDS]
REGIONS_FORMAT = "getdiff.regions/1"
WINDOWS_FORMAT = "getdiff.windows/1"
_REQUIRED = {
    REGIONS_FORMAT: ("feature_names", "cell_type", "genome", "scaling", "getdiff_version"),
    WINDOWS_FORMAT: (
        "feature_names",
        "cell_type",
        "genome",
        "split",
        "window_size",
        "scaling",
        "getdiff_version",
        "n_windows",
        "window_starts",
        "score_from",
    ),
}


# --------------------------------------------------------------------------- normalisation


def normalise_motifs(scores: sparse.sparray | np.ndarray) -> tuple[sparse.csr_array, list[float]]:
    """Max-scale each column of (n, C) scores (>= 0) to [0, 1] -> (float32 CSR, per-column max).

    A column without any non-zero score keeps max 0 and values 0.
    """
    from scipy import sparse  # 0.1 s to import: loaded where first needed

    values = sparse.csr_array(scores, dtype=np.float64)
    maxima = values.max(axis=0).toarray() if values.shape[0] else np.zeros(values.shape[1])
    safe = np.where(maxima > 0, maxima, 1.0)
    values.data = np.clip(values.data / safe[values.indices], 0, 1)
    values.eliminate_zeros()
    return values.astype(np.float32), [float(m) for m in maxima]


@dataclass(frozen=True)
class FeatureMatrix:
    """(n, F) float32 features of a cell type's regions, held as the sparse motif columns plus the
    dense accessibility column (the last feature): at 100k peaks 7 MB instead of 113 MB."""

    motifs: sparse.csr_array  # (n, F - 1) float32, normalised
    accessibility: np.ndarray  # (n,) float32, normalised

    @property
    def shape(self) -> tuple[int, int]:
        return (self.motifs.shape[0], self.motifs.shape[1] + 1)

    def dense(
        self, rows: slice | np.ndarray, by_feature: bool = False, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The selected rows as a C-ordered (k, F) float32 array, or (F, k) when
        ``by_feature`` (each feature's values contiguous). ``out``: a flat float32 buffer of at
        least k * F values to fill (a view of it is returned) instead of new memory."""
        part = self.motifs[rows].tocoo()
        row, column = part.coords
        shape = (self.shape[1], part.shape[0]) if by_feature else (part.shape[0], self.shape[1])
        if out is None:
            block = np.zeros(shape, np.float32)
        else:
            block = out[: shape[0] * shape[1]].reshape(shape)
            block.fill(0)
        if by_feature:
            block[column, row] = part.data
            block[-1] = self.accessibility[rows]
        else:
            block[row, column] = part.data
            block[:, -1] = self.accessibility[rows]
        return block


def normalise_accessibility(counts: np.ndarray | None, n: int) -> tuple[np.ndarray, dict]:
    """Counts (n,) -> [0, 1] float32 via log10-CPM / max; None -> the constant 1.0."""
    if counts is None:
        return np.ones(n, np.float32), {"constant": True, "value": 1.0}
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    acpm = np.log10(counts / total * CPM_SCALE + 1) if total > 0 else np.zeros_like(counts)
    top = float(acpm.max()) if len(acpm) else 0.0
    values = (acpm / top if top > 0 else acpm).astype(np.float32)
    scaling = {
        "constant": False,
        "total_counts": total,
        "max_log10_cpm": top,
        "cpm_scale": CPM_SCALE,
    }
    return values, scaling


def to_raw_units(values: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Invert the normalisation of (..., F) values: motif * max, accessibility -> counts (float64).

    Values outside [0, 1] (e.g. model predictions) are mapped through the same formulas, unclipped.
    """
    scaling = meta["scaling"]
    motif_max = np.asarray(scaling["motif_max"], dtype=np.float64)
    n_features = len(motif_max) + 1
    values = np.asarray(values, dtype=np.float64)
    if values.shape[-1] != n_features:
        raise ValueError(f"expected {n_features} features in the last axis, got {values.shape[-1]}")
    raw = np.empty_like(values)
    raw[..., :-1] = values[..., :-1] * motif_max
    acc = scaling[ACCESSIBILITY]
    if acc["constant"]:
        raw[..., -1] = acc["value"]
    else:
        acpm = values[..., -1] * acc["max_log10_cpm"]
        raw[..., -1] = (10.0**acpm - 1) * acc["total_counts"] / acc["cpm_scale"]
    return raw


# --------------------------------------------------------------------------- window layout


@dataclass
class WindowLayout:
    """Windows over the rows of one split: row of each window's first region, first scored slot."""

    rows: np.ndarray  # (n_rows,) indices into the region table of the rows the split file holds
    starts: np.ndarray  # (n_windows,) int64, indices into ``rows``
    score_from: np.ndarray  # (n_windows,) int64 in [0, window_size)
    skipped_chromosomes: dict[str, int] = field(default_factory=dict)  # chrom -> peak count
    skipped_max_span: int = 0
    over_max_span: int = 0  # evaluation tiles kept although they span more than max_span


def tile_chromosome(n: int, window_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation tiles over n >= window_size rows: (starts, score_from), every row scored once.

    Non-overlapping tiles from row 0; the last tile is aligned to the last row and its first
    ``score_from`` rows, shared with the previous tile, are not scored.
    """
    k = -(-n // window_size)
    starts = np.arange(k, dtype=np.int64) * window_size
    starts[-1] = n - window_size
    score_from = np.zeros(k, dtype=np.int64)
    score_from[-1] = (k - 1) * window_size - starts[-1]
    return starts, score_from


def train_starts(
    n: int, window_size: int, stride: int, jitter: int, rng: np.random.Generator
) -> np.ndarray:
    """Training window starts over n >= window_size rows: stride + jitter in [-jitter, jitter)."""
    base = np.arange(0, n - window_size + 1, stride, dtype=np.int64)
    if jitter > 0:
        base = base + rng.integers(-jitter, jitter, size=len(base))
    return np.unique(np.clip(base, 0, n - window_size))


def chromosome_seed(seed: int, chrom: str) -> np.random.Generator:
    """A generator depending only on (seed, chromosome name), so layouts don't shift together."""
    return np.random.default_rng([seed, zlib.crc32(chrom.encode())])


def layout_windows(
    regions: pd.DataFrame,
    chromosomes: Sequence[str],
    *,
    training: bool,
    window_size: int,
    max_span: int,
    stride: int,
    jitter: int,
    seed: int,
) -> WindowLayout:
    """Windows over the regions (genome-ordered table) of ``chromosomes``; never cross chromosomes.

    Training: strided, jittered, all slots scored, windows spanning > max_span bp skipped.
    Evaluation: tiles (see :func:`tile_chromosome`) covering every row.
    """
    # Chromosomes as integer codes: comparing 100k names as Python strings took 15 ms a split.
    chrom, names = pd.factorize(regions["chrom"])
    start = regions["start"].to_numpy(np.int64)
    end = regions["end"].to_numpy(np.int64)
    wanted = np.flatnonzero(np.isin(np.asarray(names, dtype=object), list(chromosomes)))
    selected = np.flatnonzero(np.isin(chrom, wanted))
    rows: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    score_from: list[np.ndarray] = []
    layout = WindowLayout(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    offset = 0
    # Regions are in genome order, so each chromosome is one contiguous run of rows.
    if len(selected):
        cuts = np.flatnonzero(chrom[selected][1:] != chrom[selected][:-1]) + 1
        runs = np.split(selected, cuts)
    else:
        runs = []
    for run in runs:
        name = str(names[chrom[run[0]]])
        n = len(run)
        if n < window_size:
            layout.skipped_chromosomes[name] = n
            continue
        if training:
            s = train_starts(n, window_size, stride, jitter, chromosome_seed(seed, name))
            span = end[run[s + window_size - 1]] - start[run[s]]
            too_long = span > max_span
            layout.skipped_max_span += int(too_long.sum())
            s = s[~too_long]
            f = np.zeros(len(s), np.int64)
        else:
            s, f = tile_chromosome(n, window_size)
            span = end[run[s + window_size - 1]] - start[run[s]]
            layout.over_max_span += int((span > max_span).sum())
        rows.append(run)
        starts.append(s + offset)
        score_from.append(f)
        offset += n
    if rows:
        layout.rows = np.concatenate(rows)
        layout.starts = np.concatenate(starts).astype(np.int64)
        layout.score_from = np.concatenate(score_from).astype(np.int64)
    return layout


# --------------------------------------------------------------------------- writing


def _schema_metadata(meta: dict[str, Any]) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps(meta, allow_nan=False).encode()}


# Rows per Parquet row group: a writer holds one group's dense features (9 MB per 8k rows at
# F = 283). regions.parquet's 283 columns take a fifth less time in 16k-row groups; the window
# files gain nothing from larger groups and their writer holds more per row (32k rows cost
# +170 MiB with two writers).
REGION_ROW_GROUP = 16_384
WINDOW_ROW_GROUP = 8_192


def _dense_rows(
    features: FeatureMatrix | np.ndarray,
    rows: slice | np.ndarray,
    by_feature: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    if isinstance(features, FeatureMatrix):
        return features.dense(rows, by_feature, out)
    block = np.asarray(features[rows], dtype=np.float32)
    return np.ascontiguousarray(block.T if by_feature else block)


def _coordinate_table(regions: pd.DataFrame) -> pa.Table:
    """The coordinate columns in Arrow, converted once per file: per row group, through Python
    strings, they took a fifth of the write."""
    columns = []
    for field_ in _COORDINATE_FIELDS:
        values = regions[field_.name]
        if pa.types.is_string(field_.type) and not isinstance(values.dtype, pd.StringDtype):
            values = values.astype(str)
        columns.append(pa.array(values).cast(field_.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(_COORDINATE_FIELDS))


def _write_groups(
    path: str | Path, schema: pa.Schema, tables: Iterator[pa.Table], **options: Any
) -> None:
    """Write ``tables`` as the row groups of one Parquet file (LZ4: 5 MB more than zstd at 100k
    regions, a third faster to write)."""
    options = {"compression": "lz4", "use_dictionary": False, **options}
    with pq.ParquetWriter(path, schema, **options) as writer:
        for table in tables:
            writer.write_table(table)


def _region_tables(
    regions: pd.DataFrame, features: FeatureMatrix | np.ndarray, schema: pa.Schema
) -> Iterator[pa.Table]:
    """regions.parquet's row groups: coordinates, then one column per feature.

    Each group's features are filled into one buffer, reused once the writer has encoded the
    group before: fresh pages cost more than filling them (a page fault each)."""
    coordinates = _coordinate_table(regions)
    buffer = np.empty(REGION_ROW_GROUP * features.shape[1], np.float32)
    for first in range(0, max(len(regions), 1), REGION_ROW_GROUP):
        rows = slice(first, first + REGION_ROW_GROUP)
        columns = _dense_rows(features, rows, by_feature=True, out=buffer)
        arrays = coordinates.slice(first, REGION_ROW_GROUP).columns
        yield pa.table(arrays + list(columns), schema=schema)


def _window_tables(
    regions: pd.DataFrame, features: FeatureMatrix | np.ndarray, rows: np.ndarray, schema: pa.Schema
) -> Iterator[pa.Table]:
    """A window file's row groups: the selected rows' coordinates, then their features list
    (filled into one reused buffer, as in :func:`_region_tables`)."""
    features_type = schema.field("features").type
    coordinates = _coordinate_table(regions)
    buffer = np.empty(WINDOW_ROW_GROUP * features_type.list_size, np.float32)
    for first in range(0, max(len(rows), 1), WINDOW_ROW_GROUP):
        part = rows[first : first + WINDOW_ROW_GROUP]
        flat = pa.array(_dense_rows(features, part, out=buffer).reshape(-1))
        arrays = coordinates.take(pa.array(part, pa.int64())).columns
        arrays.append(pa.FixedSizeListArray.from_arrays(flat, type=features_type))
        yield pa.table(arrays, schema=schema)


def write_region_table(
    path: str | Path,
    regions: pd.DataFrame,
    features: FeatureMatrix | np.ndarray,
    meta: dict[str, Any],
) -> None:
    """Write regions.parquet: coordinates, then one float32 column per feature name."""
    schema = pa.schema(
        _COORDINATE_FIELDS
        + [pa.field(name, pa.float32(), nullable=False) for name in meta["feature_names"]],
        metadata=_schema_metadata({"format": REGIONS_FORMAT, **meta}),
    )
    tables = _region_tables(regions, features, schema)
    # Statistics on the coordinates let a reader skip row groups by region; on the feature
    # columns they would cost a tenth of the write and serve no query.
    _write_groups(path, schema, tables, write_statistics=COORDINATE_COLUMNS)


def _features_type(meta: dict[str, Any]) -> pa.DataType:
    item = pa.field("item", pa.float32(), nullable=False)
    return pa.list_(item, len(meta["feature_names"]))


def write_window_set(
    path: str | Path,
    regions: pd.DataFrame,
    features: FeatureMatrix | np.ndarray,
    starts: np.ndarray,
    score_from: np.ndarray,
    meta: dict[str, Any],
    rows: np.ndarray | None = None,
) -> None:
    """Write windows_{split}.parquet: the rows once + the window layout in the metadata.

    ``rows`` selects the split's rows of ``regions`` and ``features`` (default: all of them).
    """
    rows = np.arange(len(regions)) if rows is None else np.asarray(rows)
    full = {
        "format": WINDOWS_FORMAT,
        **meta,
        "n_windows": len(starts),
        "n_regions": len(rows),
        "window_starts": [int(s) for s in starts],
        "score_from": [int(s) for s in score_from],
    }
    schema = pa.schema(
        [*_COORDINATE_FIELDS, pa.field("features", _features_type(meta), nullable=False)],
        metadata=_schema_metadata(full),
    )
    # Statistics of the features list would take as long as the rest of the write; none reads them.
    # The list's 283 values per row go to the writer 64k at a time (1k by default: 10% slower).
    tables = _window_tables(regions, features, rows, schema)
    _write_groups(path, schema, tables, write_statistics=False, write_batch_size=1 << 16)


# --------------------------------------------------------------------------- loading


def read_metadata(path: str | Path, expected_format: str | None = None) -> dict[str, Any]:
    """The ``getdiff`` metadata of a Parquet file written by ``getdiff prepare`` (validated)."""
    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(path, f"not a readable Parquet file: {err}") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise InputError(path, "no 'getdiff' metadata: expected a file written by getdiff prepare")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(path, f"'getdiff' metadata is not valid JSON: {err}") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt not in _REQUIRED or (expected_format is not None and fmt != expected_format):
        raise InputError(
            path, f"metadata format is {fmt!r}; expected {expected_format or list(_REQUIRED)}"
        )
    missing = [key for key in _REQUIRED[fmt] if key not in meta]
    if missing:
        raise InputError(path, f"metadata lacks {missing}")
    if "prepare_id" in meta:
        check_in_manifest(path, meta["prepare_id"])
    names = meta["feature_names"]
    motif_max = meta["scaling"].get("motif_max", [])
    if not names or len(motif_max) != len(names) - 1:
        raise InputError(
            path,
            f"metadata has {len(names)} feature names and {len(motif_max)} motif maxima; "
            "expected one maximum per motif feature",
        )
    return meta


MANIFEST_FORMAT = "getdiff.prepared/1"


def manifest(prepare_id: str, files: dict[str, Path], info: dict[str, Any]) -> dict[str, Any]:
    """The manifest of one prepared folder: its run id, each file's final name and size, info.

    ``files`` maps final names to the (temporary) paths holding their bytes now.
    """
    sizes = {name: path.stat().st_size for name, path in files.items()}
    return {"format": MANIFEST_FORMAT, "prepare_id": prepare_id, "files": sizes, **info}


def check_in_manifest(path: str | Path, prepare_id: str) -> None:
    """``path`` must be the file that ``manifest.json`` beside it lists, from the same run."""
    path = Path(path)
    listing = path.parent / MANIFEST
    rerun = "rerun getdiff prepare into this folder"
    try:
        recorded = json.loads(listing.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            path, f"comes from a prepare run that did not finish (no {MANIFEST} beside it); {rerun}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(listing, f"not a valid manifest ({err}); {rerun}") from None
    files = recorded.get("files") if isinstance(recorded, dict) else None
    if (
        not isinstance(files, dict)
        or recorded.get("prepare_id") != prepare_id
        or files.get(path.name) != path.stat().st_size
    ):
        raise InputError(
            path,
            f"is not the file {MANIFEST} lists (another prepare run wrote one of them: a mixed "
            f"folder); {rerun}",
        )


@dataclass
class WindowSet:
    """One split of one cell type: the rows once, plus the windows over them.

    ``features`` (n_regions, F) float32, ``regions`` coordinates (chrom, start, end, name,
    region_id), ``starts`` (n_windows,) row of each window's first region, ``scored``
    (n_windows, window_size) bool (False = already scored by the previous window), ``meta``.
    """

    features: np.ndarray
    regions: pd.DataFrame
    starts: np.ndarray
    scored: np.ndarray
    meta: dict[str, Any]

    @property
    def window_size(self) -> int:
        return int(self.meta["window_size"])

    def __len__(self) -> int:
        return len(self.starts)

    def rows(self, index: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """(n, window_size) int64 row indices of the selected windows (all when index is None)."""
        starts = self.starts if index is None else self.starts[np.asarray(index)]
        return starts[:, None] + np.arange(self.window_size, dtype=np.int64)

    def windows(self, index: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """(n, window_size, F) float32 features of the selected windows, by one gather."""
        return self.features[self.rows(index)]


def load_window_set(path: str | Path) -> WindowSet:
    """Read a ``windows_{split}.parquet`` file; bad metadata or width -> InputError naming it."""
    meta = read_metadata(path, WINDOWS_FORMAT)
    table = pq.read_table(path)
    n_features = len(meta["feature_names"])
    missing = [c for c in [*COORDINATE_COLUMNS, "features"] if c not in table.column_names]
    if missing:
        raise InputError(path, f"missing columns {missing}")
    column = table.column("features").combine_chunks()
    if not pa.types.is_fixed_size_list(column.type) or column.type.list_size != n_features:
        raise InputError(
            path,
            f"column 'features' is {column.type}; expected fixed_size_list<float>[{n_features}] "
            "(one value per feature name)",
        )
    if column.null_count:
        raise InputError(path, "column 'features' has missing values")
    features = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    features = features.reshape(len(table), n_features)
    regions = table.select(COORDINATE_COLUMNS).to_pandas()
    window_size = int(meta["window_size"])
    starts = np.asarray(meta["window_starts"], dtype=np.int64)
    score_from = np.asarray(meta["score_from"], dtype=np.int64)
    if len(starts) != meta["n_windows"] or len(score_from) != len(starts):
        raise InputError(path, "metadata window lists disagree with n_windows")
    if len(starts) and (starts.min() < 0 or starts.max() + window_size > len(table)):
        raise InputError(
            path, f"a window runs past the {len(table)} rows (window_size {window_size})"
        )
    scored = np.arange(window_size)[None, :] >= score_from[:, None]
    return WindowSet(features, regions, starts, scored, meta)


def load_windows(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """All windows of a split as float32 (n_windows, window_size, F), and the metadata."""
    window_set = load_window_set(path)
    return window_set.windows(), window_set.meta


def load_regions(path: str | Path) -> pd.DataFrame:
    """The region table (coordinates + a column per feature); metadata in ``.attrs['getdiff']``."""
    meta = read_metadata(path, REGIONS_FORMAT)
    table = pq.read_table(path)
    expected = [*COORDINATE_COLUMNS, *meta["feature_names"]]
    missing = [c for c in expected if c not in table.column_names]
    if missing:
        raise InputError(path, f"missing columns {missing[:5]} (of {len(missing)})")
    frame = table.select(expected).to_pandas()
    frame.attrs["getdiff"] = meta
    return frame


def region_midpoints(regions: pd.DataFrame) -> np.ndarray:
    """(n,) float64 genomic midpoint (bp) of each region: the positions the model attends over."""
    return (regions["start"].to_numpy(np.float64) + regions["end"].to_numpy(np.float64)) / 2


def region_features(regions: pd.DataFrame) -> np.ndarray:
    """(n_regions, F) float32 feature matrix of a table from :func:`load_regions`."""
    names = regions.attrs["getdiff"]["feature_names"]
    return regions[names].to_numpy(np.float32)


__all__ = [
    "ACCESSIBILITY",
    "MANIFEST",
    "METADATA_KEY",
    "SPLITS",
    "WindowLayout",
    "FeatureMatrix",
    "WindowSet",
    "layout_windows",
    "load_regions",
    "load_window_set",
    "load_windows",
    "normalise_accessibility",
    "normalise_motifs",
    "read_metadata",
    "region_features",
    "region_midpoints",
    "tile_chromosome",
    "to_raw_units",
    "train_starts",
    "write_region_table",
    "windows_file",
    "windows_path",
    "write_window_set",
]
