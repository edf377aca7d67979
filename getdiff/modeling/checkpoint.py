"""Import a pretrained GET checkpoint (GETRegionPretrain, e.g. ``checkpoint-799.pth``) into the DiT.

Contract
--------
``load_get_checkpoint(model, path, allow_extra=False) -> report`` copies every pretrained tensor
into a :class:`getdiff.modeling.model.GETRegionDiffusion` in place and returns what it did.

Accepted files:

- ``.pth`` / ``.pt`` (anything but ``.safetensors``): read with ``torch.load(weights_only=True)``,
  so arbitrary pickled objects are refused with an InputError (``argparse.Namespace``, which
  MAE-style training scripts store under ``args``, is allow-listed: it only holds plain values).
  The weights are under ``model`` (GET v1) or ``state_dict`` with a ``model.`` prefix (Lightning);
  a bare state dict is accepted too.
- ``.safetensors``: a flat state dict with the same key names.

GET v1 key names are renamed as GET does (substring replace, in this order):
``encoder.head.`` -> ``head_mask.``, ``encoder.region_embed`` -> ``region_embed``,
``region_embed.proj.`` -> ``region_embed.embed.``, ``encoder.cls_token`` -> ``cls_token``.

Mapping: region_embed, mask/cls tokens, the blocks' attention and MLP, ``encoder.norm`` and
``head_mask`` are copied as they are. The DiT norms have no affine, so each block's pretrained
``norm{1,2}.weight/bias`` (gamma, beta) is folded into its adaLN bias: shift = beta,
scale = gamma - 1, gate = 1, with the adaLN weight zeroed. Then for any t the DiT computes exactly
the pretrained encoder (``modulate(LN(x), beta, gamma - 1) = gamma * LN(x) + beta``), and
fine-tuning starts from it instead of from gated-off blocks. The timestep embedder keeps its
fresh initialisation (its output is ignored while the adaLN weights are 0).

Every missing, unexpected or shape-mismatched key is an InputError listing them all;
``allow_extra=True`` lets unexpected keys through, listed under "ignored" in the report.

``GETRegionPretrain`` is the plain pre-norm pretrain network in that key layout (85,484,059
parameters at spec size): the reference for the import test and a way to write test checkpoints.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from getdiff.defaults import DEFAULTS
from getdiff.errors import InputError
from getdiff.modeling.model import (
    LAYER_NORM_EPS,
    Attention,
    GETRegionDiffusion,
    Mlp,
    ModelConfig,
    RegionEmbed,
    make_config,
)

# GET's own renames for v1 checkpoints, applied in this order as substring replacements.
V1_RENAMES: tuple[tuple[str, str], ...] = (
    ("encoder.head.", "head_mask."),
    ("encoder.region_embed", "region_embed"),
    ("region_embed.proj.", "region_embed.embed."),
    ("encoder.cls_token", "cls_token"),
)
# The inverse, to write v1-style files (tests, fixtures).
TO_V1_RENAMES: tuple[tuple[str, str], ...] = (
    ("head_mask.", "encoder.head."),
    ("region_embed.embed.", "encoder.region_embed.proj."),
    ("cls_token", "encoder.cls_token"),
)


class PretrainBlock(nn.Module):
    """Plain pre-norm ViT block: x + attn(norm1(x)), x + mlp(norm2(x)); affine LayerNorms."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PretrainEncoder(nn.Module):
    """GET's encoder: blocks then a final affine LayerNorm (no timestep input)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            PretrainBlock(config.embed_dim, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class GETRegionPretrain(nn.Module):
    """GET's masked-region pretrain network, keys as after GET's v1 renaming.

    ``forward(x, mask)``: x (B, R, F), mask (B, R) bool -> (B, R, F) head output for every row
    (GET returned the masked rows only). As in GET, masked rows are *replaced* by ``mask_token``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.region_embed = RegionEmbed(config.num_motif, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = PretrainEncoder(config)
        self.head_mask = nn.Linear(d, config.num_motif)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, R, F), (B, R) -> encoder output (B, 1 + R, d), cls first."""
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token, self.region_embed(x))
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.encoder(tokens)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head_mask(self.encode(x, mask)[:, 1:])

    def v1_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict under GET v1 key names (as in ``checkpoint-799.pth``'s ``model``)."""
        return {_rename(k, TO_V1_RENAMES): v for k, v in self.state_dict().items()}


