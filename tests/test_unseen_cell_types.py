"""Cell types a model never saw: served by its unknown-cell-type entry or refused, logged, and
marked in the outputs (getdiff.evaluation.inference.cell_type_index, evaluate.cell_types), and the
sheet's impute_with column that names the group whose model imputes a cell type outside every
group."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import prepare_with

from getdiff.cli import main
from getdiff.config import imputed_cell_types, load_cell_types, validate_config
from getdiff.errors import ConfigError, InputError
from getdiff.evaluation.conformal import read_calibration
from getdiff.evaluation.evaluate import evaluated_cell_types
from getdiff.evaluation.inference import cell_type_index, is_seen
from getdiff.modeling.model import build_model, save_model
from getdiff.tensors import load_window_set

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


def write_sheet(path, impute_with: dict[str, str]) -> str:
    rows = ["cell_type\tpeaks\timpute_with"]
    rows += [
        f"{ct}\t{ct}.bed\t{impute_with.get(ct, '')}" for ct in ("myeloid", "lymphoid", "liver")
    ]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_the_sheet_names_the_group_whose_model_imputes_a_cell_type_in_no_group(tmp_path):
    sheet = write_sheet(tmp_path / "cell_types.tsv", {"liver": "blood"})
    groups = {"blood": ["myeloid", "lymphoid"]}
    config = validate_config(
        {"cell_types": sheet, "motif_scan": "s.bed", "train": {"groups": groups}}
    )
    table = load_cell_types(sheet)
    assert table["impute_with"].tolist() == [None, None, "blood"]
    assert imputed_cell_types(config, table) == {"blood": ["myeloid", "lymphoid", "liver"]}


def test_impute_with_adds_to_a_groups_own_cell_types_once_and_without_it_none_is_added(tmp_path):
    groups = {"blood": ["myeloid", "lymphoid"], "liver": ["liver"]}
    sheet = write_sheet(tmp_path / "cell_types.tsv", {"liver": "blood", "myeloid": "blood"})
    config = validate_config(
        {"cell_types": sheet, "motif_scan": "s.bed", "train": {"groups": groups}}
    )
    imputed = imputed_cell_types(config, load_cell_types(sheet))
    assert imputed == {"blood": ["myeloid", "lymphoid", "liver"], "liver": ["liver"]}
    plain = write_sheet(tmp_path / "plain.tsv", {})
    config = validate_config(
        {"cell_types": plain, "motif_scan": "s.bed", "train": {"groups": groups}}
    )
    assert imputed_cell_types(config, load_cell_types(plain)) == groups


def test_impute_with_naming_no_group_is_an_error_naming_the_cell_type_and_the_groups(tmp_path):
    sheet = write_sheet(tmp_path / "cell_types.tsv", {"liver": "blod"})
    config = validate_config({"cell_types": sheet, "motif_scan": "s.bed"})
    with pytest.raises(ConfigError, match="cell type 'liver': column 'impute_with' names 'blod'"):
        imputed_cell_types(config, load_cell_types(sheet))


def test_a_model_without_cell_type_embedding_logs_a_cell_type_it_was_not_trained_on(caplog):
    plain = build_model("tiny")
    with caplog.at_level(logging.WARNING):
        assert cell_type_index(plain, META, windows_of("liver"), "w.parquet") is None
        assert cell_type_index(plain, META, windows_of("myeloid"), "w.parquet") is None
    assert caplog.text.count("was not among the model's training cell types") == 1


def test_calibrate_and_impute_serve_the_cell_type_the_sheet_gives_a_group(
    small_demo, tmp_path, caplog
):
    """demo_liver is in no group; its row names the group "one" (trained on demo_myeloid): the
    group's calibration covers it and its imputation is logged and marked unseen."""
    prepared, settings = tmp_path / "prepared", {"window_size": 20, "max_span": 10**9}
    for cell_type in ("demo_myeloid", "demo_liver"):
        peaks = small_demo[f"peaks_{cell_type}"]
        prepare_with(
            prepared / cell_type,
            cell_type=cell_type,
            peaks=peaks,
            counts_column=7,
            motif_scan=small_demo["motif_scan"],
            **settings,
        )
    names = load_window_set(prepared / "demo_myeloid" / "windows_train.parquet").meta
    names = list(names["feature_names"])
    torch.manual_seed(0)
    net = build_model(
        "tiny", num_motif=len(names), num_regions=20, num_cell_types=1, unknown_cell_type=True
    )
    extra = {"cell_types": ["demo_myeloid"], "feature_names": names}
    extra["train_feature_mean"] = [0.5] * len(names)
    save_model(net, tmp_path / "model.safetensors", extra_metadata=extra)
    sheet = tmp_path / "cell_types.tsv"
    sheet.write_text(
        "cell_type\tpeaks\tcounts_column\timpute_with\n"
        f"demo_myeloid\t{small_demo['peaks_demo_myeloid']}\t7\t\n"
        f"demo_liver\t{small_demo['peaks_demo_liver']}\t7\tone\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cell_types": str(sheet),
                "motif_scan": str(small_demo["motif_scan"]),
                "prepare": settings,
                "train": {"groups": {"one": ["demo_myeloid"]}},
                "evaluate": {"device": "cpu"},
                "impute": {"device": "cpu"},
            }
        )
    )
    common = ["--config", str(config), "--model", str(tmp_path / "model.safetensors")]
    common += ["--prepared-dir", str(prepared)]
    calibration = tmp_path / "calibration.parquet"
    assert main(["calibrate", *common, "--group", "one", "--output", str(calibration)]) == 0
    assert set(read_calibration(calibration).fits) == {"demo_myeloid", "demo_liver"}
    output = tmp_path / "demo_liver.parquet"
    with caplog.at_level(logging.WARNING):
        argv = ["impute", *common, "--calibration", str(calibration)]
        assert main([*argv, "--cell-type", "demo_liver", "--output", str(output)]) == 0
    assert "cell type 'demo_liver' was not among the model's (demo_myeloid)" in caplog.text
    meta = json.loads(pq.read_schema(output).metadata[b"getdiff"])
    assert meta["cell_type"] == "demo_liver" and meta["cell_type_seen"] is False
