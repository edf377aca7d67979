"""Cell types a model never saw: served by its unknown-cell-type entry or refused, logged, and
marked in the outputs (getdiff.inference.cell_type_index, evaluate.cell_types)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from getdiff.config import validate_config
from getdiff.errors import ConfigError, InputError
from getdiff.evaluate import evaluated_cell_types
from getdiff.inference import cell_type_index, is_seen
from getdiff.model import build_model

META = {"cell_types": ["myeloid", "lymphoid"]}


def windows_of(cell_type: str) -> SimpleNamespace:
    return SimpleNamespace(meta={"cell_type": cell_type})


def model(unknown: bool):
    return build_model("tiny", num_cell_types=2, unknown_cell_type=unknown)


def test_a_seen_cell_type_gets_its_own_index():
    assert cell_type_index(model(True), META, windows_of("lymphoid"), "w.parquet") == 1
    assert is_seen(META, "lymphoid") and not is_seen(META, "liver")
    assert is_seen({}, "liver")  # a model that records no cell types saw every one


def test_an_unseen_cell_type_gets_the_unknown_entry_and_a_log_line(caplog):
    with caplog.at_level(logging.WARNING):
        index = cell_type_index(model(True), META, windows_of("liver"), "w.parquet")
    assert index == 2  # the row after the trained cell types
    assert "cell type 'liver' was not among the model's (myeloid, lymphoid)" in caplog.text


@pytest.mark.parametrize(
    ("unknown", "unseen", "fix"),
    [
        (False, "unknown", "train with model.cell_type_dropout > 0"),
        (True, "refuse", "set model.unseen_cell_types: unknown"),
    ],
)
def test_an_unseen_cell_type_is_refused_naming_the_fix(unknown, unseen, fix):
    with pytest.raises(InputError, match="holds cell type 'liver'") as error:
        cell_type_index(model(unknown), META, windows_of("liver"), "w.parquet", unseen)
    assert fix in str(error.value)


def test_evaluate_cell_types_default_to_the_group_and_must_be_in_the_sheet():
    config = validate_config({"cell_types": "s.tsv", "motif_scan": "scan.bed"})
    sheet = ["myeloid", "lymphoid", "liver"]
    assert evaluated_cell_types(config, ["myeloid"], sheet) == ["myeloid"]
    config["evaluate"]["cell_types"] = ["liver", "myeloid", "liver"]
    assert evaluated_cell_types(config, ["myeloid"], sheet) == ["liver", "myeloid"]
    config["evaluate"]["cell_types"] = ["livr"]
    with pytest.raises(ConfigError, match="'livr' is not in the cell-type sheet"):
        evaluated_cell_types(config, ["myeloid"], sheet)