def build_pretrain(
    preset: str = DEFAULTS["model"]["preset"], **overrides: Any
) -> GETRegionPretrain:
    """A GETRegionPretrain with the same presets/overrides as
    :func:`getdiff.modeling.model.build_model`."""
    return GETRegionPretrain(make_config(preset, **overrides))


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as a flat {renamed key: tensor} dict (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    if path.suffix == ".safetensors":
        try:
            raw: Any = load_file(str(path), device="cpu")
        except Exception as error:  # safetensors' own error types for bad headers
            raise InputError(path, f"not a readable .safetensors file ({error})") from error
    else:
        raw = _torch_load(path)
    state = _extract_state(path, raw)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = _rename(key, V1_RENAMES)
        if new_key in renamed:
            raise InputError(path, f"two checkpoint keys both map to {new_key!r}")
        renamed[new_key] = value
    return renamed


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message names the offending global; keep the name, drop its advice.
        found = re.search(r"GLOBAL (\S+)", str(error))
        reason = f"it contains {found.group(1)}" if found else str(error).splitlines()[0]
        raise InputError(
            path,
            "refusing to unpickle a non-tensor object (torch.load weights_only=True): "
            f"{reason}. Re-save only the weights, e.g. "
            "torch.save({'model': ckpt['model']}, path), from a trusted environment, "
            "or convert to .safetensors",
        ) from error
    except Exception as error:  # truncated zip, not a torch file, ...
        raise InputError(path, f"not a readable torch checkpoint ({error})") from error


def _extract_state(path: Path, raw: Any) -> dict[str, torch.Tensor]:
    if not isinstance(raw, Mapping):
        raise InputError(path, f"checkpoint is a {type(raw).__name__}, expected a dict")
    if isinstance(raw.get("model"), Mapping):
        state = dict(raw["model"])
    elif isinstance(raw.get("state_dict"), Mapping):
        # Lightning: the network is the module's ``model`` attribute.
        state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items()}
    elif raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state = dict(raw)
    else:
        raise InputError(
            path,
            "no weights found: expected a dict with 'model' or 'state_dict', or a flat "
            f"state dict; top-level keys are {sorted(map(str, raw))[:10]}",
        )
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise InputError(path, f"non-tensor entries among the weights: {not_tensors[:10]}")
    return state


def load_get_checkpoint(
    model: GETRegionDiffusion, path: str | Path, allow_extra: bool = False
) -> dict[str, Any]:
    """Import a GET pretrain checkpoint into ``model`` in place (see module doc).

    Returns {"path", "loaded": keys copied, "folded": norm keys folded into adaLN,
    "ignored": unexpected keys let through by ``allow_extra``,
    "initialised": model keys neither copied nor folded (the timestep embedder)}.
    """
    if not isinstance(model, GETRegionDiffusion):
        raise TypeError(
            f"load_get_checkpoint needs a GETRegionDiffusion (before apply_lora), "
            f"got {type(model).__name__}"
        )
    state = read_state_dict(path)
    expected = GETRegionPretrain(model.config).state_dict()
    embed = "region_embed.embed.weight"
    if embed in state and embed in expected and state[embed].shape[1:] != expected[embed].shape[1:]:
        raise InputError(
            path,
            f"the checkpoint takes {state[embed].shape[1]} features per region, the prepared data "
            f"have {expected[embed].shape[1]}: a GET checkpoint needs the 282 Vierstra motif "
            "clusters + accessibility (motif_to_cluster with cluster_names: null); for another "
            "motif set, set model.pretrained_checkpoint: null and model.use_lora: false",
        )
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} (model expects {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected and not allow_extra:
        problems.append(f"unexpected keys {unexpected} (allow_extra=True ignores them)")
    if mismatched:
        problems.append(f"shape-mismatched keys {mismatched}")
    if problems:
        raise InputError(path, "checkpoint does not fit the model config: " + "; ".join(problems))

    target = model.state_dict()
    loaded, folded = [], []
    with torch.no_grad():
        for key in expected:
            if ".norm1." in key or ".norm2." in key:
                folded.append(key)
                continue
            target[key].copy_(state[key])
            loaded.append(key)
        d = model.config.embed_dim
        for i, block in enumerate(model.encoder.blocks):
            prefix = f"encoder.blocks.{i}."
            ada = block.adaLN_modulation[-1]
            ones = torch.ones(d)
            bias = torch.cat(
                [
                    state[prefix + "norm1.bias"],  # shift_msa
                    state[prefix + "norm1.weight"] - 1,  # scale_msa
                    ones,  # gate_msa
                    state[prefix + "norm2.bias"],  # shift_mlp
                    state[prefix + "norm2.weight"] - 1,  # scale_mlp
                    ones,  # gate_mlp
                ]
            )
            ada.weight.zero_()
            ada.bias.copy_(bias)
    # adaLN was set from the folded norms; what is left kept its fresh initialisation.
    initialised = sorted(k for k in set(target) - set(loaded) if "adaLN_modulation" not in k)
    return {
        "path": str(path),
        "loaded": loaded,
        "folded": folded,
        "ignored": unexpected,
        "initialised": initialised,
    }
