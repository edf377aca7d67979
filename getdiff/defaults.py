"""The schema's defaults, for code that runs without a loaded config.

The configuration schema (workflow/schemas/config.schema.yaml, shipped as
getdiff/data/config.schema.yaml) is the one home of every default. A stage reads its settings
from the loaded config (getdiff.config.load_config fills the defaults in); a function or
dataclass default that stands for a config key, and a benchmark, take the value from
``DEFAULTS`` here instead of writing its own copy, so editing the schema changes them all.

``DEFAULTS`` is what a config with only the required keys resolves to, section by section:
``DEFAULTS["diffusion"]["mask_ratio"]``, ``DEFAULTS["prepare"]["window_size"]``. Imports only
pyyaml (the Snakemake process reads it through getdiff.config).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml

DATA_DIR = Path(__file__).parent / "data"
CONFIG_SCHEMA = DATA_DIR / "config.schema.yaml"
CELL_TYPES_SCHEMA = DATA_DIR / "cell_types.schema.yaml"

# libyaml reads the schema in 4 ms, the pure-Python loader in 45 ms.
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_schema(path: Path) -> dict[str, Any]:
    """A schema file (YAML) as a dict."""
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_SCHEMA_LOADER)


def inject_defaults(instance: Any, schema: dict[str, Any]) -> None:
    """Fill in ``default`` values of object properties, recursively (like snakemake's validate)."""
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = deepcopy(sub["default"])
        if key in instance:
            inject_defaults(instance[key], sub)


def schema_defaults() -> dict[str, Any]:
    """Every default of the config schema, nested as the config is (a fresh copy)."""
    defaults: dict[str, Any] = {}
    inject_defaults(defaults, read_schema(CONFIG_SCHEMA))
    return defaults


DEFAULTS: dict[str, Any] = schema_defaults()
