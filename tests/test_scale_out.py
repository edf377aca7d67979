"""Scale-out training: DDP over torchrun ranks (gloo on the CPU), gradient accumulation,
activation checkpointing, torch.compile, the CUDA path, and the train rule's cluster launch.

Every equality is against the plain single-process run with the same seed: the knobs change how
a step is computed, never which step it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import (
    CELL_TYPES,
    DEMO,
    ROOT,
    F,
    W,
    pinned_env,
    read_history,
    snakemake,
    train_config,
    write_config,
)
from safetensors.torch import load_file

from getdiff.errors import ConfigError
from getdiff.modeling.diffusion import GaussianDiffusion, random_masks, random_timesteps
from getdiff.modeling.model import build_model
from getdiff.training.distributed import Ranks
from getdiff.training.launch import launcher, train_resources
from getdiff.training.train import configure_optimizer, train

PROFILES = ROOT / "profiles"


def no_dropout(config: dict) -> dict:
    """Dropout draws depend on the batch layout; without dropout runs are equal to rounding."""
    config["model"]["overrides"]["dropout"] = 0.0
    return config


def assert_same_weights(a: Path, b: Path, atol: float) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=atol, rtol=0, msg=key)


def torchrun(config: dict, prepared: Path, outdir: Path, **popen) -> subprocess.Popen:  # noqa: F811
    """``getdiff train`` on 2 CPU processes started by torchrun (gloo), as the train rule does."""
    path = outdir.parent / f"{outdir.name}.config.yaml"
    sheet = outdir.parent / "cell_types.tsv"
    sheet.write_text("cell_type\tpeaks\n" + "".join(f"{ct}\t{ct}.bed\n" for ct in CELL_TYPES))
    path.write_text(yaml.safe_dump({**config, "cell_types": str(sheet)}))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", "-m", "getdiff", "train", "--config", str(path), "--group", "all"]
    command += ["--prepared-dir", str(prepared), "--outdir", str(outdir), "--threads", "2"]
    # One thread per rank (--threads 2 is shared by the node's 2 processes): the killed and the
    # straight 2-rank runs, compared bit for bit, run the same kernels in the same order.
    env = pinned_env()
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, **popen)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts each rank in a session of its own)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, index = [pid], 0
    while index < len(tree):
        tree += parents.get(tree[index], [])
        index += 1
    return tree


def finished(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]


# --- DDP -----------------------------------------------------------------------------------------


KNOBS = {"grad_accumulation": 2, "activation_checkpointing": True}


@pytest.mark.parametrize("knobs", [{}, KNOBS], ids=["plain", "accumulation-and-checkpointing"])
def test_two_ranks_of_batch_4_train_like_one_process_of_batch_8(prepared, tmp_path, knobs):  # noqa: F811
    config = no_dropout(train_config(batch_size=8, max_steps=20, eval_every=10))
    train(config, CELL_TYPES, prepared, tmp_path / "one")
    ddp = {**config, "train": {**config["train"], "devices": 2, **knobs}}
    finished(torchrun(ddp, prepared, tmp_path / "two"))
    # Not bit for bit: two ranks average two half-batch gradients where one process sums one
    # batch, so each step's gradient differs by float32 rounding, which Adam's steps carry into
    # the weights (|w| <= ~0.1): measured <= 1.1e-7 after 20 steps; 1e-5 leaves ~90x for other
    # kernels and thread splits.
    assert_same_weights(tmp_path / "one", tmp_path / "two", atol=1e-5)
    one, two = read_history(tmp_path / "one"), read_history(tmp_path / "two")
    for column in ("loss", "masked_pearson", "val_loss", "grad_norm"):
        assert one[column].fillna(-1).to_numpy() == pytest.approx(
            two[column].fillna(-1).to_numpy(), rel=1e-4, abs=1e-6
        ), column


def test_a_killed_two_rank_run_resumes_to_the_uninterrupted_weights(prepared, tmp_path):  # noqa: F811
    # Default dropout: each rank's dropout stream must be saved and restored too.
    config = train_config(batch_size=8, max_steps=80, checkpoint_every=5, eval_every=20)
    config["train"]["devices"] = 2
    finished(torchrun(config, prepared, tmp_path / "straight"))
    killed = torchrun(config, prepared, tmp_path / "resumed")
    last = tmp_path / "resumed" / "checkpoints" / "last.pt"
    while not last.exists() and killed.poll() is None:
        time.sleep(0.002)
    for pid in process_tree(killed.pid):  # torchrun and both ranks, as a lost node would
        os.kill(pid, signal.SIGKILL)
    killed.communicate()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    assert torch.load(last)["step"] < 80
    finished(torchrun(config, prepared, tmp_path / "resumed"))
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed", atol=0)
    columns = ["step", "loss", "val_loss", "masked_pearson"]
    straight, resumed = read_history(tmp_path / "straight"), read_history(tmp_path / "resumed")
    assert straight[columns].equals(resumed[columns])


def test_ranks_shard_every_global_batch_into_equal_disjoint_parts():
    cpu = torch.device("cpu")
    parts = [Ranks(cpu, rank=r, world_size=4).shard(8) for r in range(4)]
    assert [list(range(8))[part] for part in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ConfigError, match="not divisible by the 3 training processes"):
        Ranks(cpu, rank=0, world_size=3).shard(8)


# --- memory and speed knobs ----------------------------------------------------------------------


def test_gradient_accumulation_trains_like_one_big_batch(prepared, tmp_path):  # noqa: F811
    config = no_dropout(train_config(batch_size=8, max_steps=12))
    train(config, CELL_TYPES, prepared, tmp_path / "one")
    config["train"]["grad_accumulation"] = 3  # uneven micro-batches: 3, 3, 2
    train(config, CELL_TYPES, prepared, tmp_path / "three")
    assert_same_weights(tmp_path / "one", tmp_path / "three", atol=1e-5)
    one, three = read_history(tmp_path / "one"), read_history(tmp_path / "three")
    assert one["loss"].to_numpy() == pytest.approx(three["loss"].to_numpy(), rel=1e-5)


def test_more_micro_batches_than_windows_per_process_is_a_config_error(prepared, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="grad_accumulation"):
        train(train_config(batch_size=4, grad_accumulation=5), CELL_TYPES, prepared, tmp_path)


def test_activation_checkpointing_gives_the_same_gradients_with_dropout():
    torch.manual_seed(0)
    model = build_model("tiny", num_motif=F, num_regions=W, dropout=0.1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))  # zero-initialised gates would hide blocks
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, W, F, generator=g)
    mask, t = random_masks(3, W, 0.5, g), random_timesteps(3, 1000, g)
    noise = torch.randn(x0.shape, generator=g)
    grads = []
    for recompute in (False, True):
        model.encoder.activation_checkpointing = recompute
        model.zero_grad()
        torch.manual_seed(2)  # the same dropout draws
        loss, _ = GaussianDiffusion().training_loss(model, x0, mask, t, noise)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-7, rtol=1e-6, msg=name)


def test_activation_checkpointing_trains_like_the_plain_run(prepared, tmp_path):  # noqa: F811
    config = train_config(max_steps=6)  # with dropout: checkpointing replays its draws
    train(config, CELL_TYPES, prepared, tmp_path / "plain")
    config["train"]["activation_checkpointing"] = True
    train(config, CELL_TYPES, prepared, tmp_path / "recomputed")
    assert_same_weights(tmp_path / "plain", tmp_path / "recomputed", atol=1e-6)


def compile_works() -> bool:
    try:
        return bool(torch.compile(lambda x: x + 1)(torch.zeros(1)).item() == 1)
    except Exception:  # no C compiler, unsupported Python: torch raises several types
        return False


@pytest.mark.skipif(not compile_works(), reason="torch.compile is not usable here")
def test_compiled_network_trains_like_the_plain_one(prepared, tmp_path):  # noqa: F811
    config = no_dropout(train_config(use_lora=False, max_steps=4))
    train(config, CELL_TYPES, prepared, tmp_path / "plain")
    config["train"]["compile"] = True
    train(config, CELL_TYPES, prepared, tmp_path / "compiled")
    assert_same_weights(tmp_path / "plain", tmp_path / "compiled", atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_trains_with_bf16_autocast_and_fused_adamw(prepared, tmp_path, caplog):  # noqa: F811
    config = train_config(max_steps=4, device="cuda", activation_checkpointing=True)
    with caplog.at_level("INFO", logger="getdiff.training"):
        train(config, CELL_TYPES, prepared, tmp_path)
    assert "bf16 autocast" in caplog.text
    history = read_history(tmp_path)
    assert history["loss"].notna().all() and (history["loss"] < 1).all()
    optimizer = configure_optimizer(torch.nn.Linear(2, 2).cuda(), 1e-3, 0.0, torch.device("cuda"))
    assert optimizer.defaults["fused"]


# --- launching -----------------------------------------------------------------------------------


def test_one_process_needs_no_launcher_and_one_node_a_standalone_torchrun():
    assert launcher(1, 1) == ""
    line = launcher(4, 1)
    assert "torch.distributed.run --nproc-per-node 4 --standalone --no-python env" in line
    assert train_resources({"devices": 4, "nodes": 1, "gpu_model": "a100"}) == {
        "gpu": 4,
        "gpu_model": "a100",
    }


def test_slurm_dry_run_asks_for_4_gpus_on_each_of_2_nodes_and_runs_torchrun(tmp_path):
    config = write_config(tmp_path, DEMO, train={"devices": 4, "nodes": 2, "batch_size": 8})
    result = snakemake(
        tmp_path, "-n", "--profile", str(PROFILES / "slurm"), "--configfile", config
    ).stdout
    job = result[result.index("rule train:") :].split("\n\n")[0]
    resources = job[job.index("resources:") :].splitlines()[0]
    listed = resources.removeprefix("resources: ").split(", ")
    assert {"nodes=2", "tasks=2", "gres=gpu:4", "mpi=srun"} <= set(listed), resources
    assert not any(item.startswith("gpu=") for item in listed)  # --gpus would be a job total
    command = job[job.index("Shell command:") :]
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in command
    assert "torch.distributed.run --nproc-per-node 4 --nnodes 2 --rdzv-backend c10d" in command
    first_node = (
        '$(scontrol show hostnames "${SLURM_JOB_NODELIST:-$(squeue -h -j "$SLURM_JOB_ID" -o %N)}"'
        " | head -n 1)"
    )
    assert f"--rdzv-endpoint {first_node}:29400" in command
    assert "--rdzv-id $SLURM_JOB_ID --no-python env PYTHONPATH=" in command
    assert "python -m getdiff train" in command


def test_slurm_plugin_turns_the_resources_into_one_task_and_4_gpus_per_node():
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    class Resources(dict):
        __getattr__ = dict.__getitem__

    settings = {"devices": 4, "nodes": 2, "gpu_model": None}
    resources = Resources(mem_mb=64000, runtime=720, **train_resources(settings))
    job = SimpleNamespace(resources=resources, threads=8, name="train", wildcards={})
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "-A a"}
    params.update(partition="-p gpu", workdir="/w")
    call = get_submit_command(job, params) + set_gres_string(job)
    flags = call.split()
    assert {"--nodes=2", "--ntasks=2", "--gres=gpu:4"} <= set(flags), call
    assert not any(flag.startswith(("--gpus", "--ntasks-per-gpu")) for flag in flags), call
