# Shared set-up: validated config, cell-type sheet, model groups, output paths.
import os
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The package is imported from this checkout, so rules and this file see the same code. The
# checkout is two levels above this file: workflow.basedir is the outer workflow's folder when
# getdiff is used as a module (README.md, "Use as a module").
CHECKOUT = Path(str(workflow.current_basedir.get_path_or_uri(secret_free=True))).parents[1]
if not (CHECKOUT / "getdiff").is_dir():  # a module from a URL: getdiff must be installed
    CHECKOUT = Path(workflow.basedir)
sys.path.insert(0, str(CHECKOUT))

from getdiff.config import (
    imputed_cell_types,
    inherited_values,
    load_cell_types,
    stage_config_json,
    train_groups,
    validate_config,
)
from getdiff.errors import ConfigError
from getdiff.demo import CELL_TYPES as DEMO_CELL_TYPES
from getdiff.outputs.export import HASHED_SECTIONS
from getdiff.paths import (
    CALIBRATION_FILE,
    EVALUATE_FILES,
    INTERPRET_FILES,
    MANIFEST_FILE,
    REGIONS_FILE,
    SCAN_DIR,
    SCAN_FILES,
    SPLITS,
    TRAIN_FILES,
    anndata_file,
    imputation_file,
    windows_file,
)
from getdiff.slurm import Request as SlurmRequest
from getdiff.slurm import failure_hints as slurm_failure_hints
from getdiff.slurm import partition_limits as slurm_partition_limits
from getdiff.slurm import request_errors as slurm_request_errors
from getdiff.outputs.tracks import track_paths, TRACKS


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
    IMPUTED = imputed_cell_types(config, CELL_TYPES)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
RESULTS = Path(config["results"])
# The CLI that all rules call, i.e. this checkout's getdiff, in whichever env the rule runs.
GETDIFF = f"PYTHONPATH={CHECKOUT}${{PYTHONPATH:+:$PYTHONPATH}} python -m getdiff"


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


def calibrated(group):
    """The cell types a group's intervals are calibrated for: those it scores and imputes."""
    return list(dict.fromkeys([*evaluated(group), *IMPUTED[group]]))


def warn_not_imputed():
    """A cell type that no group trains on or names in impute_with is prepared only: say so."""
    imputed = {ct for members in IMPUTED.values() for ct in members}
    left = [ct for ct in CELL_TYPES.index if ct not in imputed]
    if left:
        logger.warning(
            f"cell type(s) {', '.join(left)} are in no train.groups group and name no group in "
            f"the sheet's impute_with column: no model imputes them (set impute_with to one of "
            f"{', '.join(GROUPS)} to impute them as cell types the model never saw)"
        )


warn_not_imputed()


def prepared(cell_types, names):
    return [RESULTS / "prepare" / ct / name for ct in cell_types for name in names]


def all_targets():
    targets = prepared(CELL_TYPES.index, [REGIONS_FILE])
    for group, members in IMPUTED.items():
        targets.append(RESULTS / "evaluate" / group / EVALUATE_FILES["metrics"])
        targets += [RESULTS / "impute" / group / imputation_file(ct) for ct in members]
        targets += [RESULTS / "impute" / group / anndata_file(ct) for ct in members]
        targets += [path for ct in members for path in track_outputs(group, ct)]
        targets.append(RESULTS / "tracks" / group / "loci")
        if interpreted():
            targets.append(RESULTS / "interpret" / group / INTERPRET_FILES["effects"])
    return targets


def interpreted():
    """Motif knock-outs need the motif inputs of the predicted regions: the accessibility task."""
    return config["task"]["predict"] == "accessibility"


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


# --- SLURM: stop before submitting when a request cannot be met, and explain jobs SLURM killed
# (getdiff/slurm.py; README.md, "Running on SLURM") --------------------------------------------
def slurm_requests():
    """The account, partition, memory, GPU and CPU requests (getdiff.slurm.Request) of each
    cluster job, by rule name; each is the --set-resources/--set-threads value, else the rule's
    own, else the default resources."""
    settings = workflow.resource_settings

    def plain(value):
        value = getattr(value, "raw", value)  # a parsed Resource keeps what was written
        if isinstance(value, str):  # as Snakemake evaluates it: $NAME expanded, then a number
            value = os.path.expandvars(value)
            value = int(value) if value.isdigit() else value
        return None if callable(value) else value

    defaults = {k: plain(v) for k, v in (settings.default_resources or {}).items()}
    requests = {}
    for job in workflow.rules:
        if job.name == "all" or workflow.is_local(job):
            continue
        given = settings.overwrite_resources.get(job.name) or {}
        given = {k: plain(v) for k, v in given.items()}
        own = {k: plain(v) for k, v in job.resources.items() if not k.startswith("_")}
        asked = {}
        for key in ("slurm_account", "slurm_partition", "mem_mb", "cpus_per_gpu", "gpu"):
            value = next((s[key] for s in (given, own, defaults) if s.get(key) is not None), None)
            if value is not None:  # a rule's resources hold the defaults it did not override
                default = key not in given and value == defaults.get(key)
                asked[key] = SlurmRequest(value, "default" if default else "rule")
        threads = settings.overwrite_threads.get(job.name, job.resources.get("_cores"))
        if isinstance(plain(threads), int):
            asked["threads"] = SlurmRequest(plain(threads), "rule")
        requests[job.name] = asked
    return requests


def on_slurm():
    plugin = workflow.executor_plugin
    return plugin is not None and plugin.name == "slurm" and workflow.is_main_process


def check_slurm_requests():
    """Under the slurm executor, before any job is submitted: a placeholder left in a request,
    or memory/CPUs above every node of the partition, is an error naming the key."""
    if not on_slurm():
        return
    limits = {}
    if shutil.which("sinfo"):
        sinfo = ["sinfo", "-h", "-N", "-o", "%R %m %c"]
        limits = slurm_partition_limits(
            subprocess.run(sinfo, capture_output=True, text=True, check=False).stdout
        )
    requests = slurm_requests()
    try:  # only the jobs of this run (a prepare target need not fit train's request)
        needed = {job.rule.name for job in workflow.dag.needrun_jobs()}
        requests = {name: asked for name, asked in requests.items() if name in needed}
    except AttributeError:  # no DAG in this Snakemake version: check every cluster rule
        pass
    errors = slurm_request_errors(requests, limits)
    if errors:
        raise WorkflowError("\n".join([*errors, 'README.md, "Running on SLURM"']))


def explain_slurm_failures(logs):
    """After a failed run under the slurm executor: name the resource of each job SLURM killed
    for its memory or time limit. ``logs``: the run's log files (onerror's ``log``)."""
    if not on_slurm():
        return
    paths = [Path(str(p)) for p in ([logs] if isinstance(logs, (str, Path)) else logs or [])]
    text = "".join(p.read_text(errors="replace") for p in paths if p.is_file())
    for hint in slurm_failure_hints(text):
        print(f"slurm: {hint}", file=sys.stderr)
