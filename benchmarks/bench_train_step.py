"""Training-step speed: getdiff's model vs the reference implementation, same batch, same process.

A step is what ``getdiff train`` does per batch: the masked rows noised at one t per sample, the
x0 prediction, masked MSE, backward, gradient clipping (norm 1), AdamW. Variants:

- ``reference``: :mod:`reference_model` (explicit softmax attention, per-sample timestep loop,
  boolean-indexed loss, plain AdamW with ``foreach=False``), fp32;
- ``getdiff``: ``getdiff.modeling.model`` + ``GaussianDiffusion.training_loss`` +
  ``getdiff.training.train.configure_optimizer`` (what training runs on the CPU), fp32;
- ``getdiff-bf16``: the same under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
- ``getdiff-fused``: the same as ``getdiff`` with ``AdamW(fused=True)``;
- ``getdiff-rotary``: the same as ``getdiff`` with ``positions: rotary`` (RoPE of genomic
  midpoints on queries and keys); its ratio to ``getdiff`` is the cost of positions;
- ``getdiff-lora`` (on request): LoRA adapters (r=8) on the frozen model, as the default config.

All variants start from the same weights and see the same batch; steps are interleaved
(reference, getdiff, ... each repeat) so a change of machine load hits all of them alike, and the
medians over repeats are reported. MFU = model FLOPs per step / step time / measured matmul peak
(nanoGPT's ``estimate_mfu`` idea; :func:`getdiff.modeling.model.train_step_flops` counts them).

    python benchmarks/bench_train_step.py --preset mid --batch 2 --repeats 5
    python benchmarks/bench_train_step.py --memory --preset tiny --batch 8   # peak RSS only
    python benchmarks/bench_train_step.py --quick                            # seconds, smoke

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_model import ReferenceModel, reference_loss, reference_optimizer  # noqa: E402

from getdiff.defaults import DEFAULTS  # noqa: E402
from getdiff.modeling.diffusion import GaussianDiffusion, random_masks, random_timesteps  # noqa: E402
from getdiff.modeling.model import ModelConfig, build_model, make_config, train_step_flops  # noqa: E402
from getdiff.training.train import configure_optimizer  # noqa: E402

VARIANTS = ("reference", "getdiff", "getdiff-bf16", "getdiff-fused", "getdiff-rotary")
EXTRA_VARIANTS = ("getdiff-lora",)  # only on request (--variants)
TRAIN = DEFAULTS["train"]  # the schema's training defaults
LR, WEIGHT_DECAY, GRAD_CLIP = TRAIN["lr"], TRAIN["weight_decay"], TRAIN["grad_clip"]


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of an (n x n) @ (n x n) torch.mm on this CPU (median of ``repeats``)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def make_batch(config: ModelConfig, batch: int, regions: int, seed: int = 0) -> dict:
    """x0 in [0, 1), masks (diffusion.mask_ratio of the regions), t and noise: one fixed batch."""
    g = torch.Generator().manual_seed(seed)
    diffusion = DEFAULTS["diffusion"]
    return {
        "x0": torch.rand(batch, regions, config.num_motif, generator=g),
        "mask": random_masks(batch, regions, diffusion["mask_ratio"], generator=g),
        "t": random_timesteps(batch, diffusion["num_timesteps"], generator=g),
        "noise": torch.randn(batch, regions, config.num_motif, generator=g),
        # midpoints ~3 kb apart, as in a dense ATAC peak set
        "positions": 1e6 + torch.rand(batch, regions, generator=g).mul(6e3).cumsum(dim=1).double(),
    }


def _getdiff_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, bf16: bool
) -> Callable[[dict], dict]:
    diffusion = GaussianDiffusion()
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    positions = (
        "positions" if getattr(model, "config", None) and model.config.positions != "none" else None
    )

    def step(b: dict) -> dict:
        start = time.perf_counter()
        with autocast:
            loss, _ = diffusion.training_loss(
                model, b["x0"], b["mask"], b["t"], b["noise"], positions=b.get(positions)
            )
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        return {"forward": forward - start, "backward": backward - forward, "optim": end - backward}

    return step


def _reference_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()

    def step(b: dict) -> dict:
        start = time.perf_counter()
        a = abar[b["t"]].view(-1, 1, 1)
        noisy = a.sqrt() * b["x0"] + (1 - a).sqrt() * b["noise"]
        x_in = torch.where(b["mask"].unsqueeze(-1), noisy, b["x0"])
        loss = reference_loss(model, x_in, b["x0"], b["mask"], b["t"])
        forward = time.perf_counter()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP, foreach=False)
        backward = time.perf_counter()
        optimizer.step()
        end = time.perf_counter()
        return {"forward": forward - start, "backward": backward - forward, "optim": end - backward}

    return step


def build_variant(
    name: str, config: ModelConfig, state: dict | None = None
) -> Callable[[dict], dict]:
    """A step function for one variant, its model loaded from ``state`` and in training mode.

    ``getdiff-lora`` wraps the model with LoRA defaults (r=8, alpha=16; base weights frozen).
    """
    if name == "reference":
        model = ReferenceModel(config)
        if state is not None:
            model.load_state_dict(state)
        model.train()
        return _reference_step(model, reference_optimizer(model, LR, WEIGHT_DECAY))
    fields = vars(config) | ({"positions": "rotary"} if name == "getdiff-rotary" else {})
    model = build_model("spec", **fields)
    if state is not None:
        model.load_state_dict(state)
    if name == "getdiff-lora":
        from getdiff.modeling.lora import apply_lora

        model = apply_lora(model)
    model.train()
    optimizer = configure_optimizer(model, LR, WEIGHT_DECAY, torch.device("cpu"))
    if name == "getdiff-fused":
        groups = [
            {"params": g["params"], "weight_decay": g["weight_decay"]}
            for g in optimizer.param_groups
        ]
        optimizer = torch.optim.AdamW(groups, lr=LR, fused=True)
    return _getdiff_step(model, optimizer, bf16=name == "getdiff-bf16")


def compare(
    preset: str,
    batch: int,
    regions: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    variants: tuple[str, ...] = VARIANTS,
    peak: dict[str, float] | None = None,
    overrides: dict | None = None,
) -> dict:
    """Interleaved timing of ``variants``; per variant median step/phase times, ratio and MFU."""
    torch.manual_seed(0)
    config = build_model(preset, **(overrides or {})).config
    regions = regions or config.num_regions
    source = build_model(preset, **(overrides or {}))
    # adaLN is zero-initialised (every block the identity); give it weights so the work is real.
    with torch.no_grad():
        for block in source.encoder.blocks:
            torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    state = source.state_dict()
    b = make_batch(config, batch, regions)
    steps = {name: build_variant(name, config, state) for name in variants}
    times: dict[str, list[dict]] = {name: [] for name in variants}
    for i in range(warmup + repeats):
        for name, step in steps.items():
            phases = step(b)
            if i >= warmup:
                times[name].append(phases)
    flops = train_step_flops(config, batch, regions)
    peak = peak or {}
    result: dict = {
        "preset": preset,
        "batch": batch,
        "regions": regions,
        "embed_dim": config.embed_dim,
        "num_layers": config.num_layers,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "step_gflop": flops / 1e9,
        "variants": {},
    }
    for name, rows in times.items():
        totals = [sum(r.values()) for r in rows]
        median = statistics.median(totals)
        entry = {
            "step_s": median,
            "step_s_min": min(totals),
            **{f"{k}_s": statistics.median(r[k] for r in rows) for k in rows[0]},
            "tokens_per_s": batch * regions / median,
            "gflops": flops / median / 1e9,
        }
        precision = "bf16" if name.endswith("bf16") else "fp32"
        if precision in peak:
            entry["mfu"] = flops / median / peak[precision]
            entry["mfu_peak"] = precision
        result["variants"][name] = entry
    if "reference" in times:
        ref = [sum(r.values()) for r in times["reference"]]
        for name in variants:
            if name == "reference":
                continue
            own = [sum(r.values()) for r in times[name]]
            entry = result["variants"][name]
            entry["speedup_vs_reference"] = (
                result["variants"]["reference"]["step_s"] / (entry["step_s"])
            )
            # Paired per repeat: robust to load that changes between repeats.
            entry["speedup_paired_median"] = statistics.median(
                r / o for r, o in zip(ref, own, strict=True)
            )
    return result


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(preset: str, batch: int, steps: int, variant: str, regions: int | None) -> dict:
    """Run ``steps`` training steps of one variant; peak RSS before and after (this process)."""
    torch.manual_seed(0)
    config = make_config(preset)
    regions = regions or config.num_regions
    baseline = peak_rss_mb()
    step = build_variant(variant, config)
    b = make_batch(config, batch, regions)
    began = time.perf_counter()
    for _ in range(steps):
        step(b)
    return {
        "preset": preset,
        "batch": batch,
        "regions": regions,
        "variant": variant,
        "steps": steps,
        "seconds": time.perf_counter() - began,
        "rss_after_import_mib": baseline,
        "peak_rss_mib": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--regions", type=int, default=None, help="default: the preset's 900")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--variants", default=None, help=f"comma-separated of {VARIANTS} (--memory: the first)"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory", action="store_true", help="peak RSS of --steps steps only")
    parser.add_argument("--steps", type=int, default=3, help="steps for --memory")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.preset, args.batch, args.regions, args.repeats, args.steps = "tiny", 2, 64, 1, 1
    default = "getdiff" if args.memory else ",".join(VARIANTS)
    variants = tuple(v for v in (args.variants or default).split(",") if v)
    unknown = sorted(set(variants) - set(VARIANTS + EXTRA_VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS + EXTRA_VARIANTS)}")
    if args.memory:
        print(json.dumps(memory(args.preset, args.batch, args.steps, variants[0], args.regions)))
        return
    n = 256 if args.quick else 2048
    peak = {"fp32": matmul_peak(torch.float32, n), "bf16": matmul_peak(torch.bfloat16, n)}
    profiler = (
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        if args.profile
        else contextlib.nullcontext()
    )
    with profiler as prof:
        result = compare(
            args.preset, args.batch, args.regions, args.repeats, args.warmup, variants, peak
        )
    result["peak_gflops"] = {k: v / 1e9 for k, v in peak.items()}
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
