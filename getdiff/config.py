"""The one configuration schema (workflow/schemas/*.schema.yaml), read by Snakemake and the CLI.

``load_config`` validates a config file and injects the schema's defaults, so a rule and a
command run by hand see the same values. Errors name the offending key as a dotted path.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
from copy import deepcopy
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from getdiff.defaults import CELL_TYPES_SCHEMA, CONFIG_SCHEMA, DATA_DIR, DEFAULTS  # noqa: F401
from getdiff.defaults import inject_defaults as _inject_defaults
from getdiff.defaults import read_schema as _read_schema
from getdiff.errors import ConfigError
from getdiff.io import check_regular_file
from getdiff.paths import SCAN_DIR, SCAN_FILES


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Return a copy of ``config`` validated against the schema, with defaults filled in."""
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level")
    schema = _read_schema(CONFIG_SCHEMA)
    resolved = deepcopy(config)
    _inject_defaults(resolved, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: {_describe(errors[0], schema)}")
    diffusion = resolved["diffusion"]
    if not diffusion["beta_start"] <= diffusion["beta_end"] < 1:
        raise ConfigError(
            f"{source}: key 'diffusion.beta_end': expected beta_start <= beta_end < 1, got "
            f"{diffusion['beta_start']} and {diffusion['beta_end']}"
        )
    for section in ("evaluate", "impute"):
        sampler = resolved[section]
        if sampler["sampler"] == "ddim" and sampler["ddim_steps"] > diffusion["num_timesteps"]:
            raise ConfigError(
                f"{source}: key '{section}.ddim_steps': {sampler['ddim_steps']} steps cannot be "
                f"taken from diffusion.num_timesteps {diffusion['num_timesteps']}; expected at "
                "most that many"
            )
    _check_distance_bands(resolved["interpret"], source)
    _resolve_motif_inputs(resolved, source)
    return resolved


def _check_distance_bands(section: dict[str, Any], source: str) -> None:
    """interpret.distance_bands: consecutive [start, end) bands from 0, the last ending at
    interpret.context_bp."""
    bands = section["distance_bands"]
    ends = [0] + [hi for _, hi in bands[:-1]]
    for i, ((lo, hi), start) in enumerate(zip(bands, ends, strict=True)):
        if lo != start or hi <= lo:
            raise ConfigError(
                f"{source}: key 'interpret.distance_bands' band {i + 1} is [{lo}, {hi}]; expected "
                f"consecutive bands [start, end) with start {start} and end > start"
            )
    if bands[-1][1] != section["context_bp"]:
        raise ConfigError(
            f"{source}: key 'interpret.distance_bands' ends at {bands[-1][1]} bp but "
            f"interpret.context_bp is {section['context_bp']}; expected the last band to end there"
        )


def _leaves(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every non-mapping value of a nested mapping."""
    leaves = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _schema_default(key: str, schema: dict[str, Any]) -> Any:
    """The schema's default of a dotted key (None where it has none)."""
    node: dict[str, Any] = schema
    for part in key.split("."):
        node = node.get("properties", {}).get(part, {})
    return node.get("default")


def inherited_values(shipped: dict[str, Any], given: list[dict[str, Any]]) -> list[str]:
    """``key=value`` for each setting of the workflow's own config file (``shipped``) that
    none of the user's config files (``given``) sets and that differs from the schema's default:
    what a user's ``--configfile`` silently inherits when Snakemake merges it over the
    workflow's config."""
    schema = _read_schema(CONFIG_SCHEMA)
    set_by_user = set().union(*(_leaves(g) for g in given)) if given else set()
    inherited = []
    for key, value in _leaves(shipped).items():
        covered = any(key == k or key.startswith(f"{k}.") for k in set_by_user)
        if not covered and value != _schema_default(key, schema):
            inherited.append(f"{key}={json.dumps(value)}")
    return inherited


def scan_outputs(config: dict[str, Any]) -> dict[str, str]:
    """Where rule scan_motifs writes the scan and the motif names (``<results>/scan/``)."""
    folder = Path(config.get("results", DEFAULTS["results"])) / SCAN_DIR
    return {key: str(folder / SCAN_FILES[key]) for key in ("scan", "names")}


def _resolve_motif_inputs(config: dict[str, Any], source: str) -> None:
    """A scan given, or made from genome_fasta + motifs: then ``motif_scan`` (and, with no
    motif_to_cluster, ``cluster_names``) point at the scan rule's outputs. Idempotent."""
    scanning = bool(config["genome_fasta"]) or bool(config["motifs"])
    if not scanning:
        if not config["motif_scan"]:
            raise ConfigError(
                f"{source}: give 'motif_scan' (a precomputed scan) or 'genome_fasta' and 'motifs' "
                "(scanned by the workflow)"
            )
        return
    if not (config["genome_fasta"] and config["motifs"]):
        missing = "motifs" if config["genome_fasta"] else "genome_fasta"
        raise ConfigError(f"{source}: key '{missing}': needed with the other to scan the peaks")
    derived = scan_outputs(config)
    if config["motif_scan"] not in (None, derived["scan"]):
        raise ConfigError(
            f"{source}: key 'motif_scan': give a precomputed scan or genome_fasta + motifs, not "
            "both (a --configfile is merged into config/config.yaml: set genome_fasta and motifs "
            "to null there to use a scan)"
        )
    config["motif_scan"] = derived["scan"]
    if config["cluster_names"] is None and config["motif_to_cluster"] is None:
        config["cluster_names"] = derived["names"]


def _describe(error: jsonschema.ValidationError, schema: dict[str, Any]) -> str:
    """One line: the key path, what is wrong, and the closest valid key for a misspelt one."""
    path = [str(p) for p in error.absolute_path]
    key = ".".join(path) or "(top level)"
    if error.validator != "additionalProperties":
        return f"key '{key}': {error.message}"
    section = schema
    for part in path:
        section = section.get("properties", {}).get(part, {})
    known = list(section.get("properties", {}))
    extra = sorted(set(error.instance) - set(known))
    prefix = f"{key}." if path else ""
    hints = []
    for name in extra:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
        hints.append(f"'{prefix}{name}'{hint}")
    return f"unknown key {', '.join(hints)}; known keys here: {', '.join(known)}"


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill in defaults."""
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text; expected YAML") from None
    except (IsADirectoryError, PermissionError) as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror}") from None
    return validate_config(config or {}, source=str(path))


def _read_sheet(path: str | Path) -> pd.DataFrame:
    """The sheet's rows as text, indexed by line number - 2 (header = line 1). Comment lines
    (starting with '#') and blank lines are skipped; a '#' inside a field (a path such as
    data/liver#v2.bed) is kept. A line with more tab-separated fields than the header, or a NUL
    byte, is an error naming the line: pandas would silently drop or misplace its fields. A
    named pipe or device is refused before it is opened (reading it could block forever)."""
    check_regular_file(path)
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        raise ConfigError(f"{path}: cell-type sheet not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cell-type sheet is not UTF-8 text; expected a TSV") from None
    except (IsADirectoryError, PermissionError) as err:
        raise ConfigError(f"{path}: cannot read the cell-type sheet: {err.strerror}") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{path}: cell-type sheet is empty")
    header = lines[0].split("\t")
    kept: dict[int, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) > len(header) or "\x00" in line:
            raise ConfigError(
                f"{path}: line {number}: {len(fields)} tab-separated fields (or a NUL byte); "
                f"expected at most the header's {len(header)}: {', '.join(header)}"
            )
        kept[number - 2] = fields + [""] * (len(header) - len(fields))
    sheet = pd.DataFrame.from_dict(kept, orient="index", columns=header, dtype=str)
    return sheet.replace("", None)


def load_cell_types(path: str | Path) -> pd.DataFrame:
    """Read and validate the cell-type sheet; one row per cell type, indexed by ``cell_type``."""
    sheet = _read_sheet(path)
    schema = _read_schema(CELL_TYPES_SCHEMA)
    validator = jsonschema.Draft202012Validator(schema)
    rows = []
    for i, raw in zip(sheet.index, sheet.to_dict("records"), strict=True):
        row: dict[str, Any] = {
            k: v
            for k, v in raw.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        if row.get("counts_column") is not None:
            try:
                row["counts_column"] = int(row["counts_column"])
            except ValueError:
                raise ConfigError(
                    f"{path}: line {i + 2}: counts_column must be an integer column number, "
                    f"got {row['counts_column']!r}"
                ) from None
        _inject_defaults(row, schema)
        for error in validator.iter_errors(row):
            key = ".".join(str(p) for p in error.absolute_path) or "(row)"
            raise ConfigError(f"{path}: line {i + 2}: column '{key}': {error.message}")
        if row["counts_file"] is not None and row["counts_column"] is not None:
            raise ConfigError(f"{path}: line {i + 2}: give counts_file or counts_column, not both")
        if row["barcodes"] is not None and row["counts_file"] is None:
            raise ConfigError(
                f"{path}: line {i + 2}: barcodes needs a fragments file in counts_file"
            )
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: cell-type sheet has no rows")
    # object dtype keeps None as None and column numbers as ints.
    table = pd.DataFrame(rows, columns=list(schema["properties"]), dtype=object)
    duplicated = table["cell_type"][table["cell_type"].duplicated()]
    if len(duplicated):
        raise ConfigError(f"{path}: cell type {duplicated.iloc[0]!r} is listed twice")
    return table.set_index("cell_type", drop=False)


def train_groups(config: dict[str, Any], cell_types: list[str]) -> dict[str, list[str]]:
    """Model name -> cell types trained together (default: one model 'all' over every cell type)."""
    groups = config["train"]["groups"] or {"all": list(cell_types)}
    for name, members in groups.items():
        unknown = sorted(set(members) - set(cell_types))
        if unknown:
            raise ConfigError(
                f"key 'train.groups.{name}': unknown cell type(s) {unknown}; known: {cell_types}"
            )
    return groups


def group_members(config: dict[str, Any], group: str) -> tuple[pd.DataFrame, list[str]]:
    """The cell-type sheet and the cell types of model group ``group`` (train.groups); a group
    that is not configured is a ConfigError naming those that are."""
    sheet = load_cell_types(config["cell_types"])
    groups = train_groups(config, list(sheet.index))
    if group not in groups:
        raise ConfigError(
            f"model group {group!r} is not configured; groups (train.groups): {sorted(groups)}"
        )
    return sheet, groups[group]


def imputed_cell_types(config: dict[str, Any], sheet: pd.DataFrame) -> dict[str, list[str]]:
    """Model group -> the cell types its model imputes: its own (train.groups), then those whose
    sheet column ``impute_with`` names it (a cell type in no group, or in another: served as a
    cell type the model never saw). A group name that is not configured is an error."""
    groups = train_groups(config, list(sheet.index))
    imputed = {name: list(members) for name, members in groups.items()}
    for cell_type, group in sheet["impute_with"].items():
        if group is None:
            continue
        if group not in groups:
            raise ConfigError(
                f"{config['cell_types']}: cell type {cell_type!r}: column 'impute_with' names "
                f"{group!r}, which is not a model group; groups (train.groups): {sorted(groups)}"
            )
        if cell_type not in imputed[group]:
            imputed[group].append(cell_type)
    return imputed


# Top-level input keys every stage gets; a rule names the sections it reads beside it.
TOP_LEVEL_KEYS = (
    "results",  # where the scan rule writes (motif_scan and cluster_names are derived from it)
    "cell_types",
    "motif_scan",
    "genome_fasta",
    "motifs",
    "genome",
    "cluster_names",
    "motif_to_cluster",
)


def stage_config_json(config: dict[str, Any], *sections: str) -> str:
    """The validated config restricted to the top-level inputs and ``sections``, as compact JSON.

    Each rule passes the sections its command reads, so editing, say, ``evaluate:`` never makes
    Snakemake rerun prepare or train, and a new section reruns nothing that does not read it. A
    dotted name (``prepare.chromosomes``) passes one key of a section; the command then sees the
    schema's defaults for the section's other keys.
    """
    resolved = validate_config(dict(config))
    subset = {key: resolved[key] for key in TOP_LEVEL_KEYS if key in resolved}
    for name in sections:
        section, _, key = name.partition(".")
        if section not in resolved or (key and key not in resolved[section]):
            raise ConfigError(f"stage_config_json: no config section or key {name!r}")
        if key:
            subset.setdefault(section, {})[key] = resolved[section][key]
        else:
            subset[section] = resolved[section]
    return json.dumps(subset, separators=(",", ":"), sort_keys=True)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (by hand) or ``--config-json JSON`` (what the rules pass)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="FILE", help="workflow config YAML")
    source.add_argument("--config-json", metavar="JSON", help=argparse.SUPPRESS)


def add_model_arguments(parser: argparse.ArgumentParser, group: bool = True) -> None:
    """What every command that runs a trained model reads: ``--group`` (unless ``group`` is
    false), ``--model`` and ``--prepared-dir``."""
    if group:
        parser.add_argument("--group", required=True, help="model group (train.groups)")
    parser.add_argument("--model", required=True, help="model.safetensors from getdiff train")
    parser.add_argument("--prepared-dir", required=True, help="getdiff prepare output root")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The validated config from ``--config`` or ``--config-json``."""
    if getattr(args, "config_json", None):
        return validate_config(json.loads(args.config_json), source="--config-json")
    return load_config(args.config)


# --- the key table of config/README.md, generated from the schema -----------------------------

KEY_TABLE_START = "<!-- generated from the schema: python -m getdiff.config --write -->"
KEY_TABLE_END = "<!-- end of generated key table -->"
README = Path(__file__).resolve().parents[1] / "config" / "README.md"


def _type_cell(sub: dict[str, Any]) -> str:
    if "properties" in sub:
        return "section"
    if "enum" in sub:
        return " \\| ".join(f"`{v}`" for v in sub["enum"])
    kinds = sub.get("type", "any")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return " or ".join(kinds)


def _default_cell(sub: dict[str, Any], required: bool) -> str:
    if "properties" in sub:
        return ""
    if "default" not in sub:
        return "(required)" if required else ""
    value = sub["default"]
    if isinstance(value, list) and len(value) > 4:
        value = f"[{value[0]}, {value[1]}, ..., {value[-1]}]"
    elif isinstance(value, list):
        value = f"[{', '.join(map(str, value))}]"
    elif value is None:
        value = "null"
    elif isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def key_table() -> str:
    """The Markdown table of every schema key: type, default, meaning (its description)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(properties: dict[str, Any], prefix: str, required: list[str]) -> None:
        for name, sub in properties.items():
            description = " ".join(str(sub.get("description", "")).split())
            cells = [f"`{prefix}{name}`", _type_cell(sub), _default_cell(sub, name in required)]
            rows.append("| " + " | ".join([*cells, description]) + " |")
            if "properties" in sub:
                walk(sub["properties"], f"{prefix}{name}.", sub.get("required", []))

    schema = _read_schema(CONFIG_SCHEMA)
    walk(schema["properties"], "", schema.get("required", []))
    return "\n".join(rows)


def readme_with_key_table(readme: str) -> str:
    """``readme`` with the text between the key-table markers replaced by :func:`key_table`."""
    head, start, rest = readme.partition(KEY_TABLE_START)
    _, end, tail = rest.partition(KEY_TABLE_END)
    if not start or not end:
        raise ConfigError(f"{README}: the key-table markers are missing")
    return f"{head}{start}\n{key_table()}\n{end}{tail}"


if __name__ == "__main__":
    import sys

    current = README.read_text(encoding="utf-8")
    wanted = readme_with_key_table(current)
    if "--write" in sys.argv:
        README.write_text(wanted, encoding="utf-8")
    elif wanted != current:
        sys.exit(f"{README} is out of date with the schema: run python -m getdiff.config --write")
