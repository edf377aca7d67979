"""The benchmark suite's own checks: the reference model is the same function, scripts run.

No timing is asserted: the numbers live in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from bench_train_step import make_batch  # noqa: E402
from reference_model import ReferenceModel, reference_loss  # noqa: E402
from run_all import kept_sections  # noqa: E402

from getdiff.modeling.diffusion import GaussianDiffusion  # noqa: E402
from getdiff.modeling.model import build_model, train_step_flops  # noqa: E402


def _pair(regions: int = 40) -> tuple[torch.nn.Module, ReferenceModel]:
    """A tiny getdiff model with non-trivial weights and the reference loaded from it."""
    torch.manual_seed(0)
    model = build_model("tiny", num_regions=regions, num_motif=11, dropout=0.0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))  # adaLN and biases away from zero
    reference = ReferenceModel(model.config)
    reference.load_state_dict(model.state_dict())
    return model, reference


def test_reference_model_loads_getdiff_weights_and_gives_the_same_outputs():
    model, reference = _pair()
    model.eval()
    reference.eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 40, 11, generator=g)
    mask = torch.rand(3, 40, generator=g) < 0.5
    t = torch.tensor([0, 517, 999])
    with torch.no_grad():
        expected = model(x, mask, t)
        got = reference(x, mask, t)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_reference_loss_and_gradients_match_getdiff_training_loss():
    model, reference = _pair()
    batch = make_batch(model.config, 2, 40)
    loss, _ = GaussianDiffusion().training_loss(
        model, batch["x0"], batch["mask"], batch["t"], batch["noise"]
    )
    loss.backward()
    abar = GaussianDiffusion().alphas_cumprod.float()[batch["t"]].view(-1, 1, 1)
    noisy = abar.sqrt() * batch["x0"] + (1 - abar).sqrt() * batch["noise"]
    x_in = torch.where(batch["mask"].unsqueeze(-1), noisy, batch["x0"])
    ref_loss = reference_loss(reference, x_in, batch["x0"], batch["mask"], batch["t"])
    ref_loss.backward()
    assert torch.allclose(ref_loss, loss, rtol=1e-4)
    ours = dict(model.named_parameters())
    for name, param in reference.named_parameters():
        assert torch.allclose(param.grad, ours[name].grad, atol=1e-5, rtol=1e-3), name


def test_step_flops_counts_matmuls_and_attention():
    config = build_model("tiny", num_motif=10, num_regions=9, frequency_dim=8).config
    d, hidden, layers, tokens = 64, 256, 2, 10
    per_token = layers * (4 * d * d + 2 * d * hidden)
    macs = tokens * per_token + 9 * 2 * 10 * d + (8 * d + d * d + layers * 6 * d * d)
    macs += layers * 2 * tokens * tokens * d
    assert train_step_flops(config, batch=3, regions=9) == 6 * 3 * macs


def test_run_all_quick_writes_every_results_table(tmp_path):
    output = tmp_path / "RESULTS.md"
    command = [sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--threads", "1"]
    command += ["--output", str(output), "--workdir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    text = output.read_text()
    headings = ("## 1. Training step", "## 2. Prepare", "## 3. Imputation", "## 4. Counting")
    later = ("## 5. Peak", "## 6. Training knobs", "## 7. Motif scanning", "## 8. bigWig tracks")
    for heading in (*headings, *later):
        assert heading in text
    assert "M fragments/s" in text and "| all barcodes |" in text
    assert "| peaks x reads | s | M reads/s | peak RSS MiB |\n|---|---|---|---|\n| 10,000 x" in text
    assert "| accumulation-2 |" in text and "| checkpointing |" in text
    assert "| 2,000 x 4 |" in text and "| 2,000 | pyBigWig" in text
    assert (tmp_path / "results.quick.json").exists()


def test_a_rerun_of_run_all_keeps_the_sections_it_does_not_write():
    previous = "# Results\n\n## 1. A\n\nold a\n\n## 10. Run alone\n\nkept\n\n## History\n\nh\n"
    text = kept_sections("# Results\n\n## 1. A\n\nnew a\n", previous)
    assert text == "# Results\n\n## 1. A\n\nnew a\n\n## 10. Run alone\n\nkept\n\n## History\n\nh\n"
