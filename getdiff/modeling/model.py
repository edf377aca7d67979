"""GETRegionDiffusion: a DiT (diffusion transformer) over genomic regions, in plain PyTorch.

Contract
--------
``GETRegionDiffusion.forward(x, mask, t)``:

- ``x``    (B, R, F) float: region x motif features (F = ``num_motif``, accessibility last). The
  masked rows are taken as given: the diffusion module noises them before the call
  (x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps), but clean rows are accepted too.
- ``mask`` (B, R) bool: True = masked (noisy) row, to be predicted.
- ``t``    (B,) long: diffusion timestep in [0, 1000), one per sample.
- ``positions`` (B, R) float or int, optional: each region's genomic midpoint (bp). Required
  when ``positions == "rotary"``, ignored otherwise.
- ``window_stats`` (B, 2F) float, optional: each window's per-feature location and log scale
  (from ``task.scaling: window``). Required when ``window_conditioning``, ignored otherwise;
  embedded by ``window_embed`` (zero-initialised) and added to the timestep vector c, as DiT adds
  its class embedding.
- ``cell_type`` (B,) long, optional: each window's cell type, an index into the cell types the
  model was trained on. Required when ``num_cell_types`` > 0, ignored otherwise; embedded by
  ``cell_type_embed`` (zero-initialised) and added to c, as DiT adds its class label. With
  ``unknown_cell_type`` the embedding has one more row, index ``num_cell_types``: the "unknown"
  cell type (DiT's null class), trained by label dropout and used for cell types never seen.
- returns  (B, R, F) float: the x0 prediction for every row (the loss uses the masked rows).

The network knows nothing about betas or samplers (``getdiff.modeling.diffusion`` does). R is free,
so ``num_regions`` only records the window size the data and the masking use.

Positions. With ``positions: "none"`` (the default, as GET) there is no positional information:
the network is a function of the set of rows. With ``positions: "rotary"`` the queries and keys
of every attention layer are rotated by angles proportional to each region's genomic midpoint
(RoPE, Su et al. 2021), so attention scores depend on the bp distance between regions. It has no
parameters (a GET checkpoint imports unchanged) and keeps attention on the fused SDPA kernels.
Wavelengths are geometric from ``rope_min_wavelength`` to ``rope_max_wavelength`` bp; angles are
taken relative to the window's leftmost midpoint, in float64, so large coordinates lose no
precision. The [cls] token is not rotated.

Architecture (top to bottom, names are the state-dict keys)
-----------------------------------------------------------
- ``region_embed.embed``: Linear(F -> d). Masked rows get ``+ mask_token`` so the network can tell
  noisy rows from clean context rows (GET replaced masked rows by the token; here the noisy row
  carries information, so the token is added instead).
- ``cls_token`` (1, 1, d) is prepended as in GET, so the imported pretrained encoder sees the
  token layout it was trained on; the output drops it.
- ``encoder.t_embedder``: sinusoidal(256: cos then sin, max period 10000) -> Linear(256, d), SiLU,
  Linear(d, d) gives the conditioning vector c (B, d).
- ``encoder.blocks.{i}``: DiT blocks with adaLN: ``adaLN_modulation`` = SiLU + Linear(d, 6d) of c
  gives shift/scale/gate for attention and MLP; norm1/norm2 are LayerNorm without affine (eps 1e-6);
  attention has qkv Linear without bias plus separate ``q_bias``/``v_bias`` (k unbiased, as GET);
  MLP d -> 4d -> d with exact (erf) GELU, as GET was pretrained with (DiT used the tanh one).
- ``encoder.norm``: LayerNorm (affine, eps 1e-6); ``head_mask``: Linear(d -> F).

Dropout (``dropout``, 0.1 in the spec) is applied in training mode only, where timm-style ViT
blocks apply ``drop``: after the attention projection, after the MLP activation and after fc2.
Not on the attention probabilities (GET pretrained with attn_drop 0; DiT uses no dropout at all),
which also keeps ``scaled_dot_product_attention`` on its fused kernels. ``eval()`` turns it off.

Initialisation without a checkpoint follows DiT: xavier-uniform linears with zero bias, N(0, 0.02)
timestep MLP, zero adaLN (each block starts as the identity) and N(0, 0.02) tokens; ``head_mask``
weights start at zero as DiT's final layer does, so training starts from predicting 0 for every
feature (with a xavier head the first ~100 steps only shrank random outputs of ~0.6 against data
of ~0.07; on the demo, zero init gave a better model in the same 1000 steps).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from getdiff.defaults import DEFAULTS
from getdiff.errors import ConfigError, InputError
from getdiff.io import atomic_path

METADATA_CONFIG_KEY = "getdiff.model_config"
METADATA_EXTRA_KEY = "getdiff.extra"
LAYER_NORM_EPS = 1e-6
# Fields older model files carry that no longer exist (mask_ratio: the masks are training's,
# diffusion.mask_ratio); load_model ignores them.
RETIRED_FIELDS = ("mask_ratio",)


@dataclass
class ModelConfig:
    """Network hyper-parameters; the defaults are the spec's Table 1 (``dit.yaml``)."""

    # regions per window (masking uses it; the network accepts any R): prepare.window_size's
    num_regions: int = DEFAULTS["prepare"]["window_size"]
    num_motif: int = 283  # features per region, accessibility last
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    frequency_dim: int = 256  # sinusoidal timestep features fed to the t_embedder MLP
    positions: str = DEFAULTS["model"]["positions"]  # "none" (as GET) or "rotary" (RoPE)
    window_conditioning: bool = False  # condition blocks on window statistics (task.scaling)
    num_cell_types: int = 0  # > 0: condition blocks on a learned embedding of the cell type
    unknown_cell_type: bool = False  # one more embedding row for unseen cell types
    rope_min_wavelength: float = 1e3  # bp; the shortest distance scale attention resolves
    rope_max_wavelength: float = 1e8  # bp; longer than any window


