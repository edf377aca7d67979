"""The workflow on a real SLURM, as README.md's "Running on SLURM" says to run it.

tests/slurm/local-cluster.sh starts a cluster on this machine (two slurmd, partitions cpu and
gpu, one gres gpu per node, no accounting). The tests share it and one workflow directory and run
in file order: two runs that must stop before submitting; one cell type's demo through
profiles/slurm to calibrate (a downstream rule of train) with its train job cancelled by scancel
and the plain rerun resuming it; its checks (SLURM jobs, the gpu partition, outputs equal to a
run without a scheduler); a job killed for its memory; then train on two nodes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from helpers import TINY_RUN, snakemake, write_config

from getdiff.tensors import load_regions

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "tests" / "slurm" / "local-cluster.sh"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# What README.md's "Running on SLURM" has the user export, here for the local cluster.
SLURM_ENV = {
    "GETDIFF_SLURM_ACCOUNT": "getdiff-ci",
    "GETDIFF_SLURM_PARTITION": "cpu",
    "GETDIFF_SLURM_GPU_PARTITION": "gpu",
}
# The README's flags for this cluster: no accounting (squeue for job status), nodes of this
# machine's size (2 CPUs and a few GB in CI). --set-resources on the command line replaces the
# profile's set-resources, so train's partition is repeated.
SMALL_NODE = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--set-threads",
    "train=2",
    "--set-resources",
    "train:slurm_partition=gpu",
    "train:cpus_per_gpu=2",
    *(f"{rule}:mem_mb=3000" for rule in ("prepare", "train", "calibrate")),
]
CELL_TYPES = ["demo_liver"]
TARGET = "results/calibrate/all/calibration.parquet"
MODEL = "results/train/all/model.safetensors"
# 30 steps with a checkpoint every 5: time to scancel the job between the first and the last.
TRAIN = {**TINY_RUN["train"], "max_steps": 30, "checkpoint_every": 5, "eval_every": 15}


def cluster_reason() -> str | None:
    """Why no SLURM daemons can run here (None: they can)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return "the local SLURM needs Linux and root (tests/slurm/local-cluster.sh)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return "no slurmctld here and no apt-get to install slurm-wlm"
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and "local-cluster.sh" not in conf.read_text(errors="replace"):
        return "this machine has its own SLURM (/etc/slurm/slurm.conf): not replacing it"
    return None


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "GETDIFF_SLURM_NODES": "2"}
    started = subprocess.run(
        ["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, check=False
    )
    if started.returncode != 0:
        pytest.fail(f"local-cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, check=False)


def profile_command(workdir: Path, target: str, *args: str) -> list[str]:
    """The README's command: snakemake --profile profiles/slurm (+ this cluster's flags)."""
    snakefile = ["-s", str(ROOT / "Snakefile"), "-d", str(workdir), target]
    profile = ["--profile", str(ROOT / "profiles" / "slurm"), "--configfile", "config.yaml"]
    return [sys.executable, "-m", "snakemake", *snakefile, *profile, *args]


def profile_env(**changes: str | None) -> dict[str, str]:
    env = {**os.environ, **SLURM_ENV, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def profile_run(workdir: Path, target: str, *args: str, env: dict | None = None) -> str:
    """Run the profile; its output (stdout and stderr), with the exit status on the first line."""
    result = subprocess.run(
        profile_command(workdir, target, *args),
        cwd=workdir,
        env=env or profile_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def submitted(output: str) -> dict[str, list[int]]:
    """Rule -> SLURM job ids, from the plugin's 'submitted with SLURM jobid' lines."""
    jobs: dict[str, list[int]] = {}
    for job, rule in re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", output):
        jobs.setdefault(rule, []).append(int(job))
    return jobs


def scontrol(job: int) -> str:
    command = ["scontrol", "show", "job", str(job)]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def workflow_dir(path: Path, train: dict | None = None) -> Path:
    write_config(path, CELL_TYPES, **{**TINY_RUN, "train": train or TRAIN})
    return path


def node_memory_mb() -> int:
    return max(int(m) for m in subprocess.check_output(["sinfo", "-h", "-N", "-o", "%m"]).split())


def test_an_unset_partition_variable_stops_before_submitting_naming_it(cluster, tmp_path):
    workdir = workflow_dir(tmp_path)
    env = profile_env(GETDIFF_SLURM_PARTITION=None)
    output = profile_run(workdir, TARGET, *SMALL_NODE, env=env)
    assert output.startswith("exit 1") and not submitted(output), output
    assert "slurm_partition is the placeholder '$GETDIFF_SLURM_PARTITION'" in output
    assert "export GETDIFF_SLURM_PARTITION=..., or pass --default-resources" in output


def test_a_request_larger_than_every_node_stops_naming_the_resource(cluster, tmp_path):
    workdir = workflow_dir(tmp_path)
    too_much = f"train:mem_mb={node_memory_mb() + 1000}"
    output = profile_run(workdir, TARGET, *SMALL_NODE, too_much)
    assert output.startswith("exit 1") and not submitted(output), output
    assert f"rule train asks {node_memory_mb() + 1000} MB of memory (mem_mb)" in output
    assert "so the job could never start: lower mem_mb (--set-resources train:mem_mb=...)" in output


def cancel_train_once_checkpointed(workdir: Path) -> str:
    """Start the README's command (with --retries 0: else Snakemake resubmits the job itself),
    scancel the train job once it has written a checkpoint, and return the run's output."""
    checkpoint = workdir / "results" / "train" / "all" / "checkpoints" / "last.pt"
    first = subprocess.Popen(
        profile_command(workdir, TARGET, *SMALL_NODE, "--retries", "0"),
        cwd=workdir,
        env=profile_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint written in 300 s"
        time.sleep(0.2)
    queue = subprocess.check_output(["squeue", "-h", "-o", "%i %k"], text=True).splitlines()
    (job,) = [line.split()[0] for line in queue if line.split()[1].startswith("rule_train_")]
    subprocess.run(["scancel", job], check=True)
    output, _ = first.communicate(timeout=300)
    return f"exit {first.returncode}\n{output}"


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    """The README's command, train cancelled once by scancel, then the same command again."""
    workdir = workflow_dir(tmp_path_factory.mktemp("slurm"))
    start = time.monotonic()
    cancelled = cancel_train_once_checkpointed(workdir)
    rerun = profile_run(workdir, TARGET, *SMALL_NODE)
    seconds = time.monotonic() - start
    print(f"SLURM run, cancelled and rerun: {seconds:.0f} s")
    return workdir, cancelled, rerun


def test_scancel_of_train_fails_the_run_and_the_plain_rerun_resumes_from_its_checkpoint(run):
    workdir, cancelled, rerun = run
    assert not cancelled.startswith("exit 0") and "CANCELLED" in cancelled, cancelled
    assert rerun.startswith("exit 0"), rerun
    log = (workdir / "results" / "logs" / "train" / "all.log").read_text()
    resumed = re.search(r"resuming from \S+last\.pt at step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= 5, log
    history = (workdir / "results" / "train" / "all" / "history.tsv").read_text().splitlines()
    assert history[-1].split("\t")[0] == "30"
    (job, *_) = submitted(cancelled)["train"]
    assert "JobState=CANCELLED" in scontrol(job)


def test_every_rule_ran_as_a_slurm_job(run):
    workdir, cancelled, rerun = run
    planned = snakemake(workdir, TARGET, "-n", "-F", "--cores", "1", "--configfile", "config.yaml")
    rules = set(re.findall(r"^rule (\w+):", planned.stdout, re.M))
    first, second = submitted(cancelled), submitted(rerun)
    assert set(first) | set(second) == rules == {"demo_data", "prepare", "train", "calibrate"}
    assert set(second) == {"train", "calibrate"}  # the rerun redid only what was missing
    for job in [*second["train"], *second["calibrate"], *first["prepare"], *first["demo_data"]]:
        assert "JobState=COMPLETED" in scontrol(job), job


def test_train_went_to_the_gpu_partition_with_its_gpu_request(run):
    workdir, _, rerun = run
    (job,) = submitted(rerun)["train"]
    info = scontrol(job)
    assert "Partition=gpu" in info
    assert re.search(r"TresPerJob=gres[:/]gpu[:=]1", info), info
    log = (workdir / "results" / "logs" / "train" / "all.log").read_text()
    assert "visible GPUs: CUDA_VISIBLE_DEVICES=0" in log


def test_outputs_equal_a_run_without_a_scheduler(run, tmp_path):
    """The prepared tensors are equal and the resumed model equals one trained without a
    break, by `snakemake --cores 2` on this machine (train gets 2 threads in both)."""
    from safetensors.numpy import load_file

    workdir, _, _ = run
    local = workflow_dir(tmp_path)
    shutil.copytree(workdir / "demo", local / "demo")
    snakemake(local, MODEL, "--cores", "2", "--configfile", "config.yaml")
    for name in ("regions.parquet", "windows_train.parquet", "windows_validation.parquet"):
        ours, theirs = (p / "results" / "prepare" / "demo_liver" / name for p in (workdir, local))
        # the file metadata records the config, whose sheet path is each run's own
        assert pq.read_table(ours).equals(pq.read_table(theirs), check_metadata=False), name
    ours, theirs = (
        load_regions(p / "results" / "prepare" / "demo_liver" / "regions.parquet")
        for p in (workdir, local)
    )
    for key in ("feature_names", "scaling"):
        assert ours.attrs["getdiff"][key] == theirs.attrs["getdiff"][key], key
    ours, theirs = load_file(workdir / MODEL), load_file(local / MODEL)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_job_killed_for_its_memory_names_mem_mb(run, tmp_path):
    """prepare given 200 MB: SLURM kills it, and the run's last lines say to raise mem_mb."""
    workdir, _, _ = run
    small = workflow_dir(tmp_path)
    shutil.copytree(workdir / "demo", small / "demo")
    target = "results/prepare/demo_liver/regions.parquet"
    output = profile_run(small, target, *SMALL_NODE, "prepare:mem_mb=200", "--retries", "0")
    assert output.startswith("exit 1"), output
    (job,) = submitted(output)["prepare"]
    assert (
        f"slurm: rule prepare (SLURM job {job}) was killed for exceeding its memory: raise "
        "mem_mb (MB), e.g. --set-resources prepare:mem_mb=N"
    ) in output


def test_two_node_training_meets_at_the_first_nodes_rendezvous(run):
    """train.nodes: 2 on the two slurmd: srun starts one torchrun per node and they meet at the
    c10d endpoint on the allocation's first node (found by squeue: the job step's environment
    has no SLURM_JOB_NODELIST)."""
    workdir, _, _ = run
    config = workdir / "config.yaml"
    sections = yaml.safe_load(config.read_text())
    sections["train"] = {
        **TRAIN,
        "nodes": 2,
        "max_steps": 2,
        "eval_every": 2,
        "checkpoint_every": 2,
    }
    config.write_text(yaml.safe_dump(sections))
    shutil.rmtree(workdir / "results" / "train" / "all" / "checkpoints")  # start at step 0
    output = profile_run(workdir, MODEL, *SMALL_NODE)
    assert output.startswith("exit 0"), output
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in output
    assert "--nnodes 2 --rdzv-backend c10d --rdzv-endpoint $(scontrol show hostnames" in output
    (job,) = submitted(output)["train"]
    assert "NumNodes=2" in scontrol(job)
    log = (workdir / "results" / "logs" / "train" / "all.log").read_text()
    assert "2 processes (gloo DDP)" in log and "exporting the weights of step 2" in log
