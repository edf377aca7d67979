"""GETRegionDiffusion network: sizes, contract of forward, conditioning, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import active_model

from getdiff.defaults import DEFAULTS
from getdiff.errors import ConfigError, InputError
from getdiff.modeling.model import (
    TimestepEmbedder,
    build_model,
    count_parameters,
    load_model,
    make_config,
    model_metadata,
    save_model,
)

F = 283


def batch(b: int = 2, r: int = 12, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, r, F, generator=g)
    mask = torch.rand(b, r, generator=g) < 0.5
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, mask, t


def test_spec_preset_has_128757787_parameters():
    with torch.device("meta"):  # counting needs no memory or initialisation
        trainable, total = count_parameters(build_model("spec"))
    assert total == 128_757_787
    assert trainable == total


def test_spec_preset_matches_table_1():
    config = make_config("spec")
    assert (config.num_regions, config.num_motif, config.embed_dim) == (900, 283, 768)
    assert (config.num_layers, config.num_heads, config.dropout) == (12, 12, 0.1)
    # the spec's mask ratio is the schema's default (training reads diffusion.mask_ratio)
    assert DEFAULTS["diffusion"]["mask_ratio"] == 0.5


def test_mid_and_tiny_presets_are_smaller_and_overridable():
    mid = build_model("mid").config
    assert (mid.embed_dim, mid.num_layers, mid.num_heads) == (384, 6, 6)
    tiny = build_model("tiny", num_regions=40, num_motif=10).config
    assert (tiny.num_regions, tiny.num_motif) == (40, 10)


def test_unknown_override_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="embed_dimm"):
        build_model("tiny", embed_dimm=32)


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError, match="huge"):
        build_model("huge")


def test_heads_must_divide_embed_dim():
    with pytest.raises(ConfigError, match="divisible"):
        build_model("tiny", num_heads=5)


def test_state_dict_uses_get_and_dit_module_names():
    keys = set(build_model("tiny").state_dict())
    block = "encoder.blocks.1."
    expected = {
        "region_embed.embed.weight",
        "mask_token",
        "cls_token",
        block + "attn.qkv.weight",
        block + "attn.q_bias",
        block + "attn.v_bias",
        block + "attn.proj.weight",
        block + "mlp.fc1.weight",
        block + "mlp.fc2.weight",
        block + "adaLN_modulation.1.weight",
        "encoder.t_embedder.mlp.0.weight",
        "encoder.t_embedder.mlp.2.weight",
        "encoder.norm.weight",
        "head_mask.weight",
    }
    assert expected <= keys
    assert block + "attn.qkv.bias" not in keys  # k is unbiased: only q_bias / v_bias
    assert block + "norm1.weight" not in keys  # DiT norms have no affine


def test_forward_returns_one_prediction_per_region_and_feature():
    model = active_model()
    for r in (1, 7, 30):  # no positional embedding: any number of regions
        x, mask, t = batch(r=r)
        assert model(x, mask, t).shape == (2, r, F)


def test_forward_rejects_wrong_feature_width():
    model = active_model()
    x, mask, t = batch()
    with pytest.raises(ValueError, match="283"):
        model(x[..., :-1], mask, t)


def test_masked_rows_are_embedded_with_added_mask_token():
    model = active_model()
    x, mask, _ = batch()
    tokens = model.embed_tokens(x, mask)
    embedded = model.region_embed(x)
    expected = torch.where(mask.unsqueeze(-1), embedded + model.mask_token, embedded)
    torch.testing.assert_close(tokens[:, 1:], expected)
    torch.testing.assert_close(tokens[:, :1], model.cls_token.expand(2, 1, -1))


def test_masked_rows_content_is_used_not_replaced():
    model = active_model()
    x, mask, t = batch()
    row = int(mask[0].nonzero()[0])
    changed = x.clone()
    changed[0, row] += 0.5
    assert not torch.allclose(model(x, mask, t)[0, row], model(changed, mask, t)[0, row])


def test_changing_the_mask_changes_the_output_of_other_rows():
    model = active_model()
    x, mask, t = batch()
    flipped = mask.clone()
    flipped[:, 0] = ~flipped[:, 0]
    # Row 5 is not flipped: it changes only through attention to row 0.
    assert not torch.allclose(model(x, mask, t)[:, 5], model(x, flipped, t)[:, 5])


def test_fresh_model_blocks_start_as_identity():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    x, mask, t = batch()
    tokens = model.embed_tokens(x, mask)
    expected = model.head_mask(model.encoder.norm(tokens))[:, 1:]
    torch.testing.assert_close(model(x, mask, t), expected)


def test_timestep_conditions_the_output():
    model = active_model()
    x, mask, _ = batch()
    out_a = model(x, mask, torch.tensor([0, 0]))
    out_b = model(x, mask, torch.tensor([500, 500]))
    assert not torch.allclose(out_a, out_b)


def test_timestep_embedding_is_cos_then_sin_with_max_period_10000():
    t = torch.tensor([0, 3, 999])
    emb = TimestepEmbedder.timestep_embedding(t, 256)
    assert emb.shape == (3, 256)
    freq = math.exp(-math.log(10000.0) * 5 / 128)
    assert emb[1, 5].item() == pytest.approx(math.cos(3 * freq), abs=1e-6)
    assert emb[1, 128 + 5].item() == pytest.approx(math.sin(3 * freq), abs=1e-6)
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(128), torch.zeros(128)]))


def test_samples_in_a_batch_are_independent_with_their_own_t():
    model = active_model()
    x, mask, t = batch(b=3)
    together = model(x, mask, t)
    for i in range(3):
        alone = model(x[i : i + 1], mask[i : i + 1], t[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_permuting_regions_permutes_the_output():
    model = active_model()
    x, mask, t = batch()
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        model(x[:, perm], mask[:, perm], t), model(x, mask, t)[:, perm], atol=1e-5, rtol=1e-5
    )


def test_dropout_acts_in_training_mode_only():
    torch.manual_seed(0)
    model = build_model("tiny", dropout=0.5)
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.adaLN_modulation[-1].bias.fill_(1.0)
        model.head_mask.weight.normal_(std=0.1)  # it starts at zero
    x, mask, t = batch()
    model.train()
    assert not torch.equal(model(x, mask, t), model(x, mask, t))
    model.eval()
    assert torch.equal(model(x, mask, t), model(x, mask, t))


def test_count_parameters_splits_trainable_from_total():
    model = build_model("tiny")
    model.head_mask.requires_grad_(False)
    trainable, total = count_parameters(model)
    assert total - trainable == model.head_mask.weight.numel() + model.head_mask.bias.numel()


def test_save_and_load_model_round_trip(tmp_path):
    model = active_model(num_regions=12)
    path = tmp_path / "model.safetensors"
    save_model(model, path, extra_metadata={"cell_type": "K562", "step": 3})
    loaded = load_model(path)
    assert loaded.config == model.config
    x, mask, t = batch()
    torch.testing.assert_close(loaded.eval()(x, mask, t), model(x, mask, t), atol=0, rtol=0)
    metadata = model_metadata(path)
    assert metadata["cell_type"] == "K562" and metadata["step"] == 3
    assert metadata["config"]["num_regions"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left


def test_load_model_rejects_a_file_without_getdiff_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(InputError, match="save_model"):
        load_model(path)


@pytest.mark.parametrize(
    "override", [{"num_heads": 0}, {"dropout": 2.0}, {"embed_dim": "64"}, {"num_layers": True}]
)
def test_impossible_model_options_are_config_errors(override):
    with pytest.raises(ConfigError, match="model option"):
        make_config("tiny", **override)
