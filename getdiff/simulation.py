"""The demo's generative model: a genome's peaks for 3 cell types with counts driven by planted
motif effects (cis, cooperative and neighbour-acting), and the score of an interpretation against
what was planted (:func:`recovery`). :mod:`getdiff.demo` writes its files.

Genome: hg38 chromosome names (default chr1-22, chrX); peaks are spread in proportion to the hg38
sizes, on chromosomes of BP_PER_SITE bp per site. Generative model (one site universe; each cell
type keeps the shared sites, 60% of its peaks, plus its own specific sites):

1. Along each chromosome, K=3 latent factors z(i) vary slowly with the site index i (Gaussian
   smoothing of white noise, sd ~1500 peaks: a chromatin-domain signal that changes little
   within one 900-peak window and more between windows).
2. Cluster c has a hit in site i with probability sigmoid(b_c + a_c . z(i)): a sparse base rate
   (0.5-8%, so most clusters are 0 in a peak) and cluster-specific loadings, so motif content
   co-varies with the latent along the genome. A present cluster has 1 + Poisson(0.3) instances
   in the site: samples of its motif, side by side (scored 4 + Gamma(2, 2.5) in the planted scan).
3. Cell type k: log mean count = m_k + sum_c W_kc [hit of c] + sum_(a,b) U_kab [hits of a and b]
   + sum_j sum_n V_kn [hit of n in peak j] exp(-d_ij / 20 kb) + beta_k . z(i) + 0.55 eps_ik:
   - W_kc, the cis weights: every cluster has one, a shared part plus a cell-type part
     (N(0, 0.12^2) each);
   - U, 3 cooperative pairs of clusters: an extra weight where both are in the peak;
   - V, 6 neighbour-acting clusters (common ones, cis weight 0): each instance in another peak j
     of the cell type within 100 kb (distance d_ij between midpoints) shifts peak i, decaying
     with distance; signs per cluster, sizes per cell type;
   - beta_k cell-type-specific, eps region-level white noise (partly shared by the cell types);
   counts = 1 + Poisson(mean x Gamma(10, 1/10)).
   Every planted weight is written to ``DIR/planted_effects.tsv`` (cell_type, motif, kind cis |
   neighbour | cooperative, partner (. if none), weight in natural-log units of the mean count,
   decay_bp): what ``getdiff interpret`` should find.

A masked region's accessibility is thus partly predictable from its own motifs (with cell-type
specific weights), partly from its neighbours' motifs, partly from the window as a whole (the
latent, read off its unmasked neighbours' motifs and accessibility), partly from nothing
(region-level noise).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from getdiff.errors import ConfigError

log = logging.getLogger(__name__)

HG38_SIZES: dict[str, int] = {
    "chr1": 248956422,
    "chr2": 242193529,
    "chr3": 198295559,
    "chr4": 190214555,
    "chr5": 181538259,
    "chr6": 170805979,
    "chr7": 159345973,
    "chr8": 145138636,
    "chr9": 138394717,
    "chr10": 133797422,
    "chr11": 135086622,
    "chr12": 133275309,
    "chr13": 114364328,
    "chr14": 107043718,
    "chr15": 101991189,
    "chr16": 90338345,
    "chr17": 83257441,
    "chr18": 80373285,
    "chr19": 58617616,
    "chr20": 64444167,
    "chr21": 46709983,
    "chr22": 50818468,
    "chrX": 156040895,
    "chrY": 57227415,
}
CELL_TYPES = ("demo_myeloid", "demo_liver", "demo_lymphoid")
SHARED_FRACTION = 0.6
N_FACTORS = 3
LATENT_SD_PEAKS = 1500.0  # smoothing scale of the latent, in peaks of one cell type
NOISE_SD = 0.55
BP_PER_SITE = 800  # demo genome length per site: peaks (~510 bp) with ~300 bp gaps
MOTIF_WIDTHS = (10, 16)  # planted motifs: long enough that the p < 1e-4 scan finds them
BASE_FREQUENCIES = (0.295, 0.205, 0.205, 0.295)  # A C G T, 41% GC as in the human genome
DNA = b"ACGT"
CIS_SD = 0.12  # per part (shared, cell type) of every cluster's cis weight
N_NEIGHBOUR = 6  # clusters that act on the other peaks near them
NEIGHBOUR_WEIGHT = 0.3  # per instance, at distance 0 (natural-log units of the mean count)
NEIGHBOUR_DECAY_BP = 20_000
NEIGHBOUR_REACH_BP = 100_000
N_PAIRS = 3  # cooperative pairs: an extra weight where both clusters are in one peak
PAIR_WEIGHT = 0.5


def _smooth_noise(rng: np.random.Generator, n: int, k: int, sd: float) -> np.ndarray:
    """(n, k) stationary Gaussian processes with unit variance and a Gaussian kernel of sd sites."""
    if sd < 0.5:
        return rng.standard_normal((n, k))
    half = int(np.ceil(4 * sd))
    x = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (x / sd) ** 2)
    kernel /= np.sqrt((kernel**2).sum())  # unit variance after smoothing
    noise = rng.standard_normal((n + 2 * half, k))
    size = 1 << int(np.ceil(np.log2(n + 4 * half + 1)))
    spectrum = np.fft.rfft(noise, size, axis=0) * np.fft.rfft(kernel, size)[:, None]
    full = np.fft.irfft(spectrum, size, axis=0)
    return full[2 * half : 2 * half + n]  # 'valid' part: no edge shrinkage


def _allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split an integer total in proportion to weights (largest remainder)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    rest = total - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    return counts


def _layout_sites(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n non-overlapping sites (start, end) along a chromosome of ``size`` bp, sorted."""
    width = np.clip(np.round(150 + rng.gamma(2.0, 180.0, n)), 150, 3000).astype(np.int64)
    room = int(size * 0.98) - int(width.sum())
    if room <= n + 1:
        raise ConfigError(f"demo: {n} peaks do not fit on a chromosome of {size} bp")
    gaps = rng.exponential(1.0, n + 1)
    gaps = np.floor(gaps / gaps.sum() * (room - n - 1)).astype(np.int64) + 1
    start = int(size * 0.01) + np.cumsum(gaps[:-1]) + np.r_[0, np.cumsum(width)[:-1]]
    return start, start + width


