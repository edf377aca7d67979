"""How the train rule starts training on several GPUs and nodes: command prefix and resources.

Contract
--------
- ``launcher(devices, nodes) -> str``: the shell prefix of the train rule's command: "" for one
  process; ``torchrun --standalone`` with ``devices`` processes on one node; on ``nodes`` > 1,
  ``srun`` with one task per node of the SLURM allocation, each a torchrun that meets the
  others at a c10d rendezvous on the allocation's first node (``RDZV_PORT``; the node list from
  ``$SLURM_JOB_NODELIST``, or from ``squeue`` where the job's environment lacks it).
- ``train_resources(settings) -> dict``: the train rule's GPU resources from the config's
  ``train:`` section, in the terms of snakemake-executor-plugin-slurm.

Imported by the Snakefile, so it must not import torch (the environment that runs Snakemake
needs only numpy, pandas, pyarrow, pyyaml and jsonschema; tests/test_envs.py checks it). The
processes themselves: :mod:`getdiff.training.distributed`.
"""

from __future__ import annotations

from typing import Any

RDZV_PORT = 29400  # torchrun's c10d rendezvous port on the first node of a multi-node job


def launcher(devices: int, nodes: int) -> str:
    """Shell prefix that starts ``devices`` processes on each of ``nodes`` nodes ("" for one).

    It ends in ``env``, so the command that follows may begin with variable assignments
    (``PYTHONPATH=... python -m getdiff train ...``); torchrun runs it as is (``--no-python``).
    Several nodes: one ``srun`` task per node of the SLURM allocation, each a torchrun that
    meets the others at a c10d rendezvous on the allocation's first node.
    """
    if devices * nodes == 1:
        return ""
    torchrun = f"python -m torch.distributed.run --nproc-per-node {devices}"
    if nodes == 1:
        return f"{torchrun} --standalone --no-python env"
    # The job's node list: snakemake-executor-plugin-slurm-jobstep (0.6) removes SLURM_JOB_NODELIST
    # from the environment of the rule's command, so squeue gives it then (tests/test_slurm.py).
    nodelist = '"${SLURM_JOB_NODELIST:-$(squeue -h -j "$SLURM_JOB_ID" -o %N)}"'
    first_node = f"$(scontrol show hostnames {nodelist} | head -n 1)"
    srun = f"srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=1"
    rendezvous = (
        f"--nnodes {nodes} --rdzv-backend c10d --rdzv-endpoint {first_node}:{RDZV_PORT} "
        "--rdzv-id $SLURM_JOB_ID"
    )
    return f"{srun} {torchrun} {rendezvous} --no-python env"


def train_resources(settings: dict[str, Any]) -> dict[str, Any]:
    """The train rule's GPU resources for the slurm executor plugin (and local scheduling).

    One node: ``gpu`` = devices (sbatch ``--gpus=N``; with ``gpu_model``, ``--gpus=model:N``).
    Several nodes: ``nodes``, ``gres: gpu[:model]:N`` (N per node), one task per node and
    ``mpi: srun``, which tells the plugin that the rule's command calls srun itself.
    """
    devices, nodes, model = settings["devices"], settings["nodes"], settings["gpu_model"]
    if nodes == 1:
        return {"gpu": devices, "gpu_model": model or ""}
    return {
        "nodes": nodes,
        "tasks": nodes,
        "tasks_per_gpu": 0,  # 0: no --ntasks-per-gpu (the plugin would take it from tasks)
        "mpi": "srun",
        "gres": f"gpu:{model}:{devices}" if model else f"gpu:{devices}",
    }
