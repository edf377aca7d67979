"""Locus view: observed and imputed accessibility of each cell type along one genome region.

    getdiff plot-locus --imputation a.parquet b.parquet --region chr11:1,000,000-1,200,000 \\
        --output locus.png
    getdiff plot-locus --imputation ... --default-chromosome chr11 --outdir loci/

One panel per imputation table (cell type), sharing the x axis (bp): the observed value as grey
bars over each peak's span, the predictive interval as a coloured band over it, and the imputed
value as a coloured bar edge, in the table's raw units (read counts for accessibility). Peaks
marked ``missing`` (``impute.missing_regions``: hidden from the model, never used as context)
are hatched in red; the title names the split of the shown peaks (validation and test
chromosomes are held out of training; every imputed value was predicted with its region masked).

A region is ``chrom:start-end`` (0-based, half-open, as BED; commas allowed). One-line errors
(exit 2): a region not of that form, an empty one (start >= end), a chromosome in no table (the
known ones listed), a region overlapping no peak of any table (the nearest peaks named).

Default locus (``--default-chromosome``; the report draws it on the first test chromosome): the
:data:`DEFAULT_PEAKS` consecutive peaks of the first table centred on its peak of largest
observed value on that chromosome: the strongest signal with the context around it. A
chromosome in no table falls back to the first table's first chromosome (logged). With
``--outdir`` each region goes to ``<chrom>_<start>-<end>.png``.

With ``--motif-effects motif_effects.tsv`` (getdiff interpret, same model group) each peak is
labelled with the motif present in it whose cis effect in that cell type is largest in absolute
value, and that effect (log10(CPM + 1)); an imputation without motif columns is an error.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from getdiff.errors import GetdiffError, InputError
from getdiff.genomics.intervals import natural_chrom_key
from getdiff.io import atomic_path, output_set
from getdiff.tensors import ACCESSIBILITY

log = logging.getLogger(__name__)

DEFAULT_PEAKS = 40
REGION_PATTERN = re.compile(r"^\s*([^:\s]+):([\d,]+)-([\d,]+)\s*$")
COLUMNS = ("chrom", "start", "end", "split", "missing")


@dataclass(frozen=True)
class Region:
    chrom: str
    start: int
    end: int

    def __str__(self) -> str:
        return f"{self.chrom}:{self.start}-{self.end}"

    @property
    def file_name(self) -> str:
        return f"{self.chrom}_{self.start}-{self.end}.png"


def parse_region(text: str) -> Region:
    """``chrom:start-end`` (commas allowed) -> Region; malformed or empty is a GetdiffError."""
    match = REGION_PATTERN.match(text)
    if not match:
        raise GetdiffError(
            f"region {text!r}: expected chrom:start-end (0-based, half-open), e.g. chr11:1000-5000"
        )
    chrom, start, end = match.group(1), *(int(g.replace(",", "")) for g in match.groups()[1:])
    if start >= end:
        raise GetdiffError(f"region {text!r} is empty: start {start} >= end {end}")
    return Region(chrom, start, end)


def read_locus_table(path: str | Path, feature: str = ACCESSIBILITY) -> pd.DataFrame:
    """Coordinates, split, missing and the raw observed/imputed/interval columns of ``feature``,
    sorted by chromosome and start; ``attrs['cell_type']`` from the metadata or the file name."""
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable Parquet file ({err})") from None
    raw = [f"{p}_raw.{feature}" for p in ("observed", "imputed", "imputed_lower", "imputed_upper")]
    absent = [c for c in (*COLUMNS, raw[0], raw[1]) if c not in schema.names]
    if absent:
        raise InputError(path, f"no column {absent[0]!r}; expected a getdiff impute table")
    columns = [*COLUMNS, *[c for c in raw if c in schema.names]]
    table = pq.read_table(path, columns=columns).to_pandas()
    table = table.sort_values(["chrom", "start", "end"], kind="stable").reset_index(drop=True)
    table["chrom"] = table["chrom"].astype(str)
    meta = schema.metadata or {}
    cell_type = Path(path).stem
    if b"getdiff" in meta:
        cell_type = json.loads(meta[b"getdiff"]).get("cell_type", cell_type)
    table.attrs["cell_type"] = cell_type
    table.attrs["path"] = str(path)
    return table


def check_region(region: Region, tables: list[pd.DataFrame]) -> None:
    """Refuse a region on no table's chromosome or overlapping no peak of any table."""
    chroms = sorted({c for t in tables for c in t["chrom"].unique()}, key=natural_chrom_key)
    if region.chrom not in chroms:
        shown = ", ".join(chroms[:8]) + (", ..." if len(chroms) > 8 else "")
        raise GetdiffError(
            f"region {region}: unknown chromosome {region.chrom!r}; the imputations hold {shown}"
        )
    nearest: list[tuple[int, str]] = []
    for table in tables:
        on = table[table["chrom"] == region.chrom]
        inside = (on["start"] < region.end) & (on["end"] > region.start)
        if inside.any():
            return
        if on.empty:
            continue
        # bases between the region and each peak (0: adjacent)
        gap = np.maximum(on["start"] - region.end, region.start - on["end"])
        best = int(np.argmin(gap.to_numpy()))
        nearest.append(
            (int(gap.iloc[best]), f"{region.chrom}:{on['start'].iloc[best]}-{on['end'].iloc[best]}")
        )
    gap, peak = min(nearest)
    raise GetdiffError(
        f"region {region} lies outside every imputed peak; the nearest is {peak} ({gap} bp away)"
    )