def _motif_slots(
    rng: np.random.Generator,
    site: np.ndarray,
    length: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> np.ndarray:
    """Starts of a site's motif instances side by side in random order with random gaps, so that
    planted sequences do not overwrite each other; centred on the site when they overflow it."""
    key = rng.random(len(site))
    order = np.lexsort((key, site))  # by site, then by key: a random order within each site
    site, length, key = site[order], length[order], key[order]
    first = np.searchsorted(site, site)  # index of each site's first instance
    before = np.cumsum(length) - length
    total = np.bincount(site, weights=length, minlength=len(start)).astype(np.int64)
    free = (end - start) - total
    # key increases within a site, so the gaps do too: instance i+1 starts after i ends.
    gap = np.floor(key * np.maximum(free, 0)[site]).astype(np.int64)
    slot = start[site] + np.minimum(free, 0)[site] // 2 + before - before[first] + gap
    result = np.empty(len(site), dtype=np.int64)
    result[order] = np.maximum(slot, 0)
    return result


def _cell_type_model(rng: np.random.Generator, n_clusters: int) -> dict[str, np.ndarray]:
    """Cluster base rates and loadings, per-cell-type cis weights (every cluster: a shared part
    plus a cell-type part), neighbour-acting clusters and cooperative pairs."""
    rate = np.exp(rng.uniform(np.log(0.005), np.log(0.08), n_clusters))
    base = np.log(rate / (1 - rate))
    loadings = 0.3 * rng.standard_normal((n_clusters, N_FACTORS))
    main = rng.integers(0, N_FACTORS, n_clusters)
    loadings[np.arange(n_clusters), main] += rng.choice([-1.2, 1.2], n_clusters)
    n_types = len(CELL_TYPES)
    weights = CIS_SD * (
        rng.standard_normal(n_clusters) + rng.standard_normal((n_types, n_clusters))
    )
    beta = np.array([[1.2, 0.8, 0.0], [1.2, -0.6, 0.8], [1.2, 0.0, -0.8]])
    widths = rng.integers(MOTIF_WIDTHS[0], MOTIF_WIDTHS[1] + 1, n_clusters)
    # Neighbour-acting clusters among the common ones (enough instances to be measured); they
    # act on the other peaks within NEIGHBOUR_REACH_BP, not on their own peak.
    common = np.flatnonzero(rate >= 0.03)
    chosen = rng.choice(common, N_NEIGHBOUR + 2 * N_PAIRS, replace=False)
    neighbour, pairs = chosen[:N_NEIGHBOUR], chosen[N_NEIGHBOUR:].reshape(N_PAIRS, 2)
    weights[:, neighbour] = 0.0
    sign = rng.choice([-1.0, 1.0], N_NEIGHBOUR)
    neighbour_weights = NEIGHBOUR_WEIGHT * sign * rng.uniform(0.6, 1.4, (n_types, N_NEIGHBOUR))
    pair_weights = (
        PAIR_WEIGHT * rng.choice([-1.0, 1.0], N_PAIRS) * rng.uniform(0.6, 1.4, (n_types, N_PAIRS))
    )
    return {
        "base": base,
        "loadings": loadings,
        "weights": weights,
        "beta": beta,
        "widths": widths,
        "neighbour": neighbour,
        "neighbour_weights": neighbour_weights,
        "pairs": pairs,
        "pair_weights": pair_weights,
    }


def _neighbour_term(
    present: np.ndarray, middle: np.ndarray, keep: np.ndarray, model: dict[str, np.ndarray], k: int
) -> np.ndarray:
    """Per site: the sum over the cell type's other peaks within NEIGHBOUR_REACH_BP of their
    neighbour-acting clusters' weights x exp(-distance / NEIGHBOUR_DECAY_BP)."""
    emitted = np.where(keep, present[:, model["neighbour"]] @ model["neighbour_weights"][k], 0.0)
    term = np.zeros(len(middle))
    reach = np.searchsorted(middle, middle + NEIGHBOUR_REACH_BP, side="left") - np.arange(
        len(middle)
    )
    for offset in range(1, int(reach.max(initial=1)) + 1):  # pairs (i, i + offset), both ways
        distance = middle[offset:] - middle[:-offset]
        decay = np.where(distance < NEIGHBOUR_REACH_BP, np.exp(-distance / NEIGHBOUR_DECAY_BP), 0.0)
        term[:-offset] += decay * emitted[offset:]
        term[offset:] += decay * emitted[:-offset]
    return term


def planted_effects(model: dict[str, np.ndarray], names: list[str]) -> pd.DataFrame:
    """The planted effects as a table: one row per cell type and cluster (``cis``, ``neighbour``)
    or pair (``cooperative``), weights in natural-log units of the mean count."""
    rows = []
    for k, cell_type in enumerate(CELL_TYPES):
        neighbour = dict(
            zip(model["neighbour"].tolist(), model["neighbour_weights"][k].tolist(), strict=True)
        )
        for c, name in enumerate(names):
            kind = "neighbour" if c in neighbour else "cis"
            weight = neighbour.get(c, float(model["weights"][k, c]))
            decay = NEIGHBOUR_DECAY_BP if kind == "neighbour" else 0
            rows.append((cell_type, name, kind, ".", round(weight, 6), decay))
        for (a, b), weight in zip(
            model["pairs"].tolist(), model["pair_weights"][k].tolist(), strict=True
        ):
            rows.append((cell_type, names[a], "cooperative", names[b], round(weight, 6), 0))
    columns = ["cell_type", "motif", "kind", "partner", "weight", "decay_bp"]
    return pd.DataFrame(rows, columns=columns)


def _chromosome(
    rng: np.random.Generator,
    chrom: str,
    n_sites: int,
    owner: np.ndarray,
    model: dict[str, np.ndarray],
    n_per_site: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Sites (coordinates, owner, counts per cell type) and motif hits of one chromosome."""
    size = chromosome_size(n_sites)
    start, end = _layout_sites(rng, n_sites, size)
    z = _smooth_noise(rng, n_sites, N_FACTORS, LATENT_SD_PEAKS * n_per_site)
    logits = (model["base"][None, :] + z @ model["loadings"].T).astype(np.float32)
    present = rng.random(logits.shape, dtype=np.float32) < 1 / (1 + np.exp(-logits))
    site, cluster = np.nonzero(present)
    n_hits = 1 + rng.poisson(0.3, len(site))
    site, cluster = np.repeat(site, n_hits), np.repeat(cluster, n_hits)
    length = model["widths"][cluster]
    hit_start = _motif_slots(rng, site, length, start, end)
    score = np.round(4 + rng.gamma(2.0, 2.5, len(site)), 2)
    hits = {
        "start": hit_start,
        "end": hit_start + length,
        "cluster": cluster,
        "score": score,
        "strand": rng.integers(0, 2, len(site)),
    }
    order = np.lexsort((hits["cluster"], hits["end"], hits["start"]))
    hits = {key: value[order] for key, value in hits.items()}

    present = present.astype(np.float32)
    motif_term = present @ model["weights"].T.astype(np.float32)
    both = present[:, model["pairs"][:, 0]] * present[:, model["pairs"][:, 1]]
    middle = (start + end) / 2
    shared_noise = rng.standard_normal(n_sites)
    counts = np.zeros((n_sites, len(CELL_TYPES)), dtype=np.int64)
    for k in range(len(CELL_TYPES)):
        own = rng.standard_normal(n_sites)
        eps = 0.6 * shared_noise + 0.8 * own
        specific = owner == k
        neighbours = _neighbour_term(present, middle, (owner == -1) | specific, model, k)
        eta = (
            np.log(30.0)
            + motif_term[:, k]
            + both @ model["pair_weights"][k]
            + neighbours
            + z @ model["beta"][k]
            + NOISE_SD * eps
            - 0.3 * specific
        )
        mean = np.exp(eta) * rng.gamma(10.0, 0.1, n_sites)
        counts[:, k] = 1 + rng.poisson(mean)
    sites = {"start": start, "end": end, "owner": owner, "counts": counts}
    return sites, hits


def chromosome_size(n_sites: int) -> int:
    """Demo chromosome length: BP_PER_SITE per site (plus 2% of ends kept free of peaks)."""
    return int(np.ceil(n_sites * BP_PER_SITE / 0.97)) + 10_000


def motif_matrices(rng: np.random.Generator, widths: np.ndarray) -> list[np.ndarray]:
    """One (4, width) probability matrix per cluster: a consensus base per column taking
    60-95% of the mass (about 1-1.7 bits), the rest spread at random."""
    matrices = []
    for width in widths.tolist():
        rest = rng.dirichlet(np.ones(3), width) * (1 - rng.uniform(0.85, 0.98, width))[:, None]
        consensus = rng.integers(0, 4, width)
        matrix = np.zeros((width, 4))
        matrix[np.arange(width), consensus] = 1 - rest.sum(axis=1)
        others = np.array([[b for b in range(4) if b != c] for c in consensus])
        matrix[np.arange(width)[:, None], others] = rest
        matrices.append(matrix.T)
    return matrices


def plant_motifs(
    rng: np.random.Generator, sequence: np.ndarray, hits: dict[str, np.ndarray], matrices: list
) -> None:
    """Write a sample of each hit's motif (reverse complement on the - strand) at its start."""
    widths = np.array([m.shape[1] for m in matrices])
    cumulative = np.cumsum(np.concatenate(matrices, axis=1).T, axis=1)  # (all columns, 4)
    first_column = np.r_[0, np.cumsum(widths)[:-1]]
    width = widths[hits["cluster"]]
    hit = np.repeat(np.arange(len(width)), width)
    offset = np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    minus = hits["strand"][hit] == 0
    column = np.where(minus, width[hit] - 1 - offset, offset) + first_column[hits["cluster"]][hit]
    draw = rng.random(len(hit))[:, None]
    base = np.minimum((draw > cumulative[column]).sum(axis=1), 3)
    base = np.where(minus, 3 - base, base)  # A<->T, C<->G
    position = hits["start"][hit] + offset
    inside = position < len(sequence)
    sequence[position[inside]] = np.frombuffer(DNA, dtype=np.uint8)[base[inside]]


def chromosome_sequence(rng: np.random.Generator, size: int) -> np.ndarray:
    """Background bases (41% GC), a few soft-masked (lowercase) stretches, an N run at the start."""
    sequence = np.frombuffer(DNA, dtype=np.uint8)[rng.choice(4, size, p=BASE_FREQUENCIES)].copy()
    n_masked = size // 20_000
    length = rng.integers(50, 300, n_masked)
    start = rng.integers(0, size - 300, n_masked)
    masked = (
        np.repeat(start, length)
        + np.arange(length.sum())
        - np.repeat(np.cumsum(length) - length, length)
    )
    sequence[masked] |= 0x20
    sequence[: size // 200] = ord("N")  # no peak lies in the first 1% of a demo chromosome
    return sequence


def simulate(
    rng: np.random.Generator, chroms: list[str], peaks_per_cell_type: int, n_clusters: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray], list[int]]:
    """Sites (shared + cell-type specific, with counts), motif hits, the generative model and
    the chromosome sizes."""
    model = _cell_type_model(rng, n_clusters)
    n_shared = round(SHARED_FRACTION * peaks_per_cell_type)
    n_specific = peaks_per_cell_type - n_shared
    owner = np.r_[np.full(n_shared, -1), np.repeat(np.arange(len(CELL_TYPES)), n_specific)]
    owner = rng.permutation(owner)
    hg38 = np.array([HG38_SIZES[c] for c in chroms], dtype=np.float64)
    per_chrom = _allocate(len(owner), hg38)  # spread as on hg38, packed densely
    n_per_site = len(owner) / peaks_per_cell_type  # universe sites per cell-type peak
    site_parts, hit_parts = [], []
    offset = 0
    for k, (chrom, n_sites) in enumerate(zip(chroms, per_chrom.tolist(), strict=True)):
        sites, hits = _chromosome(
            rng, chrom, n_sites, owner[offset : offset + n_sites], model, n_per_site
        )
        offset += n_sites
        sites["chrom"] = np.full(n_sites, k, dtype=np.int64)
        hits["chrom"] = np.full(len(hits["start"]), k, dtype=np.int64)
        site_parts.append(sites)
        hit_parts.append(hits)
    sites = {key: np.concatenate([p[key] for p in site_parts]) for key in site_parts[0]}
    hits = {key: np.concatenate([p[key] for p in hit_parts]) for key in hit_parts[0]}
    return sites, hits, model, [chromosome_size(n) for n in per_chrom.tolist()]


def _neighbour_ranks(found: pd.DataFrame, column: str, acting: set[str]) -> list[int]:
    """Ranks (1 = largest) of the ``acting`` motifs by the absolute value of ``column``."""
    measured = found.dropna(subset=[column])
    order = measured.assign(size=measured[column].abs()).sort_values(
        "size", ascending=False, kind="stable"
    )
    return [i + 1 for i, motif in enumerate(order["motif"]) if motif in acting]


def recovery(effects: str | Path, planted: str | Path, min_regions: int = 100) -> pd.DataFrame:
    """How well ``getdiff interpret``'s motif_effects.tsv recovers the demo's planted effects,
    per cell type: the Spearman of cis effects against the planted cis weights over the motifs
    in at least ``min_regions`` regions, the same for ``differential_cis`` against the planted
    weights minus their mean over the cell types (NaN with one cell type), and the ranks
    (1 = largest) of the planted neighbour-acting motifs by absolute context effect among all
    measured motifs; where the table has the ridge baseline's columns, the same two scores of
    the ridge (``ridge_cis_spearman``, ``ridge_neighbour_ranks``)."""
    from scipy.stats import spearmanr

    table = pd.read_csv(effects, sep="\t")
    truth = pd.read_csv(planted, sep="\t", keep_default_na=False)
    planted_cis = truth[truth["kind"] == "cis"]
    specific = planted_cis["weight"] - planted_cis.groupby("motif")["weight"].transform("mean")
    specific = planted_cis.assign(weight=specific).set_index(["cell_type", "motif"])["weight"]
    rows = []
    for cell_type, found in table.groupby("cell_type", sort=False):
        weights = truth[truth["cell_type"] == cell_type]
        cis = weights[weights["kind"] == "cis"].set_index("motif")["weight"]
        measured = found[(found["n_regions"] >= min_regions) & found["motif"].isin(cis.index)]
        rho = spearmanr(measured["cis_effect"], cis[measured["motif"]]).statistic
        differential = float("nan")
        if "differential_cis" in measured and table["cell_type"].nunique() > 1:
            own = specific.loc[cell_type][measured["motif"]]
            differential = spearmanr(measured["differential_cis"], own).statistic
        acting = set(weights.loc[weights["kind"] == "neighbour", "motif"])
        row = {
            "cell_type": cell_type,
            "cis_spearman": round(float(rho), 3),
            "differential_spearman": round(float(differential), 3),
            "motifs": len(measured),
            "neighbour_ranks": _neighbour_ranks(found, "context_effect", acting),
        }
        if "ridge_cis_effect" in found:
            ridge = spearmanr(measured["ridge_cis_effect"], cis[measured["motif"]]).statistic
            row["ridge_cis_spearman"] = round(float(ridge), 3)
            row["ridge_neighbour_ranks"] = _neighbour_ranks(found, "ridge_context_effect", acting)
        rows.append(row)
    return pd.DataFrame(rows)