POSITION_ENCODINGS = ("none", "rotary")

PRESETS: dict[str, dict[str, Any]] = {
    "spec": {},
    "mid": {"embed_dim": 384, "num_layers": 6, "num_heads": 6},
    "tiny": {"embed_dim": 64, "num_layers": 2, "num_heads": 4},
}


def make_config(preset: str = DEFAULTS["model"]["preset"], **overrides: Any) -> ModelConfig:
    """The preset's ModelConfig with ``overrides`` applied; bad names raise ConfigError."""
    if preset not in PRESETS:
        raise ConfigError(f"model preset {preset!r} is unknown; choose one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; known: {sorted(known)}")
    config = ModelConfig(**{**PRESETS[preset], **overrides})
    for name in ("num_regions", "num_motif", "embed_dim", "num_layers", "num_heads"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model option {name} must be a positive integer, got {value!r}")
    if not isinstance(config.num_cell_types, int) or config.num_cell_types < 0:
        raise ConfigError(
            f"model option num_cell_types must be an integer >= 0, got {config.num_cell_types!r}"
        )
    if not isinstance(config.dropout, int | float) or not 0 <= config.dropout < 1:
        raise ConfigError(f"model option dropout must be in [0, 1), got {config.dropout!r}")
    if config.positions not in POSITION_ENCODINGS:
        raise ConfigError(
            f"model positions {config.positions!r} is unknown; choose one of {POSITION_ENCODINGS}"
        )
    if config.embed_dim % config.num_heads:
        raise ConfigError(
            f"model.embed_dim ({config.embed_dim}) must be divisible by "
            f"model.num_heads ({config.num_heads})"
        )
    return config


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x (B, N, d) scaled and shifted per sample by (B, d) vectors."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class RegionEmbed(nn.Module):
    """Linear embedding of each region's motif vector (GET's ``region_embed``)."""

    def __init__(self, num_motif: int, embed_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(num_motif, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> vectors: sinusoidal features, then a 2-layer SiLU MLP (as DiT)."""

    def __init__(self, embed_dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) timesteps -> (B, dim) features: cos of all frequencies, then sin (DiT's order)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.timestep_embedding(t, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


Rotation = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each (B, 1, N, head_dim)


def rotary_angles(
    positions: torch.Tensor, head_dim: int, min_wavelength: float, max_wavelength: float
) -> Rotation:
    """RoPE (cos, sin) for (B, R) genomic midpoints, with an unrotated [cls] slot prepended.

    Angles are computed in float64 from positions relative to each window's leftmost midpoint
    (RoPE scores depend only on differences), so bp coordinates near 2^31 keep full precision.
    """
    half = head_dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=positions.device) / max(half - 1, 1)
    wavelengths = min_wavelength * (max_wavelength / min_wavelength) ** exponent
    relative = positions.to(torch.float64)
    relative = relative - relative.amin(dim=1, keepdim=True)
    angles = relative.unsqueeze(-1) * (2 * math.pi / wavelengths)  # (B, R, half)
    angles = torch.cat([torch.zeros_like(angles[:, :1]), angles], dim=1)  # [cls]: no rotation
    angles = torch.cat([angles, angles], dim=-1).unsqueeze(1)  # (B, 1, N, 2 * half)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, rotation: Rotation) -> torch.Tensor:
    """Apply RoPE to (B, H, N, head_dim) queries or keys (rotate-half pairing, as GPT-NeoX)."""
    cos, sin = rotation
    half = cos.shape[-1] // 2
    x_rot, x_pass = x[..., : 2 * half], x[..., 2 * half :]
    first, second = x_rot[..., :half], x_rot[..., half:]
    rotated = torch.cat([-second, first], dim=-1)
    x_rot = x_rot * cos.to(x.dtype) + rotated * sin.to(x.dtype)
    return torch.cat([x_rot, x_pass], dim=-1) if x_pass.shape[-1] else x_rot


class Attention(nn.Module):
    """Multi-head self-attention with GET's bias layout: qkv bias = (q_bias, 0, v_bias)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rotation: Rotation | None = None) -> torch.Tensor:
        B, N, C = x.shape
        # Call the module (not F.linear on its weight) so that a LoRA wrapper on qkv is used.
        bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = self.qkv(x) + bias
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if rotation is not None:
            q, k = rotate(q, rotation), rotate(k, rotation)
        # No dropout on the attention probabilities: GET pretrained without it, and it would force
        # the (B, H, N, N)-materialising math kernel (on CPU it was half of a tiny training step).
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated (adaLN) and branches gated by c."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, rotation: Rotation | None = None
    ) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=-1)
        attended = self.attn(modulate(self.norm1(x), shift_msa, scale_msa), rotation)
        x = x + gate_msa.unsqueeze(1) * attended
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class DiTEncoder(nn.Module):
    """Timestep embedder + DiT blocks + final LayerNorm: tokens (B, N, d), t (B,) -> (B, N, d).

    ``activation_checkpointing`` (off by default; a training setting, not part of ModelConfig):
    in training mode with gradients on, each block's activations are recomputed in the backward
    pass instead of being kept (``torch.utils.checkpoint``, RNG state preserved, so dropout draws
    and gradients are those of the plain forward).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.activation_checkpointing = False
        d = config.embed_dim
        self.t_embedder = TimestepEmbedder(d, config.frequency_dim)
        self.blocks = nn.ModuleList(
            DiTBlock(d, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        rotation: Rotation | None = None,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        c = self.t_embedder(t)
        if condition is not None:
            c = c + condition
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:
                x = checkpoint(block, x, c, rotation, use_reentrant=False)
            else:
                x = block(x, c, rotation)
        return self.norm(x)


class GETRegionDiffusion(nn.Module):
    """Region embedding + [cls] + DiT encoder + per-region head predicting x0 (see module doc)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.region_embed = RegionEmbed(config.num_motif, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = DiTEncoder(config)
        self.head_mask = nn.Linear(d, config.num_motif)
        if config.window_conditioning:
            # The window's per-feature location and log scale (what window scaling takes away),
            # added to the timestep vector as DiT adds its class embedding.
            self.window_embed = nn.Linear(2 * config.num_motif, d)
        if config.num_cell_types:
            rows = config.num_cell_types + int(config.unknown_cell_type)
            self.cell_type_embed = nn.Embedding(rows, d)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.encoder.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.encoder.t_embedder.mlp[2].weight, std=0.02)
        # Zero adaLN: every gate is 0, so each block starts as the identity (DiT's adaLN-Zero).
        for block in self.encoder.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        # Zero head (as DiT's final layer): the first prediction is 0, not random noise.
        nn.init.zeros_(self.head_mask.weight)
        if self.config.window_conditioning:
            nn.init.zeros_(self.window_embed.weight)  # starts unconditioned
        if self.config.num_cell_types:
            nn.init.zeros_(self.cell_type_embed.weight)

    def embed_tokens(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, R, F), (B, R) -> (B, 1 + R, d): region embeddings (+ mask_token where masked)."""
        tokens = self.region_embed(x) + mask.unsqueeze(-1).to(x.dtype) * self.mask_token
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        t: torch.Tensor,
        positions: torch.Tensor | None = None,
        window_stats: torch.Tensor | None = None,
        cell_type: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.config.num_motif:
            raise ValueError(f"x must be (B, R, {self.config.num_motif}); got {tuple(x.shape)}")
        if mask.shape != x.shape[:2] or t.shape != x.shape[:1]:
            raise ValueError(
                f"mask must be {tuple(x.shape[:2])} and t {tuple(x.shape[:1])}; "
                f"got {tuple(mask.shape)} and {tuple(t.shape)}"
            )
        tokens = self.encoder(
            self.embed_tokens(x, mask),
            t,
            self.rotation(positions, mask),
            self.condition(window_stats, cell_type, x),
        )
        return self.head_mask(tokens[:, 1:])

    def condition(
        self, stats: torch.Tensor | None, cell_type: torch.Tensor | None, x: torch.Tensor
    ) -> torch.Tensor | None:
        """(B, d) sum of the window-statistics and cell-type embeddings the model uses, or None."""
        parts = [self.window_condition(stats, x), self.cell_type_condition(cell_type, x)]
        used = [part for part in parts if part is not None]
        return sum(used[1:], used[0]) if used else None

    def cell_type_condition(
        self, cell_type: torch.Tensor | None, x: torch.Tensor
    ) -> torch.Tensor | None:
        """(B, d) embedding of each window's cell type, or None when the model does not use it."""
        if not self.config.num_cell_types:
            return None
        if cell_type is None or cell_type.shape != x.shape[:1]:
            raise ValueError(
                f"this model conditions on the cell type: pass cell_type of shape {x.shape[:1]}"
            )
        return self.cell_type_embed(cell_type).to(x.dtype)

    def window_condition(self, stats: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """(B, d) embedding of the window statistics, or None when the model does not use them."""
        if not self.config.window_conditioning:
            return None
        if stats is None or stats.shape != (x.shape[0], 2 * self.config.num_motif):
            raise ValueError(
                "this model conditions on window statistics: pass window_stats of shape "
                f"{(x.shape[0], 2 * self.config.num_motif)}"
            )
        return self.window_embed(stats.to(x.dtype))

    def rotation(self, positions: torch.Tensor | None, mask: torch.Tensor) -> Rotation | None:
        """RoPE angles of the regions' midpoints, or None when the model uses no positions."""
        config = self.config
        if config.positions == "none":
            return None
        if positions is None or positions.shape != mask.shape:
            raise ValueError(
                f"this model uses genomic positions: pass positions of shape {tuple(mask.shape)}"
            )
        head_dim = config.embed_dim // config.num_heads
        return rotary_angles(
            positions, head_dim, config.rope_min_wavelength, config.rope_max_wavelength
        )


def build_model(preset: str = DEFAULTS["model"]["preset"], **overrides: Any) -> GETRegionDiffusion:
    """A freshly initialised model from a named preset ("spec", "mid", "tiny") plus overrides."""
    return GETRegionDiffusion(make_config(preset, **overrides))


def train_step_flops(config: ModelConfig, batch: int, regions: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward, 2 FLOPs per MAC).

    Matmuls only: per token (cls + regions) qkv, proj, fc1, fc2; per region the input embedding
    and the head; per sample the timestep MLP and adaLN; attention 2 x T^2 x d MACs per layer.
    Elementwise work (norms, RoPE, activations) is not counted, as in nanoGPT's estimate.
    """
    d, layers, features = config.embed_dim, config.num_layers, config.num_motif
    hidden = int(d * config.mlp_ratio)
    tokens = regions + 1
    per_token = layers * (4 * d * d + 2 * d * hidden)
    per_region = 2 * features * d
    per_sample = config.frequency_dim * d + d * d + layers * 6 * d * d
    attention = layers * 2 * tokens * tokens * d
    macs = batch * (tokens * per_token + regions * per_region + per_sample + attention)
    return 3 * 2 * macs


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_model(
    model: GETRegionDiffusion, path: str | Path, extra_metadata: dict | None = None
) -> None:
    """Write the plain state dict to ``path`` (.safetensors) with the ModelConfig as metadata.

    ``extra_metadata`` (JSON-serialisable) is stored beside it and returned by
    :func:`model_metadata`; it must not use the key "config".
    """
    extra = dict(extra_metadata or {})
    if "config" in extra:
        raise ConfigError("extra_metadata must not contain the key 'config' (it is reserved)")
    metadata = {
        METADATA_CONFIG_KEY: json.dumps(dataclasses.asdict(model.config)),
        METADATA_EXTRA_KEY: json.dumps(extra),
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def model_metadata(path: str | Path) -> dict:
    """{"config": ModelConfig fields, **extra_metadata} of a file written by :func:`save_model`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for bad headers
        raise InputError(path, f"not a readable .safetensors model file ({error})") from error
    if METADATA_CONFIG_KEY not in metadata:
        raise InputError(path, f"no {METADATA_CONFIG_KEY!r} metadata: not written by save_model")
    return {
        "config": json.loads(metadata[METADATA_CONFIG_KEY]),
        **json.loads(metadata.get(METADATA_EXTRA_KEY, "{}")),
    }


def load_model(path: str | Path, device: str | torch.device = "cpu") -> GETRegionDiffusion:
    """Rebuild the model saved by :func:`save_model` (config from metadata, weights strict)."""
    fields = model_metadata(path)["config"]
    fields = {k: v for k, v in fields.items() if k not in RETIRED_FIELDS}
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise InputError(path, f"model config has unknown fields {unknown}")
    model = GETRegionDiffusion(ModelConfig(**fields))
    state = load_file(str(path), device="cpu")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        raise InputError(
            path,
            f"weights do not match the stored config: missing {missing}, "
            f"unexpected {unexpected}, shape-mismatched {mismatched}",
        )
    model.load_state_dict(state)
    return model.to(device)
