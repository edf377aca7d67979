"""Imputation speed: windows per second of ``getdiff.evaluation.impute.impute_windows``.

``impute_windows`` is what ``getdiff impute`` runs: every window is sampled twice, once per
complementary mask (half of the 900 regions hidden each time), so a window costs 2 network
forwards with ``one-step`` and 2 x ``steps`` with ``ddim``. The model is freshly initialised
(adaLN given random weights so no block is the identity; speed does not depend on the values)
and the features are uniform noise in a synthetic WindowSet of non-overlapping windows.

    python benchmarks/bench_impute.py --preset mid --method ddim --steps 50 --windows 1
    python benchmarks/bench_impute.py --quick

Prints one JSON object: windows/s and seconds per window (one timed run after a warm-up batch).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import numpy as np
import pandas as pd
import torch

from getdiff.evaluation.inference import SamplerSettings, impute_windows
from getdiff.modeling.diffusion import GaussianDiffusion
from getdiff.modeling.model import build_model
from getdiff.tensors import WindowSet


def synthetic_windows(n_windows: int, window_size: int, n_features: int) -> WindowSet:
    """``n_windows`` back-to-back windows over uniform-noise features (seeded)."""
    rng = np.random.default_rng(0)
    n = n_windows * window_size
    features = rng.random((n, n_features), dtype=np.float32)
    regions = pd.DataFrame(
        {
            "chrom": "chr1",
            "start": np.arange(n) * 1000,
            "end": np.arange(n) * 1000 + 500,
            "name": [f"r{i}" for i in range(n)],
            "region_id": np.arange(n),
        }
    )
    meta = {"window_size": window_size, "feature_names": [f"f{i}" for i in range(n_features)]}
    starts = np.arange(n_windows, dtype=np.int64) * window_size
    scored = np.ones((n_windows, window_size), dtype=bool)
    return WindowSet(features, regions, starts, scored, meta)


def measure(
    preset: str,
    method: str,
    steps: int,
    n_windows: int,
    batch_size: int,
    regions: int | None = None,
    bf16: bool = False,
) -> dict:
    """Time ``impute_windows`` over ``n_windows`` windows (after one warm-up window)."""
    torch.manual_seed(0)
    model = build_model(preset)
    with torch.no_grad():
        for block in model.encoder.blocks:
            torch.nn.init.normal_(block.adaLN_modulation[-1].weight, std=0.02)
    config = model.config
    size = regions or config.num_regions
    settings = SamplerSettings(method=method, steps=steps, batch_size=batch_size)
    diffusion = GaussianDiffusion()
    device = torch.device("cpu")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    warm = SamplerSettings(method="one-step", batch_size=1)
    with autocast:
        impute_windows(model, diffusion, synthetic_windows(1, size, config.num_motif), warm, device)
        windows = synthetic_windows(n_windows, size, config.num_motif)
        began = time.perf_counter()
        impute_windows(model, diffusion, windows, settings, device)
        seconds = time.perf_counter() - began
    forwards = 2 * (1 if method == "one-step" else steps)
    return {
        "preset": preset,
        "method": method,
        "steps": 1 if method == "one-step" else steps,
        "bf16_autocast": bf16,
        "windows": n_windows,
        "batch_size": batch_size,
        "regions": size,
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "windows_per_s": n_windows / seconds,
        "seconds_per_window": seconds / n_windows,
        "forwards_per_window": forwards,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--method", choices=["one-step", "ddim"], default="one-step")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--regions", type=int, default=None, help="default: the preset's 900")
    parser.add_argument("--bf16", action="store_true", help="under torch.autocast(bfloat16)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="tiny, 64 regions, DDIM 3 steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.preset, args.method, args.steps, args.windows, args.regions = "tiny", "ddim", 3, 2, 64
    batch = min(args.batch_size, args.windows)
    result = measure(
        args.preset, args.method, args.steps, args.windows, batch, args.regions, args.bf16
    )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
