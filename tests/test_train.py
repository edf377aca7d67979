"""`getdiff train`: outputs, learning, resumption, reproducible validation, LoRA on/off, threads."""

from __future__ import annotations

import logging
from math import nan
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import (
    CELL_TYPES,
    FEATURE_NAMES,
    TINY_MODEL,
    F,
    W,
    read_history,
    train_config,
    write_split,
)
from safetensors.torch import load_file

from getdiff.cli import main
from getdiff.errors import InputError
from getdiff.modeling.model import build_model, load_model, model_metadata
from getdiff.tensors import load_window_set
from getdiff.training.model_files import HISTORY_COLUMNS
from getdiff.training.train import lr_factor, train
from getdiff.training.validation import masked_pearson, selection_key
from getdiff.training.windows import EpochSampler, load_split_windows


@pytest.fixture(scope="module")
def learnable_accessibility(tmp_path_factory) -> Path:
    """Two cell types whose accessibility is a linear function of the region's own motifs (other
    weights in each), plus a little noise: its masked Pearson grows as the model learns."""
    root = tmp_path_factory.mktemp("learnable")
    rng = np.random.default_rng(0)
    for cell_type in CELL_TYPES:
        weights = rng.normal(0, 1, size=F - 1)
        for split, n in (("train", 200), ("validation", 80)):
            motifs = rng.uniform(0, 1, size=(n, F - 1))
            accessibility = 0.5 + 0.15 * (motifs - 0.5) @ weights + rng.normal(0, 0.02, size=n)
            features = np.clip(np.column_stack([motifs, accessibility]), 0, 1).astype(np.float32)
            starts = np.arange(0, n - W + 1, 8, dtype=np.int64)
            write_split(
                root / cell_type / f"windows_{split}.parquet", features, starts, cell_type, split
            )
    return root


def test_training_writes_model_adapter_history_and_config(prepared, tmp_path):
    config = train_config()
    train(config, CELL_TYPES, prepared, tmp_path)
    model = load_model(tmp_path / "model.safetensors")
    assert model.config.num_motif == F and model.config.num_regions == W
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    history = read_history(tmp_path)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert history["step"].tolist() == [2, 4, 6, 8]
    assert history["val_loss"].notna().tolist() == [False, True, False, True]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == config


def test_model_metadata_holds_cell_types_features_and_training_mean(prepared, tmp_path):
    train(train_config(max_steps=2), CELL_TYPES, prepared, tmp_path)
    meta = model_metadata(tmp_path / "model.safetensors")
    assert meta["cell_types"] == CELL_TYPES
    assert meta["feature_names"] == FEATURE_NAMES
    stacked = load_split_windows(prepared, CELL_TYPES, "train", torch.device("cpu")).features
    np.testing.assert_allclose(meta["train_feature_mean"], stacked.double().mean(0).numpy())
    assert meta["diffusion"]["num_timesteps"] == 1000


def test_loss_decreases_on_learnable_windows(prepared, tmp_path):
    config = train_config(max_steps=60, log_every=10, eval_every=30, checkpoint_every=60)
    train(config, CELL_TYPES, prepared, tmp_path)
    history = read_history(tmp_path)
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    # The head starts at zero, so the untrained model predicts 0: its loss is the mean square.
    untrained = np.mean(
        [
            np.mean(load_window_set(prepared / ct / "windows_validation.parquet").features ** 2)
            for ct in CELL_TYPES
        ]
    )
    assert history["val_loss"].dropna().iloc[-1] < 0.2 * untrained


