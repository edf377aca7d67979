"""CPU cost of the training knobs: grad accumulation, activation checkpointing, torch.compile.

Each variant runs ``getdiff.training.train.train_step`` itself (the sampler, masks, micro-batches,
AdamW, clipping; one process, no DDP) on synthetic windows of the preset's shape, with the default
config otherwise (LoRA on, dropout 0.1):

- ``plain``: every knob off;
- ``accumulation-2``: ``train.grad_accumulation: 2`` (two micro-batches of half the batch);
- ``checkpointing``: ``train.activation_checkpointing: true``;
- ``compile``: ``train.compile: true``; ``first_step_s`` holds the one-off compilation (each
  child process gets an empty inductor cache, so it is a cold compile).

Step times come from one child process that builds every variant and interleaves their steps
(each repeat: one step of each), so a change of machine load hits them alike: the median over
``--repeats`` after ``--warmup`` steps, and ``vs_plain`` = the median over repeats of the
variant's step over plain's step of the same repeat (> 1: slower). Peak RSS (``ru_maxrss``:
model, AdamW state, activations, the synthetic windows) comes from one fresh child process per
variant running the warm-up steps and one more.

    python benchmarks/bench_train_knobs.py --preset mid --batch 4 --repeats 3
    python benchmarks/bench_train_knobs.py --quick          # tiny preset, no compile, seconds

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = {
    "plain": {},
    "accumulation-2": {"grad_accumulation": 2},
    "checkpointing": {"activation_checkpointing": True},
    "compile": {"compile": True},
}
FEATURES = 283


def synthetic_run(preset: str, batch: int, regions: int, knobs: dict):
    """A getdiff.training.run.Run over 4 x batch random windows, with ``knobs`` set in train:."""
    from getdiff.config import validate_config
    from getdiff.modeling.diffusion import GaussianDiffusion
    from getdiff.modeling.task import target
    from getdiff.training.distributed import Ranks
    from getdiff.training.run import Run
    from getdiff.training.windows import WindowData

    config = validate_config(
        {
            "cell_types": "unused.tsv",
            "motif_scan": "unused.bed",
            "model": {"preset": preset},
            "train": {"batch_size": batch, "device": "cpu", **knobs},
        }
    )
    windows = 4 * batch
    g = torch.Generator().manual_seed(0)
    data = WindowData(
        features=torch.rand(windows * regions, FEATURES, generator=g),
        positions=torch.arange(windows * regions, dtype=torch.float64) * 3000,
        starts=torch.arange(windows) * regions,
        cell_type=torch.zeros(windows, dtype=torch.long),
        window_size=regions,
        feature_names=[f"motif{i}" for i in range(FEATURES - 1)] + ["accessibility"],
    )
    return Run(
        config=config,
        cell_types=["synthetic"],
        outdir=Path("unused"),
        ranks=Ranks(torch.device("cpu")),
        bf16=False,
        train_data=data,
        val=None,
        target=target(config["task"], data.feature_names),
        diffusion=GaussianDiffusion.from_config(config["diffusion"]),
        fingerprint="benchmark",
    )


def _states(args: argparse.Namespace, names: list[str]) -> dict:
    """(run, state, sampler) of each variant, all from the same seed."""
    import logging

    from getdiff.training.train import fresh_state
    from getdiff.training.windows import EpochSampler

    logging.disable(logging.WARNING)  # "LoRA on random weights" is expected here
    torch.set_num_threads(args.threads)
    states = {}
    for name in names:
        run = synthetic_run(args.preset, args.batch, args.regions, VARIANTS[name])
        sampler = EpochSampler(len(run.train_data), args.batch, 0, run.device)
        states[name] = (run, fresh_state(run), sampler)
    return states


def _timed_step(run, state, sampler) -> float:
    from getdiff.training.train import train_step

    start = time.perf_counter()
    float(train_step(state, run, sampler)["grad_norm"])  # waits for the step
    return time.perf_counter() - start


def measure_memory(args: argparse.Namespace) -> dict:
    """Peak RSS of one variant over ``--warmup`` + 1 steps (a child process of its own)."""
    run, state, sampler = _states(args, [args.child])[args.child]
    for _ in range(args.warmup + 1):
        _timed_step(run, state, sampler)
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_time(args: argparse.Namespace) -> dict:
    """Step times of every variant in one process, interleaved (plain, accumulation-2, ...
    each repeat), so a change of machine load hits them alike."""
    names = args.variants.split(",")
    states = _states(args, names)
    first = {name: _timed_step(*states[name]) for name in names}  # compiles, if asked
    for _ in range(args.warmup - 1):
        for name in names:
            _timed_step(*states[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            times[name].append(_timed_step(*states[name]))
    results = {}
    for name in names:
        results[name] = {"first_step_s": first[name], "step_s": statistics.median(times[name])}
        if "plain" in times:
            ratios = [t / p for t, p in zip(times[name], times["plain"], strict=True)]
            results[name]["vs_plain"] = statistics.median(ratios)
    return results


def _child(args: argparse.Namespace, *extra: str) -> dict:
    command = [sys.executable, __file__, *extra, "--preset", args.preset]
    command += ["--batch", str(args.batch), "--regions", str(args.regions)]
    command += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    command += ["--threads", str(args.threads), "--variants", args.variants]
    with tempfile.TemporaryDirectory() as cache:  # a cold compile, as a fresh machine has
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{' '.join(extra)} failed (exit code {done.returncode})")
    return json.loads(done.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from getdiff.defaults import DEFAULTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mid")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--regions", type=int, default=DEFAULTS["prepare"]["window_size"])
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument(
        "--quick", action="store_true", help="tiny preset, 64 regions, 2 steps, no compile"
    )
    parser.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--timing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:  # a smoke run: compiling alone takes about 40 s
        args.preset, args.batch, args.regions, args.warmup, args.repeats = "tiny", 4, 64, 1, 1
        args.variants = args.variants.replace(",compile", "")
    if args.child:
        print(json.dumps(measure_memory(args)))
        return
    if args.timing:
        print(json.dumps(measure_time(args)))
        return
    load_before = os.getloadavg()
    results = _child(args, "--timing")
    for name in results:
        results[name].update(_child(args, "--child", name))
    print(
        json.dumps(
            {
                "preset": args.preset,
                "batch": args.batch,
                "regions": args.regions,
                "repeats": args.repeats,
                "threads": args.threads,
                "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "load_before": load_before,
                "load_after": os.getloadavg(),
                "variants": results,
            }
        )
    )


if __name__ == "__main__":
    main()