def default_locus(
    table: pd.DataFrame, chromosome: str, n_peaks: int = DEFAULT_PEAKS, feature: str = ACCESSIBILITY
) -> Region:
    """The ``n_peaks`` consecutive peaks of ``table`` on ``chromosome`` centred on its peak of
    largest observed value (see the module docstring)."""
    if chromosome not in set(table["chrom"]):
        fallback = table["chrom"].iloc[0]
        log.warning(
            "%s: no imputed peak on %s: the default locus is on %s",
            table.attrs.get("path", "imputation"),
            chromosome,
            fallback,
        )
        chromosome = fallback
    on = table[table["chrom"] == chromosome].reset_index(drop=True)
    top = int(np.argmax(on[f"observed_raw.{feature}"].to_numpy()))
    first = max(0, min(top - n_peaks // 2, len(on) - n_peaks))
    shown = on.iloc[first : first + n_peaks]
    return Region(chromosome, int(shown["start"].min()), int(shown["end"].max()))


def top_motifs(table: pd.DataFrame, path: str | Path, effects: pd.DataFrame) -> pd.Series:
    """Per row of a locus table, the label of the motif present in the peak with the largest
    absolute cis effect in the table's cell type (getdiff interpret), e.g. ``GATA1 +0.012``."""
    own = effects[
        (effects["cell_type"] == table.attrs["cell_type"]) & effects["cis_effect"].notna()
    ]
    if own.empty:  # a cell type imputed by the group's model but not interpreted (not in it)
        log.info("%s: no motif effects of %s: peaks not labelled", path, table.attrs["cell_type"])
        return pd.Series("", index=table.index)
    columns = [f"observed.{m}" for m in own["motif"]]
    present = pq.read_schema(path).names
    columns = [c for c in columns if c in present]
    if not columns:
        raise InputError(
            path,
            f"has no observed motif columns of the motif effects for {table.attrs['cell_type']!r}; "
            "expected an accessibility-task imputation of the interpreted model group",
        )
    motifs = pq.read_table(path, columns=[*COLUMNS, *columns]).to_pandas()
    motifs = motifs.sort_values(["chrom", "start", "end"], kind="stable").reset_index(drop=True)
    weight = own.set_index("motif")["cis_effect"]
    names = [c.removeprefix("observed.") for c in columns]
    size = np.where(motifs[columns].to_numpy() > 0, np.abs(weight[names].to_numpy()), -1.0)
    best = size.argmax(axis=1)
    labels = [f"{names[j]} {weight[names[j]]:+.3f}" for j in best]
    return pd.Series(np.where(size.max(axis=1) >= 0, labels, ""), index=table.index)


def plot_locus(
    region: Region,
    tables: list[pd.DataFrame],
    path: str | Path,
    feature: str = ACCESSIBILITY,
    labels: list[pd.Series] | None = None,
) -> None:
    """Write the locus figure of ``region`` (checked first) to ``path`` (PNG); ``labels`` (one
    per table, from :func:`top_motifs`) are written above each peak."""
    check_region(region, tables)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(
        len(tables), 1, figsize=(10, 1.2 + 1.9 * len(tables)), sharex=True, squeeze=False
    )
    for i, (ax, table) in enumerate(zip(axes[:, 0], tables, strict=True)):
        colour = colours[i % len(colours)]
        on = table[
            (table["chrom"] == region.chrom)
            & (table["start"] < region.end)
            & (table["end"] > region.start)
        ]
        left, width = on["start"].to_numpy(), (on["end"] - on["start"]).to_numpy()
        observed = on[f"observed_raw.{feature}"].to_numpy()
        imputed = on[f"imputed_raw.{feature}"].to_numpy()
        ax.bar(left, observed, width, align="edge", color="0.6", label="observed")
        lower, upper = f"imputed_lower_raw.{feature}", f"imputed_upper_raw.{feature}"
        if lower in on and upper in on:
            low = on[lower].to_numpy()
            ax.bar(
                left,
                on[upper].to_numpy() - low,
                width,
                bottom=low,
                align="edge",
                color=colour,
                alpha=0.25,
                label="interval",
            )
        ax.hlines(imputed, left, left + width, colors=[colour], linewidth=2.2, label="imputed")
        missing = on["missing"].to_numpy(bool)
        if missing.any():
            top = max(float(np.nanmax(observed)), float(np.nanmax(imputed)))
            ax.bar(
                left[missing],
                top,
                width[missing],
                align="edge",
                fill=False,
                hatch="///",
                edgecolor="tab:red",
                linewidth=0,
                label="missing (masked)",
            )
        if labels is not None:
            top = float(np.nanmax(np.r_[observed, imputed, 0.0]))
            for x, text in zip(left + width / 2, labels[i].loc[on.index], strict=True):
                ax.text(x, top * 1.02, text, rotation=90, fontsize=5, ha="center", va="bottom")
            ax.set_ylim(top=top * 1.6 if top > 0 else 1.0)
        splits = ", ".join(sorted(set(on["split"].astype(str))))
        ax.set_title(
            f"{table.attrs['cell_type']}  ({len(on)} peaks; split: {splits})",
            fontsize=9,
            loc="left",
        )
        ax.set_ylabel(f"{feature} (raw)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
    if labels is not None:
        note = "labels: the peak's motif of largest |cis effect| (getdiff interpret, log10 CPM)"
        fig.text(0.01, 0.005, note, fontsize=6)
    handles = [Patch(color="0.6", label="observed"), Patch(color=colours[0], label="imputed")]
    if any(f"imputed_lower_raw.{feature}" in t for t in tables):
        handles.append(Patch(color=colours[0], alpha=0.25, label="predictive interval"))
    if any(t["missing"].any() for t in tables):
        handles.append(Patch(fill=False, hatch="///", edgecolor="tab:red", label="missing"))
    axes[0, 0].legend(handles=handles, fontsize=7, ncols=len(handles), loc="upper right")
    axes[-1, 0].set_xlim(region.start, region.end)
    axes[-1, 0].ticklabel_format(axis="x", style="plain", useOffset=False)
    axes[-1, 0].set_xlabel(f"{region.chrom} position (bp)", fontsize=8)
    fig.suptitle(f"{region}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def run(args: argparse.Namespace) -> None:
    regions = [parse_region(text) for text in args.region or []]
    if not regions and not args.default_chromosome:
        raise GetdiffError("give --region chrom:start-end (or --default-chromosome)")
    if args.output and (args.outdir or len(regions) != 1 or args.default_chromosome):
        raise GetdiffError("--output takes exactly one --region; use --outdir for several")
    if not args.output and not args.outdir:
        raise GetdiffError("give --output FILE.png (one region) or --outdir DIR")
    tables = [read_locus_table(path) for path in args.imputation]
    if args.default_chromosome:
        regions.insert(0, default_locus(tables[0], args.default_chromosome))
        log.info("default locus: %s", regions[0])
    for region in regions:
        check_region(region, tables)
    labels = None
    if args.motif_effects:
        effects = pd.read_csv(args.motif_effects, sep="\t")
        if not {"cell_type", "motif", "cis_effect"} <= set(effects.columns):
            raise InputError(args.motif_effects, "expected getdiff interpret's motif_effects.tsv")
        labels = [top_motifs(t, p, effects) for t, p in zip(tables, args.imputation, strict=True)]
    if args.output:
        plot_locus(regions[0], tables, args.output, labels=labels)
        log.info("wrote %s", args.output)
        return
    with output_set({"outdir": Path(args.outdir)}, directories=("outdir",)) as temps:
        for region in dict.fromkeys(regions):
            plot_locus(region, tables, temps["outdir"] / region.file_name, labels=labels)
    log.info("wrote %d locus views into %s", len(dict.fromkeys(regions)), args.outdir)


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plot-locus",
        help="observed vs imputed accessibility of each cell type along a genome region (PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--imputation", required=True, nargs="+", help="Parquet files from getdiff impute"
    )
    parser.add_argument(
        "--region", action="append", help="chrom:start-end (repeat for several, with --outdir)"
    )
    parser.add_argument(
        "--default-chromosome", help="also draw the default locus on this chromosome"
    )
    parser.add_argument("--output", help="PNG file to write (one region)")
    parser.add_argument("--outdir", help="directory of <chrom>_<start>-<end>.png files")
    parser.add_argument(
        "--motif-effects",
        help="motif_effects.tsv (getdiff interpret): label each peak with its strongest motif",
    )
    parser.set_defaults(func=run)
