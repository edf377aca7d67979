"""Remake the saved test fixtures and record, beside each, where and how it was made.

    python tests/make_fixtures.py                 # remake every fixture in tests/data/
    python tests/make_fixtures.py --outdir DIR    # write them under DIR instead (same layout)
    python tests/make_fixtures.py --check         # remake into a temporary folder and compare
                                                  # with the committed ones at the tests' tolerances

The fixtures (paths relative to tests/data/):

- ``tiny_model_outputs.safetensors``: a tiny model's weights (seed-0 initialisation plus
  N(0, 0.05^2) noise on every parameter from a seed-1 generator, so every path of the network is
  non-trivial), a batch (``x``, ``mask``, ``t``) and the model's ``output`` with positions off;
  tests/test_positions_and_task.py runs the saved weights on the saved batch and compares.
- ``prepare_fixture/expected.npz``: prepare's outputs on the committed inputs beside it;
  tests/test_prepare_fixture.py runs prepare on them and compares.

Each FILE gets ``<FILE without suffix>.provenance.json``: its sha256, the getdiff commit, the
date, the torch/numpy/python versions, the CPU model, torch's CPU kernels (capability) and
thread count. Saved floats are one machine's rounding: the tests compare them to a tolerance.

A remade fixture records *this* code's outputs: remake one only when a change of the outputs is
intended (say why in the commit). ``--check`` changes nothing and fails if the committed
fixtures are no longer what this recipe and code make, to the tests' tolerances.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
TINY_MODEL_OUTPUTS = "tiny_model_outputs.safetensors"
PREPARE_EXPECTED = "prepare_fixture/expected.npz"
THREADS = 1  # torch threads while making a fixture (recorded in its provenance)

# The network of tiny_model_outputs.safetensors (positions off, the default).
TINY_MODEL = dict(
    num_motif=7, num_regions=12, dropout=0.0, embed_dim=16, num_heads=2, frequency_dim=16
)


def tiny_model(weights: dict[str, torch.Tensor] | None = None, **overrides) -> torch.nn.Module:
    """The fixture's network in eval mode; with ``weights`` (the file's ``weights.*`` entries,
    prefix stripped) loaded when given."""
    from getdiff.modeling.model import build_model

    model = build_model("tiny", **{**TINY_MODEL, **overrides}).eval()
    if weights is not None:
        model.load_state_dict(weights)
    return model


def fixture_weights(saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("weights.") :]: v for k, v in saved.items() if k.startswith("weights.")}


def make_tiny_model_outputs() -> dict[str, torch.Tensor]:
    """The tensors of tiny_model_outputs.safetensors. The weights, x and mask are seeded draws:
    bit for bit the committed ones where torch's normal sampler runs its AVX2/AVX-512 kernel
    (its default kernel rounds differently); the output is this machine's rounding."""
    torch.manual_seed(0)
    model = tiny_model()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
        x = torch.rand(2, 12, 7, generator=generator)
        mask = torch.rand(2, 12, generator=generator) < 0.5
        t = torch.tensor([3, 900])
        output = model(x, mask, t)
    weights = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    return {"x": x, "mask": mask, "t": t, "output": output, **weights}


def make_prepare_expected(workdir: Path) -> dict[str, np.ndarray]:
    """prepare's outputs on tests/data/prepare_fixture/ (the arrays of expected.npz)."""
    sys.path.insert(0, str(TESTS))  # test_prepare_fixture and its conftest helpers
    from test_prepare_fixture import fixture_outputs

    return fixture_outputs(workdir / "out")


# --------------------------------------------------------------------------- provenance


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def getdiff_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=TESTS, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes" if git("status", "--porcelain") else "")


def provenance(path: Path) -> dict[str, object]:
    import getdiff

    return {
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "made_by": "python tests/make_fixtures.py",
        "getdiff_commit": getdiff_commit(),
        "getdiff_version": getattr(getdiff, "__version__", "unknown"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def provenance_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}.provenance.json")


def write_with_provenance(path: Path, write: Callable[[Path], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)
    text = json.dumps(provenance(path), indent=2) + "\n"
    provenance_path(path).write_text(text)
    return path


# --------------------------------------------------------------------------- remake and check


def remake(outdir: Path) -> list[Path]:
    """Write every fixture (and its provenance) under ``outdir``, in tests/data/'s layout."""
    from safetensors.torch import save_file

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        tensors = make_tiny_model_outputs()
        written = [
            write_with_provenance(outdir / TINY_MODEL_OUTPUTS, lambda p: save_file(tensors, p))
        ]
        with tempfile.TemporaryDirectory() as work:
            arrays = make_prepare_expected(Path(work))
        written.append(
            write_with_provenance(
                outdir / PREPARE_EXPECTED, lambda p: np.savez_compressed(p, **arrays)
            )
        )
    finally:
        torch.set_num_threads(threads)
    return written


def check(outdir: Path, reference: Path = DATA) -> None:
    """Compare the fixtures under ``outdir`` with those under ``reference`` as the tests do;
    raise AssertionError on a difference beyond the tests' tolerances."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(TESTS))
    from test_positions_and_task import assert_matches_fixture
    from test_prepare_fixture import assert_matches_recorded

    made, saved = load_file(outdir / TINY_MODEL_OUTPUTS), load_file(reference / TINY_MODEL_OUTPUTS)
    assert made.keys() == saved.keys(), sorted(made.keys() ^ saved.keys())
    for key in saved:
        assert_matches_fixture(made[key], saved[key], msg=key)
    with np.load(outdir / PREPARE_EXPECTED) as got, np.load(reference / PREPARE_EXPECTED) as want:
        assert_matches_recorded({k: got[k] for k in got.files}, want)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, default=DATA, help="default: tests/data/")
    parser.add_argument(
        "--check",
        action="store_true",
        help="remake into a temporary folder and compare with --outdir's fixtures",
    )
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            remake(Path(tmp))
            check(Path(tmp), args.outdir)
        print(f"the fixtures in {args.outdir} are what this recipe makes, to the tests' tolerance")
        return 0
    for path in remake(args.outdir):
        print(f"wrote {path} and {provenance_path(path).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
