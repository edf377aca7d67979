"""A straightforward reference implementation of GETRegionDiffusion, the speed baseline.

Same architecture and the same parameter names and shapes as :mod:`getdiff.modeling.model`, so
``ReferenceModel(config).load_state_dict(getdiff_model.state_dict())`` works and both compute the
same function (checked in ``tests/test_benchmarks.py``). Written the way a first version would be:

- attention spelled out: ``softmax(q @ k^T / sqrt(d_head)) @ v`` (materialises (B, H, N, N));
- the sinusoidal timestep features built one sample at a time in a Python loop;
- fp32 everywhere, no autocast;
- the loss by boolean indexing of the masked rows (a host sync on the number of rows);
- plain AdamW (``foreach=False, fused=False``); ``bench_train_step`` also clips its gradients
  with ``foreach=False``.

Contract: ``ReferenceModel.forward(x (B, R, F), mask (B, R) bool, t (B,) long) -> (B, R, F)``,
the x0 prediction, exactly as ``GETRegionDiffusion.forward``. Not used by the package.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from getdiff.modeling.model import LAYER_NORM_EPS, ModelConfig


class RefTimestepEmbedder(nn.Module):
    def __init__(self, dim: int, frequency_dim: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        rows = []
        for value in t.tolist():  # one sample at a time
            freqs = [math.exp(-math.log(10000.0) * i / half) for i in range(half)]
            args = torch.tensor([value * f for f in freqs], dtype=torch.float32)
            row = torch.cat([torch.cos(args), torch.sin(args)])
            if self.frequency_dim % 2:
                row = torch.cat([row, torch.zeros(1)])
            rows.append(row)
        return torch.stack(rows)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(t))


class RefAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split(C, dim=-1)
        q = (q + self.q_bias).view(B, N, H, C // H).transpose(1, 2)
        k = k.view(B, N, H, C // H).transpose(1, 2)
        v = (v + self.v_bias).view(B, N, H, C // H).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
        weights = scores.softmax(dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class RefBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.attn = RefAttention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=LAYER_NORM_EPS)
        self.mlp = RefMlp(dim, int(dim * mlp_ratio), dropout)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(c)
        shift1, scale1, gate1, shift2, scale2, gate2 = (m[:, None, :] for m in mod.chunk(6, -1))
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1)
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
        return x


class RefEncoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.t_embedder = RefTimestepEmbedder(d, config.frequency_dim)
        self.blocks = nn.ModuleList(
            RefBlock(d, config.num_heads, config.mlp_ratio, config.dropout)
            for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)


class RefRegionEmbed(nn.Module):
    def __init__(self, num_motif: int, dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(num_motif, dim)


class ReferenceModel(nn.Module):
    """The reference network; load getdiff's state dict into it (names and shapes match)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        self.region_embed = RefRegionEmbed(config.num_motif, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.encoder = RefEncoder(config)
        self.head_mask = nn.Linear(d, config.num_motif)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tokens = self.region_embed.embed(x)
        tokens = tokens + mask[:, :, None].float() * self.mask_token
        cls = self.cls_token.expand(x.shape[0], 1, -1)
        h = torch.cat([cls, tokens], dim=1)
        c = self.encoder.t_embedder(t)
        for block in self.encoder.blocks:
            h = block(h, c)
        h = self.encoder.norm(h)
        return self.head_mask(h[:, 1:])


def reference_loss(
    model: nn.Module, x_in: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Masked MSE by boolean indexing (the number of masked rows is read on the host)."""
    pred = model(x_in, mask, t)
    return ((pred[mask] - x0[mask]) ** 2).mean()


def reference_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Plain single-tensor AdamW with the same decay / no-decay split as getdiff."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.endswith("_token")]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2 or n.endswith("_token")]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, foreach=False, fused=False)
