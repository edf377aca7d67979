"""Time one GETRegionDiffusion training step (forward, backward, AdamW) on this machine.

A step is what training does: exactly round(R * mask_ratio) regions masked per sample, the masked
rows noised at a random t (linear beta schedule 1e-4..0.02 over 1000 steps, inlined here so the
benchmark does not depend on the diffusion module), the x0 prediction, MSE over the masked rows,
backward, AdamW step. The model is in training mode (dropout on).

    python benchmarks/step_time.py --preset tiny --batch 8
    python benchmarks/step_time.py --preset spec --batch 1 --lora --steps 3

Prints one JSON line: median seconds per phase over ``--steps`` timed steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from getdiff.lora import apply_lora, unwrap
from getdiff.model import build_model, count_parameters


def make_batch(batch: int, regions: int, features: int, mask_ratio: float, g: torch.Generator):
    x0 = torch.rand(batch, regions, features, generator=g)
    n_masked = round(regions * mask_ratio)
    order = torch.rand(batch, regions, generator=g).argsort(dim=1)
    mask = torch.zeros(batch, regions, dtype=torch.bool)
    mask.scatter_(1, order[:, :n_masked], True)
    t = torch.randint(0, 1000, (batch,), generator=g)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), dim=0)[t].view(-1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=g)
    return torch.where(mask.unsqueeze(-1), x_t, x0), x0, mask, t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--regions", type=int, default=None, help="default: the preset's")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--lora", action="store_true", help="LoRA defaults (r=8, alpha=16)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model(args.preset)
    if args.lora:
        model = apply_lora(model)
    model.train()
    config = unwrap(model).config
    regions = args.regions or config.num_regions
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)

    phases: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": [], "step": []}
    for i in range(args.warmup + args.steps):
        x, x0, mask, t = make_batch(args.batch, regions, config.num_motif, config.mask_ratio, g)
        start = time.perf_counter()
        loss = ((model(x, mask, t) - x0)[mask] ** 2).mean()
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if i >= args.warmup:
            phases["forward"].append(forward - start)
            phases["backward"].append(backward - forward)
            phases["optimizer"].append(end - backward)
            phases["step"].append(end - start)

    trainable, total = count_parameters(model)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "batch": args.batch,
                "regions": regions,
                "lora": args.lora,
                "threads": torch.get_num_threads(),
                "trainable_params": trainable,
                "total_params": total,
                "steps_timed": args.steps,
                **{f"{k}_s_median": round(statistics.median(v), 4) for k, v in phases.items()},
                "step_s_min": round(min(phases["step"]), 4),
                "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
