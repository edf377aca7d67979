"""The one config schema: defaults filled in, errors naming the key, the cell-type sheet."""

from __future__ import annotations

import json

import pytest

from getdiff.config import (
    load_cell_types,
    load_config,
    stage_config_json,
    train_groups,
    validate_config,
)
from getdiff.errors import ConfigError

MINIMAL = {"cell_types": "sheet.tsv", "motif_scan": "scan.bed.gz"}


def test_defaults_are_filled_in_from_the_schema():
    config = validate_config(MINIMAL)
    assert config["prepare"]["window_size"] == 900
    assert config["prepare"]["test_chromosomes"] == ["chr11"]
    assert config["model"]["lora"] == {"r": 8, "alpha": 16, "dropout": 0.0, "adaln": False}
    assert config["train"]["batch_size"] == 8
    assert config["diffusion"]["num_timesteps"] == 1000


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="unknown key 'train.learning_rate'"):
        validate_config({**MINIMAL, "train": {"learning_rate": 0.1}})


def test_wrong_type_is_an_error_naming_the_dotted_key():
    with pytest.raises(ConfigError, match="key 'prepare.window_size'"):
        validate_config({**MINIMAL, "prepare": {"window_size": "big"}})


def test_missing_required_key_is_reported():
    with pytest.raises(ConfigError, match="motif_scan"):
        validate_config({"cell_types": "x"})