def test_killed_and_resumed_run_reaches_same_weights_as_uninterrupted_run(
    prepared, tmp_path, pinned_kernels
):
    # Bit for bit: both runs are in this process on the same kernels and one thread.
    config = train_config(max_steps=10, checkpoint_every=3)
    train(config, CELL_TYPES, prepared, tmp_path / "straight")
    # Killed after step 7: the last checkpoint is step 6, so step 7 is redone on resume.
    assert train(config, CELL_TYPES, prepared, tmp_path / "resumed", stop_after=7) is None
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 6
    train(config, CELL_TYPES, prepared, tmp_path / "resumed")
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    columns = ["step", "lr", "loss", "val_loss", "masked_pearson", "val_masked_pearson", "best"]
    pd.testing.assert_frame_equal(
        read_history(tmp_path / "straight")[columns], read_history(tmp_path / "resumed")[columns]
    )


def test_rerunning_a_finished_run_rewrites_the_same_model_without_training(
    prepared, tmp_path, caplog, pinned_kernels
):
    config = train_config(max_steps=4)
    train(config, CELL_TYPES, prepared, tmp_path)
    first = load_file(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").unlink()
    with caplog.at_level(logging.INFO, logger="getdiff.training"):
        train(config, CELL_TYPES, prepared, tmp_path)
    assert "at step 4" in caplog.text and "step 4/4" not in caplog.text
    second = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_rerun_with_other_settings_starts_afresh(prepared, tmp_path, caplog):
    train(train_config(max_steps=4), CELL_TYPES, prepared, tmp_path, stop_after=3)
    with caplog.at_level(logging.INFO, logger="getdiff.training"):
        train(train_config(max_steps=4, lr=1e-3), CELL_TYPES, prepared, tmp_path)
    assert "starting afresh" in caplog.text
    assert read_history(tmp_path)["step"].tolist() == [2, 4]


def test_validation_numbers_are_identical_across_runs_with_the_same_seed(
    prepared, tmp_path, pinned_kernels
):
    config = train_config(max_steps=4)
    for name in ("a", "b"):
        train(config, CELL_TYPES, prepared, tmp_path / name)
    a, b = read_history(tmp_path / "a"), read_history(tmp_path / "b")
    assert a["val_loss"].notna().sum() == 1
    assert a["val_loss"].equals(b["val_loss"])
    assert a["val_masked_pearson"].equals(b["val_masked_pearson"])
    train(train_config(max_steps=4, seed=1), CELL_TYPES, prepared, tmp_path / "c")
    assert not read_history(tmp_path / "c")["loss"].equals(a["loss"])


def test_best_checkpoint_by_validation_loss_is_exported(prepared, tmp_path):
    # A huge learning rate makes training diverge after the first validation pass.
    config = train_config(
        max_steps=8, eval_every=2, lr=5.0, warmup_steps=0, grad_clip=0, select_by="val_loss"
    )
    train(config, CELL_TYPES, prepared, tmp_path)
    history = read_history(tmp_path)
    val = history.dropna(subset=["val_loss"])
    best = val.loc[val["val_loss"].idxmin()]
    meta = model_metadata(tmp_path / "model.safetensors")
    assert meta["select_by"] == "val_loss"
    assert meta["best_step"] == int(best["step"])
    assert meta["best_val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert val["best"].tolist() == (val["step"] == best["step"]).astype(int).tolist()


def test_killed_run_resumes_to_the_weights_of_the_best_validation_accessibility_pearson(
    learnable_accessibility, tmp_path, pinned_kernels
):
    settings = {"max_steps": 36, "lr": 1e-2, "eval_every": 2, "checkpoint_every": 5}
    config = train_config(use_lora=False, task="accessibility", **settings)
    train(config, CELL_TYPES, learnable_accessibility, tmp_path / "straight")
    # Killed after step 23: last.pt (step 20) names an earlier best than best-22.pt, the
    # weights of a pass that the resumed run redoes.
    resumed = tmp_path / "resumed"
    assert train(config, CELL_TYPES, learnable_accessibility, resumed, stop_after=23) is None
    checkpoint = torch.load(resumed / "checkpoints" / "last.pt")
    assert checkpoint["step"] == 20 and checkpoint["best"]["step"] <= 20
    assert (resumed / "checkpoints" / "best-22.pt").exists()
    # A best file that last.pt does not name (another run's, a lost future's) is never used.
    torch.save({"step": 35, "model": {}}, resumed / "checkpoints" / "best-35.pt")
    train(config, CELL_TYPES, learnable_accessibility, resumed)

    history = read_history(resumed)
    val = history.dropna(subset=["val_loss"])
    assert val["step"].tolist() == list(range(2, 37, 2))
    best = val.loc[val["val_accessibility_pearson"].idxmax()]
    meta = model_metadata(resumed / "model.safetensors")
    assert meta["select_by"] == "val_accessibility_pearson"
    assert meta["best_step"] == int(best["step"])
    assert meta["best_val_accessibility_pearson"] == pytest.approx(
        best["val_accessibility_pearson"], rel=1e-5
    )
    assert meta["best_val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)
    assert val["best"].tolist() == (val["step"] == best["step"]).astype(int).tolist()
    assert history.loc[history["val_loss"].isna(), "best"].isna().all()
    kept = sorted(p.name for p in (resumed / "checkpoints").glob("best-*.pt"))
    assert kept == [f"best-{int(best['step'])}.pt"]
    chosen = torch.load(resumed / "checkpoints" / kept[0], weights_only=True)["model"]
    exported = load_file(resumed / "model.safetensors")
    assert exported.keys() == chosen.keys()
    assert all(torch.equal(exported[k], chosen[k]) for k in exported)
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    assert all(torch.equal(exported[k], straight[k]) for k in exported)
    columns = [c for c in HISTORY_COLUMNS if c not in ("steps_per_s", "tokens_per_s", "gflops")]
    pd.testing.assert_frame_equal(history[columns], read_history(tmp_path / "straight")[columns])


def test_selection_ranks_by_accessibility_pearson_then_loss_and_an_undefined_pearson_last():
    def row(loss, pearson):
        return {"val_loss": loss, "val_accessibility_pearson": pearson}

    by_pearson = "val_accessibility_pearson"
    assert selection_key(row(0.9, 0.5), by_pearson) > selection_key(row(0.1, 0.4), by_pearson)
    assert selection_key(row(0.1, 0.5), by_pearson) > selection_key(row(0.2, 0.5), by_pearson)
    assert selection_key(row(0.9, -0.1), by_pearson) > selection_key(row(0.1, nan), by_pearson)
    # constant accessibility (every Pearson undefined): the loss decides
    assert selection_key(row(0.1, nan), by_pearson) > selection_key(row(0.2, nan), by_pearson)
    assert selection_key(row(0.1, 0.4), "val_loss") > selection_key(row(0.2, 0.5), "val_loss")


def test_training_without_lora_writes_adapter_readme_and_updates_all_weights(prepared, tmp_path):
    train(train_config(use_lora=False, max_steps=2), CELL_TYPES, prepared, tmp_path)
    assert (tmp_path / "adapter" / "README.md").is_file()
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()
    torch.manual_seed(0)  # the training run initialises with the seed (0) before building
    initial = build_model("tiny", **TINY_MODEL, num_motif=F, num_regions=W)
    trained = load_model(tmp_path / "model.safetensors")
    weight = "encoder.blocks.0.attn.qkv.weight"
    assert not torch.equal(initial.state_dict()[weight], trained.state_dict()[weight])


def test_lora_training_writes_adapters_and_merges_them_into_the_model(prepared, tmp_path):
    train(train_config(max_steps=4), CELL_TYPES, prepared, tmp_path / "lora")
    adapters = load_file(tmp_path / "lora" / "adapter" / "adapter_model.safetensors")
    assert any("lora_A" in key for key in adapters)
    torch.manual_seed(0)
    initial = build_model("tiny", **TINY_MODEL, num_motif=F, num_regions=W)
    merged = load_model(tmp_path / "lora" / "model.safetensors")
    weight = "encoder.blocks.0.mlp.fc1.weight"
    assert not torch.equal(initial.state_dict()[weight], merged.state_dict()[weight])
    # cls_token is frozen under LoRA (see getdiff.modeling.lora)
    assert torch.equal(initial.cls_token, merged.cls_token)


def test_pretrained_get_checkpoint_is_imported_before_fine_tuning(prepared, tmp_path):
    from getdiff.modeling.checkpoint import build_pretrain

    torch.manual_seed(123)
    pretrain = build_pretrain("tiny", **TINY_MODEL, num_motif=F, num_regions=W)
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": pretrain.v1_state_dict()}, path)
    config = train_config(max_steps=2)
    config["model"]["pretrained_checkpoint"] = str(path)
    train(config, CELL_TYPES, prepared, tmp_path / "out")
    trained = load_model(tmp_path / "out" / "model.safetensors")
    # cls_token is frozen under LoRA, so it is still the pretrained one.
    assert torch.equal(trained.cls_token, pretrain.cls_token)


def test_threads_option_sets_torch_cpu_threads(prepared, tmp_path):
    assert torch.get_num_threads() == 1  # set by the one_thread fixture
    train(train_config(max_steps=1, log_every=1), CELL_TYPES, prepared, tmp_path, threads=2)
    assert torch.get_num_threads() == 2


def test_cli_trains_the_configured_group(prepared, tmp_path):
    sheet = tmp_path / "cell_types.tsv"
    sheet.write_text("cell_type\tpeaks\nalpha\ta.bed\nbeta\tb.bed\n")
    config = train_config(max_steps=2)
    config["cell_types"] = str(sheet)
    config["train"]["groups"] = {"only_beta": ["beta"]}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    argv = ["train", "--config", str(config_path), "--group", "only_beta"]
    argv += ["--prepared-dir", str(prepared), "--outdir", str(tmp_path / "out"), "--threads", "1"]
    assert main(argv) == 0
    assert model_metadata(tmp_path / "out" / "model.safetensors")["cell_types"] == ["beta"]
    assert main([*argv[:3], "--group", "nope", *argv[5:]]) == 2


def test_log_lines_report_loss_pearson_rates_and_eta_when_not_on_a_terminal(
    prepared, tmp_path, caplog
):
    with caplog.at_level(logging.INFO, logger="getdiff.training"):
        train(train_config(max_steps=4), CELL_TYPES, prepared, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 2/4 ")]
    assert len(lines) == 1
    assert all(word in lines[0] for word in ("loss", "pearson", "steps/s", "tokens/s", "ETA"))


def test_missing_window_file_is_an_input_error_naming_it(prepared, tmp_path):
    with pytest.raises(InputError, match="gamma/windows_train.parquet"):
        train(train_config(), ["alpha", "gamma"], prepared, tmp_path)


def test_windows_of_cell_types_are_stacked_with_offset_starts(prepared):
    from getdiff.tensors import load_window_set

    data = load_split_windows(prepared, CELL_TYPES, "train", torch.device("cpu"))
    alpha = load_window_set(prepared / "alpha" / "windows_train.parquet")
    beta = load_window_set(prepared / "beta" / "windows_train.parquet")
    assert len(data) == len(alpha) + len(beta)
    index = torch.tensor([0, len(alpha) - 1, len(alpha), len(data) - 1])
    expected = np.concatenate(
        [alpha.windows([0, len(alpha) - 1]), beta.windows([0, len(beta) - 1])]
    )
    features, positions, cell_type = data.batch(index)
    np.testing.assert_array_equal(features.numpy(), expected)
    assert positions.shape == features.shape[:2] and positions.dtype == torch.float64
    assert cell_type.tolist() == [0, 0, 1, 1]  # index into CELL_TYPES, the model's order


def test_epoch_sampler_visits_every_window_once_per_epoch():
    sampler = EpochSampler(num_windows=10, batch_size=4, seed=0, device=torch.device("cpu"))
    stream = torch.cat([sampler.indices(step) for step in range(5)])  # 20 = two epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])
    again = EpochSampler(10, 4, 0, torch.device("cpu"))
    assert torch.equal(again.indices(3), sampler.indices(3))


def test_epoch_sampler_handles_batches_larger_than_the_data():
    sampler = EpochSampler(num_windows=3, batch_size=8, seed=0, device=torch.device("cpu"))
    batch = sampler.indices(0)
    assert len(batch) == 8 and set(batch.tolist()) == {0, 1, 2}


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_a_tenth():
    factor = lr_factor(warmup_steps=4, max_steps=14)
    assert [factor(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    assert factor(9) == pytest.approx(0.55)
    assert factor(14) == pytest.approx(0.1)


def test_masked_pearson_uses_masked_rows_only():
    target = torch.arange(12, dtype=torch.float32).view(1, 4, 3)
    mask = torch.tensor([[True, True, False, False]])
    pred = target.clone()
    pred[0, 2:] = -target[0, 2:]  # anticorrelated, but unmasked
    assert masked_pearson(pred, target, mask) == pytest.approx(1.0)


def test_cell_type_embedding_is_trained_and_exported_with_the_cell_type_order(prepared, tmp_path):
    config = train_config(max_steps=4)
    config["model"]["cell_type_embedding"] = True
    train(config, CELL_TYPES, prepared, tmp_path)
    model = load_model(tmp_path / "model.safetensors")
    assert model.config.num_cell_types == len(CELL_TYPES)
    assert model_metadata(tmp_path / "model.safetensors")["cell_types"] == CELL_TYPES
    assert model.cell_type_embed.weight.abs().sum() > 0  # zero-initialised, then trained


def test_label_dropout_trains_an_unknown_cell_type_entry(prepared, tmp_path):
    """model.cell_type_dropout > 0: one more embedding row (index = number of cell types),
    trained on the windows whose label was dropped; dropout 0 leaves the model as before."""
    config = train_config(max_steps=6, use_lora=False)
    config["model"].update(cell_type_embedding=True, cell_type_dropout=0.5)
    train(config, CELL_TYPES, prepared, tmp_path / "dropout")
    model = load_model(tmp_path / "dropout" / "model.safetensors")
    assert model.config.unknown_cell_type
    weight = model.cell_type_embed.weight
    assert weight.shape[0] == len(CELL_TYPES) + 1
    assert weight[len(CELL_TYPES)].abs().sum() > 0  # the unknown row was trained
    config["model"]["cell_type_dropout"] = 0.0
    train(config, CELL_TYPES, prepared, tmp_path / "none")
    plain = load_model(tmp_path / "none" / "model.safetensors")
    assert not plain.config.unknown_cell_type
    assert plain.cell_type_embed.weight.shape[0] == len(CELL_TYPES)


def test_ema_weights_are_validated_exported_and_resumed_exactly(prepared, tmp_path, pinned_kernels):
    """train.ema_decay > 0: the exported weights are the moving average (not the last step's),
    and a run stopped after a checkpoint resumes to the same average as an uninterrupted one."""
    config = train_config(max_steps=8, use_lora=False, ema_decay=0.9, eval_every=100)
    whole = train(config, CELL_TYPES, prepared, tmp_path / "whole")
    raw = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    exported = load_model(whole / "model.safetensors").state_dict()
    name = "head_mask.weight"
    torch.testing.assert_close(exported[name], raw["ema"][name], rtol=0, atol=0)
    assert not torch.equal(exported[name], raw["model"][name])  # the average lags the weights
    assert model_metadata(whole / "model.safetensors")["ema_decay"] == 0.9
    stopped = tmp_path / "stopped"
    assert train(config, CELL_TYPES, prepared, stopped, stop_after=3) is None
    train(config, CELL_TYPES, prepared, stopped)
    again = load_model(stopped / "model.safetensors").state_dict()
    assert all(torch.equal(again[k], exported[k]) for k in exported)
