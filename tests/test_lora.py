"""LoRA via peft: what is frozen and trained, the adapter path is really used, merge, save/load."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from getdiff.errors import InputError
from getdiff.modeling.checkpoint import build_pretrain, load_get_checkpoint
from getdiff.modeling.lora import apply_lora, load_adapters, merge_lora, save_adapters, unwrap
from getdiff.modeling.model import GETRegionDiffusion, build_model, save_model

F = 283


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A GET-format checkpoint with random weights, so LoRA starts from a 'pretrained' net."""
    torch.manual_seed(0)
    pretrain = build_pretrain("tiny")
    with torch.no_grad():
        for param in pretrain.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save({"model": pretrain.v1_state_dict()}, path)
    return path


def pretrained(checkpoint) -> GETRegionDiffusion:
    torch.manual_seed(1)  # the t_embedder is freshly initialised: make it reproducible
    model = build_model("tiny", dropout=0.0).eval()
    load_get_checkpoint(model, checkpoint)
    return model


def batch(b: int = 2, r: int = 12, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, r, F, generator=g)
    mask = torch.rand(b, r, generator=g) < 0.5
    t = torch.randint(0, 1000, (b,), generator=g)
    return x, mask, t


def train_step(model: torch.nn.Module, lr: float = 1e-2) -> None:
    """One AdamW step on the masked-row MSE (what training does)."""
    x, mask, t = batch()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    loss = ((model(x, mask, t) - x)[mask] ** 2).mean()
    loss.backward()
    optimizer.step()


def lora_layers(peft_model: PeftModel) -> dict[str, LoraLayer]:
    return {
        name.removeprefix("base_model.model."): module
        for name, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
    }


def test_lora_wraps_region_embed_and_encoder_linears(checkpoint):
    names = set(lora_layers(apply_lora(pretrained(checkpoint))))
    per_block = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"}
    expected = {"region_embed.embed"} | {
        f"encoder.blocks.{i}.{n}" for i in (0, 1) for n in per_block
    }
    assert names == expected


def test_adaln_option_puts_lora_on_adaln_instead_of_training_it_fully(checkpoint):
    peft_model = apply_lora(pretrained(checkpoint), adaln=True)
    assert "encoder.blocks.0.adaLN_modulation.1" in lora_layers(peft_model)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert not any("adaLN_modulation" in n and "lora_" not in n for n in trainable)


def test_lora_rank_and_alpha_are_configurable(checkpoint):
    layer = lora_layers(apply_lora(pretrained(checkpoint), r=4, alpha=2))[
        "encoder.blocks.0.attn.qkv"
    ]
    assert layer.r["default"] == 4
    assert layer.scaling["default"] == pytest.approx(0.5)


def test_base_weights_are_frozen_and_new_modules_trainable(checkpoint):
    peft_model = apply_lora(pretrained(checkpoint))
    for name, param in peft_model.named_parameters():
        new = any(
            part in name
            for part in ("lora_", "modules_to_save.default", "mask_token")  # trained copies
        )
        assert param.requires_grad == new, name
    trained_full = {
        n.split(".modules_to_save")[0].removeprefix("base_model.model.")
        for n, p in peft_model.named_parameters()
        if "modules_to_save" in n
    }
    assert {
        "encoder.t_embedder",
        "encoder.norm",
        "head_mask",
        "encoder.blocks.0.adaLN_modulation",
    } <= trained_full


def test_adapter_starts_as_the_base_model(checkpoint):
    base = pretrained(checkpoint)
    x, mask, t = batch()
    expected = base(x, mask, t)
    peft_model = apply_lora(base)
    torch.testing.assert_close(peft_model(x, mask, t), expected)  # positional args pass through


def test_training_changes_lora_and_new_modules_but_not_base_weights(checkpoint):
    peft_model = apply_lora(pretrained(checkpoint))
    x, mask, t = batch(seed=5)
    before_out = peft_model(x, mask, t).detach()
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    # Step 1 moves lora_B, adaLN, head, norm, mask_token; lora_A and the t_embedder get their
    # first gradient in step 2 (lora_B and the adaLN weights start at zero).
    train_step(peft_model)
    assert not torch.allclose(peft_model(x, mask, t), before_out)
    train_step(peft_model)
    for name, param in peft_model.named_parameters():
        if param.requires_grad:
            assert not torch.equal(param, before[name]), f"{name} did not change"
        else:
            assert torch.equal(param, before[name]), f"frozen {name} changed"


def test_attention_qkv_goes_through_the_lora_layer(checkpoint):
    peft_model = apply_lora(pretrained(checkpoint))
    x, mask, t = batch()
    before = peft_model(x, mask, t).detach()
    qkv = lora_layers(peft_model)["encoder.blocks.0.attn.qkv"]
    with torch.no_grad():
        qkv.lora_B["default"].weight.normal_(std=0.5)
    assert not torch.allclose(peft_model(x, mask, t), before)


def test_merged_model_equals_adapter_model(checkpoint):
    peft_model = apply_lora(pretrained(checkpoint))
    for _ in range(2):  # two steps so lora_A and lora_B are both non-trivial
        train_step(peft_model)
    merged = merge_lora(peft_model)
    assert type(merged) is GETRegionDiffusion
    assert set(merged.state_dict()) == set(build_model("tiny").state_dict())
    x, mask, t = batch(seed=7)
    torch.testing.assert_close(merged.eval()(x, mask, t), peft_model(x, mask, t), atol=1e-5, rtol=0)


def test_merged_model_saves_as_a_plain_model(checkpoint, tmp_path):
    peft_model = apply_lora(pretrained(checkpoint))
    train_step(peft_model)
    save_model(merge_lora(peft_model), tmp_path / "merged.safetensors")


def test_adapters_round_trip_through_save_and_load(checkpoint, tmp_path):
    peft_model = apply_lora(pretrained(checkpoint))
    train_step(peft_model)
    train_step(peft_model)
    directory = tmp_path / "adapter"
    save_adapters(peft_model, directory)
    assert (directory / "adapter_model.safetensors").is_file()
    loaded = load_adapters(pretrained(checkpoint), directory)
    x, mask, t = batch(seed=9)
    torch.testing.assert_close(loaded(x, mask, t), peft_model(x, mask, t), atol=0, rtol=0)


def test_loaded_adapters_can_resume_training(checkpoint, tmp_path):
    peft_model = apply_lora(pretrained(checkpoint))
    save_adapters(peft_model, tmp_path / "adapter")
    loaded = load_adapters(pretrained(checkpoint), tmp_path / "adapter", trainable=True)
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in peft_model.named_parameters() if p.requires_grad}


def test_load_adapters_rejects_a_directory_without_adapters(tmp_path):
    with pytest.raises(InputError, match="adapter_config.json"):
        load_adapters(build_model("tiny"), tmp_path)


def test_unwrap_gives_the_network_with_its_config(checkpoint):
    base = pretrained(checkpoint)
    assert unwrap(base) is base
    assert unwrap(apply_lora(base)).config.embed_dim == 64