def test_load_config_reports_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_load_config_reports_bad_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("cell_types: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_stage_config_holds_only_the_inputs_and_the_sections_named():
    prepare = json.loads(stage_config_json(MINIMAL, "prepare"))
    assert set(prepare) == {
        "results",
        "cell_types",
        "motif_scan",
        "genome_fasta",
        "motifs",
        "genome",
        "cluster_names",
        "motif_to_cluster",
        "prepare",
    }
    assert "evaluate" in json.loads(stage_config_json(MINIMAL, "evaluate"))
    scan = json.loads(stage_config_json(MINIMAL, "scan", "prepare.chromosomes"))
    assert set(scan["prepare"]) == {"chromosomes"} and "pvalue" in scan["scan"]
    with pytest.raises(ConfigError, match="prepare.nope"):
        stage_config_json(MINIMAL, "prepare.nope")
    with pytest.raises(ConfigError, match="evaluat"):
        stage_config_json(MINIMAL, "evaluat")


def test_the_inference_device_is_not_part_of_the_train_rules_config():
    train = stage_config_json(MINIMAL, "task", "model", "diffusion", "train")
    moved = {**MINIMAL, "evaluate": {"device": "cpu"}, "impute": {"device": "cpu"}}
    assert stage_config_json(moved, "task", "model", "diffusion", "train") == train


def _sheet(tmp_path, text):
    path = tmp_path / "cell_types.tsv"
    path.write_text(text)
    return path


def test_cell_type_sheet_reads_optional_counts(tmp_path):
    sheet = load_cell_types(
        _sheet(
            tmp_path,
            "cell_type\tpeaks\tcounts_file\tcounts_column\nA\ta.bed\t\t5\nB\tb.bed\tb.bg\t\n",
        )
    )
    assert list(sheet.index) == ["A", "B"]
    assert sheet.loc["A", "counts_column"] == 5 and sheet.loc["A", "counts_file"] is None
    assert sheet.loc["B", "counts_file"] == "b.bg"


def test_a_sheet_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    sheet = load_cell_types(_sheet(tmp_path, "\ufeffcell_type\tpeaks\nA\ta.bed\n"))
    assert list(sheet.index) == ["A"] and sheet.loc["A", "peaks"].endswith("a.bed")


def test_cell_type_sheet_rejects_a_bad_name_with_its_line(tmp_path):
    with pytest.raises(ConfigError, match="line 3.*cell_type"):
        load_cell_types(_sheet(tmp_path, "cell_type\tpeaks\nA\ta.bed\nB C\tb.bed\n"))


def test_cell_type_sheet_rejects_duplicates(tmp_path):
    with pytest.raises(ConfigError, match="listed twice"):
        load_cell_types(_sheet(tmp_path, "cell_type\tpeaks\nA\ta.bed\nA\tb.bed\n"))


def test_cell_type_sheet_rejects_both_counts_sources(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        load_cell_types(
            _sheet(tmp_path, "cell_type\tpeaks\tcounts_file\tcounts_column\nA\ta\tb\t5\n")
        )


def test_default_group_trains_one_model_over_all_cell_types():
    assert train_groups(validate_config(MINIMAL), ["A", "B"]) == {"all": ["A", "B"]}


def test_group_with_unknown_cell_type_is_an_error():
    config = validate_config({**MINIMAL, "train": {"groups": {"g": ["A", "Z"]}}})
    with pytest.raises(ConfigError, match="train.groups.g.*'Z'"):
        train_groups(config, ["A", "B"])


def test_config_readme_key_table_is_the_one_generated_from_the_schema():
    from getdiff.config import README, readme_with_key_table

    current = README.read_text(encoding="utf-8")
    assert readme_with_key_table(current) == current, "run: python -m getdiff.config --write"


def test_every_schema_key_has_a_description():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())

    def undocumented(properties, prefix=""):
        for key, sub in properties.items():
            if not str(sub.get("description", "")).strip():
                yield prefix + key
            yield from undocumented(sub.get("properties", {}), f"{prefix}{key}.")

    assert list(undocumented(schema["properties"])) == []


def test_a_hash_inside_a_sheet_path_is_kept_and_comment_lines_are_skipped(tmp_path):
    text = (
        "cell_type\tpeaks\tcounts_file\tcounts_column\n"
        "# a comment line\n"
        "liver\tdata/liver#v2.bed\t\t5\n"
        "blood\tdata/blood.bed\t\tfive\n"
    )
    path = _sheet(tmp_path, text)
    with pytest.raises(ConfigError, match="line 4: counts_column"):
        load_cell_types(path)
    path.write_text(text.replace("five", "5"))
    assert load_cell_types(path).loc["liver", "peaks"] == "data/liver#v2.bed"


def test_a_misspelt_key_names_the_closest_valid_one():
    with pytest.raises(
        ConfigError, match=r"unknown key 'train.max_stepz' \(did you mean 'train.max_steps'\?\)"
    ):
        validate_config({**MINIMAL, "train": {"max_stepz": 5}})
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        validate_config({**MINIMAL, "trian": {}})


def test_betas_out_of_order_are_a_config_error_before_any_work():
    with pytest.raises(ConfigError, match="beta_start <= beta_end < 1"):
        validate_config({**MINIMAL, "diffusion": {"beta_start": 0.03, "beta_end": 0.02}})


def test_the_schema_default_chromosomes_are_the_readers_default():
    from getdiff.config import validate_config
    from getdiff.genomics.peaks import DEFAULT_CHROMOSOMES

    config = validate_config({"cell_types": "x.tsv", "motif_scan": "x.bed"})
    assert config["prepare"]["chromosomes"] == list(DEFAULT_CHROMOSOMES)


def test_a_stage_config_of_a_scanning_config_validates_again_in_the_command():
    """The rules pass stage_config_json to the CLI, which validates it again: the derived scan
    paths must come out the same with another results directory."""
    config = {"cell_types": "s.tsv", "genome_fasta": "g.fa", "motifs": "m.meme", "results": "out/a"}
    for section in ("scan", "prepare"):
        again = validate_config(json.loads(stage_config_json(config, section)))
        assert again["motif_scan"] == "out/a/scan/motif_scan.tsv.gz"
        assert again["cluster_names"] == "out/a/scan/motif_names.txt"


def test_the_cell_types_key_names_every_column_of_the_sheet():
    from getdiff.defaults import CELL_TYPES_SCHEMA, CONFIG_SCHEMA, read_schema

    description = read_schema(CONFIG_SCHEMA)["properties"]["cell_types"]["description"]
    columns = read_schema(CELL_TYPES_SCHEMA)["properties"]
    missing = [column for column in columns if column not in description]
    assert not missing, f"config schema's cell_types description omits the columns {missing}"
