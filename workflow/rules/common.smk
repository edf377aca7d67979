# Shared set-up: validated config, cell-type sheet, model groups, output paths.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The package is imported from this checkout, so rules and this file see the same code.
sys.path.insert(0, workflow.basedir)

from getdiff.config import (
    inherited_values,
    load_cell_types,
    stage_config_json,
    train_groups,
    validate_config,
)
from getdiff.errors import ConfigError
from getdiff.demo import CELL_TYPES as DEMO_CELL_TYPES
from getdiff.export import HASHED_SECTIONS
from getdiff.tracks import track_paths, TRACKS
from getdiff.tensors import SPLITS, windows_file


def warn_inherited_config():
    """A --configfile is merged over the workflow's config/config.yaml (Snakemake's semantics:
    keys it omits keep the shipped demo's values, not the schema's defaults): name each one."""
    given = [str(path) for path in workflow.overwrite_configfiles or []]
    if not given or workflow.config_settings.replace_workflow_config:
        return
    shipped = [path for path in workflow.configfiles if str(path) not in given]
    if not shipped:
        return
    import yaml

    def load(path):
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}

    users = [load(path) for path in given] + [workflow.config_settings.overwrite_config or {}]
    inherited = inherited_values(load(shipped[0]), users)
    if inherited:
        logger.warning(
            f"config: {', '.join(given)} do(es) not set {len(inherited)} keys that "
            f"{shipped[0]} sets to other values than the schema's defaults, so they apply: "
            f"{'; '.join(inherited)}. Set them in your config, or run with "
            "--replace-workflow-config to start from the schema's defaults."
        )


warn_inherited_config()

# getdiff's own validation (the schema in ../schemas/config.schema.yaml): one line naming the key
# and the closest valid one, instead of a schema dump; defaults are filled in place.
try:
    config.update(validate_config(config, source="config"))
    CELL_TYPES = load_cell_types(config["cell_types"])
    GROUPS = train_groups(config, list(CELL_TYPES.index))
except ConfigError as error:
    raise WorkflowError(str(error)) from None
RESULTS = Path(config["results"])
# The CLI that all rules call, i.e. this checkout's getdiff, in whichever env the rule runs.
GETDIFF = f"PYTHONPATH={workflow.basedir}${{PYTHONPATH:+:$PYTHONPATH}} python -m getdiff"


def peaks_of(wildcards):
    return CELL_TYPES.loc[wildcards.cell_type, "peaks"]


def counts_of(wildcards):
    row = CELL_TYPES.loc[wildcards.cell_type]
    return [path for path in (row["counts_file"], row["barcodes"]) if path]


def motif_file():
    """The motif file the scan reads ([] for a jaspar: release, which pyjaspar ships)."""
    motifs = config["motifs"]
    return [] if not motifs or motifs.startswith("jaspar:") else [motifs]


def motif_inputs():
    """The scan and the cluster files prepare reads (the scan rule makes them when scanning)."""
    keys = ("motif_scan", "cluster_names", "motif_to_cluster")
    return {key: config[key] for key in keys if config[key]}


def evaluated(group):
    """The cell types a group's model is calibrated and scored on (evaluate.cell_types)."""
    return config["evaluate"]["cell_types"] or GROUPS[group]


def prepared(cell_types, names):
    return [RESULTS / "prepare" / ct / name for ct in cell_types for name in names]


def all_targets():
    targets = prepared(CELL_TYPES.index, ["regions.parquet"])
    for group, members in GROUPS.items():
        targets.append(RESULTS / "evaluate" / group / "metrics.json")
        targets += [RESULTS / "impute" / group / f"{ct}.parquet" for ct in members]
        targets += [RESULTS / "impute" / group / f"{ct}.h5ad" for ct in members]
        targets += [path for ct in members for path in track_outputs(group, ct)]
        targets.append(RESULTS / "tracks" / group / "loci")
    return targets


def track_outputs(group, cell_type):
    """The bigWig (and, with tracks.bedgraph, bedGraph) files of one cell type's imputation."""
    prefix = RESULTS / "tracks" / group / cell_type
    return list(track_paths(prefix, list(TRACKS), config["tracks"]["bedgraph"]).values())


def locus_chromosome():
    """The chromosome of the report's default locus: the first test chromosome."""
    return (config["prepare"]["test_chromosomes"] or ["chr1"])[0]


def demo_fragments_outputs():
    cell_type = config["demo"]["fragments_for"]
    if not cell_type:
        return []
    return [f"{config['demo']['outdir']}/fragments/{cell_type}.fragments.tsv.gz"]


def demo_fragments_arg():
    cell_type = config["demo"]["fragments_for"]
    return f"--fragments {cell_type}" if cell_type else ""


def demo_chromosomes_arg():
    chromosomes = config["demo"]["chromosomes"]
    return f"--chromosomes {','.join(chromosomes)}" if chromosomes else ""
