"""GET checkpoint import: formats, key renaming, norm folding, and clear errors."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from getdiff.errors import InputError
from getdiff.modeling.checkpoint import (
    GETRegionPretrain,
    build_pretrain,
    load_get_checkpoint,
    read_state_dict,
)
from getdiff.modeling.model import build_model

F = 283


class NotATensor:
    """A pickled object that weights_only loading must refuse."""


def random_pretrain(seed: int = 0) -> GETRegionPretrain:
    """Tiny pretrain network with random weights, including non-trivial LayerNorm affines."""
    torch.manual_seed(seed)
    model = build_pretrain("tiny", dropout=0.0).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                param.normal_(mean=1.0, std=0.3)
            else:
                param.normal_(std=0.1)
    return model


@pytest.fixture
def pretrain() -> GETRegionPretrain:
    return random_pretrain()


@pytest.fixture
def v1_checkpoint(tmp_path, pretrain):
    path = tmp_path / "checkpoint-799.pth"
    torch.save({"model": pretrain.v1_state_dict(), "epoch": 799}, path)
    return path


def clean_batch(b: int = 3, r: int = 10):
    g = torch.Generator().manual_seed(1)
    return torch.rand(b, r, F, generator=g), torch.zeros(b, r, dtype=torch.bool)


def test_pretrain_spec_has_85484059_parameters():
    with torch.device("meta"):
        model = build_pretrain("spec")
    assert sum(p.numel() for p in model.parameters()) == 85_484_059


def test_v1_file_uses_v1_key_names(pretrain):
    keys = set(pretrain.v1_state_dict())
    assert {"encoder.head.weight", "encoder.region_embed.proj.weight", "encoder.cls_token"} <= keys
    assert "head_mask.weight" not in keys and "cls_token" not in keys


def test_v1_keys_are_renamed_as_get_does(v1_checkpoint, pretrain):
    assert set(read_state_dict(v1_checkpoint)) == set(pretrain.state_dict())


def test_imported_model_equals_pretrained_network_for_any_t(v1_checkpoint, pretrain):
    model = build_model("tiny", dropout=0.0).eval()
    load_get_checkpoint(model, v1_checkpoint)
    x, mask = clean_batch()
    expected_tokens = pretrain.encode(x, mask)
    expected = pretrain(x, mask)
    with torch.no_grad():
        for step in (0, 1, 250, 999):
            t = torch.full((3,), step)
            tokens = model.encoder(model.embed_tokens(x, mask), t)
            torch.testing.assert_close(tokens, expected_tokens, atol=1e-5, rtol=0)
            torch.testing.assert_close(model(x, mask, t), expected, atol=1e-5, rtol=0)


def test_norm_affine_is_folded_into_adaln_bias(v1_checkpoint, pretrain):
    model = build_model("tiny")
    load_get_checkpoint(model, v1_checkpoint)
    d = model.config.embed_dim
    block, source = model.encoder.blocks[1], pretrain.encoder.blocks[1]
    shift1, scale1, gate1, shift2, scale2, gate2 = block.adaLN_modulation[1].bias.split(d)
    torch.testing.assert_close(shift1, source.norm1.bias)
    torch.testing.assert_close(scale1, source.norm1.weight - 1)
    torch.testing.assert_close(shift2, source.norm2.bias)
    torch.testing.assert_close(scale2, source.norm2.weight - 1)
    assert torch.equal(gate1, torch.ones(d)) and torch.equal(gate2, torch.ones(d))
    assert not block.adaLN_modulation[1].weight.any()


def test_report_lists_loaded_folded_and_initialised_keys(v1_checkpoint, pretrain):
    report = load_get_checkpoint(build_model("tiny"), v1_checkpoint)
    assert len(report["loaded"]) + len(report["folded"]) == len(pretrain.state_dict())
    assert "encoder.blocks.0.norm1.weight" in report["folded"]
    assert report["ignored"] == []
    assert report["initialised"] and all("t_embedder" in k for k in report["initialised"])


def test_lightning_state_dict_with_model_prefix_is_accepted(tmp_path, pretrain):
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in pretrain.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = build_model("tiny", dropout=0.0).eval()
    load_get_checkpoint(model, path)
    x, mask = clean_batch()
    torch.testing.assert_close(model(x, mask, torch.zeros(3, dtype=torch.long)), pretrain(x, mask))


def test_safetensors_checkpoint_is_accepted(tmp_path, pretrain):
    path = tmp_path / "pretrain.safetensors"
    save_file({k: v.contiguous() for k, v in pretrain.v1_state_dict().items()}, str(path))
    model = build_model("tiny", dropout=0.0).eval()
    load_get_checkpoint(model, path)
    torch.testing.assert_close(model.head_mask.weight, pretrain.head_mask.weight)


def test_argparse_namespace_beside_the_weights_is_allowed(tmp_path, pretrain):
    path = tmp_path / "mae_style.pth"
    torch.save({"model": pretrain.v1_state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    load_get_checkpoint(build_model("tiny"), path)


def test_pickled_non_tensor_object_is_refused_with_a_clear_error(tmp_path, pretrain):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": pretrain.v1_state_dict(), "extra": NotATensor()}, path)
    with pytest.raises(InputError, match="refusing to unpickle.*NotATensor"):
        load_get_checkpoint(build_model("tiny"), path)


def test_missing_keys_are_an_error_naming_them(tmp_path, pretrain):
    state = pretrain.v1_state_dict()
    del state["encoder.blocks.1.attn.q_bias"]
    path = tmp_path / "missing.pth"
    torch.save({"model": state}, path)
    with pytest.raises(InputError, match=r"missing keys \['encoder.blocks.1.attn.q_bias'\]"):
        load_get_checkpoint(build_model("tiny"), path)


def test_unexpected_keys_are_an_error_unless_allowed(tmp_path, pretrain):
    state = pretrain.v1_state_dict()
    state["encoder.blocks.0.attn.qkv.bias"] = torch.zeros(192)
    path = tmp_path / "extra.pth"
    torch.save({"model": state}, path)
    with pytest.raises(InputError, match="unexpected keys.*qkv.bias"):
        load_get_checkpoint(build_model("tiny"), path)
    report = load_get_checkpoint(build_model("tiny"), path, allow_extra=True)
    assert report["ignored"] == ["encoder.blocks.0.attn.qkv.bias"]


def test_shape_mismatch_is_an_error_naming_the_key(v1_checkpoint):
    model = build_model("tiny", mlp_ratio=2.0)
    with pytest.raises(InputError, match=r"shape-mismatched keys.*blocks.0.mlp.fc1.weight"):
        load_get_checkpoint(model, v1_checkpoint)


def test_a_failed_import_leaves_the_model_untouched(tmp_path, pretrain):
    state = pretrain.v1_state_dict()
    del state["encoder.head.bias"]
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    model = build_model("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError):
        load_get_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unreadable_files_are_input_errors(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pth"):
        load_get_checkpoint(build_model("tiny"), garbage)
    with pytest.raises(InputError, match="not found"):
        load_get_checkpoint(build_model("tiny"), tmp_path / "absent.pth")


def test_dict_without_weights_is_an_error(tmp_path):
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(InputError, match="no weights found"):
        load_get_checkpoint(build_model("tiny"), path)


def test_a_model_with_another_feature_count_is_told_why_the_checkpoint_does_not_fit(
    v1_checkpoint,
):
    model = build_model("tiny", dropout=0.0, num_motif=41)  # e.g. 40 JASPAR motifs + accessibility
    with pytest.raises(
        InputError, match=r"takes 283 features per region, the prepared data have 41"
    ):
        load_get_checkpoint(model, v1_checkpoint)
