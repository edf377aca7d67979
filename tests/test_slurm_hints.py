"""getdiff.slurm without a cluster: what a SLURM user is told before submitting and after SLURM
kills a job (tests/test_slurm.py runs the same on a real one)."""

from __future__ import annotations

from pathlib import Path

from getdiff.slurm import Request, failure_hints, partition_limits, request_errors


def test_a_placeholder_is_named_once_with_its_variable_and_the_flag_that_replaces_it():
    default = Request("$GETDIFF_SLURM_ACCOUNT", "default")
    requests = {"prepare": {"slurm_account": default}, "train": {"slurm_account": default}}
    (error,) = request_errors(requests, {})
    assert "slurm_account is the placeholder '$GETDIFF_SLURM_ACCOUNT' (rules prepare, train)" in (
        error
    )
    assert "export GETDIFF_SLURM_ACCOUNT=..., or pass --default-resources slurm_account=" in error


def test_an_angle_bracket_placeholder_of_a_rule_says_replace_it():
    requests = {"train": {"slurm_partition": Request("<gpu_partition>", "rule")}}
    (error,) = request_errors(requests, {"gpu": (64000, 32)})
    assert "replace it, or pass --set-resources train:slurm_partition=..." in error


def test_memory_and_gpu_cpus_above_every_node_of_the_partition_are_named():
    limits = partition_limits("gpu 16000 8\ngpu 32000 4\ncpu 8000 2\nbad line\n")
    assert limits == {"gpu": (32000, 8), "cpu": (8000, 2)}
    train = {
        "slurm_partition": Request("gpu", "rule"),
        "mem_mb": Request(64000, "rule"),
        "gpu": Request(2, "rule"),
        "cpus_per_gpu": Request(8, "rule"),
        "threads": Request(8, "rule"),
    }
    errors = request_errors({"train": train}, limits)
    assert errors[0].startswith("slurm: rule train asks 64000 MB of memory (mem_mb)")
    assert "largest node of partition 'gpu' has 32000, so the job could never start" in errors[0]
    assert errors[1].startswith("slurm: rule train asks 16 CPUs (cpus_per_gpu)")
    fits = {**train, "mem_mb": Request(8000, "rule"), "cpus_per_gpu": Request(4, "rule")}
    assert request_errors({"train": fits}, limits) == []
    assert request_errors({"train": train}, {}) == []  # no sinfo: nothing to compare with


def plugin_log(tmp_path: Path, job: int, rule: str, state: str, slurm_log: str) -> str:
    path = tmp_path / "slurm_logs" / f"rule_{rule}" / f"{job}.log"
    path.parent.mkdir(parents=True)
    path.write_text(slurm_log)
    return (
        f"Job 3 has been submitted with SLURM jobid {job} (log: {path}).\n"
        f"Error in rule {rule}:\n    message: SLURM-job '{job}' failed, SLURM status is: "
        f"'{state}'. Detailed failure reason unavailable (status command is not 'sacct').\n"
    )


def test_a_job_killed_at_its_time_limit_names_runtime(tmp_path):
    log = plugin_log(
        tmp_path,
        41,
        "train",
        "TIMEOUT",
        "slurmstepd: error: *** JOB 41 CANCELLED AT x DUE TO TIME LIMIT ***",
    )
    (hint,) = failure_hints(log)
    assert hint.startswith("rule train (SLURM job 41) was killed at its time limit: raise runtime")
    assert "--set-resources train:runtime=N" in hint


def test_a_job_over_its_memory_names_mem_mb_whatever_state_squeue_reports(tmp_path):
    log = plugin_log(
        tmp_path, 7, "prepare", "FAILED", "slurmstepd: error: Exceeded job memory limit"
    )
    (hint,) = failure_hints(log)
    assert "rule prepare (SLURM job 7) was killed for exceeding its memory: raise mem_mb" in hint


def test_a_job_that_failed_on_its_own_gets_no_hint(tmp_path):
    assert failure_hints(plugin_log(tmp_path, 8, "train", "FAILED", "Traceback ...")) == []
