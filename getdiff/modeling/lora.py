"""LoRA fine-tuning of GETRegionDiffusion with peft.

Contract
--------
- ``apply_lora(model, r=8, alpha=16, dropout=0.0, adaln=False) -> peft.PeftModel``:
  LoRA (rank ``r``, scaling ``alpha / r``, ``dropout`` on the LoRA input) on the pretrained
  linears: ``region_embed.embed`` and every block's ``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
  ``mlp.fc2`` (and ``adaLN_modulation.1`` when ``adaln=True``). Their base weights are frozen.
  The modules that pretraining did not have, or whose role changed, are trained in full (peft
  ``modules_to_save``, i.e. a trainable copy beside a frozen original): ``encoder.t_embedder``,
  every ``adaLN_modulation`` (unless LoRA'd), ``encoder.norm``, ``head_mask`` and, when the model
  conditions on window statistics, ``window_embed``, and on the cell type, ``cell_type_embed``.
  Of the two token parameters, ``mask_token`` is trained: in GET it *replaced* masked rows,
  here it is *added* to the noisy row's embedding, a new role. ``cls_token`` keeps its role and
  stays frozen. peft cannot hold a bare parameter, so ``mask_token`` is saved beside the adapter
  (``getdiff_parameters.safetensors``) by :func:`save_adapters` and restored by
  :func:`load_adapters`.
  ``peft_model(x, mask, t)`` calls the network with the same positional arguments.
- ``merge_lora(peft_model) -> GETRegionDiffusion``: a plain model (a copy) with LoRA merged into
  the weights and the trained copies of the full modules in place; same outputs, no peft needed.
- ``save_adapters(peft_model, directory)``: peft ``save_pretrained`` (adapter_config.json +
  adapter_model.safetensors) plus the trained token, written atomically as a directory.
- ``load_adapters(model, directory, trainable=False) -> PeftModel``: the inverse onto a base
  model (e.g. a freshly imported checkpoint).
- ``unwrap(model) -> GETRegionDiffusion``: the underlying network of a PeftModel or a plain model
  (for ``.config``). For a PeftModel it shares weights with the wrapper (LoRA layers inside).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn

from getdiff.defaults import DEFAULTS
from getdiff.errors import InputError
from getdiff.io import atomic_dir
from getdiff.modeling.model import GETRegionDiffusion

# Regexes peft matches in full against module names.
LORA_TARGETS = r"region_embed\.embed|encoder\.blocks\.\d+\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)"
ADALN_TARGET = r"encoder\.blocks\.\d+\.adaLN_modulation\.1"
# peft matches modules_to_save by name suffix.
FULL_MODULES = (
    "encoder.t_embedder",
    "encoder.norm",
    "head_mask",
    "window_embed",
    "cell_type_embed",
)
ADALN_MODULE = "adaLN_modulation"
_LORA = DEFAULTS["model"]["lora"]  # the defaults of the functions below
TRAINED_PARAMETERS = ("mask_token",)
PARAMETERS_FILE = "getdiff_parameters.safetensors"


def unwrap(model: nn.Module) -> GETRegionDiffusion:
    """The GETRegionDiffusion inside a PeftModel, or ``model`` itself."""
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    if not isinstance(model, GETRegionDiffusion):
        raise TypeError(f"expected a GETRegionDiffusion or a PeftModel of one, got {type(model)}")
    return model


def lora_config(
    r: int = _LORA["r"],
    alpha: float = _LORA["alpha"],
    dropout: float = _LORA["dropout"],
    adaln: bool = _LORA["adaln"],
) -> LoraConfig:
    """The peft LoraConfig :func:`apply_lora` uses (see module doc)."""
    targets = f"{LORA_TARGETS}|{ADALN_TARGET}" if adaln else LORA_TARGETS
    modules_to_save = list(FULL_MODULES) if adaln else [*FULL_MODULES, ADALN_MODULE]
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=modules_to_save,
        bias="none",
    )


def apply_lora(
    model: GETRegionDiffusion,
    r: int = _LORA["r"],
    alpha: float = _LORA["alpha"],
    dropout: float = _LORA["dropout"],
    adaln: bool = _LORA["adaln"],
) -> PeftModel:
    """Wrap ``model`` (modified in place) for LoRA fine-tuning; base weights frozen."""
    peft_model = get_peft_model(unwrap(model), lora_config(r, alpha, dropout, adaln))
    _set_parameters_trainable(peft_model, True)
    return peft_model


def _set_parameters_trainable(peft_model: PeftModel, trainable: bool) -> None:
    base = peft_model.get_base_model()
    for name in TRAINED_PARAMETERS:
        getattr(base, name).requires_grad_(trainable)


def merge_lora(peft_model: PeftModel) -> GETRegionDiffusion:
    """A plain GETRegionDiffusion with the adapter merged in (``peft_model`` is left intact)."""
    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.requires_grad_(True)
    return unwrap(merged)


def save_adapters(peft_model: PeftModel, directory: str | Path) -> None:
    """peft ``save_pretrained`` plus the trained token parameters, swapped in atomically."""
    base = peft_model.get_base_model()
    tensors = {name: getattr(base, name).detach().contiguous().cpu() for name in TRAINED_PARAMETERS}
    with atomic_dir(directory) as tmp:
        peft_model.save_pretrained(str(tmp))
        save_file(tensors, str(Path(tmp) / PARAMETERS_FILE))


def load_adapters(
    model: GETRegionDiffusion, directory: str | Path, trainable: bool = False
) -> PeftModel:
    """Attach adapters saved by :func:`save_adapters` to ``model`` (modified in place)."""
    directory = Path(directory)
    parameters_path = directory / PARAMETERS_FILE
    if not (directory / "adapter_config.json").is_file() or not parameters_path.is_file():
        raise InputError(
            directory, f"not an adapter directory (need adapter_config.json and {PARAMETERS_FILE})"
        )
    peft_model = PeftModel.from_pretrained(unwrap(model), str(directory), is_trainable=trainable)
    tensors = load_file(str(parameters_path))
    base = peft_model.get_base_model()
    with torch.no_grad():
        for name in TRAINED_PARAMETERS:
            if name not in tensors or tensors[name].shape != getattr(base, name).shape:
                raise InputError(parameters_path, f"{name} is missing or has the wrong shape")
            getattr(base, name).copy_(tensors[name])
    _set_parameters_trainable(peft_model, trainable)
    return peft_model
